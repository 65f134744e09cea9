#!/usr/bin/env bash
# The first run: two successive builds of a real Debian 12 tree, the second with the
# security updates published since, encapsulated with history; then the plan and the
# diff. Needs root (debootstrap and chroot) and the network to Debian's mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fixtures.sh
cargo build --release --quiet
strata=$PWD/target/release/strata
minbase=${STRATA_TEST_CACHE:-/var/cache/strata-test}/bookworm-minbase
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Both trees drop apt's caches, as image builds do, so the diff shows the updates.
tidy() { chroot "$1" apt-get clean; rm -rf "$1"/var/lib/apt/lists/*; }

cp -a "$minbase" "$out/tree1"
cat >"$out/tree1/etc/apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
cp /etc/resolv.conf "$out/tree1/etc/resolv.conf"
tidy "$out/tree1"
echo "== build 1: Debian 12 minbase ($(du -sh "$out/tree1" | cut -f1)), a fresh plan"
"$strata" build --rootfs "$out/tree1" --allow-special-files --stream demo \
    --output "oci:$out/v1:v1" 2>/dev/null

echo "== build 2: the same tree after 'apt-get upgrade' from bookworm-updates and -security"
cp -a "$out/tree1" "$out/tree2"
chroot "$out/tree2" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$out/tree2" apt-get upgrade -y -qq >/dev/null
tidy "$out/tree2"
"$strata" build --rootfs "$out/tree2" --allow-special-files --stream demo \
    --output "oci:$out/v2:v2" --prior "oci:$out/v1:v1" --show-plan 2>/dev/null

bench=../shared/bench/fcos-stable-2019-2021.jsonl.gz
if [ -e "$bench" ]; then
    echo
    echo "== replaying 45 real Fedora CoreOS stable builds against the baselines (64 layers)"
    "$strata" bench replay --history "$bench" -n 64 --strategy all 2>/dev/null
fi
