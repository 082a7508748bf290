#!/bin/sh
# Install every Debian package Parley's build, run and tests need.
# Idempotent and quiet when everything is present; apt-get as root, sudo
# otherwise.
set -eu
PKGS="build-essential pkg-config clang libclang-rt-14-dev
libmicrohttpd-dev libcurl4-openssl-dev libpq-dev libcjson-dev libssl-dev
libtcmalloc-minimal4
libcmocka-dev postgresql postgresql-client python3 python3-pytest
python3-psycopg2 wrk clang-format clang-tidy cppcheck curl ca-certificates
prometheus"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The Debian package starts a system cluster we do not use; Parley runs its
# own under ./var (make run) or a temporary directory (tests).
