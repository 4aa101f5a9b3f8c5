use std::path::{Path, PathBuf};

use berth_spec::ImageRuntimeConfig;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability as CriCapability, ContainerMetadata, Device, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    NamespaceOption, SecurityProfile,
};
use oci_spec::runtime::Capability;

use super::*;
use crate::testutil::{json, mount_dsts, ns_path, pod_config, pod_sc, rootfs_with_users, PodDir};
use crate::ErrorKind;

const NETNS: &str = "/var/run/netns/cni-1234";
const PID: u32 = 4242;

fn image() -> ImageRuntimeConfig {
    ImageRuntimeConfig {
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["serve".into(), "--port=80".into()]),
        env: Some(vec!["PATH=/app/bin:/bin".into(), "MODE=prod".into()]),
        working_dir: "/app".into(),
        ..Default::default()
    }
}

fn config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        annotations: [("build".to_string(), "42".to_string())].into(),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn sc(cfg: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Everything a build needs besides the two configs; `rootfs` and `netns` vary per test.
struct Fixture {
    dir: PodDir,
    image: ImageRuntimeConfig,
    pod: PodSandboxConfig,
    netns: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    min: i32,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: PodDir::new(),
            image: image(),
            pod: pod_config(),
            netns: Some(PathBuf::from(NETNS)),
            rootfs: None,
            min: -1000,
        }
    }

    fn build(&self, cfg: &ContainerConfig) -> Result<Spec> {
        container_spec(&ContainerSpec {
            id: "c1",
            sandbox_id: "sb1",
            config: cfg,
            sandbox: &self.pod,
            image: &self.image,
            image_name: "registry.example/app:1",
            rootfs: self.rootfs.as_deref(),
            sandbox_pid: PID,
            netns: self.netns.as_deref(),
            files: &self.dir.files,
            cgroup_parent: "",
            oom_score_adj_min: self.min,
        })
    }
}

fn spec(cfg: &ContainerConfig) -> Spec {
    Fixture::new().build(cfg).expect("spec")
}

fn args(s: &Spec) -> Vec<String> {
    s.process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default()
}

fn env(s: &Spec) -> Vec<String> {
    s.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
}

fn caps(s: &Spec) -> std::collections::HashSet<Capability> {
    crate::caps::bounding(s)
}

#[test]
fn annotations_identify_container_and_pod() {
    let mut cfg = config();
    cfg.annotations
        .insert(ann::SANDBOX_ID.to_string(), "other-pod".to_string());
    let a = spec(&cfg).annotations().clone().expect("annotations");
    assert_eq!(a[ann::CONTAINER_TYPE], "container");
    assert_eq!(a[ann::SANDBOX_ID], "sb1");
    assert_eq!(a[ann::SANDBOX_NAME], "web");
    assert_eq!(a[ann::SANDBOX_NAMESPACE], "shop");
    assert_eq!(a[ann::SANDBOX_UID], "uid-123");
    assert_eq!(a[ann::CONTAINER_NAME], "app");
    assert_eq!(a[ann::IMAGE_NAME], "registry.example/app:1");
    assert_eq!(a["build"], "42");
    // Pod annotations stay on the sandbox.
    assert!(!a.contains_key("team"));
}

#[test]
fn command_and_args_override_the_image() {
    assert_eq!(args(&spec(&config())), ["/entry", "serve", "--port=80"]);
    let mut cfg = config();
    cfg.args = vec!["debug".into()];
    assert_eq!(args(&spec(&cfg)), ["/entry", "debug"]);
    cfg.command = vec!["/bin/sh".into(), "-c".into()];
    cfg.args = vec!["echo hi".into()];
    assert_eq!(args(&spec(&cfg)), ["/bin/sh", "-c", "echo hi"]);
    // A command alone drops the image's Cmd too.
    cfg.args.clear();
    assert_eq!(args(&spec(&cfg)), ["/bin/sh", "-c"]);

    let mut f = Fixture::new();
    f.image.entrypoint = Some(vec![String::new()]);
    assert_eq!(
        args(&f.build(&config()).expect("spec")),
        ["serve", "--port=80"]
    );
    f.image.cmd = None;
    let e = f.build(&config()).expect_err("nothing to run");
    assert!(matches!(&e, Error::NoCommand { image } if image == "registry.example/app:1"));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn environment_layers() {
    let mut cfg = config();
    cfg.envs = vec![
        KeyValue {
            key: "MODE".into(),
            value: "dev".into(),
        },
        KeyValue {
            key: "EMPTY".into(),
            value: String::new(),
        },
    ];
    assert_eq!(
        env(&spec(&cfg)),
        ["PATH=/app/bin:/bin", "HOSTNAME=web-0", "MODE=dev", "EMPTY="]
    );
    cfg.tty = true;
    let s = spec(&cfg);
    assert!(env(&s).contains(&"TERM=xterm".to_string()));
    assert_eq!(s.process().as_ref().and_then(|p| p.terminal()), Some(true));
    cfg.envs = vec![KeyValue {
        key: String::new(),
        value: "x".into(),
    }];
    assert!(Fixture::new().build(&cfg).is_err());
}

#[test]
fn host_network_pod_gets_the_hosts_hostname() {
    let mut f = Fixture::new();
    f.pod.hostname = String::new();
    f.netns = None;
    let host = crate::pod_hostname("").expect("hostname");
    assert!(env(&f.build(&config()).expect("spec")).contains(&format!("HOSTNAME={host}")));
}

#[test]
fn working_dir() {
    let s = spec(&config());
    assert_eq!(
        s.process().as_ref().map(|p| p.cwd().clone()),
        Some("/app".into())
    );
    let mut cfg = config();
    cfg.working_dir = "/work".into();
    let s = spec(&cfg);
    assert_eq!(
        s.process().as_ref().map(|p| p.cwd().clone()),
        Some("/work".into())
    );
    cfg.working_dir = "rel".into();
    assert_eq!(
        Fixture::new().build(&cfg).expect_err("relative").kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn defaults_containerd_clears() {
    let s = spec(&config());
    let j = json(&s);
    assert!(j["process"].get("rlimits").is_none());
    assert_eq!(j["process"]["noNewPrivileges"], false);
    assert!(j.get("hostname").is_none());
    assert_eq!(j["root"]["readonly"], false);
    assert!(
        j["linux"].get("seccomp").is_none(),
        "unset seccomp is unconfined"
    );
    assert!(!mount_dsts(&s).contains(&"/run".to_string()));
    assert_eq!(j["linux"]["cgroupsPath"], "/k8s.io/c1");
    assert!(j["process"].get("oomScoreAdj").is_none());
    // Default masked paths stay when the request sets none.
    assert_eq!(j["linux"]["maskedPaths"].as_array().map(Vec::len), Some(10));
}

#[test]
fn user_from_image_and_security_context() {
    let mut f = Fixture::new();
    let root = rootfs_with_users();
    f.rootfs = Some(root.path().to_path_buf());
    f.image.user = "www".into();
    let u = f
        .build(&config())
        .expect("spec")
        .process()
        .clone()
        .expect("p")
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (33, 34));
    assert_eq!(u.additional_gids().as_deref(), Some(&[34, 44, 29][..]));

    let mut cfg = config();
    sc(&mut cfg).run_as_user = Some(Int64Value { value: 0 });
    sc(&mut cfg).supplemental_groups = vec![5000];
    let u = f
        .build(&cfg)
        .expect("spec")
        .process()
        .clone()
        .expect("p")
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (0, 0));
    assert_eq!(u.additional_gids().as_deref(), Some(&[0, 29, 5000][..]));

    sc(&mut cfg).run_as_group = Some(Int64Value { value: 7 });
    sc(&mut cfg).supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    let u = f
        .build(&cfg)
        .expect("spec")
        .process()
        .clone()
        .expect("p")
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (0, 7));
    assert_eq!(u.additional_gids().as_deref(), Some(&[7, 5000][..]));

    let mut cfg = config();
    sc(&mut cfg).run_as_username = "www".into();
    let u = f
        .build(&cfg)
        .expect("spec")
        .process()
        .clone()
        .expect("p")
        .user()
        .clone();
    assert_eq!(u.uid(), 33);
    sc(&mut cfg).run_as_username = "ghost".into();
    let e = f.build(&cfg).expect_err("unknown user");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("ghost"));
}

#[test]
fn joins_the_sandbox_namespaces() {
    let s = spec(&config());
    let proc_ns = |n: &str| Some(Some(PathBuf::from(format!("/proc/{PID}/ns/{n}"))));
    assert_eq!(ns_path(&s, "net"), Some(Some(PathBuf::from(NETNS))));
    assert_eq!(ns_path(&s, "ipc"), proc_ns("ipc"));
    assert_eq!(ns_path(&s, "uts"), proc_ns("uts"));
    assert_eq!(
        ns_path(&s, "pid"),
        Some(None),
        "CONTAINER: own pid namespace"
    );
    assert_eq!(ns_path(&s, "mnt"), Some(None));

    let mut cfg = config();
    let ns = sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.pid = NamespaceMode::Pod as i32;
    assert_eq!(ns_path(&spec(&cfg), "pid"), proc_ns("pid"));
    let ns = sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.pid = NamespaceMode::Node as i32;
    ns.ipc = NamespaceMode::Node as i32;
    let s = spec(&cfg);
    assert_eq!(ns_path(&s, "pid"), None);
    assert_eq!(ns_path(&s, "ipc"), None);
    let ns = sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.pid = NamespaceMode::Target as i32;
    ns.target_id = "other".into();
    let e = Fixture::new().build(&cfg).expect_err("target");
    assert_eq!(e.kind(), ErrorKind::Unimplemented);
}

#[test]
fn host_network_shares_network_and_uts() {
    let mut f = Fixture::new();
    f.netns = None;
    let s = f.build(&config()).expect("spec");
    assert_eq!(ns_path(&s, "net"), None);
    assert_eq!(ns_path(&s, "uts"), None);
    assert!(ns_path(&s, "ipc").is_some());
}

#[test]
fn pod_files_are_mounted() {
    let f = Fixture::new();
    let s = f.build(&config()).expect("spec");
    let j = json(&s);
    let mounts = j["mounts"].as_array().expect("mounts");
    for (dst, src, ro) in [
        ("/etc/hostname", "hostname", false),
        ("/etc/hosts", "hosts", false),
        ("/etc/resolv.conf", "resolv.conf", false),
        ("/dev/shm", "shm", false),
    ] {
        let m = mounts
            .iter()
            .find(|m| m["destination"] == dst)
            .unwrap_or_else(|| panic!("{dst} not mounted"));
        assert_eq!(m["source"], f.dir.path().join(src).display().to_string());
        assert_eq!(
            m["options"]
                .as_array()
                .expect("opts")
                .contains(&"ro".into()),
            ro
        );
    }
    assert_eq!(
        mounts
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .count(),
        1
    );
    assert!(mounts.iter().any(|m| m["destination"] == "/sys/fs/cgroup"));
}

#[test]
fn readonly_rootfs_makes_pod_files_readonly() {
    let mut cfg = config();
    sc(&mut cfg).readonly_rootfs = true;
    let j = json(&spec(&cfg));
    assert_eq!(j["root"]["readonly"], true);
    let hosts = j["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["destination"] == "/etc/hosts")
        .expect("hosts");
    assert!(hosts["options"]
        .as_array()
        .expect("opts")
        .contains(&"ro".into()));
}

#[test]
fn cri_mounts_win_and_missing_host_paths_fail() {
    let f = Fixture::new();
    let vol = f.dir.path().join("my-hosts");
    std::fs::write(&vol, "127.0.0.1 me\n").expect("write");
    let mut cfg = config();
    cfg.mounts = vec![Mount {
        container_path: "/etc/hosts".into(),
        host_path: vol.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let s = f.build(&cfg).expect("spec");
    let hosts: Vec<_> = s
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].source().as_deref(), Some(vol.as_path()));

    cfg.mounts[0].host_path = "/berth/no/such/path".into();
    let e = f.build(&cfg).expect_err("missing");
    assert!(
        matches!(&e, Error::HostPathNotFound { path, .. } if path == Path::new("/berth/no/such/path"))
    );
}

#[test]
fn capabilities_add_and_drop() {
    let mut cfg = config();
    sc(&mut cfg).capabilities = Some(CriCapability {
        add_capabilities: vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()],
        drop_capabilities: vec!["chown".into(), "MKNOD".into()],
        add_ambient_capabilities: vec![],
    });
    let c = caps(&spec(&cfg));
    assert!(c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysTime));
    assert!(!c.contains(&Capability::Chown) && !c.contains(&Capability::Mknod));
    assert!(c.contains(&Capability::Kill), "defaults stay");

    sc(&mut cfg).capabilities = Some(CriCapability {
        add_capabilities: vec!["NET_BIND_SERVICE".into()],
        drop_capabilities: vec!["ALL".into()],
        add_ambient_capabilities: vec![],
    });
    let c = caps(&spec(&cfg));
    assert_eq!(
        c.into_iter().collect::<Vec<_>>(),
        [Capability::NetBindService]
    );

    sc(&mut cfg).capabilities = Some(CriCapability {
        add_capabilities: vec!["ALL".into()],
        drop_capabilities: vec!["SYS_ADMIN".into()],
        add_ambient_capabilities: vec![],
    });
    let c = caps(&spec(&cfg));
    assert_eq!(c.len(), crate::caps::all().len() - 1);
    assert!(!c.contains(&Capability::SysAdmin));

    sc(&mut cfg).capabilities = Some(CriCapability {
        add_capabilities: vec!["WARP_DRIVE".into()],
        ..Default::default()
    });
    let e = Fixture::new().build(&cfg).expect_err("unknown cap");
    assert!(e.to_string().contains("WARP_DRIVE"));
}

#[test]
fn ambient_capabilities() {
    let mut cfg = config();
    sc(&mut cfg).capabilities = Some(CriCapability {
        add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
        ..Default::default()
    });
    let j = json(&spec(&cfg));
    assert_eq!(
        j["process"]["capabilities"]["ambient"],
        serde_json::json!(["CAP_NET_BIND_SERVICE"])
    );
    let plain = json(&spec(&config()));
    assert!(plain["process"]["capabilities"].get("ambient").is_none());
}

#[test]
fn masked_and_readonly_paths_override_defaults() {
    let mut cfg = config();
    sc(&mut cfg).masked_paths = vec!["/proc/kcore".into()];
    sc(&mut cfg).readonly_paths = vec!["/proc/sys".into(), "/proc/bus".into()];
    let j = json(&spec(&cfg));
    assert_eq!(
        j["linux"]["maskedPaths"],
        serde_json::json!(["/proc/kcore"])
    );
    assert_eq!(
        j["linux"]["readonlyPaths"],
        serde_json::json!(["/proc/sys", "/proc/bus"])
    );
}

#[test]
fn no_new_privs() {
    let mut cfg = config();
    sc(&mut cfg).no_new_privs = true;
    assert_eq!(json(&spec(&cfg))["process"]["noNewPrivileges"], true);
}

#[test]
fn privileged_needs_a_privileged_pod() {
    let mut cfg = config();
    sc(&mut cfg).privileged = true;
    let e = Fixture::new().build(&cfg).expect_err("unprivileged pod");
    assert!(matches!(&e, Error::PrivilegedInUnprivilegedPod { container } if container == "app"));
}

#[test]
fn privileged_container() {
    let mut f = Fixture::new();
    pod_sc(&mut f.pod).privileged = true;
    let mut cfg = config();
    sc(&mut cfg).privileged = true;
    sc(&mut cfg).seccomp = Some(SecurityProfile::default());
    sc(&mut cfg).masked_paths = vec!["/proc/kcore".into()];
    let s = f.build(&cfg).expect("spec");
    assert_eq!(caps(&s), crate::caps::all());
    let j = json(&s);
    assert!(j["linux"].get("maskedPaths").is_none());
    assert!(j["linux"].get("readonlyPaths").is_none());
    assert!(j["linux"].get("seccomp").is_none());
    let sys = j["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["destination"] == "/sys")
        .expect("sys");
    assert!(!sys["options"]
        .as_array()
        .expect("opts")
        .contains(&"ro".into()));
    assert_eq!(
        j["linux"]["resources"]["devices"],
        serde_json::json!([{"allow": true, "access": "rwm"}])
    );
    assert!(j["linux"]["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .any(|d| d["path"] == "/dev/null"));
}

#[test]
fn devices() {
    let mut cfg = config();
    cfg.devices = vec![Device {
        container_path: "/dev/fuse-like".into(),
        host_path: "/dev/zero".into(),
        permissions: "r".into(),
    }];
    let j = json(&spec(&cfg));
    assert_eq!(j["linux"]["devices"][0]["path"], "/dev/fuse-like");
    let rules = j["linux"]["resources"]["devices"]
        .as_array()
        .expect("rules");
    assert_eq!(
        rules.last().expect("rule"),
        &serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"})
    );
}

#[test]
fn resources_and_oom_clamp() {
    let mut f = Fixture::new();
    f.min = -500;
    f.pod
        .linux
        .get_or_insert_with(Default::default)
        .cgroup_parent = "/kubepods/pod1".into();
    let mut cfg = config();
    cfg.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        cpu_quota: 20_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 32 << 20,
        oom_score_adj: -997,
        ..Default::default()
    });
    let j = json(&f.build(&cfg).expect("spec"));
    assert_eq!(j["linux"]["cgroupsPath"], "/kubepods/pod1/c1");
    assert_eq!(j["linux"]["resources"]["cpu"]["quota"], 20_000);
    assert_eq!(j["linux"]["resources"]["memory"]["limit"], 32 << 20);
    assert_eq!(j["process"]["oomScoreAdj"], -500);
}

fn seccomp_with(profile: Option<SecurityProfile>, path: &str, caps_add: &[&str]) -> Result<Spec> {
    let mut cfg = config();
    sc(&mut cfg).seccomp = profile;
    #[allow(deprecated)]
    {
        sc(&mut cfg).seccomp_profile_path = path.to_string();
    }
    if !caps_add.is_empty() {
        sc(&mut cfg).capabilities = Some(CriCapability {
            add_capabilities: caps_add.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
    }
    Fixture::new().build(&cfg)
}

fn allows(s: &Spec, name: &str) -> bool {
    s.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|f| f.syscalls().as_ref())
        .into_iter()
        .flatten()
        .any(|r| r.args().is_none() && r.names().iter().any(|n| n == name))
}

fn runtime_default() -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    })
}

#[test]
fn seccomp_runtime_default_follows_capabilities() {
    let s = seccomp_with(runtime_default(), "", &[]).expect("spec");
    assert!(allows(&s, "read"));
    assert!(!allows(&s, "unshare") && !allows(&s, "mount"));
    let s = seccomp_with(runtime_default(), "", &["SYS_ADMIN"]).expect("spec");
    assert!(allows(&s, "unshare") && allows(&s, "mount"));
}

#[test]
fn seccomp_unconfined_and_empty() {
    let unconfined = Some(SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    let s = seccomp_with(unconfined, "runtime/default", &[]).expect("spec");
    assert!(s
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .is_none());
    let s = seccomp_with(None, "", &[]).expect("spec");
    assert!(s
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .is_none());
}

#[test]
fn seccomp_deprecated_strings() {
    let s = seccomp_with(None, "docker/default", &[]).expect("spec");
    assert!(allows(&s, "read"));
    let s = seccomp_with(None, "unconfined", &[]).expect("spec");
    assert!(s
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .is_none());
    let e = seccomp_with(None, "runtime/strict", &[]).expect_err("bad name");
    assert!(e.to_string().contains("runtime/strict"));
}

#[test]
fn seccomp_localhost() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("p.json");
    std::fs::write(
        &p,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("write");
    let s = seccomp_with(None, &format!("localhost/{}", p.display()), &[]).expect("spec");
    let j = json(&s);
    assert_eq!(j["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(j["linux"]["seccomp"]["syscalls"][0]["names"][0], "mkdir");
    let lh = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: d.path().join("missing.json").display().to_string(),
    });
    let e = seccomp_with(lh, "", &[]).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("missing.json"));
}

#[test]
fn unsupported_requests_are_refused() {
    let mut cfg = config();
    sc(&mut cfg).apparmor = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "k8s-nginx".into(),
    });
    let e = Fixture::new().build(&cfg).expect_err("apparmor");
    assert_eq!(e.kind(), ErrorKind::Unimplemented);
    // The runtime's default AppArmor profile is "none loaded" on berth: accepted.
    sc(&mut cfg).apparmor = Some(SecurityProfile::default());
    Fixture::new()
        .build(&cfg)
        .expect("runtime default apparmor");

    let mut cfg = config();
    cfg.cdi_devices = vec![k8s_cri::v1::CdiDevice {
        name: "vendor.com/gpu=0".into(),
    }];
    let e = Fixture::new().build(&cfg).expect_err("cdi");
    assert!(e.to_string().contains("vendor.com/gpu=0"), "{e}");
}

#[test]
fn missing_sandbox_pid_is_reported() {
    let f = Fixture::new();
    let e = container_spec(&ContainerSpec {
        id: "c1",
        sandbox_id: "sb1",
        config: &config(),
        sandbox: &f.pod,
        image: &f.image,
        image_name: "x",
        rootfs: None,
        sandbox_pid: 0,
        netns: f.netns.as_deref(),
        files: &f.dir.files,
        cgroup_parent: "",
        oom_score_adj_min: 0,
    })
    .expect_err("pid 0");
    assert!(e.to_string().contains("pid"), "{e}");
}

#[test]
fn spec_round_trips_through_json() {
    let s = spec(&config());
    let back: Spec = serde_json::from_value(json(&s)).expect("parse");
    assert_eq!(back, s);
}
