#!/usr/bin/env bash
# The local cluster of `make cluster` (CONTRACT section 6b): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and the kubelet of one release, built from the official Go
# modules (tests/tools/controlplane pins the release; kubectl of the same release is built beside
# them); edge-node-1 a real node (the kubelet on containerd, runc and the CNI bridge: node.sh), the
# Nodes of tests/e2e/nodes.yaml labelled as a 2-GPU edge device; gpushare deployed from manifests/
# through an overlay, and either `gpushare serve` running locally in cluster mode with a token of the
# ServiceAccount of manifests/ (the overlay swaps the webhook's Service for its URL), or, with
# IN_CLUSTER=1, gpushare's Deployment running on edge-node-1 from its own image. Everything listens
# on 127.0.0.1 or on the node's pod bridge. Needs root for the node (docs/development.md).
#
#   cluster.sh build              build the binaries (Go's build cache makes rebuilds fast)
#   cluster.sh up                 start whatever is not running; idempotent. IN_CLUSTER=1 (with
#                                 GPUSHARE_IMAGE, GPUSHARE_IMAGE_ARCHIVE): gpushare's Deployment;
#                                 KWOK=0: no simulated edge-node-2
#   cluster.sh down               stop everything, undo what the node made, remove target/cluster
#   cluster.sh stop-webhook       stop gpushare (local serve, or the Deployment scaled to 0)
#   cluster.sh start-webhook      start it again and wait until it answers
#   cluster.sh stop-apiserver | start-apiserver
#   cluster.sh stop-kubelet | start-kubelet
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODULE=$ROOT/tests/tools/controlplane
DIR=$ROOT/target/cluster
PKI=$DIR/pki
GPUSHARE=${GPUSHARE:-$ROOT/target/debug/gpushare}
NODES=$ROOT/tests/e2e/nodes.yaml
# What `build` makes: the control plane, the real node's kubelet, and kubectl.
TOOLS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# The k8s.io/kubernetes requirement of a control-plane module file, e.g. v1.36.3.
modfile_version() { awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' "$1"; }
# The pinned default release (./go.mod); KUBE_VERSION picks one of releases/<x.y.z>/go.mod instead
# (tests/tools/controlplane/pin-release.sh makes them).
DEFAULT_RELEASE=$(modfile_version "$MODULE/go.mod")
DEFAULT_RELEASE=${DEFAULT_RELEASE#v}

known_releases() {
  local mod releases=("$DEFAULT_RELEASE")
  for mod in "$MODULE"/releases/*/go.mod; do
    [[ -f $mod ]] && releases+=("$(basename "$(dirname "$mod")")")
  done
  printf '%s\n' "${releases[@]}" | sort -t. -k1,1n -k2,2n -k3,3n | tr '\n' ' '
}

# The release of this run: KUBE_VERSION (x.y.z or vx.y.z); unset, the one target/cluster runs
# (recorded in target/cluster/release), else the pinned default. Sets RELEASE, RELEASE_MINOR,
# MODFILE and BIN: the default builds from ./go.mod into target/controlplane/bin as always; another
# release from releases/<x.y.z>/go.mod into target/controlplane/<x.y.z>/bin.
select_release() {
  local want=${KUBE_VERSION:-}
  want=${want#v}
  if [[ -z $want && -f $DIR/release ]]; then want=$(cat "$DIR/release"); fi
  if [[ -z $want || $want == "$DEFAULT_RELEASE" ]]; then
    RELEASE=$DEFAULT_RELEASE
    MODFILE=$MODULE/go.mod
    BIN=$ROOT/target/controlplane/bin
  elif [[ $want =~ ^1\.[0-9]+\.[0-9]+$ && -f $MODULE/releases/$want/go.mod ]]; then
    RELEASE=$want
    MODFILE=$MODULE/releases/$want/go.mod
    BIN=$ROOT/target/controlplane/$want/bin
  else
    die "KUBE_VERSION=$want is not a release this repository builds. Releases known to work: $(known_releases)(the README's table says how each passes make e2e). Another release served by the Go module proxy: tests/tools/controlplane/pin-release.sh X.Y.Z"
  fi
  RELEASE_MINOR=${RELEASE#1.}
  RELEASE_MINOR=${RELEASE_MINOR%%.*}
  # kubectl of the same release (the machine's own may be outside the supported +/-1 skew).
  KUBECTL=${KUBECTL:-$BIN/kubectl}
}

k8s_version() { echo "v$RELEASE"; }

# One `go build` of every tool, into a temporary directory next to BIN; the binaries are moved into
# BIN, and only then is the stamp written: an interrupted or failed build never looks finished.
# A release module may name a `toolchain` (built with GOTOOLCHAIN set to it, fetched through the
# module proxy) and extra linker flags on a line `// ldflags: ...`.
build() {
  command -v go >/dev/null || die "go is required to build the control plane (see docs/development.md, Prerequisites)"
  local version stamp sum=${MODFILE%.mod}.sum
  version=$(k8s_version)
  stamp="$BIN/.built-$version-$(cat "$MODFILE" "$sum" "$MODULE/etcd/main.go" | sha256sum | cut -c1-16)"
  local tool missing=0
  for tool in "${TOOLS[@]}"; do [[ -x $BIN/$tool ]] || missing=1; done
  if [[ -f $stamp && $missing == 0 ]]; then
    return
  fi
  log "building ${TOOLS[*]} $version (first time: 7-35 minutes on 2 cores)"
  local minor=$RELEASE_MINOR
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local extra toolchain flags=()
  extra=$(sed -n 's|^// ldflags: ||p' "$MODFILE")
  [[ -z $extra ]] || ldflags+=" $extra"
  toolchain=$(awk '$1 == "toolchain" { print $2; exit }' "$MODFILE")
  [[ $MODFILE == "$MODULE/go.mod" ]] || flags+=(-modfile "$MODFILE")
  mkdir -p "$BIN"
  rm -f "$BIN"/.built-*
  local tmp
  tmp=$(mktemp -d "$BIN.tmp.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  local pkgs=(./etcd)
  for tool in "${TOOLS[@]}"; do [[ $tool == etcd ]] || pkgs+=("k8s.io/kubernetes/cmd/$tool"); done
  local started=$SECONDS
  # nice: the build takes both cores for many minutes on a machine shared with others.
  (cd "$MODULE" && GOTOOLCHAIN=${toolchain:-${GOTOOLCHAIN:-local}} \
    nice go build "${flags[@]}" -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") \
    || die "building Kubernetes $version failed (nothing was installed into $BIN)"
  for tool in "${TOOLS[@]}"; do mv -f "$tmp/$tool" "$BIN/$tool"; done
  rm -rf "$tmp"
  trap - EXIT
  touch "$stamp"
  log "built Kubernetes $version in $(( (SECONDS - started + 30) / 60 )) min: $BIN"
}

# kwok, for the simulated device edge-node-2 (KWOK=1): its own module, as Helm's.
KWOK_MODULE=$ROOT/tests/tools/kwok
KWOK_BIN=$ROOT/target/tools/kwok
KWOK_NODES=$ROOT/tests/e2e/kwok-nodes.yaml

build_kwok() {
  local stamp
  stamp="$KWOK_BIN.built-$(cat "$KWOK_MODULE/go.mod" "$KWOK_MODULE/go.sum" | sha256sum | cut -c1-16)"
  [[ -f $stamp && -x $KWOK_BIN ]] && return
  log "building kwok ($(awk '$1 == "require" && $2 == "sigs.k8s.io/kwok" { print $3 }' "$KWOK_MODULE/go.mod"))"
  mkdir -p "$(dirname "$KWOK_BIN")"
  rm -f "$KWOK_BIN".built-*
  (cd "$KWOK_MODULE" && nice go build -trimpath -ldflags "-s -w" -o "$KWOK_BIN" sigs.k8s.io/kwok/cmd/kwok)
  touch "$stamp"
}

# kwok's own stages, read from its module: nodes become Ready and keep a lease; pods become Ready,
# those of Jobs Succeeded, deleted ones go.
kwok_config() {
  local dir stage
  dir=$(cd "$KWOK_MODULE" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$dir/kustomize/stage/$stage.yaml"
  done > "$DIR/kwok.yaml"
}

start_kwok() {
  if ! alive kwok; then
    kwok_config
    start kwok "$KWOK_BIN" --kubeconfig "$DIR/kubeconfig" --config "$DIR/kwok.yaml" \
      --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --node-lease-duration-seconds 40
  fi
  k apply -f "$KWOK_NODES" >/dev/null
  local node count
  for node in $(k get nodes -l type=kwok -o name); do
    count=$(k get "$node" -o jsonpath='{.metadata.labels.nvidia\.com/gpu\.count}')
    k patch "$node" --subresource=status --type=merge -p "{\"status\":{
      \"capacity\":{\"cpu\":\"4\",\"memory\":\"16Gi\",\"pods\":\"110\",\"nvidia.com/gpu\":\"$count\"},
      \"allocatable\":{\"cpu\":\"4\",\"memory\":\"16Gi\",\"pods\":\"110\",\"nvidia.com/gpu\":\"$count\"}}}" >/dev/null
    wait_up kwok "$node to be Ready" 60 node_ready "${node#node/}"
  done
}

# A free port below the kernel's ephemeral range. The ports are chosen when the cluster is made and
# bound minutes later; a port from that range (what binding port 0 gives) can meanwhile become the
# local end of any outgoing connection, a client of the API server's, and the component that owns
# it fails with "address already in use" (a kubelet's healthz port did, in CI).
free_port() {
  python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
candidates = random.sample(range(10000, low), min(1000, low - 10000)) if low > 10000 else []
for port in candidates + [0]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1])
        break
    except OSError:
        continue
    finally:
        s.close()
PY
}

alive() { [[ -f $DIR/$1.pid ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# Polls a command until it succeeds or the deadline (seconds) passes.
wait_for() {
  local what=$1 deadline=$(( SECONDS + $2 )); shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log "timed out waiting for $what"; return 1; }
    sleep 0.5
  done
}

PORTS=(ETCD_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT WEBHOOK_PORT
  KUBELET_PORT KUBELET_HEALTHZ_PORT)

# One free port per component, chosen once per cluster (a cluster of an older script gets the new ones).
ports() {
  touch "$DIR/ports"
  # shellcheck disable=SC1091
  . "$DIR/ports"
  local name
  for name in "${PORTS[@]}"; do
    [[ -n ${!name:-} ]] || echo "$name=$(free_port)" >> "$DIR/ports"
  done
  # shellcheck disable=SC1091
  . "$DIR/ports"
}

# Each certificate is made once, when missing.
pki() {
  mkdir -p "$PKI"
  local o="openssl"
  if [[ ! -f $PKI/ca.crt ]]; then
    $o req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=gpushare-e2e-ca" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  fi
  issue() { # name subject [extfile-lines]
    local name=$1 subject=$2 ext=$3
    [[ -f $PKI/$name.crt ]] && return
    $o req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
    printf '%b' "$ext" > "$PKI/$name.ext"
    $o x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 30 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  }
  # IP:10.96.0.1: pods reach the API server at the `kubernetes` Service IP (node.sh routes it).
  issue apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth"
  issue admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  issue controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  issue scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  # The kubelet: its client identity for the Node authorizer, and its serving certificate, which
  # the API server verifies when it proxies exec, logs and port-forward to it.
  issue kubelet "/O=system:nodes/CN=system:node:edge-node-1" "extendedKeyUsage=clientAuth"
  issue kubelet-serving "/CN=edge-node-1" "subjectAltName=IP:$POD_GATEWAY,IP:127.0.0.1,DNS:edge-node-1\nextendedKeyUsage=serverAuth"
  issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  if [[ ! -f $PKI/sa.key ]]; then
    $o genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    $o rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI"/*.key
}

kubeconfig() { # file user cert key
  local file=$1 user=$2
  KUBECONFIG=$file $KUBECTL config set-cluster local --server="https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
  KUBECONFIG=$file $KUBECTL config set-credentials "$user" --client-certificate="$3" --client-key="$4" --embed-certs >/dev/null
  KUBECONFIG=$file $KUBECTL config set-context local --cluster=local --user="$user" >/dev/null
  KUBECONFIG=$file $KUBECTL config use-context local >/dev/null
  chmod 600 "$file"
}

k() { $KUBECTL --kubeconfig "$DIR/kubeconfig" "$@"; }

start() { # name command...
  local name=$1; shift
  echo "$*" > "$DIR/$name.cmd"
  "$@" >> "$DIR/$name.log" 2>&1 &
  echo $! > "$DIR/$name.pid"
}

start_etcd() {
  alive etcd && return
  start etcd "$BIN/etcd" --name default --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  wait_up etcd "/health" 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

# The flags of kube-apiserver that depend on its release.
apiserver_release_flags() {
  # From 1.37 the endpoint reconciler refuses a loopback advertise address; the `kubernetes`
  # Service keeps its ClusterIP (pods reach it through node.sh's DNAT), without Endpoints.
  if (( RELEASE_MINOR >= 37 )); then echo --endpoint-reconciler-type=none; fi
  return 0
}

start_apiserver() {
  alive kube-apiserver && return
  # shellcheck disable=SC2046
  start kube-apiserver "$BIN/kube-apiserver" $(apiserver_release_flags) \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer "https://kubernetes.default.svc" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --authorization-mode Node,RBAC \
    --allow-privileged=true \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --enable-aggregator-routing=true \
    --profiling=false --v=1
  wait_up kube-apiserver "/readyz" 120 k get --raw /readyz
}

start_controller_manager() {
  alive kube-controller-manager && return
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials --leader-elect=false \
    --profiling=false --v=1
  wait_up kube-controller-manager "/healthz" 60 curl -sk "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
}

start_scheduler() {
  alive kube-scheduler && return
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
    --leader-elect=false --profiling=false --v=1
  wait_up kube-scheduler "/healthz" 60 curl -sk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
}

# The Nodes of nodes.yaml, labelled as GPU feature discovery labels an edge device. The kubelet of
# edge-node-1 registers into its object; its nvidia.com/gpu is patched in once it is Ready (node.sh).
create_nodes() {
  k apply -f "$NODES" >/dev/null
}

# The kustomize components of manifests/ this release needs (docs/operator-guide.md, "Kubernetes
# versions"): before 1.28 webhook matchConditions are off (alpha), before 1.30 the preStop `sleep`
# action is unknown (the Deployment would be refused even with no replica).
release_components() {
  if (( RELEASE_MINOR < 28 )); then echo no-match-conditions; fi
  if (( RELEASE_MINOR < 30 )); then echo no-prestop-sleep; fi
  return 0
}

# What the overlay builds on: manifests/ itself, or, when the release needs components, a
# kustomization of manifests/ with them (target/cluster/overlay/base).
overlay_base() {
  local components
  components=$(release_components)
  if [[ -z $components ]]; then
    BASE=$ROOT/manifests
    BASE_REF=../../../manifests
    return
  fi
  BASE=$DIR/overlay/base
  BASE_REF=./base
  mkdir -p "$BASE"
  {
    echo "# Generated by tests/e2e/cluster.sh: manifests/ with the components Kubernetes $RELEASE needs."
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../../../../manifests"
    echo "components:"
    local c
    for c in $components; do echo "  - ../../../../manifests/components/$c"; done
  } > "$BASE/kustomization.yaml"
}

# Every webhook of the configuration the overlay's base renders, by name, one a line.
webhook_names() {
  $KUBECTL kustomize "$BASE" \
    | k create --dry-run=client -f - -o jsonpath='{.kind}/{.metadata.name}:{.webhooks[*].name}{"\n"}' \
    | sed -n 's|^MutatingWebhookConfiguration/gpushare:||p' | tr ' ' '\n' | sed '/^$/d'
}

webhook_certs() {
  [[ -f $DIR/webhook-certs/tls.crt ]] && return
  mkdir -p "$DIR/webhook-certs"
  "$GPUSHARE" certs --out "$DIR/webhook-certs" > "$DIR/webhook-certs/ca-bundle" 2>> "$DIR/setup.log"
}

# The overlay: manifests/ as they are, but for what this cluster forces.
#   local mode: each webhook's clientConfig is the URL of the local serve, which stands in for the
#     Deployment's pods, so the Deployment runs none (replicas 0).
#   IN_CLUSTER=1: the image is the one `make image` built and imported (imagePullPolicy Never: no
#     registry), the Secret gpushare-tls holds the webhook's certificate, and every webhook trusts
#     its CA. Service, RBAC, replicas, probes and the PodDisruptionBudget stay as shipped.
deploy() {
  webhook_certs
  local bundle names count i
  bundle=$(tr -d '\n' < "$DIR/webhook-certs/ca-bundle")
  rm -rf "$DIR/overlay"
  overlay_base
  names=$(webhook_names)
  count=$(echo "$names" | grep -c .) || true
  (( count > 0 )) || die "manifests/ render no MutatingWebhookConfiguration"
  mkdir -p "$DIR/overlay"
  {
    echo "# Generated by tests/e2e/cluster.sh ($MODE mode): manifests/ and what this cluster forces."
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - $BASE_REF"
    if [[ $MODE == in-cluster ]]; then
      cp "$DIR/webhook-certs/tls.crt" "$DIR/webhook-certs/tls.key" "$DIR/overlay/"
      echo "images:"
      echo "  - name: ${SHIPPED_IMAGE%:*}"
      echo "    newName: ${GPUSHARE_IMAGE%:*}"
      echo "    newTag: \"${GPUSHARE_IMAGE##*:}\""
      echo "secretGenerator:"
      echo "  - name: gpushare-tls"
      echo "    namespace: gpushare-system"
      echo "    type: kubernetes.io/tls"
      echo "    files: [tls.crt, tls.key]"
      echo "    options: {disableNameSuffixHash: true}"
      echo "patches:"
      echo "  - target: {kind: Deployment, name: gpushare}"
      echo "    patch: |-"
      echo "      - {op: replace, path: /spec/template/spec/containers/0/imagePullPolicy, value: Never}"
      echo "  - target: {kind: MutatingWebhookConfiguration, name: gpushare}"
      echo "    patch: |-"
      for (( i = 0; i < count; i++ )); do
        echo "      - {op: add, path: /webhooks/$i/clientConfig/caBundle, value: \"$bundle\"}"
      done
    else
      echo "patches:"
      echo "  - target: {kind: Deployment, name: gpushare}"
      echo "    patch: |-"
      echo "      - {op: replace, path: /spec/replicas, value: 0}"
      echo "  - target: {kind: MutatingWebhookConfiguration, name: gpushare}"
      echo "    patch: |-"
      for (( i = 0; i < count; i++ )); do
        echo "      - {op: replace, path: /webhooks/$i/clientConfig, value: {url: \"$WEBHOOK_URL/mutate\", caBundle: \"$bundle\"}}"
      done
    fi
  } > "$DIR/overlay/kustomization.yaml"
  k apply -k "$DIR/overlay" >/dev/null
}

# The ServiceAccount's own token (TokenRequest API): serve gets exactly the RBAC of manifests/.
serve_kubeconfig() {
  wait_for "ServiceAccount gpushare" 30 k -n gpushare-system get serviceaccount gpushare
  local token file=$DIR/gpushare.kubeconfig
  token=$(k -n gpushare-system create token gpushare --duration=48h)
  rm -f "$file"
  KUBECONFIG=$file $KUBECTL config set-cluster local --server="https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
  KUBECONFIG=$file $KUBECTL config set-credentials gpushare --token="$token" >/dev/null
  KUBECONFIG=$file $KUBECTL config set-context local --cluster=local --user=gpushare --namespace=gpushare-system >/dev/null
  KUBECONFIG=$file $KUBECTL config use-context local >/dev/null
  chmod 600 "$file"
}

webhook_ready() { curl -sf --cacert "$DIR/webhook-certs/ca.crt" "$WEBHOOK_URL/readyz"; }

# A managed Deployment sent through the real API server comes back mutated: the registration works.
webhook_answers() {
  k create --dry-run=server -o jsonpath='{.spec.template.spec.containers[0].env[0].name}' -f - <<'EOF' | grep -q NVIDIA_VISIBLE_DEVICES
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpushare-probe, namespace: default, annotations: {gpushare.io/gpu: auto}}
spec:
  selector: {matchLabels: {app: gpushare-probe}}
  template:
    metadata: {labels: {app: gpushare-probe}}
    spec: {containers: [{name: probe, image: probe}]}
EOF
}

start_webhook() {
  if [[ $MODE == in-cluster ]]; then
    start_in_cluster
    return
  fi
  if ! alive gpushare; then
    [[ -x $GPUSHARE ]] || die "$GPUSHARE not built (make build)"
    POD_NAME=gpushare-local KUBECONFIG=$DIR/gpushare.kubeconfig start gpushare "$GPUSHARE" serve \
      --listen "127.0.0.1:$WEBHOOK_PORT" --health-listen 127.0.0.1:0 \
      --tls-cert "$DIR/webhook-certs/tls.crt" --tls-key "$DIR/webhook-certs/tls.key"
  fi
  wait_up gpushare "gpushare serve /readyz" 60 webhook_ready
  wait_for "the webhook to answer through the API server" 60 webhook_answers
}

# gpushare's own Deployment: its replicas Ready (their readiness probes passed), then the webhook
# answering through its Service. On failure, what the pods say.
start_in_cluster() {
  k -n gpushare-system scale deployment gpushare --replicas "$IN_CLUSTER_REPLICAS" >/dev/null
  # A rebuilt image keeps its name: the replicas restart onto it.
  local digest=""
  [[ -f ${GPUSHARE_IMAGE_ARCHIVE:-} ]] && digest=$(tar -xOf "$GPUSHARE_IMAGE_ARCHIVE" index.json | sha256sum | cut -c1-16)
  if [[ -n $digest && -f $DIR/gpushare-image && $(cat "$DIR/gpushare-image") != "$digest" ]]; then
    log "gpushare's image changed: restarting its replicas"
    k -n gpushare-system rollout restart deployment gpushare >/dev/null
  fi
  [[ -z $digest ]] || echo "$digest" > "$DIR/gpushare-image"
  if ! k -n gpushare-system rollout status deployment gpushare --timeout=180s >/dev/null 2>&1 \
    || ! wait_for "the webhook to answer through its Service" 60 webhook_answers; then
    log "gpushare's Deployment did not become ready:"
    k -n gpushare-system get pods -o wide >&2 || true
    k -n gpushare-system describe pods 2>&1 | tail -40 >&2 || true
    k -n gpushare-system logs deployment/gpushare --tail 20 >&2 || true
    exit 1
  fi
}

no_gpushare_pods() { [[ -z $(k -n gpushare-system get pods -l app.kubernetes.io/name=gpushare -o name) ]]; }

# The outage of e2e: in-cluster, every replica stops (the Deployment scaled to 0) and comes back.
stop_webhook() {
  if [[ $MODE == in-cluster ]]; then
    k -n gpushare-system scale deployment gpushare --replicas 0 >/dev/null
    wait_for "gpushare's pods to be gone" 90 no_gpushare_pods
  else
    stop gpushare
  fi
}

stop() { # name
  alive "$1" || { rm -f "$DIR/$1.pid"; return 0; }
  local pid; pid=$(cat "$DIR/$1.pid")
  kill "$pid" 2>/dev/null || true
  local deadline=$(( SECONDS + 30 ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS > deadline + 15 )); then
      log "$1 (pid $pid) did not exit, even after SIGKILL"
      return 1
    fi
    if (( SECONDS > deadline )); then kill -9 "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$DIR/$1.pid"
}

write_env() {
  {
    echo "KUBECONFIG=$DIR/kubeconfig"
    echo "GPUSHARE=$MODE"
    if [[ $MODE == local ]]; then
      echo "GPUSHARE_WEBHOOK_URL=$WEBHOOK_URL"
    else
      echo "GPUSHARE_IMAGE=$GPUSHARE_IMAGE"
    fi
    echo "GPUSHARE_SERVE_KUBECONFIG=$DIR/gpushare.kubeconfig"
    echo "GPUSHARE_WEBHOOK_CA=$DIR/webhook-certs/ca.crt"
    echo "KUBE_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT"
    echo "KUBERNETES_VERSION=$(k8s_version)"
    echo "KUBECTL=$KUBECTL"
    echo "NODE=$NODE_NAME"
    echo "TEST_IMAGE=$TEST_IMAGE"
    echo "POD_SUBNET=$POD_SUBNET"
    if alive kwok; then echo "KWOK_NODE=edge-node-2"; fi
  } > "$DIR/env"
}

load() {
  [[ -d $DIR ]] || die "no cluster: run make cluster"
  ports
  WEBHOOK_URL="https://localhost:$WEBHOOK_PORT"
  MODE=$(cat "$DIR/mode" 2>/dev/null || echo local)
}

# The image manifests/ ship, which IN_CLUSTER=1 replaces by the one `make image` built.
shipped_image() {
  $KUBECTL kustomize "$ROOT/manifests" \
    | k create --dry-run=client -f - -o jsonpath='{.kind}/{.metadata.name}:{.spec.template.spec.containers[0].image}{"\n"}' \
    | sed -n 's|^Deployment/gpushare:||p' | head -1
}

up() {
  if [[ -d $DIR ]]; then
    local running
    running=$(cat "$DIR/release" 2>/dev/null || echo "$DEFAULT_RELEASE")
    [[ $running == "$RELEASE" ]] \
      || die "target/cluster runs Kubernetes $running, not $RELEASE: make cluster-down first"
  fi
  build
  if [[ $KWOK == 1 ]]; then build_kwok; fi
  mkdir -p "$DIR"
  echo "$RELEASE" > "$DIR/release"
  load
  local want=local
  [[ ${IN_CLUSTER:-0} == 1 ]] && want=in-cluster
  if [[ $want == in-cluster ]]; then
    [[ -f ${GPUSHARE_IMAGE_ARCHIVE:-} && -n ${GPUSHARE_IMAGE:-} ]] \
      || die "IN_CLUSTER=1 needs GPUSHARE_IMAGE and GPUSHARE_IMAGE_ARCHIVE (make cluster IN_CLUSTER=1 builds them: make image)"
  fi
  # Switching modes: the local serve stops, or the Deployment's pods go (deploy scales it to 0).
  if [[ $MODE != "$want" ]]; then
    log "switching gpushare from $MODE to $want"
    stop gpushare
    rm -f "$DIR/gpushare.pid"
  fi
  MODE=$want
  echo "$MODE" > "$DIR/mode"
  pki
  [[ -f $DIR/kubeconfig ]] || kubeconfig "$DIR/kubeconfig" admin "$PKI/admin.crt" "$PKI/admin.key"
  [[ -f $DIR/controller-manager.kubeconfig ]] || kubeconfig "$DIR/controller-manager.kubeconfig" \
    system:kube-controller-manager "$PKI/controller-manager.crt" "$PKI/controller-manager.key"
  [[ -f $DIR/scheduler.kubeconfig ]] || kubeconfig "$DIR/scheduler.kubeconfig" \
    system:kube-scheduler "$PKI/scheduler.crt" "$PKI/scheduler.key"
  [[ -f $DIR/kubelet.kubeconfig ]] || kubeconfig "$DIR/kubelet.kubeconfig" \
    system:node:edge-node-1 "$PKI/kubelet.crt" "$PKI/kubelet.key"
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  create_nodes
  if [[ $MODE == in-cluster ]]; then
    node_up "$GPUSHARE_IMAGE_ARCHIVE"
    SHIPPED_IMAGE=$(shipped_image)
    [[ -n $SHIPPED_IMAGE ]] || die "manifests/ render no Deployment image"
  else
    node_up
  fi
  if [[ $KWOK == 1 ]]; then
    start_kwok
  fi
  deploy
  # The local serve's credentials; in-cluster, e2e starts extra replicas with them beside the pods.
  [[ -f $DIR/gpushare.kubeconfig ]] || serve_kubeconfig
  start_webhook
  write_env
  echo "export KUBECONFIG=$DIR/kubeconfig"
}

down() {
  [[ -d $DIR ]] || return 0
  # Best effort from here on: what cannot be stopped is reported, the rest is still cleaned up.
  stop gpushare || true
  stop kwok || true
  node_down
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name" || true; done
  if awk -v d="$DIR" '$5 == d || index($5, d "/") == 1' /proc/self/mountinfo | grep -q .; then
    die "still mounted under $DIR (not removed): $(awk -v d="$DIR" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | head -5)"
  fi
  rm -rf "$DIR"
}

# shellcheck source=tests/e2e/node.sh
. "$ROOT/tests/e2e/node.sh"

IN_CLUSTER_REPLICAS=${IN_CLUSTER_REPLICAS:-2}
# The simulated second device (kwok): on unless KWOK=0.
KWOK=${KWOK:-1}

# cluster-down works whatever the release (and even with a KUBE_VERSION this tree no longer has).
[[ ${1:-} == down ]] || select_release

case ${1:-} in
  build) build; if [[ $KWOK == 1 ]]; then build_kwok; fi ;;
  up) up ;;
  down) down ;;
  stop-webhook) load; stop_webhook ;;
  start-webhook) load; start_webhook ;;
  stop-apiserver) load; stop kube-apiserver ;;
  start-apiserver) load; start_apiserver ;;
  stop-kubelet) load; stop kubelet ;;
  start-kubelet) load; start_kubelet ;;
  *) die "usage: $0 build|up|down|stop-webhook|start-webhook|stop-apiserver|start-apiserver|stop-kubelet|start-kubelet" ;;
esac
