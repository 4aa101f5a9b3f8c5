//! The specs run under real runc: a busybox sandbox from `sandbox_spec`, and containers from
//! `container_spec` joining it, showing RuntimeDefault refuses `unshare -U` (no CAP_SYS_ADMIN)
//! while Unconfined lets it through. Skipped when runc or busybox-static is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_cri::{container_spec, sandbox_spec, ContainerSpec, PodFiles, SandboxSpec};
use berth_spec::ImageRuntimeConfig;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, LinuxContainerConfig, LinuxContainerSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile,
};
use oci_spec::runtime::Spec;

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";

/// Deletes every container it started and the test's cgroup parent, even on panic.
struct Runc {
    root: PathBuf,
    ids: Vec<String>,
    cgroup_parent: String,
}

impl Runc {
    fn cmd(&self) -> Command {
        let mut c = Command::new(RUNC);
        c.arg("--root").arg(&self.root);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run runc")
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self
                .cmd()
                .args(["delete", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // runc removes each container's cgroup; the parent is ours. Killed tasks can take a
        // moment to leave their cgroups.
        let rel = self.cgroup_parent.trim_start_matches('/');
        for _ in 0..50 {
            let mut left = false;
            for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = hierarchy.path().join(rel);
                if dir.exists() {
                    remove_cgroup_tree(&dir);
                    left |= dir.exists();
                }
            }
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// rmdir children first: cgroup directories cannot be removed recursively.
fn remove_cgroup_tree(dir: &Path) {
    for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&child.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A rootfs holding busybox and the applets the test calls.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("bin");
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "true", "unshare", "sleep", "cat", "id"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    for d in ["etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("dir");
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
    rootfs
}

fn write_bundle(dir: &Path, mut spec: Spec, rootfs: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bundle");
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs.to_path_buf());
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&spec).expect("json"),
    )
    .expect("config.json");
    dir.to_path_buf()
}

fn pod_files(dir: &Path) -> PodFiles {
    std::fs::write(dir.join("hostname"), "berth-test\n").expect("hostname");
    std::fs::write(dir.join("hosts"), berth_cri::hosts_file("berth-test", &[])).expect("hosts");
    std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv");
    std::fs::create_dir_all(dir.join("shm")).expect("shm");
    PodFiles {
        hostname: dir.join("hostname"),
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        shm: Some(dir.join("shm")),
    }
}

fn container(name: &str, command: &[&str], seccomp: ProfileType) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: seccomp as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn runtime_default_blocks_unshare_and_unconfined_allows_it() {
    if !Path::new(RUNC).exists() || !Path::new(BUSYBOX).exists() {
        eprintln!("skipping: needs {RUNC} and {BUSYBOX} (busybox-static)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tag = format!("berth-cri-{}", std::process::id());
    let mut runc = Runc {
        root: tmp.path().join("runc"),
        ids: Vec::new(),
        cgroup_parent: format!("/{tag}"),
    };
    let rootfs = busybox_rootfs(tmp.path());
    let files = pod_files(tmp.path());

    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "runc-test".into(),
            uid: tag.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let pause = ImageRuntimeConfig {
        entrypoint: Some(vec!["/bin/sleep".into(), "600".into()]),
        ..Default::default()
    };
    let sandbox_id = format!("{tag}-sandbox");
    let spec = sandbox_spec(&SandboxSpec {
        id: &sandbox_id,
        config: &pod,
        image: &pause,
        rootfs: Some(&rootfs),
        netns: None,
        files: &files,
        cgroup_parent: &runc.cgroup_parent,
        // This host cannot lower oom_score_adj (no CAP_SYS_RESOURCE).
        oom_score_adj_min: 0,
    })
    .expect("sandbox spec");
    assert!(
        spec.linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .is_some(),
        "the sandbox runs under RuntimeDefault"
    );
    let bundle = write_bundle(&tmp.path().join("sandbox"), spec, &rootfs);
    runc.ids.push(sandbox_id.clone());
    let status = runc
        .cmd()
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&sandbox_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("runc run -d");
    assert!(status.success(), "sandbox did not start");
    let state = runc.output(&["state", &sandbox_id]);
    assert!(state.status.success(), "runc state failed");
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).expect("state json");
    assert_eq!(state["status"], "running");
    let sandbox_pid = state["pid"].as_u64().expect("pid") as u32;

    let image = ImageRuntimeConfig::default();
    let mut run = |name: &str, command: &[&str], seccomp: ProfileType| -> Output {
        let cfg = container(name, command, seccomp);
        let id = format!("{tag}-{name}");
        let spec = container_spec(&ContainerSpec {
            id: &id,
            sandbox_id: &sandbox_id,
            config: &cfg,
            sandbox: &pod,
            image: &image,
            image_name: "busybox",
            rootfs: Some(&rootfs),
            sandbox_pid,
            netns: None,
            files: &files,
            cgroup_parent: &runc.cgroup_parent,
            oom_score_adj_min: 0,
        })
        .expect("container spec");
        let bundle = write_bundle(&tmp.path().join(name), spec, &rootfs);
        runc.ids.push(id.clone());
        let out = runc
            .cmd()
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .expect("runc run");
        eprintln!(
            "{name}: {:?} stdout={:?} stderr={:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    let ok = run("true-default", &["/bin/true"], ProfileType::RuntimeDefault);
    assert!(ok.status.success(), "true under RuntimeDefault must work");

    let blocked = run(
        "unshare-default",
        &["/bin/unshare", "-U", "/bin/true"],
        ProfileType::RuntimeDefault,
    );
    assert!(
        !blocked.status.success(),
        "unshare -U must fail under RuntimeDefault"
    );
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert!(
        err.contains("Operation not permitted"),
        "want EPERM, got {err:?}"
    );

    let allowed = run(
        "unshare-unconfined",
        &["/bin/unshare", "-U", "/bin/true"],
        ProfileType::Unconfined,
    );
    assert!(
        allowed.status.success(),
        "unshare -U must work when unconfined"
    );

    // The container shares the sandbox's IPC namespace.
    let ipc = std::fs::read_link(format!("/proc/{sandbox_pid}/ns/ipc")).expect("sandbox ipc");
    let seen = run(
        "ipc",
        &[
            "/bin/sh",
            "-c",
            "readlink /proc/self/ns/ipc || ls -l /proc/self/ns/ipc",
        ],
        ProfileType::RuntimeDefault,
    );
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains(&*ipc.to_string_lossy()),
        "container ipc namespace differs from the sandbox's {ipc:?}"
    );
}
