#!/usr/bin/env bash
# Builds the images of the local test cluster as OCI archives, without a Docker engine
# (oci_image.py writes the layout; `ctr -n k8s.io images import` loads it). See docs/development.md.
#
#   build.sh pause OUT.tar                      the pod sandbox ("pause") image, $PAUSE_IMAGE
#   build.sh test OUT.tar                       localhost/gpushare-test:latest: busybox's applets in /bin
#   build.sh gpushare BINARY IMAGE OUT.tar      gpushare's image from a static binary: non-root, no shell
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PAUSE_IMAGE=${PAUSE_IMAGE:-localhost/gpushare-e2e/pause:1}
TEST_IMAGE=${TEST_IMAGE:-localhost/gpushare-test:latest}
OCI=(python3 "$HERE/oci_image.py")

die() { echo "image: $*" >&2; exit 1; }

# A binary that runs in an image with nothing else in it: statically linked.
static() {
  local out
  out=$(file -L "$1") || die "file(1) is required (apt-get install file)"
  [[ $out == *"statically linked"* || $out == *"static-pie linked"* ]] || die "$1 is not static: $out"
}

case ${1:-} in
  pause)
    out=${2:?OUT.tar}
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    ${CC:-gcc} -static -Os -s -Wall -Wextra -o "$tmp/pause" "$HERE/pause.c"
    static "$tmp/pause"
    "${OCI[@]}" --name "$PAUSE_IMAGE" --out "$out" --file "$tmp/pause=/pause,mode=0755" \
      --user 65535:65535 --entrypoint /pause
    ;;
  test)
    out=${2:?OUT.tar}
    busybox=${BUSYBOX:-/bin/busybox}
    [[ -x $busybox ]] || die "$busybox missing: apt-get install busybox-static"
    static "$busybox"
    links=()
    for applet in $("$busybox" --list); do
      [[ $applet == busybox ]] || links+=(--link "/bin/$applet=busybox")
    done
    "${OCI[@]}" --name "$TEST_IMAGE" --out "$out" --file "$busybox=/bin/busybox,mode=0755" "${links[@]}" \
      --dir /tmp,mode=1777 --env PATH=/bin --cmd sh
    ;;
  gpushare)
    binary=${2:?BINARY} image=${3:?IMAGE} out=${4:?OUT.tar}
    static "$binary"
    version=${image##*:}
    # As the Dockerfile's final stage: the binary, a passwd/group naming uid 65532, a writable /tmp.
    "${OCI[@]}" --name "$image" --out "$out" \
      --file "$binary=/usr/local/bin/gpushare,mode=0755" \
      --file "$HERE/rootfs/etc/passwd=/etc/passwd,mode=0644" --file "$HERE/rootfs/etc/group=/etc/group,mode=0644" \
      --dir /home/nonroot,mode=0700,owner=65532:65532 --dir /tmp,mode=1777 \
      --user 65532:65532 --entrypoint /usr/local/bin/gpushare --cmd serve --port 8443/tcp \
      --env PATH=/usr/local/bin \
      --label "org.opencontainers.image.title=gpushare" --label "org.opencontainers.image.version=$version"
    ;;
  *) die "usage: $0 pause OUT.tar | test OUT.tar | gpushare BINARY IMAGE OUT.tar" ;;
esac
