#!/usr/bin/env bash
# `make run`: start (creating once) the local PostgreSQL under ./var when
# PARLEY_DATABASE_URL is unset, apply migrations, run `parley serve` in the
# foreground. Ctrl-C stops Parley; `make stop` stops the local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PARLEY_DATABASE_URL:-}" ]; then
    scripts/pg-local.sh start
    PARLEY_DATABASE_URL=$(scripts/pg-local.sh url)
    export PARLEY_DATABASE_URL
fi
./parley migrate
echo "parley: serving on ${PARLEY_LISTEN:-127.0.0.1:8080} (Ctrl-C to stop; 'make stop' stops the local database)" >&2
exec ./parley serve "$@"
