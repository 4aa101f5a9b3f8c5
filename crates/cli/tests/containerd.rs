//! The built `berth` binary against a real containerd 1.6 on a temp dir (skipped, with a
//! printed reason, when containerd or the test images are unavailable).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A private containerd; killed, unmounted and removed on drop, even when a test fails.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Option<Self> {
        if !Path::new("/usr/bin/containerd").exists() {
            eprintln!("skipping: /usr/bin/containerd is missing");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-test")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.socket().exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(c)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn berth(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--address")
            .arg(self.socket())
            .args(["-n", ns])
            .args(args)
            .output()
            .expect("run berth")
    }

    fn ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.berth(ns, args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn json(&self, ns: &str, args: &[&str]) -> Value {
        let mut a = vec!["--format", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(ns, &a)).expect("json output")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshot mounts under our root must go before the directory can be removed.
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|t| t.starts_with(&root))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = Command::new("umount").arg("-l").arg(t).status();
            }
        }
    }
}

/// One of the offline test images: `scripts/test.sh` builds them and points `BERTH_TEST_IMAGES`
/// at them. (Always `Some`: a missing image fails the test rather than skipping it.)
fn test_image(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_TEST_IMAGES")
        .map(PathBuf::from)
        .expect(
        "BERTH_TEST_IMAGES is not set: run ./scripts/test.sh, which builds the offline test images",
    );
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing", p.display());
    Some(p)
}

/// (name, digest) pairs from the archive's own index.json.
fn index_entries(tar_path: &Path) -> Vec<(String, String)> {
    let out = Command::new("tar")
        .arg("xOf")
        .arg(tar_path)
        .arg("index.json")
        .output()
        .expect("tar");
    let v: Value = serde_json::from_slice(&out.stdout).expect("index.json");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .expect("name")
                    .to_string(),
                m["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect()
}

fn listed(images: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = images
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name").to_string(),
                i["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn import_ls_snapshot_export_roundtrip_rm() {
    let Some(tarball) = test_image("busybox-oci.tar") else {
        return;
    };
    let Some(ctrd) = Containerd::start() else {
        return;
    };

    let v = ctrd.ok("t1", &["version"]);
    assert!(v.contains("Server"), "{v}");

    let out = ctrd.ok("t1", &["image", "import", tarball.to_str().expect("path")]);
    let mut want = index_entries(&tarball);
    want.sort();
    for (name, digest) in &want {
        assert!(out.contains(&format!("{name} {digest}")), "{out}");
    }
    assert_eq!(listed(&ctrd.json("t1", &["image", "ls"])), want);

    // The shared layer was unpacked once, committed under its chain id (= its diff id).
    let snaps = ctrd.json("t1", &["snapshot", "ls"]);
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["kind"], "Committed");
    let content = ctrd.json("t1", &["content", "ls"]);
    let uncompressed: Vec<&str> = content
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["labels"]["containerd.io/uncompressed"].as_str())
        .collect();
    assert_eq!(uncompressed, [snaps[0]["key"].as_str().expect("key")]);
    // The import lease is gone.
    assert_eq!(ctrd.json("t1", &["lease", "ls"]), Value::Array(vec![]));

    // Export and re-import into another namespace: same names, same digests.
    let exported = ctrd.dir.path().join("export.tar");
    let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    let mut args = vec!["image", "export", exported.to_str().expect("path")];
    args.extend(&names);
    ctrd.ok("t1", &args);
    ctrd.ok(
        "t2",
        &[
            "image",
            "import",
            "--no-unpack",
            exported.to_str().expect("path"),
        ],
    );
    assert_eq!(listed(&ctrd.json("t2", &["image", "ls"])), want);
    assert_eq!(index_entries(&exported).len(), want.len());

    // rm removes; a missing name is an error with the server's message.
    ctrd.ok("t1", &["image", "rm", "--sync", names[0]]);
    let left = listed(&ctrd.json("t1", &["image", "ls"]));
    assert_eq!(left.len(), want.len() - 1);
    assert!(!left.iter().any(|(n, _)| n == names[0]));
    let out = ctrd.berth("t1", &["image", "rm", "docker.io/library/nope:latest"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("berth: ") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn docker_archive_import_and_namespaces() {
    let Some(tarball) = test_image("httpd-docker.tar") else {
        return;
    };
    let Some(ctrd) = Containerd::start() else {
        return;
    };
    let out = ctrd.ok("d", &["image", "import", tarball.to_str().expect("path")]);
    assert!(
        out.starts_with("docker.io/library/httpd:latest sha256:"),
        "{out}"
    );
    let images = ctrd.json("d", &["image", "ls"]);
    assert_eq!(
        images[0]["type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        ctrd.json("d", &["snapshot", "ls"]).as_array().map(Vec::len),
        Some(1)
    );

    ctrd.ok("d", &["ns", "create", "extra", "team=infra"]);
    let ns = ctrd.json("d", &["ns", "ls"]);
    let extra = ns
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["name"] == "extra")
        .expect("namespace listed");
    assert_eq!(extra["labels"]["team"], "infra");
    ctrd.ok("d", &["ns", "rm", "extra"]);

    // A garbage archive is refused with a clear message and exit 1.
    let junk = ctrd.dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").expect("write");
    let out = ctrd.berth("d", &["image", "import", junk.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("berth: "));
}
