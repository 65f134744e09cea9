# shellcheck shell=bash
# A real single-node cluster beside the test control plane (sourced by
# scripts/control-plane.sh): containerd 1.6 and runc from Debian, kubelet,
# kube-scheduler, kube-controller-manager and kube-proxy built from the same Debian
# Kubernetes source as the apiserver, and a CNI bridge with host-local addresses.
#
# Traffic stays on this machine: the apiserver and the kubelet listen on the test
# bridge's own address, pods get addresses on that bridge, and kube-proxy routes the
# `kubernetes` Service to the apiserver. One node cluster runs at a time: the bridge,
# its subnet and kube-proxy's iptables rules are the machine's.

NODE_NAME=strata-node
NODE_BRIDGE=strata0
NODE_ADDRESS=10.88.0.1
NODE_SUBNET=10.88.0.0/16
SERVICE_RANGE=10.96.0.0/16
SERVICE_IP=10.96.0.1
PAUSE_IMAGE=strata.test/pause:3.2

# The bridge exists before the apiserver starts, so that it can listen there.
node_bridge() {
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
    # `replace` is idempotent; `show | grep -q` is not safe under pipefail, where
    # grep's early exit can kill `ip` with SIGPIPE and fail the test.
    ip addr replace "$NODE_ADDRESS/16" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
    # Pod-to-Service traffic crosses the bridge; kube-proxy's rules must see it.
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
}

# A CA, and the apiserver's serving certificate for every name pods use for it.
node_certs() {
    local dir=$1 pki=$1/pki
    mkdir -p "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=strata-test-ca \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
        "$SERVICE_IP" "$NODE_ADDRESS" >"$pki/san.ext"
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
    # The apiserver's identity towards the kubelet (logs, exec).
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
        -keyout "$pki/kubelet-client.key" -out "$pki/kubelet-client.csr" 2>/dev/null
    openssl x509 -req -in "$pki/kubelet-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 2 -out "$pki/kubelet-client.crt" 2>/dev/null
}

# The apiserver's flags on a cluster with a node.
node_apiserver_flags() {
    local pki=$1/pki
    printf '%s\n' --advertise-address "$NODE_ADDRESS" --endpoint-reconciler-type lease \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --kubelet-preferred-address-types InternalIP \
        --kubelet-client-certificate "$pki/kubelet-client.crt" \
        --kubelet-client-key "$pki/kubelet-client.key"
}

# One token per component, each its own identity (RBAC's bootstrap roles bind them).
node_tokens() {
    local dir=$1 who
    for who in "system:node:$NODE_NAME,system:nodes" "system:kube-scheduler," \
        "system:kube-controller-manager," "system:kube-proxy,"; do
        local user=${who%%,*} group=${who#*,}
        echo "$(openssl rand -hex 16),$user,$user${group:+,$group}" >>"$dir/tokens.csv"
    done
}

# kubeconfig of the component whose user is $2.
node_kubeconfig() {
    local dir=$1 user=$2 file=$3 token
    token=$(awk -F, -v u="$user" '$2 == u { print $1 }' "$dir/tokens.csv")
    # shellcheck disable=SC1091
    . "$dir/state"
    kubeconfig "$file" "$API_PORT" "$user" "$token" "$API_HOST"
}

# The sandbox image, built by Strata from Kubernetes' own pause.c, into containerd.
node_pause_image() {
    local dir=$1 strata=${STRATA:-strata}
    mkdir -p "$dir/pause-root"
    gcc -O2 -static -o "$dir/pause-root/pause" "$K8S_BIN/pause.c"
    SOURCE_DATE_EPOCH=0 "$strata" build --rootfs "$dir/pause-root" --entrypoint '["/pause"]' \
        --user 65535:65535 -n 2 --output "oci-archive:$dir/pause.tar:3.2" >/dev/null 2>&1
    ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import \
        --base-name "${PAUSE_IMAGE%:*}" "$dir/pause.tar" >/dev/null
}

node_containerd() {
    local dir=$1 c=$1/containerd
    mkdir -p "$c/certs.d" "$dir/cni"
    cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  # Lowering a score needs CAP_SYS_RESOURCE, which this machine's root lacks.
  restrict_oom_score_adj = true
  sandbox_image = "$PAUSE_IMAGE"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
EOF
    cat >"$dir/cni/10-strata.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "strata-test", "plugins": [
  {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam",
            "ranges": [[{"subnet": "$NODE_SUBNET", "gateway": "$NODE_ADDRESS"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}
]}
EOF
    containerd --config "$c/config.toml" >>"$dir/containerd.log" 2>&1 &
    echo $! >"$dir/containerd.pid"
    for _ in $(seq 1 100); do
        [ -S "$c/containerd.sock" ] && return 0
        sleep 0.1
    done
    echo "control-plane: containerd did not start; see $dir/containerd.log" >&2
    return 1
}

# Lets containerd pull from a plain-HTTP registry on loopback (the test registry).
node_allow_registry() {
    local dir=$1 host=$2
    [[ $host =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || { echo "control-plane: $host is not HOST:PORT" >&2; return 2; }
    mkdir -p "$dir/containerd/certs.d/$host"
    printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
        "$host" "$host" >"$dir/containerd/certs.d/$host/hosts.toml"
}

node_kubelet() {
    local dir=$1 k=$1/kubelet
    mkdir -p "$k"
    node_kubeconfig "$dir" "system:node:$NODE_NAME" "$k/kubeconfig"
    "$K8S_BIN/kubelet" --kubeconfig "$k/kubeconfig" --hostname-override "$NODE_NAME" \
        --container-runtime remote \
        --container-runtime-endpoint "unix://$dir/containerd/containerd.sock" \
        --cgroup-driver cgroupfs --fail-swap-on=false --root-dir "$k/root" \
        --cert-dir "$k/pki" --node-ip "$NODE_ADDRESS" --address "$NODE_ADDRESS" \
        --read-only-port 0 --healthz-port 0 --anonymous-auth=false \
        --client-ca-file "$dir/pki/ca.crt" --authorization-mode Webhook \
        --authentication-token-webhook \
        --eviction-hard 'memory.available<64Mi,nodefs.available<1%,imagefs.available<1%' \
        --image-gc-high-threshold 100 --resolv-conf /etc/resolv.conf \
        >>"$dir/kubelet.log" 2>&1 &
    echo $! >"$dir/kubelet.pid"
}

node_scheduler() {
    local dir=$1
    node_kubeconfig "$dir" system:kube-scheduler "$dir/scheduler.kubeconfig"
    "$K8S_BIN/kube-scheduler" --kubeconfig "$dir/scheduler.kubeconfig" \
        --leader-elect=false --port 0 --secure-port 0 >>"$dir/scheduler.log" 2>&1 &
    echo $! >"$dir/scheduler.pid"
}

node_controller_manager() {
    local dir=$1
    node_kubeconfig "$dir" system:kube-controller-manager "$dir/controller-manager.kubeconfig"
    "$K8S_BIN/kube-controller-manager" --kubeconfig "$dir/controller-manager.kubeconfig" \
        --leader-elect=false --port 0 --secure-port 0 --use-service-account-credentials \
        --service-account-private-key-file "$dir/sa.key" --root-ca-file "$dir/pki/ca.crt" \
        >>"$dir/controller-manager.log" 2>&1 &
    echo $! >"$dir/controller-manager.pid"
}

node_proxy() {
    local dir=$1
    node_kubeconfig "$dir" system:kube-proxy "$dir/proxy.kubeconfig"
    "$K8S_BIN/kube-proxy" --kubeconfig "$dir/proxy.kubeconfig" --proxy-mode iptables \
        --hostname-override "$NODE_NAME" --cluster-cidr "$NODE_SUBNET" \
        --bind-address "$NODE_ADDRESS" --healthz-bind-address "127.0.0.1:$(free_port)" \
        --metrics-bind-address "127.0.0.1:$(free_port)" --conntrack-max-per-core 0 \
        >>"$dir/proxy.log" 2>&1 &
    echo $! >"$dir/proxy.pid"
}

# Starts the node's parts once the apiserver is up, and waits until the node is Ready.
node_start() {
    local dir=$1
    node_containerd "$dir"
    node_pause_image "$dir"
    node_controller_manager "$dir"
    node_scheduler "$dir"
    node_proxy "$dir"
    node_kubelet "$dir"
    # shellcheck disable=SC1091
    . "$dir/state"
    for _ in $(seq 1 240); do
        if curl -fsk -H "Authorization: Bearer $TOKEN" \
            "https://$API_HOST:$API_PORT/api/v1/nodes/$NODE_NAME" 2>/dev/null | python3 -c '
import json, sys
conditions = json.load(sys.stdin)["status"].get("conditions", [])
sys.exit(not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions))' 2>/dev/null; then
            echo "control-plane: node $NODE_NAME is Ready" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "control-plane: node $NODE_NAME did not become Ready; see $dir/kubelet.log" >&2
    tail -20 "$dir/kubelet.log" >&2
    return 1
}

# Stops the node's parts, removes its pods' containers and mounts, and its rules.
node_stop() {
    local dir=$1 part
    grep -qx NODE=1 "$dir/state" 2>/dev/null || return 0
    for part in kubelet proxy scheduler controller-manager; do
        stop_part "$dir" "$part"
    done
    if [ -e "$dir/containerd.pid" ]; then
        local sock=$dir/containerd/containerd.sock
        ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null |
            xargs -r -n1 ctr --address "$sock" -n k8s.io tasks kill -s KILL 2>/dev/null || true
        stop_part "$dir" containerd
        # Each pod's shim outlives containerd; its containers go with it.
        pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
    fi
    # Mounts the kubelet and containerd leave (volumes, overlay rootfs, netns).
    grep -F " $dir/" /proc/mounts | awk '{ print $2 }' | sort -r |
        xargs -r -n1 umount -l 2>/dev/null || true
    iptables-save | grep -v -e KUBE- -e 'CNI-' | iptables-restore 2>/dev/null || true
    ip link del "$NODE_BRIDGE" 2>/dev/null || true
}
