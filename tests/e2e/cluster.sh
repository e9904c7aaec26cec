#!/usr/bin/env bash
# The local control plane of `make cluster` (CONTRACT section 6b): etcd, kube-apiserver and
# kube-controller-manager built from the official Go modules (tests/tools/controlplane pins the
# release, and kubectl of the same release is built beside them), Node objects for a 2-GPU edge device, gpushare deployed from manifests/ through an
# overlay that only swaps the webhook's Service for a URL, and `gpushare serve` running in cluster
# mode with a token of the ServiceAccount of manifests/. Everything listens on 127.0.0.1.
#
#   cluster.sh build              build the control-plane binaries (Go build cache makes rebuilds fast)
#   cluster.sh up                 start whatever is not running; idempotent
#   cluster.sh down               stop everything and remove target/cluster
#   cluster.sh stop-webhook       stop `gpushare serve` (e2e: outage behaviour)
#   cluster.sh start-webhook      start it again and wait until it is ready
#   cluster.sh restart-apiserver  stop kube-apiserver; start it again when "start" follows
#   cluster.sh stop-apiserver | start-apiserver
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODULE=$ROOT/tests/tools/controlplane
BIN=$ROOT/target/controlplane/bin
DIR=$ROOT/target/cluster
PKI=$DIR/pki
GPUSHARE=${GPUSHARE:-$ROOT/target/debug/gpushare}
# kubectl of the pinned release (the machine's own may be outside the supported +/-1 skew).
KUBECTL=${KUBECTL:-$BIN/kubectl}
NODES=$ROOT/tests/e2e/nodes.yaml

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# The one pinned release: the k8s.io/kubernetes requirement of the control-plane module.
k8s_version() { awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' "$MODULE/go.mod"; }

build() {
  command -v go >/dev/null || die "go is required to build the control plane (see README, Prerequisites)"
  local version stamp
  version=$(k8s_version)
  stamp="$BIN/.built-$version-$(cat "$MODULE/go.mod" "$MODULE/go.sum" "$MODULE/etcd/main.go" | sha256sum | cut -c1-16)"
  if [[ -f $stamp && -x $BIN/kube-apiserver && -x $BIN/kube-controller-manager && -x $BIN/etcd && -x $BIN/kubectl ]]; then
    return
  fi
  log "building etcd, kube-apiserver, kube-controller-manager and kubectl $version (first time: 10-25 minutes on 2 cores)"
  local minor=${version#v1.}; minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$BIN"
  rm -f "$BIN"/.built-*
  (cd "$MODULE" && go build -trimpath -ldflags "$ldflags" -o "$BIN/" \
    ./etcd k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)
  touch "$stamp"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

alive() { [[ -f $DIR/$1.pid ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# Polls a command until it succeeds or the deadline (seconds) passes.
wait_for() {
  local what=$1 deadline=$(( SECONDS + $2 )); shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log "timed out waiting for $what"; return 1; }
    sleep 0.5
  done
}

ports() {
  if [[ ! -f $DIR/ports ]]; then
    {
      echo "ETCD_PORT=$(free_port)"
      echo "ETCD_PEER_PORT=$(free_port)"
      echo "APISERVER_PORT=$(free_port)"
      echo "CONTROLLER_MANAGER_PORT=$(free_port)"
      echo "WEBHOOK_PORT=$(free_port)"
    } > "$DIR/ports"
  fi
  # shellcheck disable=SC1091
  . "$DIR/ports"
}

pki() {
  [[ -f $PKI/done ]] && return
  mkdir -p "$PKI"
  local o="openssl"
  $o req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=gpushare-e2e-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  issue() { # name subject [extfile-lines]
    local name=$1 subject=$2 ext=$3
    $o req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
    printf '%b' "$ext" > "$PKI/$name.ext"
    $o x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 30 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  }
  issue apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth"
  issue admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  issue controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  $o genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  $o rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
  touch "$PKI/done"
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
  "$@" >> "$DIR/$name.log" 2>&1 &
  echo $! > "$DIR/$name.pid"
}

start_etcd() {
  alive etcd && return
  start etcd "$BIN/etcd" --name default --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  alive kube-apiserver && return
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer "https://kubernetes.default.svc" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --authorization-mode Node,RBAC \
    --allow-privileged=true \
    --profiling=false --v=1
  wait_for kube-apiserver 120 k get --raw /readyz
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
  wait_for kube-controller-manager 60 curl -sk "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
}

create_nodes() {
  k apply -f "$NODES" >/dev/null
  # Allocatable is status: what the NVIDIA device plugin reports to the kubelet.
  for node in $(k get nodes -l nvidia.com/gpu.present=true -o name); do
    local count
    count=$(k get "$node" -o jsonpath='{.metadata.labels.nvidia\.com/gpu\.count}')
    k patch "$node" --subresource=status --type=merge \
      -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$count\"},\"allocatable\":{\"nvidia.com/gpu\":\"$count\"}}}" >/dev/null
  done
}

# The overlay: manifests/ as they are, with each webhook's clientConfig pointed at the local serve.
deploy() {
  if [[ ! -f $DIR/webhook-certs/tls.crt ]]; then
    mkdir -p "$DIR/webhook-certs"
    "$GPUSHARE" certs --out "$DIR/webhook-certs" > "$DIR/webhook-certs/ca-bundle" 2>> "$DIR/setup.log"
  fi
  local bundle names
  bundle=$(tr -d '\n' < "$DIR/webhook-certs/ca-bundle")
  # kubectl applies the template to each object of the render: one line per object.
  names=$($KUBECTL kustomize "$ROOT/manifests" \
    | k create --dry-run=client -f - -o jsonpath='{.kind}/{.metadata.name}:{.webhooks[*].name}{"\n"}' \
    | sed -n 's|^MutatingWebhookConfiguration/gpushare:||p')
  [[ -n $names ]] || die "manifests/ render no MutatingWebhookConfiguration"
  mkdir -p "$DIR/overlay"
  {
    echo "# Generated by tests/e2e/cluster.sh: manifests/ with the webhook served by a local gpushare serve."
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../../../manifests"
    echo "patches:"
    echo "  - target: {kind: MutatingWebhookConfiguration, name: gpushare}"
    echo "    patch: |-"
    local i=0
    for _ in $names; do
      echo "      - {op: replace, path: /webhooks/$i/clientConfig, value: {url: \"$WEBHOOK_URL/mutate\", caBundle: \"$bundle\"}}"
      i=$((i + 1))
    done
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
  if ! alive gpushare; then
    [[ -x $GPUSHARE ]] || die "$GPUSHARE not built (make build)"
    POD_NAME=gpushare-local KUBECONFIG=$DIR/gpushare.kubeconfig start gpushare "$GPUSHARE" serve \
      --listen "127.0.0.1:$WEBHOOK_PORT" --health-listen 127.0.0.1:0 \
      --tls-cert "$DIR/webhook-certs/tls.crt" --tls-key "$DIR/webhook-certs/tls.key"
  fi
  wait_for "gpushare serve /readyz" 60 webhook_ready || { tail -20 "$DIR/gpushare.log" >&2; return 1; }
  wait_for "the webhook to answer through the API server" 60 webhook_answers
}

stop() { # name
  alive "$1" || { rm -f "$DIR/$1.pid"; return 0; }
  local pid; pid=$(cat "$DIR/$1.pid")
  kill "$pid" 2>/dev/null || true
  local deadline=$(( SECONDS + 30 ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS > deadline )); then kill -9 "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$DIR/$1.pid"
}

write_env() {
  {
    echo "KUBECONFIG=$DIR/kubeconfig"
    echo "GPUSHARE_WEBHOOK_URL=$WEBHOOK_URL"
    echo "GPUSHARE_WEBHOOK_CA=$DIR/webhook-certs/ca.crt"
    echo "GPUSHARE_SERVE_KUBECONFIG=$DIR/gpushare.kubeconfig"
    echo "KUBE_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT"
    echo "KUBERNETES_VERSION=$(k8s_version)"
    echo "KUBECTL=$KUBECTL"
  } > "$DIR/env"
}

load() {
  [[ -d $DIR ]] || die "no cluster: run make cluster"
  ports
  WEBHOOK_URL="https://localhost:$WEBHOOK_PORT"
}

up() {
  build
  mkdir -p "$DIR"
  load
  pki
  [[ -f $DIR/kubeconfig ]] || kubeconfig "$DIR/kubeconfig" admin "$PKI/admin.crt" "$PKI/admin.key"
  [[ -f $DIR/controller-manager.kubeconfig ]] || kubeconfig "$DIR/controller-manager.kubeconfig" \
    system:kube-controller-manager "$PKI/controller-manager.crt" "$PKI/controller-manager.key"
  start_etcd
  start_apiserver
  start_controller_manager
  create_nodes
  deploy
  [[ -f $DIR/gpushare.kubeconfig ]] || serve_kubeconfig
  start_webhook
  write_env
  echo "export KUBECONFIG=$DIR/kubeconfig"
}

down() {
  [[ -d $DIR ]] || return 0
  for name in gpushare kube-controller-manager kube-apiserver etcd; do stop "$name"; done
  rm -rf "$DIR"
}

case ${1:-} in
  build) build ;;
  up) up ;;
  down) down ;;
  stop-webhook) load; stop gpushare ;;
  start-webhook) load; start_webhook ;;
  stop-apiserver) load; stop kube-apiserver ;;
  start-apiserver) load; start_apiserver ;;
  *) die "usage: $0 build|up|down|stop-webhook|start-webhook|stop-apiserver|start-apiserver" ;;
esac
