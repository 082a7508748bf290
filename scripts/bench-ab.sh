#!/usr/bin/env bash
# Compare two builds the way docs/PERFORMANCE.md asks: alternately, A B A B,
# on the same scenarios, because this machine's speed moves within minutes.
#   scripts/bench-ab.sh OTHER_BUILD_DIR [PAIRS]
# A is OTHER_BUILD_DIR (e.g. a `git worktree add /tmp/base <rev>` built with
# `make BUILD=release all tests`), B this tree's build/release (rebuilt
# first). Environment: BENCH_ONLY (dpaced), BENCH_RUNS (2 per side and
# pair), BENCH_AB_ENV_A / BENCH_AB_ENV_B (BENCH_PARLEY_ENV for one side; the
# same build on both sides then compares two settings). Each run's log and
# JSON go to var/bench-ab/<time>/; bench/ab.py prints the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ ! -x "$1/parley" ]; then
    echo "usage: scripts/bench-ab.sh OTHER_BUILD_DIR [PAIRS] (no parley in ${1:-?})" >&2
    exit 2
fi
other=$(cd "$1" && pwd)
pairs=${2:-2}
out=var/bench-ab/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
make -s BUILD=release all tests

for i in $(seq 1 "$pairs"); do
    for side in A B; do
        if [ "$side" = A ]; then dir=$other; penv=${BENCH_AB_ENV_A:-}; else dir=$PWD/build/release; penv=${BENCH_AB_ENV_B:-}; fi
        echo "bench-ab: pair $i, $side ($dir${penv:+, $penv})"
        BENCH_BUILD_DIR=$dir BENCH_PARLEY_ENV=$penv BENCH_ONLY=${BENCH_ONLY:-dpaced} \
            BENCH_RUNS=${BENCH_RUNS:-2} BENCH_UPDATE_DOC=0 scripts/bench.sh > "$out/$side-$i.log" 2>&1 ||
            { echo "bench-ab: run failed, see $out/$side-$i.log" >&2; exit 1; }
        cp bench/results/quick.json "$out/$side-$i.json"
    done
done
python3 bench/ab.py "$out"
