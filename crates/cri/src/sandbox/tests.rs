use std::path::{Path, PathBuf};

use berth_spec::ImageRuntimeConfig;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Int64Value, LinuxContainerResources, NamespaceMode, PodSandboxConfig, SecurityProfile,
};

use super::*;
use crate::testutil::{json, mount_dsts, ns_path, pod_config, pod_sc, PodDir};
use crate::ErrorKind;

fn pause() -> ImageRuntimeConfig {
    ImageRuntimeConfig {
        entrypoint: Some(vec!["/pause".into()]),
        env: Some(vec!["PATH=/".into()]),
        user: "65535:65535".into(),
        ..Default::default()
    }
}

const NETNS: &str = "/var/run/netns/cni-1234";

fn build(cfg: &PodSandboxConfig, netns: Option<&Path>, dir: &PodDir, min: i32) -> Result<Spec> {
    let image = pause();
    sandbox_spec(&SandboxSpec {
        id: "sb1",
        config: cfg,
        image: &image,
        rootfs: None,
        netns,
        files: &dir.files,
        cgroup_parent: "",
        oom_score_adj_min: min,
    })
}

fn spec_of(cfg: &PodSandboxConfig) -> Spec {
    let dir = PodDir::new();
    build(cfg, Some(Path::new(NETNS)), &dir, -1000).expect("spec")
}

#[test]
fn annotations_identify_the_sandbox() {
    let mut cfg = pod_config();
    cfg.annotations
        .insert(ann::SANDBOX_ID.to_string(), "forged".to_string());
    cfg.annotations.insert(
        "io.kubernetes.cri.container-name".to_string(),
        "forged".to_string(),
    );
    let a = spec_of(&cfg).annotations().clone().expect("annotations");
    assert_eq!(a[ann::CONTAINER_TYPE], "sandbox");
    assert_eq!(a[ann::SANDBOX_ID], "sb1");
    assert_eq!(a[ann::SANDBOX_NAME], "web");
    assert_eq!(a[ann::SANDBOX_NAMESPACE], "shop");
    assert_eq!(a[ann::SANDBOX_UID], "uid-123");
    assert_eq!(a[ann::SANDBOX_LOG_DIR], "/var/log/pods/shop_web_uid-123");
    assert_eq!(a["team"], "blue");
    assert!(!a.contains_key(ann::CONTAINER_NAME));
    assert!(!a.contains_key(ann::SANDBOX_CPU_SHARES));
}

#[test]
fn pod_network_namespace_and_hostname() {
    let s = spec_of(&pod_config());
    assert_eq!(s.hostname().as_deref(), Some("web-0"));
    assert_eq!(ns_path(&s, "net"), Some(Some(PathBuf::from(NETNS))));
    for own in ["uts", "ipc", "pid", "mnt"] {
        assert_eq!(ns_path(&s, own), Some(None), "{own}");
    }
}

#[test]
fn host_network_has_no_network_or_uts_namespace() {
    let dir = PodDir::new();
    let s = build(&pod_config(), None, &dir, -1000).expect("spec");
    assert_eq!(s.hostname(), &None);
    assert_eq!(ns_path(&s, "net"), None);
    assert_eq!(ns_path(&s, "uts"), None);
    assert_eq!(ns_path(&s, "ipc"), Some(None));
}

#[test]
fn pid_and_ipc_modes() {
    let mut cfg = pod_config();
    let ns = pod_sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.pid = NamespaceMode::Node as i32;
    ns.ipc = NamespaceMode::Node as i32;
    let dir = PodDir::new();
    let host_ipc = PodFiles {
        shm: None,
        ..dir.files.clone()
    };
    let s = sandbox_spec(&SandboxSpec {
        id: "sb1",
        config: &cfg,
        image: &pause(),
        rootfs: None,
        netns: Some(Path::new(NETNS)),
        files: &host_ipc,
        cgroup_parent: "",
        oom_score_adj_min: 0,
    })
    .expect("spec");
    assert_eq!(ns_path(&s, "pid"), None);
    assert_eq!(ns_path(&s, "ipc"), None);
    let shm = s
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/dev/shm"))
        .expect("shm");
    assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));

    pod_sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = NamespaceMode::Container as i32;
    assert_eq!(ns_path(&spec_of(&cfg), "pid"), Some(None));
    pod_sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = NamespaceMode::Target as i32;
    let e = build(&cfg, None, &dir, 0).expect_err("target");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    pod_sc(&mut cfg)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = 42;
    assert!(build(&cfg, None, &dir, 0).is_err());
}

#[test]
fn mounts_shm_and_resolv_conf() {
    let dir = PodDir::new();
    let s = build(&pod_config(), Some(Path::new(NETNS)), &dir, 0).expect("spec");
    let dsts = mount_dsts(&s);
    assert!(!dsts.contains(&"/run".to_string()));
    assert_eq!(dsts.iter().filter(|d| *d == "/dev/shm").count(), 1);
    let j = json(&s);
    let shm = j["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .expect("shm");
    assert_eq!(shm["type"], "bind");
    assert_eq!(shm["source"], dir.path().join("shm").display().to_string());
    assert_eq!(shm["options"][0], "rbind");
    assert!(shm["options"]
        .as_array()
        .expect("opts")
        .contains(&"ro".into()));
    let resolv = j["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["destination"] == "/etc/resolv.conf")
        .expect("resolv");
    assert_eq!(
        resolv["source"],
        dir.path().join("resolv.conf").display().to_string()
    );
}

#[test]
fn process_security_and_resources() {
    let s = spec_of(&pod_config());
    let j = json(&s);
    assert_eq!(j["root"]["readonly"], true);
    let p = &j["process"];
    assert_eq!(p["args"], serde_json::json!(["/pause"]));
    assert_eq!(p["env"], serde_json::json!(["PATH=/"]));
    assert_eq!(p["noNewPrivileges"], true);
    assert!(p.get("rlimits").is_none());
    assert_eq!(
        (p["user"]["uid"].clone(), p["user"]["gid"].clone()),
        (65535.into(), 65535.into())
    );
    assert_eq!(p["oomScoreAdj"], -998);
    assert_eq!(j["linux"]["resources"]["cpu"]["shares"], 2);
    assert_eq!(j["linux"]["cgroupsPath"], "/k8s.io/sb1");
}

#[test]
fn oom_score_is_clamped_to_the_daemons() {
    let dir = PodDir::new();
    let s = build(&pod_config(), None, &dir, 0).expect("spec");
    assert_eq!(
        s.process().as_ref().and_then(|p| p.oom_score_adj()),
        Some(0)
    );
}

#[test]
fn pause_needs_a_command() {
    let dir = PodDir::new();
    let e = sandbox_spec(&SandboxSpec {
        id: "sb1",
        config: &pod_config(),
        image: &ImageRuntimeConfig::default(),
        rootfs: None,
        netns: None,
        files: &dir.files,
        cgroup_parent: "",
        oom_score_adj_min: 0,
    })
    .expect_err("no command");
    assert!(matches!(e, Error::NoCommand { .. }));
}

#[test]
fn run_as_user_group_and_supplemental_groups() {
    let mut cfg = pod_config();
    let sc = pod_sc(&mut cfg);
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.run_as_group = Some(Int64Value { value: 3000 });
    sc.supplemental_groups = vec![4000, 3000];
    let u = spec_of(&cfg)
        .process()
        .clone()
        .expect("process")
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (1000, 3000));
    assert_eq!(u.additional_gids().as_deref(), Some(&[3000, 4000][..]));

    let mut cfg = pod_config();
    pod_sc(&mut cfg).run_as_group = Some(Int64Value { value: 3000 });
    let dir = PodDir::new();
    let e = build(&cfg, None, &dir, 0).expect_err("group alone");
    assert!(e.to_string().contains("run_as_group"), "{e}");
}

#[test]
fn sysctls_and_cgroup_parent() {
    let mut cfg = pod_config();
    let linux = cfg.linux.get_or_insert_with(Default::default);
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
    linux.cgroup_parent = "/kubepods/besteffort/poduid-123".into();
    linux.resources = Some(LinuxContainerResources {
        cpu_shares: 1024,
        memory_limit_in_bytes: 1 << 30,
        ..Default::default()
    });
    let s = spec_of(&cfg);
    let j = json(&s);
    assert_eq!(
        j["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
        "0"
    );
    assert_eq!(
        j["linux"]["cgroupsPath"],
        "/kubepods/besteffort/poduid-123/sb1"
    );
    let a = s.annotations().clone().expect("annotations");
    assert_eq!(a[ann::SANDBOX_CPU_SHARES], "1024");
    assert_eq!(a[ann::SANDBOX_MEMORY], (1u64 << 30).to_string());

    let dir = PodDir::new();
    let s = sandbox_spec(&SandboxSpec {
        id: "sb1",
        config: &pod_config(),
        image: &pause(),
        rootfs: None,
        netns: None,
        files: &dir.files,
        cgroup_parent: "/berth-pods",
        oom_score_adj_min: 0,
    })
    .expect("spec");
    assert_eq!(json(&s)["linux"]["cgroupsPath"], "/berth-pods/sb1");
}

fn seccomp_of(cfg: &PodSandboxConfig) -> serde_json::Value {
    json(&spec_of(cfg))["linux"]["seccomp"].clone()
}

#[test]
fn seccomp_defaults_to_runtime_default() {
    let s = seccomp_of(&pod_config());
    assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(s["defaultErrnoRet"], 1);
}

#[test]
fn seccomp_unconfined_and_privileged() {
    let mut cfg = pod_config();
    pod_sc(&mut cfg).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    assert!(seccomp_of(&cfg).is_null());

    let mut cfg = pod_config();
    pod_sc(&mut cfg).privileged = true;
    pod_sc(&mut cfg).seccomp = Some(SecurityProfile::default());
    assert!(seccomp_of(&cfg).is_null());
}

#[test]
fn seccomp_localhost_profile() {
    let dir = PodDir::new();
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_LOG"}"#).expect("write");
    let mut cfg = pod_config();
    pod_sc(&mut cfg).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    assert_eq!(seccomp_of(&cfg)["defaultAction"], "SCMP_ACT_LOG");
    pod_sc(&mut cfg).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: dir.path().join("nope.json").display().to_string(),
    });
    let e = build(&cfg, None, &dir, 0).expect_err("missing profile");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn missing_metadata_is_an_error() {
    let mut cfg = pod_config();
    cfg.metadata = None;
    let dir = PodDir::new();
    let e = build(&cfg, None, &dir, 0).expect_err("no metadata");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("metadata"));
}

#[test]
fn spec_round_trips_through_json() {
    let s = spec_of(&pod_config());
    let back: Spec = serde_json::from_value(json(&s)).expect("parse");
    assert_eq!(back, s);
}
