#!/usr/bin/env bash
# make lint: clang-format check, cppcheck, clang-tidy and a banned-function
# grep over the project's C sources. Fails on any finding.
set -uo pipefail
cd "$(dirname "$0")/.."
fail=0
SRCS=$(git ls-files '*.c' '*.h' | grep -v '^tests/fuzz/')
CSRCS=$(git ls-files 'core/*.c' 'gateway/*.c' 'adapters/*.c' 'inference/*.c' 'analytics/*.c')

echo "lint: banned functions" >&2
if grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|ctime|localtime|gmtime|alloca)\s*\(' $CSRCS; then
    echo "lint: banned function used (see STYLE.md)" >&2
    fail=1
fi

echo "lint: cppcheck" >&2
cppcheck --quiet --enable=warning,performance,portability --std=c11 \
    --library=posix,gnu,libcurl,openssl --suppress=missingIncludeSystem \
    --inline-suppr --error-exitcode=1 -I. -D_POSIX_C_SOURCE=200809L \
    core gateway inference adapters analytics || fail=1

echo "lint: clang-tidy" >&2
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I. $(pkg-config --cflags libmicrohttpd libcurl libpq libcjson openssl)"
# shellcheck disable=SC2086
# (clang-tidy exits non-zero on a finding: read its output, not its status)
tidy=$(clang-tidy --quiet $CSRCS -- $CFLAGS 2>/dev/null | grep -E 'warning:|error:')
[ -n "$tidy" ] && { echo "$tidy"; fail=1; }

echo "lint: clang-format" >&2
# shellcheck disable=SC2086
clang-format --dry-run -Werror $SRCS 2>/dev/null || {
    echo "lint: formatting differs (run make format)" >&2
    fail=1
}
[ $fail = 0 ] && echo "lint: clean" >&2
exit $fail
