# Helpers for scripts that make real Debian trees with apt and cache them: sourced by
# scripts/tree-sequence.sh and scripts/desktop-tree.sh. Trees are made in $TREES.

# Cleans a tree as image builds clean: no .deb cache, no package lists.
tidy() { chroot "$1" apt-get clean; rm -rf "$1"/var/lib/apt/lists/*; }

# apt-get in the tree, keeping existing config files.
apt_in() {
    local tree=$1
    shift
    DEBIAN_FRONTEND=noninteractive chroot "$tree" apt-get -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# Points the tree's apt at a suite, its updates and its security updates.
sources() {
    cat >"$1/etc/apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian $2 main
deb http://deb.debian.org/debian $2-updates main
deb http://deb.debian.org/debian-security $2-security main
SOURCES
}

# make_tree NAME FROM STEP: copies FROM to $TREES/NAME and runs STEP on the copy,
# unless that tree is already complete. A tree is moved into place only when done.
make_tree() {
    local name=$1 from=$2 step=$3
    [ -e "$TREES/$name.complete" ] && return
    echo "${0##*/}: making $name" >&2
    rm -rf "$TREES/$name.tmp"
    cp -a "$from" "$TREES/$name.tmp"
    cp /etc/resolv.conf "$TREES/$name.tmp/etc/resolv.conf"
    "$step" "$TREES/$name.tmp"
    tidy "$TREES/$name.tmp"
    : >"$TREES/$name.tmp/etc/resolv.conf"
    rm -rf "${TREES:?}/$name"
    mv "$TREES/$name.tmp" "$TREES/$name"
    touch "$TREES/$name.complete"
}
