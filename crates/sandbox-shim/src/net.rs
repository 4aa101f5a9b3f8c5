//! Connects the pod's network namespace to the guest: a tap device the guest kernel opens, and
//! tc redirects between it and the interface CNI configured, so every frame for the pod's
//! address reaches the guest (which takes over that interface's MAC and addresses).

use std::path::Path;
use std::process::Command;

use berth_sandbox_proto::{Interface, Route};
use serde::Deserialize;

use crate::error::{Error, Result};

pub const TAP: &str = "berthtap0";

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    address: String,
    #[serde(default)]
    addr_info: Vec<Addr>,
}

#[derive(Deserialize)]
struct Addr {
    family: String,
    local: String,
    prefixlen: u32,
}

#[derive(Deserialize)]
struct RouteEntry {
    dst: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    dev: String,
    #[serde(default)]
    protocol: String,
}

/// What the guest must configure, found in the pod's network namespace.
pub struct PodNetwork {
    /// The CNI interface in the pod namespace (`eth0`).
    pub host_if: String,
    pub guest: Interface,
    pub routes: Vec<Route>,
}

fn run(netns: &Path, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args);
    let out = crate::cmd::output(cmd, input.map(str::as_bytes))?;
    if !out.success {
        return Err(Error::Other(format!(
            "{program} {} in {}: {}",
            args.join(" "),
            netns.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The first interface with an IPv4 address other than `lo`, its routes, and its MAC.
pub fn inspect(netns: &Path) -> Result<Option<PodNetwork>> {
    let links: Vec<Link> = serde_json::from_str(&run(netns, "ip", &["-j", "addr", "show"], None)?)
        .map_err(|e| Error::Other(format!("parse ip addr output: {e}")))?;
    let Some(link) = links.into_iter().find(|l| {
        l.ifname != "lo" && l.ifname != TAP && l.addr_info.iter().any(|a| a.family == "inet")
    }) else {
        return Ok(None);
    };
    let routes: Vec<RouteEntry> =
        serde_json::from_str(&run(netns, "ip", &["-j", "-4", "route", "show"], None)?)
            .map_err(|e| Error::Other(format!("parse ip route output: {e}")))?;
    let guest_if = "eth0".to_string();
    Ok(Some(PodNetwork {
        guest: Interface {
            name: guest_if.clone(),
            addresses: link
                .addr_info
                .iter()
                .filter(|a| a.family == "inet")
                .map(|a| format!("{}/{}", a.local, a.prefixlen))
                .collect(),
            mac: link.address.clone(),
            mtu: link.mtu,
        },
        // The guest kernel adds the connected route of its address itself.
        routes: routes
            .into_iter()
            .filter(|r| r.dev == link.ifname && r.protocol != "kernel")
            .map(|r| Route {
                destination: r.dst,
                gateway: r.gateway,
                device: guest_if.clone(),
            })
            .collect(),
        host_if: link.ifname,
    }))
}

/// Creates the tap the guest kernel opens (owned by its host uid).
pub fn create_tap(netns: &Path, host_uid: u32) -> Result<()> {
    let uid = host_uid.to_string();
    run(
        netns,
        "ip",
        &[
            "tuntap", "add", "dev", TAP, "mode", "tap", "user", &uid, "group", &uid,
        ],
        None,
    )
    .map(drop)
}

/// Redirects every frame between the CNI interface and the tap, both ways.
pub fn redirect(netns: &Path, net: &PodNetwork) -> Result<()> {
    let mtu = net.guest.mtu.max(576).to_string();
    run(netns, "ip", &["link", "set", TAP, "mtu", &mtu, "up"], None)?;
    let eth = &net.host_if;
    let script = format!(
        "qdisc add dev {eth} ingress\n\
         filter add dev {eth} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev {TAP}\n\
         qdisc add dev {TAP} ingress\n\
         filter add dev {TAP} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev {eth}\n"
    );
    run(netns, "tc", &["-batch", "-"], Some(&script)).map(drop)
}

/// Removes the tap and the redirect on the CNI interface, if any (best effort: the namespace
/// may be gone already).
pub fn disconnect(netns: &Path, host_if: Option<&str>) {
    if !netns.exists() {
        return;
    }
    if let Some(eth) = host_if {
        let _ = run(netns, "tc", &["qdisc", "del", "dev", eth, "ingress"], None);
    }
    let _ = run(netns, "ip", &["link", "del", TAP], None);
}

/// A locally administered unicast MAC for a guest whose pod interface is not known yet.
pub fn random_mac() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b[0] = (b[0] & 0xfe) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
