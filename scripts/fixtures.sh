#!/usr/bin/env bash
# Makes the real trees the tests use, once, and caches them:
#   /var/cache/strata-test/bookworm-minbase  a debootstrapped Debian 12 minbase
set -euo pipefail

CACHE=${STRATA_TEST_CACHE:-/var/cache/strata-test}
MINBASE=$CACHE/bookworm-minbase
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -e "$MINBASE/var/lib/dpkg/status" ]; then
    echo "fixtures: debootstrapping a bookworm minbase into $MINBASE (about a minute)" >&2
    mkdir -p "$CACHE"
    rm -rf "$MINBASE.tmp"
    debootstrap --variant=minbase bookworm "$MINBASE.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
        tail -20 "$CACHE/debootstrap.log" >&2
        exit 1
    }
    mv "$MINBASE.tmp" "$MINBASE"
fi
