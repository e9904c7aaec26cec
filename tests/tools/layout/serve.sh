# Sourced by record.sh and faults.sh: a standalone `gpushare serve` with the admission bench's
# policy, driven the way the bench drives it (the four reviews over keep-alive HTTPS, a malformed
# body, /metrics). Needs $work (a scratch directory) and $here (this directory).

command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }

# Certificates, the policy and the reviews, made with BINARY.
prepare() {
  "$1" certs --out "$work/certs" >/dev/null
  printf 'gpuModes:\n  "1": mps\n' > "$work/policy.yaml"
  python3 "$here/reviews.py" "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# serve FILTER BINARY [WRAPPER...]: starts BINARY (under WRAPPER, if any) with RUST_LOG=FILTER,
# waits until it is ready and sets $server, $https and $health.
serve() {
  local filter=$1 bin=$2; shift 2
  https=$(free_port); health=$(free_port)
  RUST_LOG=$filter "$@" "$bin" serve --standalone --gpus 2 --policy "$work/policy.yaml" \
    --listen "127.0.0.1:$https" --health-listen "127.0.0.1:$health" \
    --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" > "$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    curl -skf "https://127.0.0.1:$https/healthz" >/dev/null && break
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$health/readyz" >/dev/null
}

# drive SECONDS CONNECTIONS...: the reviews at each connection count, then a malformed body and
# /metrics; then stops the server.
drive() {
  local seconds=$1; shift
  for connections in "$@"; do
    wrk -t"$(( connections < 2 ? 1 : 2 ))" -c"$connections" -d"${seconds}s" -s "$work/reviews.lua" \
      "https://127.0.0.1:$https/mutate" | grep "requests in"
  done
  curl -sk -XPOST -H 'Content-Type: application/json' --data '{"request":' \
    "https://127.0.0.1:$https/mutate" >/dev/null
  curl -sf "http://127.0.0.1:$health/metrics" >/dev/null
  kill -TERM "$server"
  wait "$server" || true
}

# each_server STEP BINARY...: for each binary, with the default log filter (a cluster's) and with
# the admission bench's, runs `STEP RUN BINARY FILTER`, RUN counting from 1.
each_server() {
  local step=$1 run=0 bin filter; shift
  for bin in "$@"; do
    for filter in info warn,gpushare::cli::commands=info; do
      run=$((run + 1))
      "$step" "$run" "$bin" "$filter"
    done
  done
}
