#!/usr/bin/env bash
# Builds Strata's own runtime image the way a distribution builds an OS image, with
# Strata itself: a Debian bookworm minbase (debootstrap, cached), the runtime
# packages apt installs into it, the strata binary, then `strata build --rootfs`.
#
#   scripts/strata-image.sh OUTPUT [STRATA_BINARY] [-- EXTRA_BUILD_ARGS...]
#
#   OUTPUT          where the image goes, e.g. docker://127.0.0.1:5000/strata:test
#                   or oci:out/strata:test
#   STRATA_BINARY   the binary put in the image (default target/release/strata); it
#                   also builds the image
#
# Needs root (chroot, apt) and the Debian mirror.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
output=$1; shift
binary=target/release/strata
if [ $# -ge 1 ] && [ "$1" != -- ]; then binary=$1; shift; fi
[ "${1:-}" != -- ] || shift
[ -x "$binary" ] || { echo "strata-image: $binary is not an executable (cargo build --release)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "strata-image: run as root (chroot and apt)" >&2; exit 1; }

cache=${STRATA_TEST_CACHE:-/var/cache/strata-test}
minbase=$cache/bookworm-minbase
if [ ! -x "$minbase/usr/bin/apt-get" ]; then
    echo "strata-image: debootstrapping a bookworm minbase into $minbase (about 3 minutes)" >&2
    debootstrap --variant=minbase bookworm "$minbase" http://deb.debian.org/debian >/dev/null
fi

work=$(mktemp -d)
root=$work/root
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cp -a "$minbase" "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
echo "strata-image: installing the runtime packages" >&2
# skopeo serves the image proxy; the binary links libostree, sqlite and OpenSSL;
# kubectl and jq serve the Tekton job task (the same list as the Dockerfile's).
chroot "$root" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
    skopeo libostree-1-1 libsqlite3-0 libssl3 libzstd1 ca-certificates jq kubernetes-client >/dev/null
chroot "$root" apt-get clean
umount "$root/proc"
# A runtime makes /dev; debootstrap's device nodes stay out of the image.
rm -rf "$root/var/lib/apt/lists"/* "$root/etc/resolv.conf" "$root/dev"/*
install -m 0755 "$binary" "$root/usr/local/bin/strata"
mkdir -p "$root/work"
chown 65532:65532 "$root/work"

echo "strata-image: building $output" >&2
"$binary" build --rootfs "$root" --output "$output" \
    --entrypoint '["/usr/local/bin/strata"]' --cmd '["--help"]' \
    --user 65532:65532 --workdir /work \
    --env PATH=/usr/local/bin:/usr/bin:/bin --env TMPDIR=/work \
    --label org.opencontainers.image.title=strata \
    --label org.opencontainers.image.source=https://github.com/strata-dev/strata \
    "$@"
