#!/bin/sh
# Container entry point. `serve ...` first applies pending migrations
# (`parley migrate`, idempotent, serialized by an advisory lock, retried
# while the database is still starting), then execs `parley serve ...` so
# that parley itself receives SIGTERM. Any other command (`migrate`,
# `migrate status`, `export`, `erase`, `version`, `--help`) is passed to
# parley unchanged.
#   PARLEY_MIGRATE_ON_START=0   skip the migration (Kubernetes: a Job does it)
#   PARLEY_MIGRATE_TRIES=N      attempts before giving up (default 10, 3 s apart)
set -eu

PARLEY=${PARLEY_BIN:-/usr/local/bin/parley}

migrate() {
    tries=${PARLEY_MIGRATE_TRIES:-10}
    n=1
    while ! "$PARLEY" migrate; do
        if [ "$n" -ge "$tries" ]; then
            echo "entrypoint: parley migrate failed $n times; giving up" >&2
            return 1
        fi
        echo "entrypoint: parley migrate failed (attempt $n of $tries); retrying in 3 s" >&2
        n=$((n + 1))
        sleep 3
    done
}

[ "$#" -gt 0 ] || set -- serve
if [ "$1" = serve ] && [ "${PARLEY_MIGRATE_ON_START:-1}" != 0 ]; then
    migrate
fi
exec "$PARLEY" "$@"
