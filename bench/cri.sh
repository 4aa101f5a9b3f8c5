#!/bin/sh
# Side-by-side Kubernetes CRI: berthd vs Debian's containerd 1.6 with its CRI plugin, each on its
# own temp root, state, socket, runc root, CNI config (its own bridge and subnet) and cgroup
# parent, both driven over CRI by bench/cri-driver (berth-cri-bench; no crictl here). Images come
# from Debian's docker-registry on loopback and are pulled into each daemon before any timing.
#   1. 30 pods one at a time (RunPodSandbox + CreateContainer + StartContainer, busybox httpd):
#      per-pod latency p50/p99, total; RSS/PSS of daemon + shims with the 30 running; teardown
#      (StopPodSandbox + RemovePodSandbox) of the 30 one at a time
#   2. the same 30 pods 10 at a time: p50/p99, total; teardown 10 at a time
#   3. 25 pods x 4 containers (sleep): median ListContainers and ListContainerStats latency
#      over 50 calls each with the 100 running
# usage: bench/cri.sh [RUNS=3]    (root; builds berthd, its shim and the driver in release mode)
#   KINDS="containerd berthd" chooses the daemons (e.g. KINDS=containerd for its half alone);
#   BERTHD_LOG=debug makes the berthd log kept for a failed step useful; KEEP_LOGS=1 keeps every
#   daemon's log in target/cri-bench-logs (e.g. for berthd's per-phase pod start timings).
# A step that fails is reported (step, the RPC and the daemon's error, log tail; the whole log is
# kept in target/cri-bench-logs/) and the run goes on with the next scenario; a metric whose step
# never worked reads "fail", and the script exits 1.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-3}
KINDS=${KINDS:-containerd berthd}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
case " $KINDS " in
    *" berthd "*) cargo build --release -q -p berthd -p berth-shim -p berth-cri-bench --bin berthd --bin containerd-shim-berth-v2 --bin berth-cri-bench ;;
    *) cargo build --release -q -p berth-cri-bench ;;
esac
begin_cri_bench cri 100

cleanup() {
    for d in "$WORK"/*/; do [ -d "$d" ] && stop_cri_daemon "${d%/}" "$WORK" seq par list; done
    end_cri_bench
}
trap cleanup EXIT INT TERM

# The registry, with the three test images.
start_bench_registry "$WORK/registry" busybox pause httpd
PAUSE=$REG/pause:latest
HTTPD=$REG/httpd:latest
BUSYBOX=$REG/busybox:latest

# Appends "seq_p50 seq_p99 seq_total td_seq par_p50 par_p99 par_total td_par list_ms stats_ms
# rss pss shim_rss nshims" for daemon $kind, run $r, to $WORK/<kind>.txt (x where a step failed).
run_one() {
    d=$WORK/$kind-$r; mkdir -p "$d"
    case $kind in containerd) n=10 ;; *) n=20 ;; esac
    echo "bcri$TAG$(echo "$kind" | cut -c1)" >"$d/bridge"
    echo "$CGROUP/$kind-$r" >"$d/cgroup"
    write_cni_bridge "$d" "$(cat "$d/bridge")" "10.$NET.$n.0/24"
    registry_plain_http "$d" "$REG"
    start_${kind}_cri "$d" "$PAUSE" >"$d/pid"
    wait_sock "$d/sock"
    common="--pause-image $PAUSE --pause-already-pulled --log-dir $d/logs --cgroup-parent /$(cat "$d/cgroup")"
    step pull pull "$PAUSE" "$HTTPD" "$BUSYBOX" || return 0
    mem="x x x x"
    if step seq pods --count 30 --parallel 1 --image "$HTTPD" --tag seq --keep --check-http 8080 $common; then
        mem=$(daemon_mem "$(cat "$d/pid")" "$d/sock")
    fi
    # Teardown of whatever the scenario left running (it may have failed half way).
    step td-seq teardown --tag seq --parallel 1 || true
    if ! step par pods --count 30 --parallel 10 --image "$HTTPD" --tag par --check-http 8080 $common; then
        step td-par teardown --tag par --parallel 10 || true
    fi
    if step list-pods pods --count 25 --containers-per-pod 4 --parallel 10 --image "$BUSYBOX" --command "sleep 3600" --tag list --keep $common; then
        step list list --calls 50 --expect 100 || true
    fi
    step td-list teardown --tag list --parallel 10 || true
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$LOGS"; sed 's/\x1b\[[0-9;]*m//g' "$d/log" >"$LOGS/$kind-$r.log"; fi
    # The sequential teardown only counts when the 30 pods all started.
    [ -f "$d/seq.json" ] || rm -f "$d/td-seq.json"
    echo "$(j seq .start.p50_ms) $(j seq .start.p99_ms) $(j seq .start_total_s) $(j td-seq .total_s)" \
        "$(j par .start.p50_ms) $(j par .start.p99_ms) $(j par .start_total_s) $(j par .teardown.total_s)" \
        "$(j list .list_containers.p50_ms) $(j list .list_container_stats.p50_ms) $mem" >>"$WORK/$kind.txt"
}

LOGS=$PWD/target/cri-bench-logs
rm -rf "$LOGS"
: >"$WORK/failures"
for r in $(seq "$RUNS"); do
    for kind in $KINDS; do
        run_one
        stop_cri_daemon "$WORK/$kind-$r" "$WORK" seq par list
        rm -rf "${WORK:?}/$kind-$r"
    done
done

# Median of column $2 for daemon $1 over the runs where that step worked; "" when none did.
col() { [ -s "$WORK/$1.txt" ] && awk -v c="$2" '$c != "x" {print $c}' "$WORK/$1.txt" | median || true; }
absent() { case " $KINDS " in *" $1 "*) echo fail ;; *) echo "not run" ;; esac; }
row() { # label unit scale col [decimals]
    b=$(col berthd "$4"); c=$(col containerd "$4")
    bv=$(absent berthd); cv=$(absent containerd); ratio=-
    [ -z "$b" ] || bv=$(printf "%.${5:-1}f %s" "$(echo "$b/$3" | bc -l)" "$2")
    [ -z "$c" ] || cv=$(printf "%.${5:-1}f %s" "$(echo "$c/$3" | bc -l)" "$2")
    [ -z "$b" ] || [ -z "$c" ] || ratio=$(printf '%.2f' "$(echo "$b/$c" | bc -l)")
    printf '%-46s %12s %12s %8s\n' "$1" "$bv" "$cv" "$ratio"
}
: >>"$WORK/berthd.txt"; : >>"$WORK/containerd.txt"
printf '%-46s %12s %12s %8s\n' "metric (median of $RUNS runs)" berthd containerd ratio
row "30 pods sequential: pod start p50" ms 1 1 0
row "30 pods sequential: pod start p99" ms 1 2 0
row "30 pods sequential: total" s 1 3 2
row "30 pods sequential: teardown total" s 1 4 2
row "30 pods 10 at a time: pod start p50" ms 1 5 0
row "30 pods 10 at a time: pod start p99" ms 1 6 0
row "30 pods 10 at a time: total" s 1 7 2
row "30 pods 10 at a time: teardown total" s 1 8 2
row "ListContainers, 100 running (median of 50)" ms 1 9 2
row "ListContainerStats, 100 running (median of 50)" ms 1 10 2
row "RSS daemon + shims, 30 pods running" MB 1024 11 1
row "PSS daemon + shims, 30 pods running" MB 1024 12 1
row "RSS of the shims alone, 30 pods running" MB 1024 13 1
row "number of shims, 30 pods running" "" 1 14 0
if [ -s "$WORK/failures" ]; then
    echo "failed steps (a metric is the median of the runs where its step worked; fail: none did):"
    grep '^== ' "$WORK/failures"
    exit 1
fi
