//! Network namespace files: creation from a multi-threaded runtime, uniqueness, lo,
//! removal. Its own test binary, so no other test's namespace-entering threads exist
//! while it checks that the runtime's threads stay in the host namespace.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_cni::{Cni, Config, Error};

struct State {
    dir: tempfile::TempDir,
}

impl State {
    fn new() -> Self {
        State {
            dir: tempfile::Builder::new()
                .prefix("berth-cni-netns-")
                .tempdir()
                .unwrap(),
        }
    }

    fn cni(&self) -> Cni {
        Cni::new(Config {
            conf_dir: self.dir.path().join("conf"),
            bin_dirs: vec![support::PLUGIN_DIR.into()],
            state_dir: self.dir.path().join("state"),
        })
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("state/netns")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn ns_inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// (tid, thread name, netns link) of every live thread of this process.
fn thread_netns_links() -> Vec<(String, String, String)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let link = std::fs::read_link(t.path().join("ns/net")).ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((
                t.file_name().to_string_lossy().into_owned(),
                comm.trim().to_string(),
                link.display().to_string(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_are_new_distinct_and_leave_runtime_threads_alone() {
    let state = State::new();
    let cni = state.cni();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_ino = ns_inode(Path::new("/proc/self/ns/net"));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let cni = cni.clone();
        tasks.spawn(async move {
            cni.create_netns(&format!("par-{}-{i}", std::process::id()))
                .await
        });
    }
    let mut paths = Vec::new();
    while let Some(done) = tasks.join_next().await {
        paths.push(done.unwrap().unwrap());
    }

    let mut inodes: Vec<u64> = paths.iter().map(|p| ns_inode(p)).collect();
    assert!(
        !inodes.contains(&host_ino),
        "a netns file is the host namespace"
    );
    inodes.sort();
    inodes.dedup();
    assert_eq!(inodes.len(), 20, "namespaces shared between files");

    // The unshare happens on throw-away "berth-netns" threads (possibly still exiting,
    // or serving the other test of this binary); every other thread, tokio's workers and
    // blocking pool included, is still in the host namespace.
    let threads = thread_netns_links();
    assert!(
        threads.iter().any(|(_, name, _)| name.starts_with("tokio")),
        "{threads:?}"
    );
    for (tid, name, link) in threads {
        if name != "berth-netns" {
            assert_eq!(
                link,
                host.display().to_string(),
                "thread {tid} ({name}) moved into another netns"
            );
        }
    }

    for p in &paths {
        let lo = support::ip_in(p, &["link", "show", "lo"]);
        assert!(lo.contains(",UP"), "{}: {lo}", p.display());
        let addrs = support::ip_in(p, &["addr", "show", "lo"]);
        assert!(addrs.contains("inet 127.0.0.1/8"), "{addrs}");
    }
    for p in &paths {
        cni.remove_netns(p).await.unwrap();
        assert!(!p.exists());
    }
}

#[tokio::test]
async fn names_are_unique_and_validated() {
    let state = State::new();
    let cni = state.cni();
    let name = format!("dup-{}", std::process::id());
    let path = cni.create_netns(&name).await.unwrap();
    let ino = ns_inode(&path);
    let err = cni.create_netns(&name).await.unwrap_err();
    assert!(matches!(err, Error::NetnsExists { .. }), "{err:?}");
    // The existing namespace was not disturbed by the failed attempt.
    assert_eq!(ns_inode(&path), ino);

    for bad in ["", "..", "a/b", "../escape", "-x", "a b"] {
        let err = cni.create_netns(bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert!(!state.dir.path().join("escape").exists());
    cni.remove_netns(&path).await.unwrap();
}

#[tokio::test]
async fn remove_is_idempotent_and_confined_to_the_netns_dir() {
    let state = State::new();
    let cni = state.cni();
    let path = cni
        .create_netns(&format!("rm-{}", std::process::id()))
        .await
        .unwrap();
    cni.remove_netns(&path).await.unwrap();
    cni.remove_netns(&path).await.unwrap();

    // A plain file left behind (e.g. after a crash between create and mount) goes too.
    let leftover = cni.netns_dir().join("leftover");
    std::fs::write(&leftover, "").unwrap();
    cni.remove_netns(&leftover).await.unwrap();
    assert!(!leftover.exists());

    let outside = state.dir.path().join("outside");
    std::fs::write(&outside, "keep").unwrap();
    for p in [
        outside.clone(),
        cni.netns_dir().join("../outside"),
        "/proc/self/ns/net".into(),
    ] {
        let err = cni.remove_netns(&p).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{}: {err:?}",
            p.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
}
