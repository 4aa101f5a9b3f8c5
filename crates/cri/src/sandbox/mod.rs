//! The spec of a pod's sandbox (pause) container: it holds the pod's namespaces, so the rest
//! of the pod's containers can join them.

use std::path::Path;

use k8s_cri::v1::{
    LinuxSandboxSecurityContext, NamespaceMode, PodSandboxConfig, PodSandboxMetadata,
};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::annotations as ann;
use crate::error::{Error, Result};
use crate::files::{PodFiles, HOST_SHM};
use crate::seccomp::{self, Seccomp};
use crate::{cgroups, resources, user, util, CRI_NAMESPACE};

/// The pause process is the last the OOM killer should pick: losing it loses the pod.
pub const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

/// The pause process needs almost no CPU; the pod's containers get their own shares.
pub const SANDBOX_CPU_SHARES: u64 = 2;

pub struct SandboxSpec<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    /// The pause image's config.
    pub image: &'a berth_spec::ImageRuntimeConfig,
    /// The pause image's mounted rootfs, to resolve a user name in its `USER`; numeric users
    /// need none.
    pub rootfs: Option<&'a Path>,
    /// The pod's network namespace; None for a host-network pod.
    pub netns: Option<&'a Path>,
    pub files: &'a PodFiles,
    /// The daemon's cgroup parent, used when the pod config names none ("" = `/k8s.io`).
    pub cgroup_parent: &'a str,
    /// The lowest OOM score adjustment the daemon may give (its own).
    pub oom_score_adj_min: i32,
}

fn namespaces(
    spec: &mut Spec,
    s: &SandboxSpec,
    sc: Option<&LinuxSandboxSecurityContext>,
) -> Result<()> {
    let ns = sc.and_then(|c| c.namespace_options.as_ref());
    match s.netns {
        Some(path) => util::set_namespace(spec, LinuxNamespaceType::Network, Some(path)),
        None => {
            util::remove_namespace(spec, LinuxNamespaceType::Network);
            util::remove_namespace(spec, LinuxNamespaceType::Uts);
        }
    }
    match util::namespace_mode("pid namespace mode", ns.map_or(0, |n| n.pid))? {
        NamespaceMode::Pod | NamespaceMode::Container => {}
        NamespaceMode::Node => util::remove_namespace(spec, LinuxNamespaceType::Pid),
        NamespaceMode::Target => {
            return Err(Error::InvalidValue {
                field: "pod pid namespace mode",
                value: "TARGET".into(),
                why: "a pod cannot target a container",
            })
        }
    }
    if util::namespace_mode("ipc namespace mode", ns.map_or(0, |n| n.ipc))? == NamespaceMode::Node {
        util::remove_namespace(spec, LinuxNamespaceType::Ipc);
    }
    if ns
        .and_then(|n| n.userns_options.as_ref())
        .is_some_and(|u| u.mode == NamespaceMode::Pod as i32)
    {
        return Err(Error::Unsupported("user namespaces for pods".into()));
    }
    Ok(())
}

/// The deprecated string form of the pod's seccomp profile, still sent by old kubelets.
#[allow(deprecated)]
fn seccomp_path(sc: &LinuxSandboxSecurityContext) -> &str {
    &sc.seccomp_profile_path
}

/// The pause process: the image's entrypoint and env, as the security context's user (else the
/// image's), with only the listed supplementary groups (pause reads no /etc/group).
fn pause_process(
    spec: &mut Spec,
    s: &SandboxSpec,
    sc: Option<&LinuxSandboxSecurityContext>,
) -> Result<()> {
    // Without rlimits the pause process inherits the shim's, as containerd's do.
    util::process_mut(spec).set_rlimits(None);
    let pause = berth_spec::ImageRuntimeConfig {
        user: String::new(),
        ..s.image.clone()
    };
    berth_spec::with_image_config(spec, &pause, &[], s.rootfs)?;
    if util::process_mut(spec)
        .args()
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        return Err(Error::NoCommand {
            image: "the pause image".into(),
        });
    }
    let requested = user::requested(
        "",
        sc.and_then(|c| c.run_as_user.as_ref()),
        sc.and_then(|c| c.run_as_group.as_ref()),
    )?;
    let user = requested.unwrap_or_else(|| match s.image.user.as_str() {
        "" => "0".to_string(),
        u => u.to_string(),
    });
    let supplemental = sc
        .map(|c| c.supplemental_groups.as_slice())
        .unwrap_or_default();
    user::apply(spec, &user, s.rootfs, supplemental, true)
}

/// The pod's `/dev/shm` (read-only: pause never writes it) and its resolv.conf, which a VM
/// runtime reads to set up the pod's DNS.
fn pod_mounts(spec: &mut Spec, files: &PodFiles) {
    util::remove_mount(spec, "/run");
    util::remove_mount(spec, "/dev/shm");
    let shm = files.shm.as_deref().unwrap_or(Path::new(HOST_SHM));
    let mounts = util::mounts_mut(spec);
    mounts.push(util::bind(
        shm,
        "/dev/shm",
        &["ro", "nosuid", "nodev", "noexec"],
    ));
    mounts.push(util::bind(&files.resolv_conf, "/etc/resolv.conf", &["ro"]));
}

/// The pod's cgroup, a token CPU share and the protected OOM score.
fn pod_resources(spec: &mut Spec, s: &SandboxSpec) {
    let pod_parent = s
        .config
        .linux
        .as_ref()
        .map_or("", |l| l.cgroup_parent.as_str());
    let parent = cgroups::parent(pod_parent, s.cgroup_parent);
    util::linux_mut(spec).set_cgroups_path(Some(cgroups::path(parent, s.id)));
    let res = util::resources_mut(spec);
    let mut cpu = res.cpu().clone().unwrap_or_default();
    cpu.set_shares(Some(SANDBOX_CPU_SHARES));
    res.set_cpu(Some(cpu));
    util::process_mut(spec).set_oom_score_adj(Some(resources::clamp_oom(
        SANDBOX_OOM_SCORE_ADJ,
        s.oom_score_adj_min,
    )));
}

fn annotations(spec: &mut Spec, s: &SandboxSpec, meta: &PodSandboxMetadata) {
    let cfg = s.config;
    let mut ours = vec![
        (ann::CONTAINER_TYPE, ann::CONTAINER_TYPE_SANDBOX.to_string()),
        (ann::SANDBOX_ID, s.id.to_string()),
        (ann::SANDBOX_NAME, meta.name.clone()),
        (ann::SANDBOX_NAMESPACE, meta.namespace.clone()),
        (ann::SANDBOX_UID, meta.uid.clone()),
        (ann::SANDBOX_LOG_DIR, cfg.log_directory.clone()),
    ];
    // VM runtimes size the VM from the pod's total resources.
    if let Some(r) = cfg.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        ours.push((ann::SANDBOX_CPU_PERIOD, r.cpu_period.to_string()));
        ours.push((ann::SANDBOX_CPU_QUOTA, r.cpu_quota.to_string()));
        ours.push((ann::SANDBOX_CPU_SHARES, r.cpu_shares.to_string()));
        ours.push((ann::SANDBOX_MEMORY, r.memory_limit_in_bytes.to_string()));
    }
    ann::set(spec, &cfg.annotations, &ours);
}

/// The sandbox's spec, as containerd's `sandboxContainerSpec` builds it, except that the
/// pause process is confined by RuntimeDefault seccomp when the request names no profile.
pub fn sandbox_spec(s: &SandboxSpec) -> Result<Spec> {
    let cfg = s.config;
    let meta = cfg.metadata.as_ref().ok_or(Error::Missing {
        what: "pod sandbox metadata",
    })?;
    let linux = cfg.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let mut spec = berth_spec::default_spec(CRI_NAMESPACE, s.id)?;
    pause_process(&mut spec, s, sc)?;
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(true));
    }
    namespaces(&mut spec, s, sc)?;
    if s.netns.is_some() && !cfg.hostname.is_empty() {
        spec.set_hostname(Some(cfg.hostname.clone()));
    }
    pod_mounts(&mut spec, s.files);
    if let Some(sysctls) = linux.map(|l| &l.sysctls).filter(|m| !m.is_empty()) {
        util::linux_mut(&mut spec).set_sysctl(Some(sysctls.clone()));
    }
    pod_resources(&mut spec, s);

    let choice = if sc.is_some_and(|c| c.privileged) {
        Seccomp::Unconfined
    } else {
        // Unlike the CRI's "unset means unconfined", an unset pause profile is confined: pause
        // needs a handful of syscalls, and nothing asked for more.
        seccomp::choose(
            sc.and_then(|c| c.seccomp.as_ref()),
            sc.map_or("", seccomp_path),
            Seccomp::RuntimeDefault,
        )?
    };
    seccomp::apply(&mut spec, &choice)?;
    annotations(&mut spec, s, meta);
    Ok(spec)
}

#[cfg(test)]
mod tests;
