//! containerd's own `ctr` (Debian's containerd 1.6) against berthd: namespaces, images, content,
//! snapshots, leases, plugins, and garbage collection after `images rm`.

use berth_tests::{layout_blob_json, oci_index_refs, test_images, wait_until, Berthd};

/// The first column of every row of a ctr table.
fn first_column(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn version_plugins_and_namespaces() {
    let d = Berthd::start();
    let v = d.ctr("default", &["version"]).ok();
    assert!(v.stdout.contains("Server:"), "{}", v.stdout);
    assert!(
        v.stdout.contains("berth-"),
        "server revision names berth: {}",
        v.stdout
    );
    let uuid_line = v
        .stdout
        .lines()
        .find(|l| l.contains("UUID:"))
        .expect("UUID line")
        .to_string();

    let p = d.ctr("default", &["plugins", "ls"]).ok();
    for id in ["overlayfs", "native", "content", "walking"] {
        assert!(
            p.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(id)),
            "plugin {id} missing:\n{}",
            p.stdout
        );
    }
    assert!(p.stdout.contains("io.containerd.snapshotter.v1"));

    d.ctr("default", &["namespaces", "create", "team-a", "owner=ops"])
        .ok();
    d.ctr("default", &["namespaces", "create", "team-b"]).ok();
    let ls = d.ctr("default", &["namespaces", "ls"]).ok();
    let names = first_column(&ls.stdout);
    assert!(
        names.contains(&"team-a".to_string()) && names.contains(&"team-b".to_string()),
        "{}",
        ls.stdout
    );
    assert!(ls.stdout.contains("owner=ops"), "{}", ls.stdout);

    d.ctr("default", &["namespaces", "label", "team-b", "tier=gold"])
        .ok();
    let ls = d.ctr("default", &["namespaces", "ls"]).ok();
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with("team-b"))
        .expect("team-b row");
    assert!(row.contains("tier=gold"), "{row}");

    let dup = d.ctr("default", &["namespaces", "create", "team-a"]);
    assert_ne!(dup.code, Some(0));
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);

    d.ctr("default", &["namespaces", "rm", "team-b"]).ok();
    let ls = d.ctr("default", &["namespaces", "ls"]).ok();
    assert!(
        !first_column(&ls.stdout).contains(&"team-b".to_string()),
        "{}",
        ls.stdout
    );

    // The server's identity is stable across restarts.
    let mut d = d;
    d.restart();
    let v2 = d.ctr("default", &["version"]).ok();
    assert!(
        v2.stdout.contains(&uuid_line),
        "uuid changed:\n{uuid_line}\n{}",
        v2.stdout
    );
}

#[test]
fn import_list_remove_and_collect() {
    let images = test_images();
    let layout = images.join("oci");
    let refs = oci_index_refs(&layout);
    let d = Berthd::start();
    let ns = "imp";

    let out = d
        .ctr(
            ns,
            &[
                "images",
                "import",
                images.join("busybox-oci.tar").to_str().expect("path"),
            ],
        )
        .ok();
    for (name, _) in &refs {
        assert!(
            out.stdout
                .contains(&format!("docker.io/library/{name}:latest")),
            "{}",
            out.stdout
        );
    }

    // images ls: every name of the tarball, with its manifest digest.
    let ls = d.ctr(ns, &["images", "ls"]).ok();
    for (name, digest) in &refs {
        let full = format!("docker.io/library/{name}:latest");
        let row = ls
            .stdout
            .lines()
            .find(|l| l.starts_with(&full))
            .unwrap_or_else(|| panic!("{full} missing:\n{}", ls.stdout));
        assert!(row.contains(digest.as_str()), "{row}");
        assert!(row.contains("linux/amd64"), "{row}");
    }

    // The shared layer, each config and each manifest are content; the layer is one snapshot.
    let busybox = &refs
        .iter()
        .find(|(n, _)| n == "busybox")
        .expect("busybox")
        .1;
    let manifest = layout_blob_json(&layout, busybox);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config")
        .to_string();
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let config = layout_blob_json(&layout, &config_digest);
    let chain_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .expect("diff id")
        .to_string();

    let content = d.ctr(ns, &["content", "ls"]).ok();
    let digests = first_column(&content.stdout);
    for want in [busybox, &config_digest, &layer_digest] {
        assert!(
            digests.contains(want),
            "{want} not in content:\n{}",
            content.stdout
        );
    }
    let snaps = d.ctr(ns, &["snapshots", "ls"]).ok();
    let row = snaps
        .stdout
        .lines()
        .find(|l| l.starts_with(&chain_id))
        .unwrap_or_else(|| panic!("{}", snaps.stdout));
    assert!(row.contains("Committed"), "{row}");

    // Isolation: another namespace sees none of it.
    assert!(first_column(&d.ctr("other", &["images", "ls"]).ok().stdout).is_empty());
    assert!(first_column(&d.ctr("other", &["content", "ls"]).ok().stdout).is_empty());
    let get = d
        .ctr(
            "other",
            &["images", "check", "name==docker.io/library/busybox:latest"],
        )
        .ok();
    assert!(!get.stdout.contains("busybox"), "{}", get.stdout);

    // The import's leases were released.
    let leases = d.ctr(ns, &["leases", "ls"]).ok();
    assert!(
        first_column(&leases.stdout).is_empty(),
        "leases left behind:\n{}",
        leases.stdout
    );

    // Removing one image collects its manifest and config, but the layer and snapshot stay: the
    // other two images still use them.
    d.ctr(
        ns,
        &["images", "rm", "--sync", "docker.io/library/busybox:latest"],
    )
    .ok();
    let content = first_column(&d.ctr(ns, &["content", "ls"]).ok().stdout);
    assert!(!content.contains(busybox), "manifest of removed image kept");
    assert!(
        !content.contains(&config_digest),
        "config of removed image kept"
    );
    assert!(content.contains(&layer_digest), "shared layer collected");
    assert!(first_column(&d.ctr(ns, &["snapshots", "ls"]).ok().stdout).contains(&chain_id));

    // A namespace that still holds images cannot go.
    let rm = d.ctr("default", &["namespaces", "rm", ns]);
    assert_ne!(rm.code, Some(0));
    assert!(
        rm.stderr.contains("failed precondition") || rm.stderr.contains("must be empty"),
        "{}",
        rm.stderr
    );

    // Remove the rest (without --sync: the background collector does it).
    d.ctr(
        ns,
        &[
            "images",
            "rm",
            "docker.io/library/pause:latest",
            "docker.io/library/httpd:latest",
        ],
    )
    .ok();
    wait_until("content and snapshots collected", || {
        first_column(&d.ctr(ns, &["content", "ls"]).ok().stdout).is_empty()
            && first_column(&d.ctr(ns, &["snapshots", "ls"]).ok().stdout).is_empty()
    });
    let blobs = std::fs::read_dir(d.root().join("content/blobs/sha256"))
        .expect("blobs dir")
        .count();
    assert_eq!(blobs, 0, "blob files left on disk");
    d.ctr("default", &["namespaces", "rm", ns]).ok();
}

#[test]
fn docker_archive_import_normalises_names() {
    let images = test_images();
    let d = Berthd::start();
    d.ctr(
        "default",
        &[
            "images",
            "import",
            images.join("httpd-docker.tar").to_str().expect("path"),
        ],
    )
    .ok();
    let ls = d.ctr("default", &["images", "ls", "-q"]).ok();
    assert_eq!(ls.stdout.trim(), "docker.io/library/httpd:latest");
}

#[test]
fn socket_is_0660_and_sigterm_removes_it() {
    let mut d = Berthd::start();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
    assert_eq!(d.terminate(), Some(0), "{}", d.log());
    assert!(!d.socket().exists(), "socket left behind");
}

#[test]
fn config_default_prints_the_design_keys() {
    let out = std::process::Command::new(berth_tests::berthd_bin())
        .args(["config", "default"])
        .output()
        .expect("run berthd config default");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "root = \"/var/lib/berth\"",
        "address = \"/run/berth/berth.sock\"",
        "[cri.runtimes.runc]",
    ] {
        assert!(text.contains(key), "{key} missing:\n{text}");
    }
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    let d = Berthd::start();
    let out = std::process::Command::new(berth_tests::berthd_bin())
        .args(["--config", "/dev/null", "--root"])
        .arg(d.root())
        .arg("--state")
        .arg(d.dir.path().join("state2"))
        .arg("--address")
        .arg(d.dir.path().join("second.sock"))
        .output()
        .expect("run second berthd");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another berthd"));
    d.ctr("default", &["version"]).ok();
}
