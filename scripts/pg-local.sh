#!/usr/bin/env bash
# Local PostgreSQL cluster under ./var/pg for `make run` (and `make bench`).
#   scripts/pg-local.sh start|stop|status|url
# Runs the server as the unprivileged user `postgres` when invoked as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${PARLEY_PG_DATA:-$ROOT/var/pg}
PORT=${PARLEY_PG_PORT:-54329}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] || { echo "pg-local: PostgreSQL server binaries not found (run scripts/deps.sh)" >&2; exit 1; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url() { echo "postgresql://postgres@127.0.0.1:$PORT/parley"; }

start() {
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$DATA" "$(dirname "$DATA")" 2>/dev/null || true
    if [ ! -f "$DATA/PG_VERSION" ]; then
        echo "pg-local: creating cluster in $DATA" >&2
        as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 >/dev/null
    fi
    if ! as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
            -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
        echo "pg-local: started on 127.0.0.1:$PORT (log: $DATA/server.log)" >&2
    fi
    as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAtc \
        "SELECT 1 FROM pg_database WHERE datname = 'parley'" | grep -q 1 ||
        as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres parley
}

stop() {
    if [ -f "$DATA/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        echo "pg-local: stopped" >&2
    else
        echo "pg-local: not running" >&2
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) as_pg "$PGBIN/pg_ctl" -D "$DATA" status ;;
url) url ;;
*) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
