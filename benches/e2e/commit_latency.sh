#!/usr/bin/env bash
# What recording a commitment in the ledger (CONTRACT section 6a) adds to a `kubectl apply`
# through the real kube-apiserver of `make cluster`. N managed Deployments are created one after
# another, each a new allocation and so one ledger write; the same N are first sent as
# server-side dry runs, which decide the same way and write nothing. Reported: gpushare's own
# admission latency (its log's latency_us) and kubectl's wall time, per kind of request.
# Usage: make cluster && bash benches/e2e/commit_latency.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC1091
set -a; . "$ROOT/target/cluster/env"; set +a
N=${1:-40}
NS=bench-commit
LOG=$ROOT/target/cluster/gpushare.log
k() { "$KUBECTL" "$@"; }

k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: bench-commit, labels: {kubernetes.io/hostname: bench-commit, nvidia.com/gpu.count: "2"}}
YAML
until k -n "$NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done

manifest() { # name
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: $NS, annotations: {gpushare.io/gpu: "0"}}
spec:
  replicas: 1
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      nodeSelector: {kubernetes.io/hostname: bench-commit}
      containers: [{name: c, image: nbody}]
YAML
}

# Wait until gpushare sees the node.
until manifest probe | k create --dry-run=server -f - >/dev/null 2>&1; do sleep 0.2; done

run() { # label extra-args...
  local label=$1; shift
  local start end
  start=$(date +%s%N)
  for i in $(seq 1 "$N"); do manifest "m$i" | k create "$@" -f - >/dev/null; done
  end=$(date +%s%N)
  echo "$label kubectl_ms_per_request=$(( (end - start) / N / 1000000 ))"
}

mark=$(wc -l < "$LOG")
run dry-run --dry-run=server
run commit
tail -n +"$((mark + 1))" "$LOG" | grep "object=$NS/Deployment/m" | python3 -c '
import re, statistics, sys
groups = {"dry-run (no ledger write)": [], "commit (one ledger write)": []}
for line in sys.stdin:
    us = re.search(r"latency_us=(\d+)", line)
    if not us: continue
    dry = "dry_run=true" in line
    groups["dry-run (no ledger write)" if dry else "commit (one ledger write)"].append(int(us.group(1)))
for name, values in groups.items():
    values.sort()
    if not values: continue
    p = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    print(f"gpushare {name}: n={len(values)} median={p(0.5)/1000:.2f} ms p95={p(0.95)/1000:.2f} ms max={values[-1]/1000:.2f} ms")
'
k delete namespace "$NS" --wait=false >/dev/null
k delete node bench-commit --wait=false >/dev/null
