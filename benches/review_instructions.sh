#!/usr/bin/env bash
# Instructions per admission review, by case, counted by callgrind: a figure that does not move
# with the machine's load, for A/B comparisons of the hot path where timings on 2 busy cores
# differ by tens of percent between runs. Runs `benches/review.rs`'s child (RUST_LOG=warn) under
# valgrind at N and 2N reviews and prints (Ir(2N) - Ir(N)) / N, so start-up costs cancel out.
#
#   bash benches/review_instructions.sh [REVIEW_BENCH_EXECUTABLE]
#
# Without an argument it builds the bench (`cargo bench --no-run`). REVIEWS sets N (default 1000).
set -euo pipefail
command -v valgrind >/dev/null || { apt-get update -q && apt-get install -y -q valgrind; }

bench=${1:-}
if [ -z "$bench" ]; then
  bench=$(cargo bench --locked --bench review --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "review" and m.get("executable"):
        print(m["executable"])')
fi
[ -x "$bench" ] || { echo "review_instructions.sh: no review bench executable (cargo bench --bench review --no-run failed?)" >&2; exit 1; }
reviews=${REVIEWS:-1000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# instructions CASE ITERATIONS: everything the child executed, start-up included. Fails unless
# the child reviewed CASE: a case the bench no longer has would otherwise count as 0.
instructions() {
  REVIEW_BENCH_CHILD=warn RUST_LOG=warn NO_COLOR=1 REVIEW_BENCH_CASE=$1 \
    REVIEW_BENCH_ITERATIONS=$2 REVIEW_BENCH_BATCHES=1 \
    valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bench" --bench \
    >"$work/stdout" 2>"$work/err"
  grep -q "^$1 " "$work/stdout" || { echo "review_instructions.sh: the bench did not review $1" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/err"
}

printf '%-12s  %s\n' case "instructions per review ($reviews and $((2 * reviews)) reviews)"
for case in Mps TimeSlicing Unmanaged Denied; do
  one=$(instructions "$case" "$reviews")
  two=$(instructions "$case" $((2 * reviews)))
  printf '%-12s  %d\n' "$case" $(((two - one) / reviews))
done
