//! Registry host configuration in containerd's `hosts.toml` format.
//!
//! `<config_path>/<host>/hosts.toml` (or `<config_path>/_default/hosts.toml`) lists mirrors as
//! `[host."scheme://addr/path"]` tables, tried in file order, followed by the top-level `server`.
//! Without a file the registry itself is the only host.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// Which operation a host is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Pull,
    Resolve,
    Push,
}

/// One endpoint to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `scheme://authority` without a trailing slash.
    pub origin: String,
    /// `host[:port]`: the key for credentials and auth tokens.
    pub authority: String,
    /// API root path, e.g. `/v2` (requests go to `<origin><path>/<repo>/manifests/...`).
    pub path: String,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// CA certificate files (PEM) trusted in addition to the system roots.
    pub ca: Vec<PathBuf>,
    /// Client certificate and key files (PEM); the key may be inside the cert file.
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Extra headers sent with every request to this host.
    pub headers: Vec<(String, String)>,
    /// True for mirrors (not the registry's own server): containerd adds `?ns=<registry>`.
    pub is_mirror: bool,
}

impl RegistryHost {
    pub fn can(&self, c: Capability) -> bool {
        match c {
            Capability::Pull => self.capabilities.pull,
            Capability::Resolve => self.capabilities.resolve,
            Capability::Push => self.capabilities.push,
        }
    }

    /// Base URL for API calls: `<origin><path>`.
    pub fn base(&self) -> String {
        format!("{}{}", self.origin, self.path)
    }
}

/// The host list for registry `domain` (a reference's domain, e.g. `docker.io` or
/// `127.0.0.1:5000`).
pub fn hosts_for(config_path: Option<&Path>, domain: &str) -> Result<Vec<RegistryHost>> {
    if let Some(dir) = config_path {
        for name in [domain, "_default"] {
            let file = dir.join(name).join("hosts.toml");
            match std::fs::read_to_string(&file) {
                Ok(text) => return parse_hosts_toml(&text, &file, domain),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Config {
                        file: file.display().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
    let server = default_server(domain);
    Ok(vec![host_from_url(&server, false).map_err(|reason| {
        Error::InvalidArgument(format!("registry host {domain:?}: {reason}"))
    })?])
}

/// containerd's default: Docker Hub's API lives at registry-1.docker.io; loopback registries are
/// spoken to in plain HTTP (as Docker treats 127.0.0.0/8 as insecure); everything else is HTTPS.
fn default_server(domain: &str) -> String {
    if domain == "docker.io" {
        return "https://registry-1.docker.io".to_string();
    }
    if is_loopback(domain) {
        return format!("http://{domain}");
    }
    format!("https://{domain}")
}

fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses one hosts.toml. `file` only names the file in errors and resolves relative paths.
pub fn parse_hosts_toml(text: &str, file: &Path, domain: &str) -> Result<Vec<RegistryHost>> {
    let bad = |reason: String| Error::Config {
        file: file.display().to_string(),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    let mut hosts = Vec::new();
    if let Some(h) = table.get("host") {
        let h = h
            .as_table()
            .ok_or_else(|| bad("`host` must be a table of tables".into()))?;
        // toml's `preserve_order` keeps the file order: mirrors are tried as written.
        for (url, v) in h {
            let t = v
                .as_table()
                .ok_or_else(|| bad(format!("host {url:?} must be a table")))?;
            hosts.push(
                parse_host(url, t, true, base_dir)
                    .map_err(|r| bad(format!("host {url:?}: {r}")))?,
            );
        }
    }
    let server = match table.get("server") {
        Some(s) => s
            .as_str()
            .ok_or_else(|| bad("`server` must be a string".into()))?
            .to_string(),
        None => default_server(domain),
    };
    hosts.push(
        parse_host(&server, &table, false, base_dir)
            .map_err(|r| bad(format!("server {server:?}: {r}")))?,
    );
    Ok(hosts)
}

fn parse_host(
    url: &str,
    t: &toml::Table,
    is_mirror: bool,
    base_dir: &Path,
) -> std::result::Result<RegistryHost, String> {
    let mut h = host_from_url(url, override_path(t)?)?;
    h.is_mirror = is_mirror;
    if let Some(c) = t.get("capabilities") {
        let list = c.as_array().ok_or("`capabilities` must be a list")?;
        let mut caps = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for c in list {
            match c.as_str() {
                Some("pull") => caps.pull = true,
                Some("resolve") => caps.resolve = true,
                Some("push") => caps.push = true,
                _ => return Err(format!("unknown capability {c}")),
            }
        }
        h.capabilities = caps;
    }
    if let Some(v) = t.get("skip_verify") {
        h.skip_verify = v.as_bool().ok_or("`skip_verify` must be a boolean")?;
    }
    if let Some(v) = t.get("ca") {
        h.ca = strings(v, "ca")?
            .into_iter()
            .map(|p| base_dir.join(p))
            .collect();
    }
    if let Some(v) = t.get("client") {
        h.client = client_pairs(v, base_dir)?;
    }
    if let Some(v) = t.get("header") {
        let ht = v.as_table().ok_or("`header` must be a table")?;
        for (k, v) in ht {
            for value in strings(v, "header value")? {
                h.headers.push((k.clone(), value));
            }
        }
    }
    Ok(h)
}

fn override_path(t: &toml::Table) -> std::result::Result<bool, String> {
    match t.get("override_path") {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| "`override_path` must be a boolean".to_string()),
    }
}

/// A string or a list of strings.
fn strings(v: &toml::Value, what: &str) -> std::result::Result<Vec<String>, String> {
    match v {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{what}` entries must be strings"))
            })
            .collect(),
        _ => Err(format!("`{what}` must be a string or a list of strings")),
    }
}

/// `client = "cert.pem"`, `["cert.pem", "key.pem"]` or `[["cert.pem", "key.pem"], ...]`.
fn client_pairs(
    v: &toml::Value,
    base_dir: &Path,
) -> std::result::Result<Vec<(PathBuf, Option<PathBuf>)>, String> {
    let err = || "`client` must be a path, [cert, key] or a list of [cert, key]".to_string();
    match v {
        toml::Value::String(s) => Ok(vec![(base_dir.join(s), None)]),
        toml::Value::Array(a) if a.iter().all(|x| x.is_str()) => {
            let s: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
            match s.as_slice() {
                [c] => Ok(vec![(base_dir.join(c), None)]),
                [c, k] => Ok(vec![(base_dir.join(c), Some(base_dir.join(k)))]),
                _ => Err(err()),
            }
        }
        toml::Value::Array(a) => a
            .iter()
            .map(|pair| match pair.as_array().map(|p| p.as_slice()) {
                Some([c]) => Ok((base_dir.join(c.as_str().ok_or_else(err)?), None)),
                Some([c, k]) => Ok((
                    base_dir.join(c.as_str().ok_or_else(err)?),
                    Some(base_dir.join(k.as_str().ok_or_else(err)?)),
                )),
                _ => Err(err()),
            })
            .collect(),
        _ => Err(err()),
    }
}

/// Splits `scheme://authority/path`. The API path is `/v2` appended to the URL's path unless
/// `override_path` says the path is already the API root.
fn host_from_url(url: &str, override_path: bool) -> std::result::Result<RegistryHost, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("URL must start with http:// or https://")?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?}"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err("invalid host".into());
    }
    let mut path = path.trim_end_matches('/').to_string();
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok(RegistryHost {
        origin: format!("{scheme}://{authority}"),
        authority: authority.to_string(),
        path,
        capabilities: Capabilities::ALL,
        skip_verify: false,
        ca: Vec::new(),
        client: Vec::new(),
        headers: Vec::new(),
        is_mirror: false,
    })
}

/// Headers as a map, for callers that want to inspect them.
pub fn header_map(h: &RegistryHost) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &h.headers {
        m.entry(k.clone()).or_default().push(v.clone());
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_hosts() {
        let h = hosts_for(None, "docker.io").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].base(), "https://registry-1.docker.io/v2");
        let h = hosts_for(None, "127.0.0.1:5000").unwrap();
        assert_eq!(h[0].base(), "http://127.0.0.1:5000/v2");
        let h = hosts_for(None, "quay.io").unwrap();
        assert_eq!(h[0].base(), "https://quay.io/v2");
    }

    #[test]
    fn parses_mirrors_in_file_order() {
        let text = r#"
server = "https://registry.example"
[host."http://zz-mirror:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  ca = ["a.pem", "/abs/b.pem"]
  client = [["c.pem", "k.pem"]]
  [host."http://zz-mirror:5000".header]
    x-one = "1"
    x-two = ["a", "b"]
[host."https://aa-mirror/v2/library"]
  override_path = true
  ca = "single.pem"
  client = "both.pem"
"#;
        let h =
            parse_hosts_toml(text, Path::new("/etc/d/docker.io/hosts.toml"), "docker.io").unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].base(), "http://zz-mirror:5000/v2");
        assert!(h[0].is_mirror && h[0].skip_verify);
        assert!(!h[0].capabilities.push && h[0].capabilities.pull);
        assert_eq!(
            h[0].ca,
            vec![
                PathBuf::from("/etc/d/docker.io/a.pem"),
                PathBuf::from("/abs/b.pem")
            ]
        );
        assert_eq!(
            h[0].client,
            vec![(
                PathBuf::from("/etc/d/docker.io/c.pem"),
                Some(PathBuf::from("/etc/d/docker.io/k.pem"))
            )]
        );
        assert_eq!(header_map(&h[0])["x-two"], vec!["a", "b"]);
        assert_eq!(h[1].base(), "https://aa-mirror/v2/library");
        assert_eq!(h[1].client.len(), 1);
        assert_eq!(h[2].base(), "https://registry.example/v2");
        assert!(!h[2].is_mirror && h[2].capabilities.push);
    }

    #[test]
    fn bad_file_names_the_file() {
        let e = parse_hosts_toml("server = 3", Path::new("/x/hosts.toml"), "d").unwrap_err();
        assert!(e.to_string().contains("/x/hosts.toml"), "{e}");
        let e =
            parse_hosts_toml("[host.\"ftp://x\"]", Path::new("/y/hosts.toml"), "d").unwrap_err();
        assert!(e.to_string().contains("/y/hosts.toml"), "{e}");
        let e = parse_hosts_toml("not toml [", Path::new("/z/hosts.toml"), "d").unwrap_err();
        assert!(e.to_string().contains("/z/hosts.toml"), "{e}");
    }

    #[test]
    fn reads_host_dirs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("127.0.0.1:5000")).unwrap();
        std::fs::write(
            d.path().join("127.0.0.1:5000/hosts.toml"),
            "server = \"https://127.0.0.1:5000\"\n",
        )
        .unwrap();
        let h = hosts_for(Some(d.path()), "127.0.0.1:5000").unwrap();
        assert_eq!(h[0].origin, "https://127.0.0.1:5000");
        std::fs::create_dir_all(d.path().join("_default")).unwrap();
        std::fs::write(
            d.path().join("_default/hosts.toml"),
            "[host.\"http://127.0.0.1:9\"]\n",
        )
        .unwrap();
        let h = hosts_for(Some(d.path()), "quay.io").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].origin, "https://quay.io");
    }
}
