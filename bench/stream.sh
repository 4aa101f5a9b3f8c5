#!/bin/sh
# CRI streaming side by side: berthd vs Debian's containerd 1.6 with its CRI plugin (each on its
# own temp root, state, socket, runc root, CNI bridge and subnet, cgroup parent, streaming server
# on 127.0.0.1 and a free port), driven by bench/cri-driver (berth-cri-bench; no crictl or
# kubectl here). One pod per daemon and run: container c0 sleeps, c1 serves a file of $BYTES
# zero bytes with busybox httpd on port 8080. Metrics:
#   - ExecSync of `true` in c0: round-trip p50/p99 over $CALLS calls
#   - streaming exec of `true` in c0: Exec RPC + SPDY upgrade (v4.channel.k8s.io) + error,
#     stdout and stderr streams until the v4 status: round-trip p50/p99 over $CALLS sessions
#   - port forward: PortForward RPC + SPDY portforward.k8s.io session (error + data stream),
#     GET of the file through it: MB/s (10^6 bytes) from the RPC to the last byte, median of
#     $TRANSFERS downloads
# Each figure in the table is the median over the RUNS runs (a fresh daemon each run).
# usage: bench/stream.sh [RUNS=3]    (root; builds berthd, its shim and the driver in release mode)
#   KINDS="containerd berthd" chooses the daemons; CALLS (100), TRANSFERS (3), BYTES (100000000);
#   WINDOW_KIB (16384): the SPDY receive window the driver announces. kubectl's SPDY library
#   announces none and ignores windows, so servers that honour flow control (berthd) never
#   throttle it; a small window here would hold back berthd alone (containerd ignores it).
#   BERTHD_LOG=debug makes the berthd log kept for a failed step useful; KEEP_LOGS=1 keeps every
#   daemon's log in target/stream-bench-logs.
# A step that fails is reported (step, the driver's error, log tail; the whole log is kept in
# target/stream-bench-logs/) and the run goes on; a metric whose step never worked reads "fail",
# and the script exits 1.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-3}
KINDS=${KINDS:-containerd berthd}
CALLS=${CALLS:-100}
TRANSFERS=${TRANSFERS:-3}
BYTES=${BYTES:-100000000}
WINDOW_KIB=${WINDOW_KIB:-16384}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
case " $KINDS " in
    *" berthd "*) cargo build --release -q -p berthd -p berth-shim -p berth-cri-bench --bin berthd --bin containerd-shim-berth-v2 --bin berth-cri-bench ;;
    *) cargo build --release -q -p berth-cri-bench ;;
esac
begin_cri_bench stream 150

cleanup() {
    for d in "$WORK"/*/; do [ -d "$d" ] && stop_cri_daemon "${d%/}" "$WORK" stream; done
    end_cri_bench
}
trap cleanup EXIT INT TERM

# The registry, with the two images used here.
start_bench_registry "$WORK/registry" busybox pause
PAUSE=$REG/pause:latest
BUSYBOX=$REG/busybox:latest

# Appends "sync_p50 sync_p99 stream_p50 stream_p99 pf_mb_s" for daemon $kind, run $r, to
# $WORK/<kind>.txt (x where a step failed).
run_one() {
    d=$WORK/$kind-$r; mkdir -p "$d"
    case $kind in containerd) n=10 ;; *) n=20 ;; esac
    echo "bstr$TAG$(echo "$kind" | cut -c1)" >"$d/bridge"
    echo "$CGROUP/$kind-$r" >"$d/cgroup"
    write_cni_bridge "$d" "$(cat "$d/bridge")" "10.$NET.$n.0/24"
    registry_plain_http "$d" "$REG"
    start_${kind}_cri "$d" "$PAUSE" >"$d/pid"
    wait_sock "$d/sock"
    step pull pull "$PAUSE" "$BUSYBOX" || return 0
    if step pod stream-pod --image "$BUSYBOX" --bytes "$BYTES" --port 8080 --tag stream \
        --pause-image "$PAUSE" --pause-already-pulled --log-dir "$d/logs" --cgroup-parent "/$(cat "$d/cgroup")"; then
        step exec-sync exec-sync --container "$(j pod .sleeper)" --calls "$CALLS" || true
        step exec-stream exec-stream --container "$(j pod .sleeper)" --calls "$CALLS" || true
        step pf port-forward --pod "$(j pod .pod)" --port 8080 --bytes "$BYTES" --transfers "$TRANSFERS" --window-kib "$WINDOW_KIB" || true
    fi
    step td teardown --tag stream || true
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$LOGS"; sed 's/\x1b\[[0-9;]*m//g' "$d/log" >"$LOGS/$kind-$r.log"; fi
    echo "$(j exec-sync .round_trip.p50_ms) $(j exec-sync .round_trip.p99_ms)" \
        "$(j exec-stream .round_trip.p50_ms) $(j exec-stream .round_trip.p99_ms)" \
        "$(j pf .median_mb_per_s)" >>"$WORK/$kind.txt"
}

LOGS=$PWD/target/stream-bench-logs
rm -rf "$LOGS"
: >"$WORK/failures"
for r in $(seq "$RUNS"); do
    for kind in $KINDS; do
        run_one
        stop_cri_daemon "$WORK/$kind-$r" "$WORK" stream
        rm -rf "${WORK:?}/$kind-$r"
    done
done

# Median of column $2 for daemon $1 over the runs where that step worked; "" when none did.
col() { [ -s "$WORK/$1.txt" ] && awk -v c="$2" '$c != "x" && $c != "null" {print $c}' "$WORK/$1.txt" | median || true; }
absent() { case " $KINDS " in *" $1 "*) echo fail ;; *) echo "not run" ;; esac; }
row() { # label unit col decimals
    b=$(col berthd "$3"); c=$(col containerd "$3")
    bv=$(absent berthd); cv=$(absent containerd); ratio=-
    [ -z "$b" ] || bv=$(printf "%.$4f %s" "$b" "$2")
    [ -z "$c" ] || cv=$(printf "%.$4f %s" "$c" "$2")
    [ -z "$b" ] || [ -z "$c" ] || ratio=$(printf '%.2f' "$(echo "$b/$c" | bc -l)")
    printf '%-50s %12s %12s %8s\n' "$1" "$bv" "$cv" "$ratio"
}
: >>"$WORK/berthd.txt"; : >>"$WORK/containerd.txt"
printf '%-50s %12s %12s %8s\n' "metric (median of $RUNS runs)" berthd containerd ratio
row "ExecSync true: round trip p50 ($CALLS calls)" ms 1 2
row "ExecSync true: round trip p99" ms 2 2
row "exec true over SPDY v4: round trip p50 ($CALLS)" ms 3 2
row "exec true over SPDY v4: round trip p99" ms 4 2
row "port forward, $((BYTES / 1000000)) MB over SPDY: throughput" MB/s 5 0
if [ -s "$WORK/failures" ]; then
    echo "failed steps (a metric is the median of the runs where its step worked; fail: none did):"
    grep '^== ' "$WORK/failures"
    exit 1
fi
