//! containerd 1.6's client-side pull (`ctr images pull --plain-http`) against berthd, from Debian's
//! `docker-registry` on loopback: content, image and unpacked snapshot match what was pushed.

use berth_tests::client::{self, MountGuard};
use berth_tests::registry::Registry;
use berth_tests::{
    chain_id, diff_ids, layout_blob_json, oci_index_refs, runtime, test_images, Berthd,
};

#[test]
fn ctr_pull_plain_http_from_local_registry() {
    let images = test_images();
    let layout = images.join("oci");
    let reg = Registry::start();
    reg.push_layout(&layout, "busybox", "library/busybox");
    let d = Berthd::start();
    let ns = d.unique_ns();
    let reference = format!("{}/library/busybox:busybox", reg.host());
    let out = d
        .ctr(&ns, &["images", "pull", "--plain-http", &reference])
        .ok();
    assert!(out.stdout.contains("done"), "{}", out.stdout);

    // The digest is the pushed manifest's: skopeo copies an OCI manifest unchanged.
    let (_, digest) = oci_index_refs(&layout)
        .into_iter()
        .find(|(n, _)| n == "busybox")
        .expect("busybox");
    let ls = d.ctr(&ns, &["images", "ls"]).ok();
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{}", ls.stdout));
    assert!(row.contains(&digest), "{row}");

    let manifest = layout_blob_json(&layout, &digest);
    let config = layout_blob_json(
        &layout,
        manifest["config"]["digest"].as_str().expect("config"),
    );
    let top = chain_id(&diff_ids(&config));
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let mounts = rt
        .block_on(client::view(&ch, &ns, "overlayfs", "pulled", &top))
        .expect("view of the pulled chain");
    let target = tempfile::tempdir().expect("mount point");
    let _m = MountGuard::mount(&mounts, target.path());
    assert!(target.path().join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(target.path().join("var/www/index.html"))
            .expect("page")
            .trim(),
        "<html><body>hello from busybox httpd</body></html>"
    );
}
