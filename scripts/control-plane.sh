#!/usr/bin/env bash
# The real test control plane: etcd and a kube-apiserver 1.20.2 built from Debian
# bookworm's `kubernetes` source package, on loopback.
#
#   scripts/control-plane.sh build         build (once) and cache the apiserver binary
#   scripts/control-plane.sh start DIR     start etcd + apiserver with state in DIR;
#                                          writes DIR/kubeconfig (admin) and DIR/env;
#                                          ServiceAccount tokens come from TokenRequest
#   scripts/control-plane.sh stop DIR      stop them
set -euo pipefail

CACHE=${STRATA_TEST_CACHE:-/var/cache/strata-test}
K8S_VERSION=1.20.2
APISERVER=$CACHE/kube-apiserver-$K8S_VERSION

need_root() { [ "$(id -u)" -eq 0 ] || { echo "control-plane: run as root (apt and /var/cache)" >&2; exit 1; }; }

install_tools() {
    local src=/etc/apt/sources.list.d/strata-deb-src.sources
    if [ ! -e "$src" ]; then
        cat >"$src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq
    fi
    # kubectl is optional (Debian's kubernetes-client 1.20 matches the apiserver, but
    # conflicts with other kubectl packages some machines carry).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        golang-go etcd-server rsync golang-github-modern-go-reflect2-dev openssl curl >/dev/null
}

build() {
    [ -x "$APISERVER" ] && return 0
    need_root
    install_tools
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    echo "control-plane: building kube-apiserver $K8S_VERSION from Debian's source (about 7 minutes)" >&2
    (cd "$work" && apt-get source --download-only kubernetes >/dev/null 2>&1)
    local orig
    orig=$(ls "$work"/kubernetes_*.orig.tar.* | head -n1)
    mkdir "$work/src"
    tar -xf "$orig" -C "$work/src" --strip-components=1
    # reflect2 1.0.1 crashes the apiserver on the first custom-resource watch under Go >= 1.18.
    rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$work/src/vendor/github.com/modern-go/reflect2"
    rm -f "$work/src/vendor/github.com/modern-go/reflect2/go.mod"
    mkdir -p "$work/src/.go/src/k8s.io"
    ln -s ../../.. "$work/src/.go/src/k8s.io/kubernetes"
    (cd "$work/src/.go/src/k8s.io/kubernetes" &&
        GOPATH="$work/src/.go" GOFLAGS=-mod=vendor CGO_ENABLED=0 make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1) || {
        tail -30 "$work/build.log" >&2
        exit 1
    }
    mkdir -p "$CACHE"
    install -m 0755 "$work/src/_output/local/bin/linux/$(go env GOARCH)/kube-apiserver" "$APISERVER.tmp"
    mv "$APISERVER.tmp" "$APISERVER"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# kubeconfig FILE PORT USER TOKEN
kubeconfig() {
    cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$2
    insecure-skip-tls-verify: true
users:
- name: $3
  user:
    token: $4
contexts:
- name: test
  context: {cluster: test, user: $3}
current-context: test
KC
}

start() {
    local dir=$1
    build
    mkdir -p "$dir/etcd" "$dir/certs"
    local etcd_port peer_port api_port token
    etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
    token=$(openssl rand -hex 16)
    echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    etcd --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    "$APISERVER" --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --secure-port "$api_port" --cert-dir "$dir/certs" \
        --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
        --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
        --disable-admission-plugins ServiceAccount >"$dir/apiserver.log" 2>&1 &
    echo $! >"$dir/apiserver.pid"
    kubeconfig "$dir/kubeconfig" "$api_port" admin "$token"
    echo "KUBECONFIG=$dir/kubeconfig" >"$dir/env"
    for _ in $(seq 1 120); do
        if curl -fsk -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
            echo "control-plane: ready at https://127.0.0.1:$api_port (KUBECONFIG=$dir/kubeconfig)" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "control-plane: the apiserver did not become ready; see $dir/apiserver.log" >&2
    tail -20 "$dir/apiserver.log" >&2
    stop "$dir"
    exit 1
}

stop() {
    local dir=$1
    for p in apiserver etcd; do
        [ -e "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    done
}

case "${1:-}" in
    build) build ;;
    start) start "${2:?usage: control-plane.sh start DIR}" ;;
    stop) stop "${2:?usage: control-plane.sh stop DIR}" ;;
    *) echo "usage: $0 build | start DIR | stop DIR" >&2; exit 2 ;;
esac
