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
. "$here/serve.sh"

# One callgrind profile per server.
profile() {
  serve "$3" "$2" valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$work/callgrind.$1"
  drive 20 16
}
prepare "$1"
each_server profile "$@"
python3 "$here/order.py" "$work"/callgrind.* > "$out"
echo "$(wc -l < "$out") functions written to $out"
