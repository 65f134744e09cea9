#!/usr/bin/env bash
# Makes a stream of real Debian trees for `strata bench trees`, once, and caches it:
#   $CACHE/sequence/0-base        the bookworm minbase, apt pointed at -updates and -security
#   $CACHE/sequence/1-security    'apt-get upgrade': the published security updates
#   $CACHE/sequence/2-added       new packages (curl, less, ca-certificates and their deps)
#   $CACHE/sequence/3-removed     'less' purged, and config edits (an edited conffile, a new file)
#   $CACHE/sequence/4-unchanged   the same tree again: nothing changed
#   $CACHE/sequence/5-larger      a larger set: python3 and vim
#   $CACHE/sequence/6-trixie      a release upgrade to Debian 13 (a mass change)
# Every tree is cleaned as image builds clean (apt-get clean, no package lists).
# Needs root (chroot) and Debian's mirror. Prints the trees, oldest first.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${STRATA_TEST_CACHE:-/var/cache/strata-test}
SEQ=$CACHE/sequence
MINBASE=$CACHE/bookworm-minbase
scripts/fixtures.sh

TREES=$SEQ
# shellcheck source=scripts/lib/debian-trees.sh
. scripts/lib/debian-trees.sh

base() { sources "$1" bookworm; }
security() { chroot "$1" apt-get update -qq; apt_in "$1" upgrade; }
added() { chroot "$1" apt-get update -qq; apt_in "$1" install --no-install-recommends curl less ca-certificates; }
removed() {
    apt_in "$1" purge less
    echo "export HISTSIZE=5000" >>"$1/etc/bash.bashrc"
    echo "strata-test" >"$1/etc/hostname"
    printf '[Journal]\nStorage=volatile\n' >"$1/etc/strata-site.conf"
}
unchanged() { :; }
larger() { chroot "$1" apt-get update -qq; apt_in "$1" install --no-install-recommends python3 vim; }
trixie() {
    sources "$1" trixie
    chroot "$1" apt-get update -qq
    apt_in "$1" full-upgrade
}

mkdir -p "$SEQ"
make_tree 0-base "$MINBASE" base
make_tree 1-security "$SEQ/0-base" security
make_tree 2-added "$SEQ/1-security" added
make_tree 3-removed "$SEQ/2-added" removed
make_tree 4-unchanged "$SEQ/3-removed" unchanged
make_tree 5-larger "$SEQ/4-unchanged" larger
make_tree 6-trixie "$SEQ/5-larger" trixie
for t in 0-base 1-security 2-added 3-removed 4-unchanged 5-larger 6-trixie; do
    echo "$SEQ/$t"
done
