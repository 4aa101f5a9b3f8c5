#!/bin/sh
# Installs what berth's build, demo and tests need on Debian 12 (run as root).
set -eu
PKGS="protobuf-compiler runc crun containerd containernetworking-plugins docker-registry skopeo umoci
busybox-static iptables jq hyperfine bc user-mode-linux"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian's containerd package starts nothing here (no systemd), but make sure no unit grabbed the
# default socket on machines that do have one: berth's tests never use it anyway.
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
# The CRI streaming tests drive exec through the Python `kubernetes` package's WebSocket client.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q --root-user-action=ignore 'kubernetes==37.0.2'
