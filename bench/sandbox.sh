#!/bin/sh
# Sandboxed pods (RuntimeClass handler `sandbox`: containerd-shim-berth-sandbox-v2, one User-Mode
# Linux guest kernel per pod) against runc pods, and berthd against Debian's containerd 1.6
# running the same sandbox shim, in the same run. Each daemon has its own temp root, state,
# socket, CNI bridge/subnet and cgroup parent; all are driven over CRI by bench/cri-driver.
#   1. pod start (RunPodSandbox + CreateContainer + StartContainer, busybox `sleep`), 10 pods
#      one at a time, p50/p99: sandboxed cold on berthd and on containerd; sandboxed from a warm
#      pool of 10 pre-booted guests on berthd ([sandbox] pool_size = 10, filled before timing;
#      each pod taken starts a replacement booting in the background, as in production); runc
#      on berthd for reference
#   2. host memory per idle sandboxed pod with the 10 cold ones running: RSS and PSS of every
#      process of each guest kernel (its PID namespace) plus the shims; the same for runc pods
#      (shim + pause + container)
#   3. workloads inside a running container through ExecSync, sandboxed vs runc on one berthd,
#      median of 3: syscall-heavy `dd if=/dev/zero of=/dev/null bs=1 count=200000` and
#      CPU-bound shell arithmetic (300,000 iterations)
# usage: bench/sandbox.sh [RUNS=1]   (root; release builds of berthd, the shims, the agent, the driver)
#   KINDS="berthd warm containerd" chooses the daemons; KEEP_LOGS=1 keeps their logs in
#   target/sandbox-bench-logs.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-1}
KINDS=${KINDS:-berthd warm containerd}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p berthd -p berth-shim -p berth-sandbox-shim -p berth-cri-bench \
    --bin berthd --bin containerd-shim-berth-v2 --bin containerd-shim-berth-sandbox-v2 --bin berth-cri-bench
BERTH_SANDBOX_AGENT=$(sh scripts/build-sandbox-agent.sh --release -q)
export BERTH_SANDBOX_AGENT
begin_cri_bench sandbox 100
# containerd finds the sandbox shim on PATH.
export PATH="$BIN:$PATH"
POOL=10
DD="dd if=/dev/zero of=/dev/null bs=1 count=200000"
CPU='i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'

# Guest kernels of a daemon dir $1: their pid files (the shim writes <state>/<ns>-<id>.pid).
kernel_pids() {
    for f in "$1"/sandbox-state/*.pid "$1"/state/sandbox/*.pid; do
        [ -f "$f" ] && { cat "$f"; echo; }
    done
    return 0
}

# Stops daemon dir $1 and whatever its pods left, guest kernels included (by the pids they
# recorded, checked to be kernels: their shims may have been killed).
stop_all() {
    stop_cri_daemon "$1" "$WORK" cold warm runc ex-sb ex-runc
    for p in $(kernel_pids "$1"); do
        grep -qs '^linux.uml' "/proc/$p/cmdline" && kill -9 "$p" 2>/dev/null || true
    done
}

cleanup() {
    for d in "$WORK"/*/; do
        [ -d "$d" ] && stop_all "${d%/}"
    done
    end_cri_bench
}
trap cleanup EXIT INT TERM

start_bench_registry "$WORK/registry" busybox pause
PAUSE=$REG/pause:latest
BUSYBOX=$REG/busybox:latest

# "rss_kb pss_kb" summed over every process of the PID namespaces of the given processes.
ns_mem() {
    inodes=""
    for p in "$@"; do inodes="$inodes $(stat -L -c %i "/proc/$p/ns/pid" 2>/dev/null || true)"; done
    rss=0; pss=0
    for s in /proc/[0-9]*; do
        i=$(stat -L -c %i "$s/ns/pid" 2>/dev/null) || continue
        case " $inodes " in *" $i "*) ;; *) continue ;; esac
        r=$(awk '/^VmRSS/ {print $2}' "$s/status" 2>/dev/null) || r=0
        q=$(awk '/^Pss:/ {print $2}' "$s/smaps_rollup" 2>/dev/null) || q=0
        rss=$((rss + ${r:-0})); pss=$((pss + ${q:-0}))
    done
    echo "$rss $pss"
}

# "rss_kb pss_kb" of the shims of socket $1 and their child processes (runc pods: pause and
# container inits; sandboxed pods: the guest kernels, counted by ns_mem instead).
shim_mem() {
    rss=0; pss=0
    for s in $(shims_of "$1"); do
        for p in $s $([ "${2:-}" = children ] && children_of "$s"); do
            r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || r=0
            q=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || q=0
            rss=$((rss + ${r:-0})); pss=$((pss + ${q:-0}))
        done
    done
    echo "$rss $pss"
}

# Waits (up to 180 s) until $2 warm guests of daemon dir $1 have booted (their shims write
# <dir>.ready once the guest's agent answers).
wait_pool() {
    i=0
    while :; do
        n=0
        for f in "$1"/state/sandbox/k8s.io-warm-*.ready; do
            p=${f%.ready}.pid
            [ -f "$f" ] && grep -qs '^linux.uml' "/proc/$(cat "$p")/cmdline" && n=$((n + 1))
        done
        [ "$n" -ge "$2" ] && return 0
        i=$((i + 1)); [ $i -lt 1800 ] || { echo "the warm pool did not fill ($n of $2)" >&2; return 1; }
        sleep 0.1
    done
}

run_one() {
    d=$WORK/$kind-$r; mkdir -p "$d"
    case $kind in berthd) n=10 ;; warm) n=20 ;; *) n=30 ;; esac
    echo "bsb$TAG$(echo "$kind" | cut -c1)" >"$d/bridge"
    echo "$CGROUP/$kind-$r" >"$d/cgroup"
    write_cni_bridge "$d" "$(cat "$d/bridge")" "10.$NET.$n.0/24"
    registry_plain_http "$d" "$REG"
    case $kind in
        containerd)
            printf '{"state_dir": "%s"}\n' "$d/sandbox-state" >"$d/sandbox.json"
            CONTAINERD_RUNTIMES='    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandbox]
      runtime_type = "io.containerd.berth-sandbox.v2"' \
                BERTH_SANDBOX_CONFIG=$d/sandbox.json start_containerd_cri "$d" "$PAUSE" >"$d/pid" ;;
        warm) BERTHD_EXTRA="[sandbox]
pool_size = $POOL" BERTHD=$BERTHD start_berthd_cri "$d" "$PAUSE" >"$d/pid" ;;
        *) start_berthd_cri "$d" "$PAUSE" >"$d/pid" ;;
    esac
    wait_sock "$d/sock"
    common="--pause-image $PAUSE --pause-already-pulled --log-dir $d/logs --cgroup-parent /$(cat "$d/cgroup")"
    step pull pull "$PAUSE" "$BUSYBOX" || return 0
    sb_mem="x x"; runc_mem="x x"; dd_sb=x; dd_runc=x; cpu_sb=x; cpu_runc=x; runc_p50=x; runc_p99=x
    case $kind in
        warm)
            wait_pool "$d" "$POOL" || return 0
            step pods pods --count 10 --parallel 1 --image "$BUSYBOX" --command "sleep 3600" \
                --runtime-handler sandbox --tag warm $common || true
            step td teardown --tag warm --parallel 1 || true ;;
        containerd)
            step pods pods --count 10 --parallel 1 --image "$BUSYBOX" --command "sleep 3600" \
                --runtime-handler sandbox --tag cold $common || true
            step td teardown --tag cold --parallel 1 || true ;;
        berthd)
            if step pods pods --count 10 --parallel 1 --image "$BUSYBOX" --command "sleep 3600" \
                --runtime-handler sandbox --tag cold --keep $common; then
                sleep 3 # idle
                set -- $(ns_mem $(kernel_pids "$d")) $(shim_mem "$d/sock")
                sb_mem="$((($1 + $3) / 10)) $((($2 + $4) / 10))"
            fi
            step td teardown --tag cold --parallel 1 || true
            if step runc pods --count 10 --parallel 1 --image "$BUSYBOX" --command "sleep 3600" \
                --runtime-handler runc --tag runc --keep $common; then
                sleep 3
                set -- $(shim_mem "$d/sock" children)
                runc_mem="$(($1 / 10)) $(($2 / 10))"
                runc_p50=$(j runc .start.p50_ms); runc_p99=$(j runc .start.p99_ms)
            fi
            step td-runc teardown --tag runc --parallel 1 || true
            if step sb-pod stream-pod --image "$BUSYBOX" --bytes 1000 --port 8080 --tag ex-sb \
                --runtime-handler sandbox $common; then
                step dd-sb exec-sync --container "$(j sb-pod .sleeper)" --calls 3 --sh "$DD" && dd_sb=$(j dd-sb .round_trip.p50_ms)
                step cpu-sb exec-sync --container "$(j sb-pod .sleeper)" --calls 3 --sh "$CPU" && cpu_sb=$(j cpu-sb .round_trip.p50_ms)
            fi
            step td-sb teardown --tag ex-sb || true
            if step runc-pod stream-pod --image "$BUSYBOX" --bytes 1000 --port 8080 --tag ex-runc \
                --runtime-handler runc $common; then
                step dd-runc exec-sync --container "$(j runc-pod .sleeper)" --calls 3 --sh "$DD" && dd_runc=$(j dd-runc .round_trip.p50_ms)
                step cpu-runc exec-sync --container "$(j runc-pod .sleeper)" --calls 3 --sh "$CPU" && cpu_runc=$(j cpu-runc .round_trip.p50_ms)
            fi
            step td-runc2 teardown --tag ex-runc || true ;;
    esac
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$LOGS"; sed 's/\x1b\[[0-9;]*m//g' "$d/log" >"$LOGS/$kind-$r.log"; fi
    echo "$(j pods .start.p50_ms) $(j pods .start.p99_ms) $runc_p50 $runc_p99 $sb_mem $runc_mem $dd_sb $dd_runc $cpu_sb $cpu_runc" >>"$WORK/$kind.txt"
}

LOGS=$PWD/target/sandbox-bench-logs
rm -rf "$LOGS"
: >"$WORK/failures"
for r in $(seq "$RUNS"); do
    for kind in $KINDS; do
        run_one
        stop_all "$WORK/$kind-$r"
        umount_under "$WORK/$kind-$r"
        rm -rf "${WORK:?}/$kind-$r"
    done
done

col() { [ -s "$WORK/$1.txt" ] && awk -v c="$2" '$c != "x" && $c != "null" {print $c}' "$WORK/$1.txt" | median || true; }
val() { v=$(col "$1" "$2"); [ -n "$v" ] && printf "%.${4:-0}f %s" "$v" "$3" || echo "-"; }
ratio() { a=$(col "$1" "$2"); b=$(col "$3" "$4"); [ -n "$a" ] && [ -n "$b" ] && printf '%.2f' "$(echo "$a/$b" | bc -l)" || echo "-"; }
for k in berthd warm containerd; do : >>"$WORK/$k.txt"; done
echo "sandbox benchmark, median of $RUNS run(s); guest kernel $(linux.uml --version 2>/dev/null | head -n1 || echo linux.uml)"
printf '%-62s %12s %12s\n' "pod start, 10 one at a time (RunPodSandbox+Create+Start)" p50 p99
printf '%-62s %12s %12s\n' "  runc pod, berthd (reference)" "$(val berthd 3 ms)" "$(val berthd 4 ms)"
printf '%-62s %12s %12s\n' "  sandboxed, cold, berthd" "$(val berthd 1 ms)" "$(val berthd 2 ms)"
printf '%-62s %12s %12s\n' "  sandboxed, cold, containerd 1.6 + berth sandbox shim" "$(val containerd 1 ms)" "$(val containerd 2 ms)"
printf '%-62s %12s %12s\n' "  sandboxed, warm pool of $POOL, berthd" "$(val warm 1 ms)" "$(val warm 2 ms)"
printf '%-62s %12s\n' "  cold berthd / containerd (p50)" "$(ratio berthd 1 containerd 1)"
printf '%-62s %12s\n' "  warm pool / runc pod (p50)" "$(ratio warm 1 berthd 3)"
printf '%-62s %12s %12s\n' "host memory per idle pod" RSS PSS
printf '%-62s %12s %12s\n' "  sandboxed (guest kernel processes + shim)" "$(val berthd 5 kB)" "$(val berthd 6 kB)"
printf '%-62s %12s %12s\n' "  runc (shim + pause + container)" "$(val berthd 7 kB)" "$(val berthd 8 kB)"
printf '%-62s %12s %12s %8s\n' "workload via ExecSync (median of 3)" sandboxed runc ratio
printf '%-62s %12s %12s %8s\n' "  syscall-heavy: $DD" "$(val berthd 9 ms)" "$(val berthd 10 ms)" "$(ratio berthd 9 berthd 10)"
printf '%-62s %12s %12s %8s\n' "  CPU-bound: 300,000 shell iterations" "$(val berthd 11 ms)" "$(val berthd 12 ms)" "$(ratio berthd 11 berthd 12)"
if [ -s "$WORK/failures" ]; then
    echo "failed steps:"
    grep '^== ' "$WORK/failures"
    exit 1
fi
