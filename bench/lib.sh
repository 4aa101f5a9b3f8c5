# Shared by the bench/*.sh scripts (sourced, POSIX sh).

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wait_sock() { i=0; until [ -S "$1" ]; do i=$((i+1)); [ $i -lt 400 ] || { echo "no socket $1" >&2; exit 1; }; sleep 0.025; done; }

# Everything mounted under directory $1, deepest first, lazily unmounted.
umount_under() {
    grep " $1/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

# berthd on its own root/state/socket under $1; prints its PID. $BERTHD is the binary.
start_berthd() {
    "$BERTHD" --config /dev/null --root "$1/root" --state "$1/state" --address "$1/sock" --log-level warn >/dev/null 2>"$1/log" &
    echo $!
}

# Debian's containerd 1.6 (CRI off) on its own root/state/socket under $1; prints its PID.
start_containerd() {
    cat >"$1/config.toml" <<EOT
version = 2
root = "$1/root"
state = "$1/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$1/sock"
[ttrpc]
  address = "$1/sock.ttrpc"
EOT
    containerd --config "$1/config.toml" --log-level warn >/dev/null 2>"$1/log" &
    echo $!
}

# ---- CRI (bench/cri.sh) ----

# A TCP port nothing listens on right now (loopback).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Debian's docker-registry serving 127.0.0.1:$2 from storage under $1; prints its PID.
start_registry() {
    cat >"$1/registry.yml" <<EOT
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $1/data
http:
  addr: 127.0.0.1:$2
EOT
    docker-registry serve "$1/registry.yml" >/dev/null 2>"$1/registry.log" &
    echo $!
}

# containerd's hosts.toml layout under $1/certs.d saying registry $2 (host:port) speaks plain HTTP.
registry_plain_http() {
    mkdir -p "$1/certs.d/$2"
    cat >"$1/certs.d/$2/hosts.toml" <<EOT
server = "http://$2"
[host."http://$2"]
  capabilities = ["pull", "resolve"]
EOT
}

# A CNI 1.0 conflist in $1/net.d: bridge $2 with subnet $3 (host-local leases kept under $1/ipam,
# so they go with the directory), then portmap. No masquerading: nothing touches iptables.
write_cni_bridge() {
    mkdir -p "$1/net.d"
    cat >"$1/net.d/10-bench.conflist" <<EOT
{
  "cniVersion": "1.0.0",
  "name": "bench-$2",
  "plugins": [
    {
      "type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$3"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$1/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOT
}

# Debian's containerd 1.6 with its CRI plugin, root/state/socket/runc state/CNI config under $1,
# sandbox image $2; prints its PID. restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE.
# $CONTAINERD_RUNTIMES: more [...containerd.runtimes.<name>] tables.
start_containerd_cri() {
    cat >"$1/config.toml" <<EOT
version = 2
root = "$1/root"
state = "$1/state"
[grpc]
  address = "$1/sock"
[ttrpc]
  address = "$1/sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$1/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$2"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$1/runc"
${CONTAINERD_RUNTIMES:-}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$1/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$1/certs.d"
EOT
    containerd --config "$1/config.toml" --log-level warn >/dev/null 2>"$1/log" &
    echo $!
}

# berthd with CRI, root/state/socket/runc state/CNI config under $1, sandbox image $2; prints its
# PID. $BERTHD is the binary (its shim sits next to it); $BERTHD_LOG its log level (warn);
# $BERTHD_EXTRA more TOML for its config (e.g. a [sandbox] section).
start_berthd_cri() {
    cat >"$1/config.toml" <<EOT
[registry]
config_path = "$1/certs.d"
[cri]
sandbox_image = "$2"
stream_server_port = 0
[cri.cni]
conf_dir = "$1/net.d"
bin_dirs = ["/usr/lib/cni"]
[cri.runtimes.runc]
runtime_type = "io.containerd.berth.v2"
options = { binary_name = "runc", root = "$1/runc" }
${BERTHD_EXTRA:-}
EOT
    "$BERTHD" --config "$1/config.toml" --root "$1/root" --state "$1/state" --address "$1/sock" --log-level "${BERTHD_LOG:-warn}" >/dev/null 2>"$1/log" &
    echo $!
}

# The shims started for the daemon serving socket $1 (their command line names it).
shims_of() {
    for f in /proc/[0-9]*/cmdline; do
        # 2>/dev/null first: a process gone since the glob must not print the failed redirection.
        c=$(tr '\0' ' ' 2>/dev/null <"$f") || continue
        case "$c" in
            *containerd-shim*" $1 "* | *containerd-shim*" $1") p=${f#/proc/}; echo "${p%/cmdline}" ;;
        esac
    done
}

# Direct children of PID $1 (a shim's children are the pod's and containers' init processes).
children_of() {
    # After "pid (comm) " (comm may hold ") "), field 2 is the parent PID.
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v want="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == want) print pid }'
}

# "rss_kb pss_kb shim_rss_kb nshims" of daemon $1 plus every shim of socket $2 (PSS from smaps_rollup).
daemon_mem() {
    rss=0; pss=0; shim_rss=0; n=0
    for p in $1 $(shims_of "$2"); do
        r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || r=0
        s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || s=0
        rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0}))
        if [ "$p" != "$1" ]; then shim_rss=$((shim_rss + ${r:-0})); n=$((n + 1)); fi
    done
    echo "$rss $pss $shim_rss $n"
}

# ---- streaming (bench/stream.sh) ----

# Stops the CRI daemon whose directory is $1 (pid, sock, bridge, cgroup files in it) and removes
# everything its run left behind, finished or not: pods of the tags $3... (through CRI while it
# still answers, with $DRIVER), shims, runc state under $1/runc naming paths under $2 (never the
# system's /run/containerd), pod netns files (found by the namespaces our shims' children are
# in: containerd 1.6 keeps them in /run/netns), mounts, the bridge, the cgroups.
stop_cri_daemon() { # dir work tag...
    d=$1; w=$2; shift 2
    [ -f "$d/pid" ] || return 0
    pid=$(cat "$d/pid")
    if kill -0 "$pid" 2>/dev/null && [ -S "$d/sock" ]; then
        for tag in "$@"; do
            timeout 120 "$DRIVER" --socket "$d/sock" teardown --tag "$tag" --parallel 10 >/dev/null 2>&1 || true
        done
    fi
    host_ns=$(stat -L -c %i /proc/self/ns/net)
    inodes=""
    shims=$(shims_of "$d/sock")
    for s in $shims; do
        for c in $(children_of "$s"); do
            i=$(stat -L -c %i "/proc/$c/ns/net" 2>/dev/null) || continue
            [ "$i" = "$host_ns" ] || inodes="$inodes $i"
        done
    done
    for s in $shims; do kill -9 "$s" 2>/dev/null || true; done
    kill "$pid" 2>/dev/null || true
    i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
    # runc state of our containers: under our own runc root, or runc's default root if the daemon
    # ignored ours; only ids whose state names a path of this run.
    for root in "$d/runc" /run/containerd/runc/k8s.io; do
        for id in $(ls "$root" 2>/dev/null); do
            grep -qs "$w" "$root/$id/state.json" && runc --root "$root" delete --force "$id" 2>/dev/null || true
        done
    done
    for f in /run/netns/*; do
        [ -e "$f" ] || continue
        i=$(stat -L -c %i "$f" 2>/dev/null) || continue
        case " $inodes " in *" $i "*) umount -l "$f" 2>/dev/null || true; rm -f "$f" ;; esac
    done
    umount_under "$d"
    ip link del "$(cat "$d/bridge")" 2>/dev/null || true
    for c in /sys/fs/cgroup/*/"$(cat "$d/cgroup")"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -f "$d/pid"
}

# The start of every CRI benchmark, after its release build into $CARGO_TARGET_DIR: binaries
# (BIN, BERTHD, DRIVER), a work dir /tmp/berth-$1-bench.* (WORK), the offline images (IMAGES,
# built once), and names no other run shares — bridges, subnets and cgroup parents carry this
# script's PID (TAG, CGROUP, NET: a free 10.NET.0.0/16 from $2 up) — and what cleanup restores.
begin_cri_bench() { # name net-base
    BIN=$CARGO_TARGET_DIR/release
    BERTHD=$BIN/berthd
    DRIVER=$BIN/berth-cri-bench
    WORK=$(mktemp -d "/tmp/berth-$1-bench.XXXXXX")
    IMAGES=${BERTH_TEST_IMAGES:-$PWD/target/testimages}
    [ -d "$IMAGES/oci" ] || sh ../shared/testimages/make-test-images.sh "$IMAGES" >/dev/null
    TAG=$$
    CGROUP=berth-$1-bench-$TAG
    NET=$(($2 + TAG % 100))
    while ip -4 route | grep -q "^10\.$NET\."; do NET=$((NET + 1)); done
    IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
    REG_PID=""
}

# The end of every CRI benchmark's cleanup (after its daemons are stopped): the registry
# ($REG_PID), the run's cgroup parent ($CGROUP), ip_forward as it was ($IP_FORWARD, the bridge
# plugin turns it on), mounts and files under $WORK.
end_cri_bench() {
    [ -z "${REG_PID:-}" ] || kill "$REG_PID" 2>/dev/null || true
    for c in /sys/fs/cgroup/*/"$CGROUP"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    echo "$IP_FORWARD" >/proc/sys/net/ipv4/ip_forward
    umount_under "$WORK"
    rm -rf "$WORK"
}

# A loopback docker-registry under $1 holding tags $2... of the offline OCI layout $IMAGES;
# sets REG (host:port) and REG_PID.
start_bench_registry() { # dir tag...
    rdir=$1; shift
    mkdir -p "$rdir"
    port=$(free_port)
    REG_PID=$(start_registry "$rdir" "$port")
    i=0; until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do i=$((i + 1)); [ $i -lt 400 ] || { echo "registry did not start" >&2; exit 1; }; sleep 0.025; done
    REG=127.0.0.1:$port
    for t in "$@"; do
        skopeo copy -q --dest-tls-verify=false "oci:$IMAGES/oci:$t" "docker://$REG/$t:latest"
    done
}

# One step of a run ($d, $kind, $r, $LOGS, $WORK set by the caller): the driver's JSON goes to
# $d/<name>.json. A failing step is reported (step, the driver's error naming the RPC, the
# daemon's log tail, kept under $LOGS) and returns 1; the run goes on.
step() { # name driver-args...
    name=$1; shift
    "$DRIVER" --socket "$d/sock" "$@" >"$d/$name.json" 2>"$d/$name.err" && return 0
    rm -f "$d/$name.json"
    mkdir -p "$LOGS"
    sed 's/\x1b\[[0-9;]*m//g' "$d/log" >"$LOGS/$kind-$r.log" 2>/dev/null || true
    {
        echo "== $kind run $r, step '$name' ($*):"
        cat "$d/$name.err"
        echo "-- last lines of the $kind log (all of it: $LOGS/$kind-$r.log):"
        tail -n 8 "$LOGS/$kind-$r.log"
    } | tee -a "$WORK/failures" >&2
    return 1
}

# A field of a step's JSON; x when the step failed.
j() { [ -f "$d/$1.json" ] && jq -r "$2" "$d/$1.json" || echo x; }
