#!/usr/bin/env bash
# `make layout`, second pass: adds to the order file OUT what each BINARY really touches when it
# serves the admission bench's load (1, 16 and 64 connections), which callgrind's run misses:
# code that valgrind's emulated CPU does not take (ring picks its AES and ChaCha code by CPU
# feature), start-up probes (`available_parallelism` reading cgroups), and read-only data.
#
# It records the page faults of each server (`perf record -e page-faults -d`), the binary dropped
# from the page cache first: a page already cached is mapped with its whole folio (up to MiBs) on
# the first touch, hiding every other touch in it, while a cold start faults page by page. Some
# touches still hide behind a neighbour's read-ahead, so the Makefile relinks with the longer order
# and calls this again until a pass adds nothing.
#
# Usage: faults.sh OUT BINARY...   Prints how many names it added.
set -euo pipefail
out=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v perf >/dev/null || { apt-get update -q && apt-get install -y -q linux-perf; }
. "$here/serve.sh"

# The symbols one server touched, started cold.
record_faults() {
  python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$2"
  serve "$3" "$2" perf record -q -e page-faults -c 1 -d -o "$work/faults.$1"
  drive 5 1 16 64 >/dev/null
  perf script -i "$work/faults.$1" -F addr --show-mmap-events > "$work/faults.$1.txt"
  python3 "$here/faults.py" "$2" "$work/faults.$1.txt" >> "$work/touched"
}
prepare "$1"
each_server record_faults "$@"
python3 - "$out" "$work/touched" <<'PY'
import sys
out, touched = sys.argv[1], sys.argv[2]
known = set(open(out).read().split())
added = [n for n in dict.fromkeys(open(touched).read().split()) if n not in known]
with open(out, "a") as f:
    f.writelines(n + "\n" for n in added)
print(len(added))
PY
