//! Test support: a real `docker-registry` per test, and tiny raw-TCP HTTP servers (token
//! servers, auth fronts, faulty proxies) whose behaviour each test scripts.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry::{Client, Descriptor, Digest, RegistryConfig};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The offline test images' OCI layout: `scripts/test.sh` builds them and points
/// `BERTH_TEST_IMAGES` at them.
pub fn test_oci() -> String {
    let dir = std::env::var("BERTH_TEST_IMAGES").expect(
        "BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images",
    );
    format!("{dir}/oci")
}

pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A `docker-registry` process on 127.0.0.1; killed and its storage removed on drop.
pub struct Registry {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(htpasswd, None)
    }

    /// `tls`: server certificate and key files; the registry then speaks only HTTPS.
    pub fn start_with(htpasswd: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Registry {
        Registry::start_full(htpasswd, tls, None)
    }

    /// `client_ca`: require client certificates signed by this CA.
    pub fn start_full(
        htpasswd: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
        client_ca: Option<&Path>,
    ) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut auth = String::new();
        if let Some((user, pass)) = htpasswd {
            let hash = bcrypt::hash(pass, 5).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            auth.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: r\n    path: {}\n",
                file.display()
            ));
        }
        if let Some((cert, key)) = tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            if let Some(ca) = client_ca {
                cfg.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        cfg.push_str(&auth);
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while StdStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies an image of the offline OCI layout into this registry with skopeo.
    pub fn push_test_image(&self, name: &str, repo_tag: &str, creds: Option<(&str, &str)>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        if let Some((u, p)) = creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{name}", test_oci()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

pub type Handler =
    Arc<dyn Fn(Req, TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A scripted HTTP/1.1 server: one request per connection, the handler writes the response.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(handler: Handler) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let h = handler.clone();
                tokio::spawn(async move {
                    if let Some(req) = read_head(&mut s).await {
                        h(req, s).await;
                    }
                });
            }
        });
        Server { addr, task }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(s: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Req {
        method,
        target,
        headers,
    })
}

/// Writes a complete response and closes.
pub async fn respond(mut s: TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
}

/// Forwards `req` to `upstream` (`host:port`), returning status, headers and body.
pub async fn forward(upstream: &str, req: &Req) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut rb = c.request(method, format!("http://{upstream}{}", req.target));
    for (k, v) in &req.headers {
        let lk = k.to_ascii_lowercase();
        if lk == "accept" || lk == "range" {
            rb = rb.header(k.as_str(), v.as_str());
        }
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k != "connection" && k != "transfer-encoding" && k != "date"
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

pub fn status_line(code: u16) -> String {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Other",
    };
    format!("{code} {reason}")
}

/// Writes a forwarded response as is.
pub async fn relay(s: TcpStream, status: u16, headers: Vec<(String, String)>, body: Vec<u8>) {
    let h: Vec<(&str, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    respond(s, &status_line(status), &h, &body).await;
}

pub fn client() -> Client {
    Client::new(RegistryConfig::default()).unwrap()
}

pub fn oci_blob(d: &Digest) -> Vec<u8> {
    std::fs::read(Path::new(&test_oci()).join("blobs/sha256").join(d.hex())).unwrap()
}

pub async fn collect(
    mut s: berth_registry::BlobStream,
) -> (Vec<u8>, Option<berth_registry::Error>) {
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Manifest → (config, layers) descriptors.
pub fn manifest_parts(body: &[u8]) -> (Descriptor, Vec<Descriptor>) {
    #[derive(serde::Deserialize)]
    struct M {
        config: Descriptor,
        layers: Vec<Descriptor>,
    }
    let m: M = serde_json::from_slice(body).unwrap();
    (m.config, m.layers)
}

pub fn config_dir_with(files: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    for (host, text) in files {
        let dir = d.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), text).unwrap();
    }
    let p = d.path().to_path_buf();
    (d, p)
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn make_pki() -> TestPki {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=berth-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=berth-test-client",
    ]);
    std::fs::write(
        p("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
    ]);
    TestPki {
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        ca: p("ca.pem"),
        cert: p("srv.pem"),
        key: p("srv.key"),
        dir,
    }
}
