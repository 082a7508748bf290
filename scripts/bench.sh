#!/usr/bin/env bash
# `make bench`: the benchmark suite (docs/PERFORMANCE.md). The work is done by
# bench/bench.py; this wrapper makes sure the bench PostgreSQL cluster is
# stopped and removed however the run ends.
#   scripts/bench.sh                 full run (3 runs per scenario, ~10 min)
#   BENCH_QUICK=1 scripts/bench.sh   1-run smoke version (~2 min)
# Other knobs (environment): BENCH_RUNS, BENCH_DURATION, BENCH_CONNECTIONS,
# BENCH_USERS, BENCH_PG_PORT, BENCH_PG_DIR, BENCH_KEEP=1, BENCH_UPDATE_DOC=0.
set -euo pipefail
cd "$(dirname "$0")/.."

export BENCH_PG_DIR=${BENCH_PG_DIR:-$PWD/var/bench-pg}

cleanup() {
    local pgbin
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$pgbin" ] && [ -f "$BENCH_PG_DIR/data/postmaster.pid" ]; then
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- "$pgbin/pg_ctl" -D "$BENCH_PG_DIR/data" -m immediate \
                -w stop >/dev/null 2>&1 || true
        else
            "$pgbin/pg_ctl" -D "$BENCH_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    fi
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_PG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" bench/bench.py
