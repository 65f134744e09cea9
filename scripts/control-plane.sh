#!/usr/bin/env bash
# The real test control plane: etcd and a kube-apiserver 1.20.2 built from Debian
# bookworm's `kubernetes` source package, on loopback; with --node, a real node beside
# it (scripts/lib/node.sh: containerd and runc, kubelet, scheduler, controller-manager,
# kube-proxy, built from the same source), on loopback and a test bridge.
#
#   scripts/control-plane.sh build         build (once) and cache the Kubernetes binaries
#   scripts/control-plane.sh start DIR [--node]
#                                          start etcd + apiserver with state in DIR (and
#                                          the node); writes DIR/kubeconfig (admin) and
#                                          DIR/env; without --node, ServiceAccount tokens
#                                          come from TokenRequest only
#   scripts/control-plane.sh stop DIR      stop everything started in DIR
#   scripts/control-plane.sh allow-registry DIR HOST:PORT
#                                          let the node pull from a plain-HTTP registry
#   scripts/control-plane.sh restart-kubelet DIR
#                                          stop the node's kubelet and start it again
#   scripts/control-plane.sh stop-apiserver DIR | start-apiserver DIR | restart-etcd DIR
#                                          one part away and back (the fault tests)
set -euo pipefail

CACHE=${STRATA_TEST_CACHE:-/var/cache/strata-test}
K8S_VERSION=1.20.2
APISERVER=$CACHE/kube-apiserver-$K8S_VERSION
# The node's binaries (the apiserver keeps its older cache path).
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION
NODE_BINARIES="kubelet kube-scheduler kube-controller-manager kube-proxy"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/node.sh
. "$HERE/lib/node.sh"

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

# The binaries still missing from the cache, as make targets.
missing_targets() {
    [ -x "$APISERVER" ] || printf 'cmd/kube-apiserver '
    for b in $NODE_BINARIES; do
        [ -x "$K8S_BIN/$b" ] || printf 'cmd/%s ' "$b"
    done
}

build() {
    local targets
    targets=$(missing_targets)
    [ -n "$targets" ] || return 0
    need_root
    install_tools
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    echo "control-plane: building ${targets}$K8S_VERSION from Debian's source (about 7 minutes for the apiserver, 8 to 11 for the node's four on 2 cores)" >&2
    (cd "$work" && apt-get source --download-only kubernetes >/dev/null 2>&1)
    local orig=("$work"/kubernetes_*.orig.tar.*)
    [[ -f ${orig[0]} ]] || { echo "control-plane: apt-get source kubernetes fetched no orig tarball" >&2; return 1; }
    mkdir "$work/src"
    tar -xf "${orig[0]}" -C "$work/src" --strip-components=1
    # reflect2 1.0.1 crashes the apiserver on the first custom-resource watch under Go >= 1.18.
    rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$work/src/vendor/github.com/modern-go/reflect2"
    rm -f "$work/src/vendor/github.com/modern-go/reflect2/go.mod"
    mkdir -p "$work/src/.go/src/k8s.io"
    ln -s ../../.. "$work/src/.go/src/k8s.io/kubernetes"
    (cd "$work/src/.go/src/k8s.io/kubernetes" &&
        GOPATH="$work/src/.go" GOFLAGS=-mod=vendor CGO_ENABLED=0 make WHAT="${targets% }" >"$work/build.log" 2>&1) || {
        tail -30 "$work/build.log" >&2
        exit 1
    }
    local out
    out="$work/src/_output/local/bin/linux/$(go env GOARCH)"
    mkdir -p "$CACHE" "$K8S_BIN"
    # pause.c is the sandbox's one process; the node builds its image from it.
    install -m 0644 "$work/src/build/pause/linux/pause.c" "$K8S_BIN/pause.c.tmp"
    mv "$K8S_BIN/pause.c.tmp" "$K8S_BIN/pause.c"
    for b in $NODE_BINARIES; do
        [ -x "$out/$b" ] || continue
        install -m 0755 "$out/$b" "$K8S_BIN/$b.tmp"
        mv "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
    done
    if [ -x "$out/kube-apiserver" ]; then
        install -m 0755 "$out/kube-apiserver" "$APISERVER.tmp"
        mv "$APISERVER.tmp" "$APISERVER"
    fi
}

# free_ports N: N distinct free loopback ports outside the kernel's ephemeral range.
# A port from the ephemeral range is free only until some process connects out: the
# apiserver's own etcd clients (or another test's) can take it as their local port
# between this pick and the bind, and the apiserver then fails with "address already in
# use". Outgoing connections never take a port outside that range; starting at 20000
# keeps clear of the node's own fixed ports (kubelet 10250, kube-proxy 10256).
free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
pool = [p for p in range(20000, 65536) if not low <= p <= high]
random.shuffle(pool)
picked = []
for port in pool:
    if len(picked) == int(sys.argv[1]):
        break
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    picked.append(port)
if len(picked) < int(sys.argv[1]):
    sys.exit("control-plane: no free port outside the ephemeral range")
print(*picked)
PY
}
free_port() { free_ports 1; }

# kubeconfig FILE PORT USER TOKEN [HOST]
kubeconfig() {
    cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://${5:-127.0.0.1}:$2
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

# Ports and the admin token live in DIR/state, so one part can be stopped and started
# again in place (the fault tests take the apiserver away, or restart etcd).
start() {
    local dir=$1 node=${2:-}
    case "$node" in "" | --node) ;; *) echo "control-plane: start DIR [--node], not $node" >&2; exit 2 ;; esac
    build
    mkdir -p "$dir/etcd" "$dir/certs"
    local token host=127.0.0.1
    token=$(openssl rand -hex 16)
    if [ -n "$node" ]; then
        host=$NODE_ADDRESS
        node_bridge
        node_certs "$dir"
    fi
    local ports
    ports=$(free_ports 3)
    read -ra ports <<<"$ports"
    printf 'ETCD_PORT=%s\nPEER_PORT=%s\nAPI_PORT=%s\nTOKEN=%s\nAPI_HOST=%s\nNODE=%s\n' \
        "${ports[0]}" "${ports[1]}" "${ports[2]}" "$token" "$host" "${node:+1}" >"$dir/state"
    echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"
    [ -z "$node" ] || node_tokens "$dir"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    start_etcd "$dir"
    start_apiserver "$dir"
    # shellcheck disable=SC1091
    . "$dir/state"
    kubeconfig "$dir/kubeconfig" "$API_PORT" admin "$TOKEN" "$API_HOST"
    echo "KUBECONFIG=$dir/kubeconfig" >"$dir/env"
    if [ -n "$node" ] && ! node_start "$dir"; then
        stop "$dir"
        exit 1
    fi
}

start_etcd() {
    local dir=$1
    # shellcheck disable=SC1091
    . "$dir/state"
    etcd --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-cluster "default=http://127.0.0.1:$PEER_PORT" >>"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
}

# Starts the apiserver and waits until it is ready.
start_apiserver() {
    local dir=$1
    # shellcheck disable=SC1091
    . "$dir/state"
    local mode=(--disable-admission-plugins ServiceAccount --authorization-mode RBAC
        --endpoint-reconciler-type none)
    # On a cluster with a node, the controller-manager's token controller makes the
    # ServiceAccount tokens that pods mount.
    [ -z "$NODE" ] || mapfile -t mode < <(node_apiserver_flags "$dir")
    "$APISERVER" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address "$API_HOST" --secure-port "$API_PORT" --cert-dir "$dir/certs" \
        --token-auth-file "$dir/tokens.csv" \
        --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-cluster-ip-range "$SERVICE_RANGE" "${mode[@]}" >>"$dir/apiserver.log" 2>&1 &
    echo $! >"$dir/apiserver.pid"
    for _ in $(seq 1 120); do
        if curl -fsk -H "Authorization: Bearer $TOKEN" "https://$API_HOST:$API_PORT/readyz" >/dev/null 2>&1; then
            echo "control-plane: ready at https://$API_HOST:$API_PORT (KUBECONFIG=$dir/kubeconfig)" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "control-plane: the apiserver did not become ready; see $dir/apiserver.log" >&2
    tail -20 "$dir/apiserver.log" >&2
    stop "$dir"
    exit 1
}

# stop_part DIR NAME: stops one part and waits until it has gone.
stop_part() {
    local pidfile=$1/$2.pid pid
    [ -e "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    node_stop "$1"
    stop_part "$1" apiserver
    stop_part "$1" etcd
}

case "${1:-}" in
    build) build ;;
    start) start "${2:?usage: control-plane.sh start DIR [--node]}" "${3:-}" ;;
    stop) stop "${2:?usage: control-plane.sh stop DIR}" ;;
    allow-registry) node_allow_registry "${2:?usage: control-plane.sh allow-registry DIR HOST:PORT}" "${3:?usage: control-plane.sh allow-registry DIR HOST:PORT}" ;;
    stop-apiserver) stop_part "${2:?usage: control-plane.sh stop-apiserver DIR}" apiserver ;;
    start-apiserver) start_apiserver "${2:?usage: control-plane.sh start-apiserver DIR}" ;;
    restart-kubelet)
        stop_part "${2:?usage: control-plane.sh restart-kubelet DIR}" kubelet
        node_kubelet "$2"
        ;;
    restart-etcd)
        stop_part "${2:?usage: control-plane.sh restart-etcd DIR}" etcd
        start_etcd "$2"
        ;;
    *) echo "usage: $0 build | start DIR [--node] | stop DIR | allow-registry DIR HOST:PORT | stop-apiserver DIR | start-apiserver DIR | restart-etcd DIR | restart-kubelet DIR" >&2; exit 2 ;;
esac
