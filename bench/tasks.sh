#!/bin/sh
# Side-by-side container lifecycle: berthd (berth's shim) vs Debian's containerd 1.6 (runc shim),
# each on its own temp root, state and socket, both driven by containerd's `ctr`; raw `runc run` of a
# prepared bundle is the floor.
#   1. 20 containers: run -d x20, kill all and wait, rm x20 — total seconds
#   2. `ctr run --rm busybox true` latency — median of 10
#   3. RSS with 20 running containers: daemon + its shims (RSS; PSS from smaps_rollup)
# usage: bench/tasks.sh [RUNS=3]     (root; builds berth in release mode first)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-3}
cargo build --release --bins --locked -q
BIN=$PWD/target/release
BERTHD=$BIN/berthd
WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
PIDS=""
IMAGES=${BERTH_TEST_IMAGES:-/tmp/berth-bench-testimages}
[ -f "$IMAGES/busybox-oci.tar" ] || sh ../shared/testimages/make-test-images.sh "$IMAGES" >/dev/null
IMG=docker.io/library/busybox:latest

cleanup() {
    # Tasks outlive their daemon: end the shims this run started (by the sockets they name).
    for d in "$WORK"/*/; do
        [ -d "$d" ] || continue
        for p in $(shim_pids "${d}sock"); do kill -9 "$p" 2>/dev/null || true; done
    done
    for ns in bb cb; do
        for id in $(ls "/run/containerd/runc/$ns" 2>/dev/null); do runc --root "/run/containerd/runc/$ns" delete --force "$id" 2>/dev/null || true; done
        rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
        for c in /sys/fs/cgroup/*/; do rmdir "$c$ns"/* "$c$ns" 2>/dev/null || true; done
    done
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    umount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM



# kind -> "ns runtime"
ns_of() { [ "$1" = berthd ] && echo bb || echo cb; }
rt_of() { [ "$1" = berthd ] && echo io.containerd.berth.v2 || echo io.containerd.runc.v2; }

# The shims started for the daemon serving socket $1 (their command line names it).
shim_pids() {
    for f in /proc/[0-9]*/cmdline; do
        c=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
        case "$c" in
            *containerd-shim*"$1"*) p=${f#/proc/}; echo "${p%/cmdline}" ;;
        esac
    done
}

# RSS and PSS (kB) of a daemon and every shim it started, the shims' RSS alone, and their count.
mem_of() { # daemon-pid sock
    rss=0; pss=0; shim_rss=0; n=0
    for p in $1 $(shim_pids "$2"); do
        r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || r=0
        s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || s=0
        rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0}))
        if [ "$p" != "$1" ]; then shim_rss=$((shim_rss + ${r:-0})); n=$((n + 1)); fi
    done
    echo "$rss $pss $shim_rss $n"
}

run_one() { # kind run -> "t20 latency_ms rss_kb pss_kb shim_rss_kb nshims"
    kind=$1; dir=$WORK/$kind-$2; mkdir -p "$dir"
    pid=$(start_$kind "$dir"); PIDS="$PIDS $pid"
    wait_sock "$dir/sock"
    C="ctr --address $dir/sock -n $(ns_of $kind)"
    RT=$(rt_of $kind)
    $C images import "$IMAGES/busybox-oci.tar" >/dev/null
    $C run --rm --runtime "$RT" $IMG warm true
    # 2. run --rm true latency
    : >"$dir/lat"
    for i in $(seq 10); do
        t0=$(now); $C run --rm --runtime "$RT" $IMG "l$i" true; t1=$(now)
        echo "($t1 - $t0) * 1000" | bc -l >>"$dir/lat"
    done
    lat=$(median <"$dir/lat")
    # 1. 20 containers
    t0=$(now)
    for i in $(seq 20); do $C run -d --runtime "$RT" $IMG "c$i" sleep 1000 >/dev/null; done
    t_started=$(now)
    mem=$(mem_of "$pid" "$dir/sock")
    t_paused=$(now)
    for i in $(seq 20); do $C task kill -s SIGKILL "c$i"; done
    for i in $(seq 20); do $C task delete "c$i" >/dev/null 2>&1 || { sleep 0.05; $C task delete "c$i" >/dev/null; }; done
    for i in $(seq 20); do $C containers rm "c$i"; done
    t1=$(now)
    t20=$(echo "($t1 - $t0) - ($t_paused - $t_started)" | bc -l)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    umount_under "$dir"
    rm -rf "$dir"
    echo "$t20 $lat $mem"
}

runc_floor() { # -> median ms of `runc run` of a prepared busybox bundle running `true`
    b=$WORK/bundle; mkdir -p "$b/rootfs"
    layer=$(jq -r '.layers[0].digest' "$IMAGES/oci/blobs/sha256/$(jq -r '.manifests[0].digest' "$IMAGES/oci/index.json" | cut -d: -f2)" | cut -d: -f2)
    tar -xf "$IMAGES/oci/blobs/sha256/$layer" -C "$b/rootfs"
    (cd "$b" && runc spec && jq '.process.terminal=false | .process.args=["true"]' config.json >c.json && mv c.json config.json)
    : >"$WORK/floor"
    for i in $(seq 10); do
        t0=$(now); runc --root "$WORK/runc" run --bundle "$b" "floor$i" >/dev/null; t1=$(now)
        echo "($t1 - $t0) * 1000" | bc -l >>"$WORK/floor"
    done
    median <"$WORK/floor"
}

: >"$WORK/berthd.txt"; : >"$WORK/containerd.txt"
for r in $(seq "$RUNS"); do
    for kind in berthd containerd; do run_one $kind "$r" >>"$WORK/$kind.txt"; done
done
floor=$(runc_floor)
col() { awk -v c="$2" '{print $c}' "$WORK/$1.txt" | median; }
b_t=$(col berthd 1); c_t=$(col containerd 1); b_l=$(col berthd 2); c_l=$(col containerd 2)
b_rss=$(col berthd 3); c_rss=$(col containerd 3); b_pss=$(col berthd 4); c_pss=$(col containerd 4)
b_shim=$(col berthd 5); c_shim=$(col containerd 5); b_n=$(col berthd 6); c_n=$(col containerd 6)
printf '%-44s %12s %12s %8s\n' "metric (median of $RUNS runs)" berthd containerd ratio
printf '%-44s %10.2f s %10.2f s %8.2f\n' "20 x run -d, kill, rm (total)" "$b_t" "$c_t" "$(echo "$b_t/$c_t" | bc -l)"
printf '%-44s %9.0f ms %9.0f ms %8.2f\n' "ctr run --rm busybox true (median of 10)" "$b_l" "$c_l" "$(echo "$b_l/$c_l" | bc -l)"
printf '%-44s %9.0f ms %12s %8.2f\n' "  floor: runc run of a prepared bundle" "$floor" "" "$(echo "$b_l/$floor" | bc -l)"
printf '%-44s %9.1f MB %9.1f MB %8.2f\n' "RSS daemon + shims, 20 running" "$(echo "$b_rss/1024" | bc -l)" "$(echo "$c_rss/1024" | bc -l)" "$(echo "$b_rss/$c_rss" | bc -l)"
printf '%-44s %9.1f MB %9.1f MB %8.2f\n' "PSS daemon + shims, 20 running" "$(echo "$b_pss/1024" | bc -l)" "$(echo "$c_pss/1024" | bc -l)" "$(echo "$b_pss/$c_pss" | bc -l)"
printf '%-44s %9.2f MB %9.2f MB %8.2f\n' "RSS per shim ($b_n vs $c_n shims)" "$(echo "$b_shim/$b_n/1024" | bc -l)" "$(echo "$c_shim/$c_n/1024" | bc -l)" "$(echo "($b_shim/$b_n)/($c_shim/$c_n)" | bc -l)"
