#!/usr/bin/env bash
# Makes a desktop-sized Debian tree for `strata bench build`, once, and caches it:
#   $CACHE/desktop/bookworm-desktop   the bookworm minbase plus LibreOffice (Writer, Calc,
#                                     Impress), Firefox ESR, GIMP and TeX Live's recommended
#                                     LaTeX, without recommends: about 380 packages, 2 GB
# Real package counts and real binaries, cleaned as image builds clean. Needs root
# (chroot) and Debian's mirror (about 400 MB of packages). Prints the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${STRATA_TEST_CACHE:-/var/cache/strata-test}
MINBASE=$CACHE/bookworm-minbase
TREES=$CACHE/desktop
scripts/fixtures.sh
# shellcheck source=scripts/lib/debian-trees.sh
. scripts/lib/debian-trees.sh

desktop() {
    sources "$1" bookworm
    chroot "$1" apt-get update -qq
    apt_in "$1" install --no-install-recommends libreoffice-writer libreoffice-calc \
        libreoffice-impress firefox-esr gimp texlive-latex-recommended
}

mkdir -p "$TREES"
make_tree bookworm-desktop "$MINBASE" desktop
echo "$TREES/bookworm-desktop"
