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
