#!/usr/bin/env bash
# Installs what Strata's build and tests need on a fresh Debian 12 machine.
# Idempotent: it installs only what is missing.
set -euo pipefail

# Debian packages the build and the tests need.
# etcd-server, openssl and curl run the test control plane (scripts/control-plane.sh).
APT_PACKAGES=(build-essential pkg-config libssl-dev libzstd-dev libsqlite3-dev debootstrap tar rpm skopeo docker-registry pigz zstd etcd-server openssl curl)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
