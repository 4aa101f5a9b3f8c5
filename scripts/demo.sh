#!/bin/sh
# berth's main job, end to end: build, start berthd on a temporary root, import a busybox image
# built offline, run a container from it with berth's own shim, stop. Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --workspace --bins --locked
BIN=$PWD/target/release
WORK=$(mktemp -d /tmp/berth-demo.XXXXXX)
PID=""
NS=berth-demo
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    grep " $WORK/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$WORK"
    # runc keeps a state dir and cgroup parent per namespace: the demo's are ours to remove.
    rmdir "/run/containerd/runc/$NS" 2>/dev/null || true
    for c in /sys/fs/cgroup/*/; do rmdir "$c$NS" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

IMAGES=${BERTH_TEST_IMAGES:-$WORK/images}
if [ ! -f "$IMAGES/busybox-oci.tar" ]; then
    sh ../shared/testimages/make-test-images.sh "$IMAGES" >/dev/null
fi

"$BIN/berthd" --root "$WORK/root" --state "$WORK/state" --address "$WORK/berth.sock" 2>"$WORK/berthd.log" &
PID=$!
i=0; until [ -S "$WORK/berth.sock" ]; do i=$((i+1)); [ $i -lt 200 ] || { cat "$WORK/berthd.log"; exit 1; }; sleep 0.05; done

B="$BIN/berth --address $WORK/berth.sock --namespace $NS"
$B version
$B image import "$IMAGES/busybox-oci.tar"
$B image ls
$B snapshot ls
echo "--- a container from it, through berth's shim driving runc:"
$B run --rm --runtime io.containerd.berth.v2 docker.io/library/busybox:latest demo-$$ \
    sh -c 'echo "hello from a berth container: $(uname -sr), pid $$"'
echo "--- the same daemon through containerd's ctr:"
ctr --address "$WORK/berth.sock" --namespace "$NS" images ls
ctr --address "$WORK/berth.sock" --namespace "$NS" run --rm --runtime io.containerd.berth.v2 docker.io/library/busybox:latest ctr-demo-$$ uname -a
