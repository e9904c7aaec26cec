#!/usr/bin/env bash
# `make layout`: writes tests/tools/layout/gpushare.order, the functions a standalone `gpushare serve`
# runs (start-up with the default log filter and the admission bench's, TLS handshakes, the four
# kinds of review the bench sends, a malformed body, /metrics), hottest first, as callgrind (valgrind) sees them in each binary given. build.rs
# hands the file to rust-lld so that release builds pack those functions together (issue 26: the
# kernel keeps code resident in 64 KiB runs around each page touched).
#
# Symbol names carry hashes of the build's settings (profile, target, toolchain, dependency
# versions), so the file holds the names of every build that should use it: the release build
# (`make install`, the benches) and the image's (`make image`). Rerun it after a toolchain or
# dependency update; a stale file costs nothing but the packing.
#
# Usage: record.sh OUT BINARY...
set -euo pipefail
out=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'pkill -f "callgrind.*$work" 2>/dev/null || true; rm -rf "$work"' EXIT
command -v valgrind >/dev/null || { apt-get update -q && apt-get install -y -q valgrind; }
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }

first=$1
"$first" certs --out "$work/certs" >/dev/null
printf 'gpuModes:\n  "1": mps\n' > "$work/policy.yaml"
python3 "$here/reviews.py" "$work"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Each binary twice: with the default log filter (a cluster's) and with the admission bench's.
for bin in "$@"; do
  for filter in info warn,gpushare::cli::commands=info; do
    https=$(port); health=$(port)
    RUST_LOG=$filter valgrind --tool=callgrind --demangle=no --dump-instr=no \
      --callgrind-out-file="$work/callgrind.$(basename "$bin").$https" \
      "$bin" serve --standalone --gpus 2 --policy "$work/policy.yaml" \
      --listen "127.0.0.1:$https" --health-listen "127.0.0.1:$health" \
      --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" > "$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1 300); do
      curl -skf "https://127.0.0.1:$https/healthz" >/dev/null && break
      sleep 0.5
    done
    curl -sf "http://127.0.0.1:$health/readyz" >/dev/null
    wrk -t2 -c16 -d20s -s "$work/reviews.lua" "https://127.0.0.1:$https/mutate" | grep "requests in"
    curl -sk -XPOST -H 'Content-Type: application/json' --data '{"request":' \
      "https://127.0.0.1:$https/mutate" >/dev/null
    curl -sf "http://127.0.0.1:$health/metrics" >/dev/null
    kill -TERM "$server"
    wait "$server" || true
  done
done
python3 "$here/order.py" "$work"/callgrind.* > "$out"
echo "$(wc -l < "$out") functions written to $out"
