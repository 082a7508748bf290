#!/bin/sh
# Build and run the adapter libFuzzer targets (tests/fuzz/fuzz_*.c) with
# clang -fsanitize=fuzzer,address,undefined, each for a bounded time.
#
#   scripts/fuzz.sh                  all targets, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=10 scripts/fuzz.sh whatsapp signature
#
# Targets link the adapter and core sources directly (not libparley.a).
# Corpora live in tests/fuzz/corpus-<name>/ (gitignored) and are seeded from
# tests/fixtures; binaries, logs and crash artifacts go to build/fuzz/.
# Exit status: 0 when no target found a crash, 1 otherwise.
set -eu

cd "$(dirname "$0")/.."

SECS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
if [ -n "${FUZZ_CC:-}" ]; then
    CC=$FUZZ_CC
elif command -v clang-14 >/dev/null 2>&1; then
    CC=clang-14
else
    CC=clang
fi
TARGETS=${*:-"whatsapp messenger instagram signature split"}

SRCS="adapters/batch.c adapters/meta.c adapters/meta_messaging.c
      adapters/whatsapp.c adapters/messenger.c adapters/instagram.c
      adapters/split.c core/buf.c core/log.c core/status.c"
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I.
        $(pkg-config --cflags libcjson libcurl openssl)
        -g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
LIBS="$(pkg-config --libs libcjson libcurl openssl) -lm -pthread"

mkdir -p "$OUT"
failed=0
summary=""

for t in $TARGETS; do
    src=tests/fuzz/fuzz_$t.c
    if [ ! -f "$src" ]; then
        echo "fuzz: no such target: $t" >&2
        exit 2
    fi
    echo "fuzz: building $t"
    # shellcheck disable=SC2086
    $CC $CFLAGS -o "$OUT/fuzz_$t" "$src" $SRCS $LIBS

    corpus=tests/fuzz/corpus-$t
    seeds=$OUT/seeds-$t
    mkdir -p "$corpus" "$seeds"
    case $t in
    whatsapp | messenger | instagram)
        cp tests/fixtures/"$t"/*.json "$seeds"/ ;;
    signature)
        # one length byte (0x47 = 71: "sha256=" + 64 hex), header, body
        for f in tests/fixtures/*/*.json; do
            n=$(basename "$f" .json)
            d=$(basename "$(dirname "$f")")
            {
                printf 'G'
                printf 'sha256=%064d' 0
                cat "$f"
            } >"$seeds/$d-$n"
        done ;;
    split)
        for f in tests/fixtures/*/non_ascii*.json tests/fixtures/*/text.json; do
            n=$(basename "$f" .json)
            d=$(basename "$(dirname "$f")")
            { printf '\001\010'; cat "$f"; } >"$seeds/$d-$n"
        done ;;
    esac

    log=$OUT/fuzz_$t.log
    echo "fuzz: running $t for ${SECS}s"
    set +e
    "$OUT/fuzz_$t" -max_total_time="$SECS" -max_len=65536 \
        -dict=tests/fuzz/meta.dict -print_final_stats=1 \
        -artifact_prefix="$OUT/$t-" "$corpus" "$seeds" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    units=$(ls "$corpus" | wc -l)
    if [ $rc -ne 0 ]; then
        failed=1
        result="CRASH (see $log)"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' \
            "$log" | head -5 >&2 || true
    else
        result="ok"
    fi
    summary="$summary
$(printf '%-10s %-8s execs=%-10s corpus=%-6s' "$t" "$result" \
        "${execs:-?}" "$units")"
done

echo "fuzz: summary (${SECS}s per target)$summary"
exit $failed
