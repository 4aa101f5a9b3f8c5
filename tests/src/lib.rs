//! Harness for berth's end-to-end tests: a berthd per test on its own temp root and socket, the
//! real clients that drive it, and builders for the images the tests import.
//!
//! Everything a test starts or mounts is undone by `Drop`, even when the test fails.

pub mod client;
pub mod cri;
pub mod daemon;
pub mod oci;
pub mod registry;
pub mod spdy_client;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use daemon::Berthd;

/// Where cargo put berth's binaries (`target/<profile>`), or `$BERTH_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn berthd_bin() -> PathBuf {
    let p = bin_dir().join("berthd");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

pub fn berth_bin() -> PathBuf {
    let p = bin_dir().join("berth");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// The offline test images of `shared/testimages/make-test-images.sh`, built once per machine and
/// shared by all tests (the build is reproducible; a lock keeps parallel tests from racing it).
pub fn test_images() -> PathBuf {
    // `scripts/test.sh` builds them once for every crate's tests.
    if let Some(dir) = std::env::var_os("BERTH_TEST_IMAGES") {
        return PathBuf::from(dir);
    }
    let dir = bin_dir().join("testimages");
    let marker = dir.join("busybox-oci.tar");
    std::fs::create_dir_all(&dir).expect("create test image dir");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .expect("lock test images");
    if !marker.exists() {
        let script = repo_root().join("../shared/testimages/make-test-images.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("run make-test-images.sh");
        assert!(
            out.status.success(),
            "make-test-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// The checkout's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repo")
        .to_path_buf()
}

/// The manifests named in an OCI layout's index.json: (ref name annotation, digest).
pub fn oci_index_refs(layout: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(layout.join("index.json")).expect("index.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("index.json parses");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect()
}

/// A finished command, with its output as text for assertions.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// containerd's ChainID of a list of diff ids.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut chain = diff_ids[0].clone();
    for d in &diff_ids[1..] {
        chain = format!("sha256:{}", sha256_hex(format!("{chain} {d}").as_bytes()));
    }
    chain
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls `cond` for up to ten seconds (background work such as garbage collection).
/// The host kernel's release (`uname -r`): what a runc container sees, and a sandboxed one must not.
pub fn host_kernel_release() -> String {
    let out = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .expect("run uname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A JSON blob (manifest, config) of an OCI layout directory.
pub fn layout_blob_json(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("layout blob");
    serde_json::from_slice(&data).expect("layout blob is JSON")
}

/// The `rootfs.diff_ids` of an image config.
pub fn diff_ids(config: &serde_json::Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids")
        .iter()
        .map(|v| v.as_str().expect("diff id").to_string())
        .collect()
}

/// A berthd with the offline busybox images imported into its own namespace (`unique_ns`).
pub fn berthd_with_busybox() -> Berthd {
    let d = Berthd::start();
    let tar = test_images().join("busybox-oci.tar");
    d.ctr(
        &d.unique_ns(),
        &["images", "import", tar.to_str().expect("path")],
    )
    .ok();
    d
}

/// `ctr events` (all namespaces) written to a file while it lives; killed, by PID, on drop.
pub struct CtrEvents {
    child: std::process::Child,
    path: PathBuf,
}

impl CtrEvents {
    pub fn start(d: &Berthd) -> CtrEvents {
        let path = d
            .dir
            .path()
            .join(format!("events-{}.txt", std::process::id()));
        let child = Command::new("ctr")
            .arg("--address")
            .arg(d.socket())
            .arg("events")
            .stdout(std::fs::File::create(&path).expect("events file"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ctr events");
        // Let it subscribe before the test does what it watches for.
        std::thread::sleep(std::time::Duration::from_millis(300));
        CtrEvents { child, path }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

impl Drop for CtrEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
