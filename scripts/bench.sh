#!/usr/bin/env bash
# `make bench`: the benchmark suite (docs/PERFORMANCE.md). The work is done by
# bench/bench.py; this wrapper makes sure the bench PostgreSQL cluster is
# stopped and removed however the run ends.
#   scripts/bench.sh                 full run (3 runs per scenario, ~6 min)
#   BENCH_QUICK=1 scripts/bench.sh   1-run smoke version (~1 min)
# Other knobs (environment): BENCH_RUNS, BENCH_DURATION, BENCH_CONNECTIONS,
# BENCH_USERS, BENCH_PG_PORT, BENCH_PG_DIR, BENCH_KEEP=1, BENCH_UPDATE_DOC=0,
# BENCH_PG_STATEMENTS=1 (see docs/PERFORMANCE.md), BENCH_PARLEY_ENV="PARLEY_X=v ...", BENCH_FAKE_RESTART=1, BENCH_PG_FRESH=1,
# BENCH_PG_SETTINGS="name=value ...", BENCH_VMPROBE=1. Two builds compared: scripts/bench-ab.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export BENCH_PG_DIR=${BENCH_PG_DIR:-$PWD/var/bench-pg}
export BENCH_TMP=$PWD/var/bench-run # binaries, bodies and logs of this run

cleanup() {
    local data=$BENCH_PG_DIR/data pgbin=""
    [ -f "$data/PG_VERSION" ] && pgbin=/usr/lib/postgresql/$(cat "$data/PG_VERSION")/bin
    if [ -n "$pgbin" ] && [ -f "$data/postmaster.pid" ]; then
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -m immediate -w stop \
                >/dev/null 2>&1 || true
        else
            "$pgbin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    fi
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_PG_DIR"
    rm -rf "$BENCH_TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" bench/bench.py
