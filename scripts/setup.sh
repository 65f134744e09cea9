#!/usr/bin/env bash
# Installs what Strata's build and tests need on a fresh Debian 12 machine.
# Idempotent: it installs only what is missing.
set -euo pipefail

# Debian packages the build and the tests need.
# etcd-server, openssl and curl run the test control plane (scripts/control-plane.sh);
# python3-venv holds Helm's engine for rendering the chart in tests; jq is what the
# Tekton step scripts use; ostree and libostree-dev make and read ostree repositories,
# and gnupg signs the commits the pull tests verify; containerd, runc, the CNI plugins,
# iptables and iproute2 run the test cluster's real node (scripts/lib/node.sh).
APT_PACKAGES=(build-essential pkg-config libssl-dev libzstd-dev libsqlite3-dev debootstrap tar rpm pacman-package-manager skopeo docker-registry pigz zstd etcd-server openssl curl python3-venv jq ostree libostree-dev umoci gnupg containerd runc containernetworking-plugins iptables iproute2)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
done
# The Tekton job task's script runs kubectl. Debian's kubernetes-client (1.20) matches
# the test apiserver, but a machine may already carry another kubectl package.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
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

# Helm's engine, to render charts/strata in the tests: the helm-python-sdk wheel embeds
# Helm's Go SDK (no helm binary is packaged for Debian 12).
HELM_VENV=${STRATA_TEST_CACHE:-/var/cache/strata-test}/helm-venv
HELM_SDK=helm-python-sdk==0.2.2
if ! "$HELM_VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
    echo "setup: installing $HELM_SDK into $HELM_VENV" >&2
    python3 -m venv "$HELM_VENV"
    "$HELM_VENV/bin/pip" install --quiet "$HELM_SDK"
fi
