#!/bin/sh
# Side-by-side pull + unpack from Debian's docker-registry on loopback:
#   berthd server-side pull (`berth image pull`, Transfer service) vs `ctr images pull --plain-http`
#   against containerd 1.6, fresh roots each run; the floor: `curl` of every layer then `tar -xzf`,
#   sequentially; and berthd's peak RSS during its pull (VmHWM).
# usage: bench/pull.sh [RUNS=3]   (root; builds berth in release mode first)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-3}
cargo build --release --bins --locked -q
BIN=$PWD/target/release
BERTHD=$BIN/berthd
WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    umount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
wait_port() { i=0; until curl -s "http://127.0.0.1:$1/v2/" >/dev/null; do i=$((i+1)); [ $i -lt 400 ] || exit 1; sleep 0.025; done; }

# The image: 5 gzip layers of ~60 MiB uncompressed each (~300 MiB), in an OCI layout dir.
IMG=${BENCH_PULL_IMAGE:-/tmp/berth-bench-pull.tar}
[ -f "$IMG" ] || python3 bench/gen_image.py "$IMG" 5 60 >/dev/null
mkdir -p "$WORK/layout" && tar -xf "$IMG" -C "$WORK/layout"
sed -i 's/"example.com\/bench\/big:1"/"big"/' "$WORK/layout/index.json"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<EOT
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
EOT
docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
PIDS="$PIDS $!"
wait_port "$PORT"
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:big" "docker://127.0.0.1:$PORT/bench/big:1"
REF=127.0.0.1:$PORT/bench/big:1

berth_run() {
    dir=$WORK/b$1; mkdir -p "$dir"
    pid=$(start_berthd "$dir"); PIDS="$PIDS $pid"; wait_sock "$dir/sock"
    t0=$(now); "$BIN/berth" --address "$dir/sock" image pull "$REF" >/dev/null 2>&1; t1=$(now)
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    umount_under "$dir"
    rm -rf "$dir"
    echo "$(echo "$t1 - $t0" | bc -l) $hwm"
}

containerd_run() {
    dir=$WORK/c$1; mkdir -p "$dir"
    pid=$(start_containerd "$dir"); PIDS="$PIDS $pid"; wait_sock "$dir/sock"
    t0=$(now); ctr --address "$dir/sock" images pull --plain-http "$REF" >/dev/null 2>&1; t1=$(now)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    umount_under "$dir"
    rm -rf "$dir"
    echo "$t1 - $t0" | bc -l
}

floor_run() {
    dir=$WORK/f$1; mkdir -p "$dir/rootfs"
    manifest=$(jq -r '.manifests[0].digest' "$WORK/layout/index.json" | cut -d: -f2)
    t0=$(now)
    for l in $(jq -r '.layers[].digest' "$WORK/layout/blobs/sha256/$manifest"); do
        curl -s -o "$dir/layer" "http://127.0.0.1:$PORT/v2/bench/big/blobs/$l"
        tar -xzf "$dir/layer" -C "$dir/rootfs"
    done
    t1=$(now)
    rm -rf "$dir"
    echo "$t1 - $t0" | bc -l
}

: >"$WORK/b.txt"; : >"$WORK/c.txt"; : >"$WORK/f.txt"
for r in $(seq "$RUNS"); do
    berth_run "$r" >>"$WORK/b.txt"
    containerd_run "$r" >>"$WORK/c.txt"
    floor_run "$r" >>"$WORK/f.txt"
done
b=$(awk '{print $1}' "$WORK/b.txt" | median); hwm=$(awk '{print $2}' "$WORK/b.txt" | median)
c=$(median <"$WORK/c.txt"); f=$(median <"$WORK/f.txt")
printf '%-46s %10s %10s %8s\n' "pull + unpack, 5 gzip layers ~300 MiB (median of $RUNS)" berth other ratio
printf '%-46s %8.2f s %8.2f s %8.2f\n' "berth image pull vs ctr pull on containerd 1.6" "$b" "$c" "$(echo "$b/$c" | bc -l)"
printf '%-46s %8.2f s %8.2f s %8.2f\n' "berth vs floor (curl + tar -xzf, sequential)" "$b" "$f" "$(echo "$b/$f" | bc -l)"
printf '%-46s %8.1f MB\n' "berthd peak RSS (VmHWM) during its pull" "$(echo "$hwm/1024" | bc -l)"
