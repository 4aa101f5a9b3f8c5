//! SIGKILL in the middle of an import: after a restart there is no half-imported image, every blob
//! verifies against its digest, and the same import then succeeds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::oci::{self, Entry};
use berth_tests::{sha256_hex, Berthd};

/// Incompressible bytes, cheaply (xorshift), so the import takes long enough to be interrupted.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn ingest_bytes(root: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(root.join("content/ingest")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
        .map(|m| m.len())
        .sum()
}

fn verify_blobs(root: &Path) -> usize {
    let dir = root.join("content/blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("blobs dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).expect("read blob");
        assert_eq!(
            sha256_hex(&data),
            name,
            "blob {name} does not match its digest"
        );
        n += 1;
    }
    n
}

#[test]
fn sigkill_mid_import_leaves_nothing_half_done() {
    let layers = (0..3u64)
        .map(|i| {
            (
                oci::LAYER_TAR,
                oci::layer_tar(&[Entry::File(
                    format!("data{i}"),
                    noise(64 << 20, i + 1),
                    0o644,
                )]),
            )
        })
        .collect();
    let img = oci::Image::new("example.com/big/image:1", layers);
    let dir = tempfile::tempdir().expect("tmp");
    let tar = dir.path().join("big.tar");
    std::fs::write(&tar, oci::layout_tar(&[img], &[])).expect("write tar");

    let mut d = Berthd::start();
    let mut ctr = Command::new("ctr")
        .arg("--address")
        .arg(d.socket())
        .args(["images", "import"])
        .arg(&tar)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ctr import");
    // Wait until a blob is being written, then crash the daemon.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest_bytes(&d.root()) < (8 << 20) {
        assert!(Instant::now() < deadline, "import never started writing");
        assert!(
            ctr.try_wait().expect("poll ctr").is_none(),
            "import finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let status = ctr.wait().expect("ctr exits");
    assert!(
        !status.success(),
        "ctr import succeeded although berthd was killed"
    );

    d.spawn();
    let ls = d.ctr("default", &["images", "ls", "-q"]).ok();
    assert!(
        ls.stdout.trim().is_empty(),
        "half-imported image listed: {}",
        ls.stdout
    );
    verify_blobs(&d.root());

    d.ctr(
        "default",
        &["images", "import", tar.to_str().expect("path")],
    )
    .ok();
    let ls = d.ctr("default", &["images", "ls", "-q"]).ok();
    assert_eq!(ls.stdout.trim(), "example.com/big/image:1");
    assert!(
        verify_blobs(&d.root()) >= 5,
        "layers, config and manifest stored"
    );
}
