#!/bin/sh
# Side-by-side: berthd vs Debian's containerd 1.6, each on its own temp root, state and socket.
#   idle RSS right after start; `ctr images import` of a 5-layer ~200 MB image (fresh root per run).
# usage: bench/foundation.sh [RUNS=3]      (run as root; builds berth in release mode first)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-3}
cargo build --release --bins --locked -q
BERTHD=$PWD/target/release/berthd
WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    umount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

IMG=${BENCH_IMAGE:-/tmp/berth-bench-image.tar}
[ -f "$IMG" ] || python3 bench/gen_image.py "$IMG" 5 40 >/dev/null

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }


run_one() { # kind run -> "rss_kb import_seconds"
    dir=$WORK/$1-$2; mkdir -p "$dir"
    pid=$(start_$1 "$dir"); PIDS="$PIDS $pid"
    wait_sock "$dir/sock"; sleep 1
    rss=$(rss_kb "$pid")
    t0=$(date +%s.%N)
    ctr --address "$dir/sock" images import "$IMG" >/dev/null
    t1=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    umount_under "$dir"
    rm -rf "$dir"
    echo "$rss $(echo "$t1 - $t0" | bc -l)"
}

: >"$WORK/berthd.txt"; : >"$WORK/containerd.txt"
for r in $(seq "$RUNS"); do
    for kind in berthd containerd; do run_one $kind "$r" >>"$WORK/$kind.txt"; done
done
b_rss=$(awk '{print $1}' "$WORK/berthd.txt" | median); c_rss=$(awk '{print $1}' "$WORK/containerd.txt" | median)
b_imp=$(awk '{print $2}' "$WORK/berthd.txt" | median); c_imp=$(awk '{print $2}' "$WORK/containerd.txt" | median)
printf '%-34s %12s %12s %8s\n' "metric (median of $RUNS)" berthd containerd ratio
printf '%-34s %9.1f MB %9.1f MB %8.2f\n' "idle RSS after start" "$(echo "$b_rss/1024" | bc -l)" "$(echo "$c_rss/1024" | bc -l)" "$(echo "$b_rss/$c_rss" | bc -l)"
printf '%-34s %10.2f s %10.2f s %8.2f\n' "ctr images import (5 layers)" "$b_imp" "$c_imp" "$(echo "$b_imp/$c_imp" | bc -l)"
