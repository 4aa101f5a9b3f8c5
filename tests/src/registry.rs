//! Debian's `docker-registry` on a free loopback port, with its own storage, for one test.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry behind htpasswd basic auth for `user`:`password`.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            let hash = bcrypt::hash(password, 5).expect("bcrypt");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).expect("htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, text).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::fs::File::create(dir.path().join("access.log")).expect("access log"))
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let r = Registry { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// The registry's HTTP access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies tag `tag` of an OCI layout into this registry as `<repo>:<tag>` (skopeo, plain HTTP).
    pub fn push_layout(&self, layout: &Path, tag: &str, repo: &str) {
        self.push_layout_as(layout, tag, repo, None)
    }

    /// Like `push_layout`, every platform of an index, with `user:password` if the registry wants it.
    pub fn push_layout_as(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--all", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
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

/// A mirror in front of a registry that flips one byte of every blob body it serves: a broken or
/// hostile mirror. Counts the blobs it corrupted. Stops with the test (its listener thread dies with
/// the process; the port is loopback-only).
pub struct CorruptingMirror {
    pub port: u16,
    pub corrupted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CorruptingMirror {
    pub fn start(upstream_port: u16) -> CorruptingMirror {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mirror");
        let port = listener.local_addr().expect("addr").port();
        let corrupted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = corrupted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { break };
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let is_blob_get = text.starts_with("GET ")
                        && text.lines().next().is_some_and(|l| l.contains("/blobs/"));
                    // One request per connection: ask the registry to close when it is done.
                    let forwarded: String = text
                        .split("\r\n")
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .collect::<Vec<_>>()
                        .join("\r\n")
                        .trim_end()
                        .to_string()
                        + "\r\nConnection: close\r\n\r\n";
                    let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream_port))
                    else {
                        return;
                    };
                    if up.write_all(forwarded.as_bytes()).is_err() {
                        return;
                    }
                    let mut resp = Vec::new();
                    let _ = up.read_to_end(&mut resp);
                    if is_blob_get && resp.starts_with(b"HTTP/1.1 200") {
                        if let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                            if resp.len() > split + 4 {
                                let last = resp.len() - 1;
                                resp[last] ^= 0xff;
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                    }
                    let _ = client.write_all(&resp);
                });
            }
        });
        CorruptingMirror { port, corrupted }
    }
}
