use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Where and how the streaming server listens.
#[derive(Debug, Clone)]
pub struct Config {
    pub address: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// How long a URL handed out by `exec_url` and friends stays usable.
    pub token_ttl: Duration,
    /// A connection that carried no byte for this long is closed (the kubelet's default is 4 h).
    pub idle_timeout: Duration,
    /// SPDY streams (or forwarded WebSocket ports) one connection may hold at once.
    pub max_streams_per_connection: usize,
    /// None: plain HTTP (the default, as containerd's `enable_tls_streaming = false`).
    pub tls: Option<crate::tls::TlsConfig>,
    /// The address put in URLs when `address` is unspecified (0.0.0.0 or ::), where clients
    /// cannot connect to the bound address itself; None keeps the bound address.
    pub advertise: Option<IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            token_ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(4 * 3600),
            max_streams_per_connection: 128,
            tls: None,
            advertise: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    /// May be empty: the client then names the ports (query `ports=` or SPDY `port` headers).
    /// When not empty, only these ports may be forwarded.
    pub ports: Vec<u16>,
}

/// A terminal window size, as sent on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}
