#!/usr/bin/env bash
# Run Parley's test suites for one build variant and print one summary line.
#   scripts/run-tests.sh [VARIANT]        (default: asan)
#   SUITES=unit scripts/run-tests.sh asan (cmocka unit tests only)
#   PYTEST_ARGS="-k readyz" scripts/run-tests.sh asan
#   PARLEY_BUILD_DIR=/tmp/x/asan scripts/run-tests.sh asan   (a private build dir)
# Unit: every build/VARIANT/tests/test_* cmocka binary. Integration:
# /usr/bin/python3 -m pytest tests/integration against build/VARIANT/parley.
# Ends with exactly one line "N passed, N failed"; exits non-zero when
# anything failed or nothing ran.
set -uo pipefail
cd "$(dirname "$0")/.."

VARIANT=${1:-asan}
BUILD_DIR=${PARLEY_BUILD_DIR:-build/$VARIANT}
SUITES=${SUITES:-all}
LOG_DIR=$BUILD_DIR/test-logs
mkdir -p "$LOG_DIR"

export CMOCKA_MESSAGE_OUTPUT=stdout
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
TSAN_DEFAULT="halt_on_error=1 second_deadlock_stack=1"
[ -f tests/tsan.supp ] && TSAN_DEFAULT="$TSAN_DEFAULT suppressions=$(pwd)/tests/tsan.supp"
export TSAN_OPTIONS=${TSAN_OPTIONS:-$TSAN_DEFAULT}

total_pass=0
total_fail=0

# ---------------------------------------------------------------- unit
unit_pass=0
unit_fail=0
unit_bins=0
for bin in "$BUILD_DIR"/tests/test_*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    unit_bins=$((unit_bins + 1))
    name=$(basename "$bin")
    out="$LOG_DIR/$name.log"
    timeout --kill-after=10 300 "$bin" >"$out" 2>&1
    rc=$?
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        # Crashed, sanitizer abort, timeout, or non-zero exit without a
        # cmocka failure line: count the binary as one failure.
        f=1
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        f=1  # exited 0 but reported nothing: not a pass
    fi
    unit_pass=$((unit_pass + p))
    unit_fail=$((unit_fail + f))
    if [ "$f" -gt 0 ]; then
        echo "unit: $name: $p passed, $f failed (rc=$rc, log: $out)"
        grep -E '^\[  (FAILED|  ERROR )|^\[  ERROR   \]|ERROR: AddressSanitizer|runtime error:|ThreadSanitizer|LeakSanitizer' "$out" | head -n 20 | sed 's/^/    /'
    fi
done
echo "unit: $unit_bins binaries, $unit_pass passed, $unit_fail failed"
total_pass=$((total_pass + unit_pass))
total_fail=$((total_fail + unit_fail))

# ---------------------------------------------------------------- integration
if [ "$SUITES" != "unit" ]; then
    it_log="$LOG_DIR/pytest.log"
    # shellcheck disable=SC2086
    PARLEY_BIN=$BUILD_DIR/parley PARLEY_BUILD_DIR=$BUILD_DIR \
        timeout --kill-after=30 1800 /usr/bin/python3 -m pytest -q -p no:cacheprovider \
        -o console_output_style=classic ${PYTEST_ARGS:-} tests/integration tests/fakes 2>&1 | tee "$it_log"
    it_rc=${PIPESTATUS[0]}
    # The last "N passed, N failed, ... in 12.34s" line (with or without ===).
    summary=$(grep -E '^(=+ )?(([0-9]+ [a-z]+(, )?)+|no tests ran) in [0-9.]+s' "$it_log" | tail -n 1)
    count() { echo "$summary" | grep -oE "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'; }
    it_pass=$(count passed)
    it_fail=$(( $(count failed) + $(count 'errors?') + $(count xpassed) ))
    it_skip=$(( $(count skipped) + $(count xfailed) + $(count deselected) ))
    if [ "$it_rc" -ne 0 ] && [ "$it_fail" -eq 0 ]; then
        it_fail=1  # pytest crashed, was killed, or collected nothing
    fi
    echo "integration: $it_pass passed, $it_fail failed, $it_skip not run (rc=$it_rc, log: $it_log)"
    total_pass=$((total_pass + it_pass))
    total_fail=$((total_fail + it_fail))
fi

echo "$total_pass passed, $total_fail failed"
if [ "$total_fail" -ne 0 ] || [ "$total_pass" -eq 0 ]; then
    exit 1
fi
exit 0
