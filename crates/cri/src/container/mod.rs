//! The spec of a container in a pod, as containerd's `containerSpec` builds it: the image's
//! process under the CRI's overrides, joined to the sandbox's namespaces, with the pod's files
//! and the CRI's mounts, devices, security context and resources.

use std::path::{Path, PathBuf};

use berth_spec::{replace_or_append_env, ImageRuntimeConfig, DEFAULT_PATH_ENV};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    ContainerConfig, LinuxContainerSecurityContext, NamespaceMode, PodSandboxConfig,
    SupplementalGroupsPolicy,
};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::annotations as ann;
use crate::error::{Error, Result};
use crate::files::{pod_hostname, PodFiles};
use crate::seccomp::{self, Seccomp};
use crate::{caps, cgroups, devices, mounts, resources, user, util, CRI_NAMESPACE};

pub struct ContainerSpec<'a> {
    pub id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox: &'a PodSandboxConfig,
    pub image: &'a ImageRuntimeConfig,
    /// The image reference for the `image-name` annotation.
    pub image_name: &'a str,
    /// The container's mounted rootfs, to resolve user and group names.
    pub rootfs: Option<&'a Path>,
    /// The sandbox's pid: the container joins `/proc/<pid>/ns/{ipc,uts,pid}`.
    pub sandbox_pid: u32,
    /// The pod's network namespace; None for a host-network pod.
    pub netns: Option<&'a Path>,
    pub files: &'a PodFiles,
    /// The daemon's cgroup parent, used when the pod config names none ("" = `/k8s.io`).
    pub cgroup_parent: &'a str,
    /// The lowest OOM score adjustment the daemon may give (its own).
    pub oom_score_adj_min: i32,
}

/// The deprecated string form of the seccomp profile, still sent by old kubelets.
#[allow(deprecated)]
fn seccomp_path(sc: &LinuxContainerSecurityContext) -> &str {
    &sc.seccomp_profile_path
}

/// The deprecated string form of the AppArmor profile.
#[allow(deprecated)]
fn apparmor_path(sc: &LinuxContainerSecurityContext) -> &str {
    &sc.apparmor_profile
}

/// Requests berth cannot honour and must not silently drop: a named AppArmor profile (berth
/// loads none, so confinement asked for would be missing) and CDI devices.
fn refuse_unsupported(
    cfg: &ContainerConfig,
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<()> {
    if let Some(sc) = sc.filter(|s| !s.privileged) {
        let localhost = sc
            .apparmor
            .as_ref()
            .is_some_and(|p| p.profile_type == ProfileType::Localhost as i32)
            || apparmor_path(sc).starts_with("localhost/");
        if localhost {
            return Err(Error::Unsupported("AppArmor localhost profiles".into()));
        }
    }
    if let Some(d) = cfg.cdi_devices.first() {
        return Err(Error::Unsupported(format!("CDI device {:?}", d.name)));
    }
    Ok(())
}

/// containerd's rule: a CRI command replaces the image's entrypoint and drops its Cmd; CRI
/// args alone replace only the Cmd. An entrypoint of `[""]` means "none" (Docker's reset).
fn argv(cfg: &ContainerConfig, image: &ImageRuntimeConfig) -> (Vec<String>, Vec<String>) {
    if !cfg.command.is_empty() {
        return (cfg.command.clone(), cfg.args.clone());
    }
    let args = if cfg.args.is_empty() {
        image.cmd.clone().unwrap_or_default()
    } else {
        cfg.args.clone()
    };
    let entrypoint = match image.entrypoint.as_deref() {
        Some([only]) if only.is_empty() => Vec::new(),
        other => other.map(<[String]>::to_vec).unwrap_or_default(),
    };
    (entrypoint, args)
}

/// PATH, HOSTNAME, TERM for a terminal, then the image's env, then the CRI's; later ones
/// replace earlier ones with the same key.
fn environment(c: &ContainerSpec) -> Result<Vec<String>> {
    let hostname = pod_hostname(&c.sandbox.hostname)?;
    let mut first = vec![DEFAULT_PATH_ENV.to_string(), format!("HOSTNAME={hostname}")];
    if c.config.tty {
        first.push("TERM=xterm".into());
    }
    let env = replace_or_append_env(&first, c.image.env.as_deref().unwrap_or_default());
    let mut cri = Vec::with_capacity(c.config.envs.len());
    for kv in &c.config.envs {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(Error::InvalidValue {
                field: "env key",
                value: kv.key.clone(),
                why: "must be non-empty and without '='",
            });
        }
        cri.push(format!("{}={}", kv.key, kv.value));
    }
    Ok(replace_or_append_env(&env, &cri))
}

fn process(
    spec: &mut Spec,
    c: &ContainerSpec,
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<()> {
    let (entrypoint, args) = argv(c.config, c.image);
    if entrypoint.is_empty() && args.is_empty() {
        return Err(Error::NoCommand {
            image: c.image_name.to_string(),
        });
    }
    let merged = ImageRuntimeConfig {
        entrypoint: Some(entrypoint),
        cmd: Some(args),
        user: String::new(),
        ..c.image.clone()
    };
    berth_spec::with_image_config(spec, &merged, &[], c.rootfs)?;
    let env = environment(c)?;
    let cwd = if !c.config.working_dir.is_empty() {
        c.config.working_dir.as_str()
    } else if !c.image.working_dir.is_empty() {
        c.image.working_dir.as_str()
    } else {
        "/"
    };
    if !Path::new(cwd).is_absolute() {
        return Err(Error::InvalidValue {
            field: "working_dir",
            value: cwd.to_string(),
            why: "must be absolute",
        });
    }
    let p = util::process_mut(spec);
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(cwd));
    p.set_terminal(Some(c.config.tty));
    // runc leaves no_new_privs off unless asked: setuid binaries in images keep working.
    p.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    // Without rlimits the container inherits the shim's, as containerd's do.
    p.set_rlimits(None);

    let requested = match sc {
        Some(s) => user::requested(
            &s.run_as_username,
            s.run_as_user.as_ref(),
            s.run_as_group.as_ref(),
        )?,
        None => None,
    };
    let user = requested.unwrap_or_else(|| match c.image.user.as_str() {
        "" => "0".to_string(),
        u => u.to_string(),
    });
    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    let supplemental = sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default();
    user::apply(spec, &user, c.rootfs, supplemental, strict)
}

fn ns_path(pid: u32, ns: &str) -> Result<PathBuf> {
    if pid == 0 {
        return Err(Error::Missing {
            what: "the sandbox's pid (to join its namespaces)",
        });
    }
    Ok(PathBuf::from(format!("/proc/{pid}/ns/{ns}")))
}

fn namespaces(
    spec: &mut Spec,
    c: &ContainerSpec,
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<()> {
    let ns = sc.and_then(|s| s.namespace_options.as_ref());
    if ns
        .and_then(|n| n.userns_options.as_ref())
        .is_some_and(|u| u.mode == NamespaceMode::Pod as i32)
    {
        return Err(Error::Unsupported("user namespaces for pods".into()));
    }
    match c.netns {
        Some(path) => {
            util::set_namespace(spec, LinuxNamespaceType::Network, Some(path));
            util::set_namespace(
                spec,
                LinuxNamespaceType::Uts,
                Some(&ns_path(c.sandbox_pid, "uts")?),
            );
        }
        None => {
            util::remove_namespace(spec, LinuxNamespaceType::Network);
            util::remove_namespace(spec, LinuxNamespaceType::Uts);
        }
    }
    match util::namespace_mode("ipc namespace mode", ns.map_or(0, |n| n.ipc))? {
        NamespaceMode::Node => util::remove_namespace(spec, LinuxNamespaceType::Ipc),
        _ => util::set_namespace(
            spec,
            LinuxNamespaceType::Ipc,
            Some(&ns_path(c.sandbox_pid, "ipc")?),
        ),
    }
    match util::namespace_mode("pid namespace mode", ns.map_or(0, |n| n.pid))? {
        NamespaceMode::Pod => util::set_namespace(
            spec,
            LinuxNamespaceType::Pid,
            Some(&ns_path(c.sandbox_pid, "pid")?),
        ),
        NamespaceMode::Container => util::set_namespace(spec, LinuxNamespaceType::Pid, None),
        NamespaceMode::Node => util::remove_namespace(spec, LinuxNamespaceType::Pid),
        NamespaceMode::Target => {
            return Err(Error::Unsupported("pid namespace mode TARGET".into()))
        }
    }
    Ok(())
}

/// Capabilities, devices, masked paths and sysfs for a privileged or ordinary container.
fn privileges(
    spec: &mut Spec,
    c: &ContainerSpec,
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<()> {
    let privileged = sc.is_some_and(|s| s.privileged);
    let linux = util::linux_mut(spec);
    if let Some(paths) = sc.map(|s| &s.masked_paths).filter(|p| !p.is_empty()) {
        linux.set_masked_paths(Some(paths.clone()));
    }
    if let Some(paths) = sc.map(|s| &s.readonly_paths).filter(|p| !p.is_empty()) {
        linux.set_readonly_paths(Some(paths.clone()));
    }
    if !privileged {
        devices::add(spec, &c.config.devices)?;
        if let Some(cap) = sc.and_then(|s| s.capabilities.as_ref()) {
            caps::apply(
                spec,
                &cap.add_capabilities,
                &cap.drop_capabilities,
                &cap.add_ambient_capabilities,
            )?;
        }
        return Ok(());
    }
    let pod_privileged = c
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if !pod_privileged {
        return Err(Error::PrivilegedInUnprivilegedPod {
            container: c
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        });
    }
    caps::set_all_sets(spec, caps::all());
    let linux = util::linux_mut(spec);
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    for m in util::mounts_mut(spec) {
        if m.typ().as_deref() == Some("sysfs") {
            if let Some(opts) = m.options_mut() {
                opts.retain(|o| o != "ro");
            }
        }
    }
    devices::add_all_host(spec)
}

/// The container's spec.
pub fn container_spec(c: &ContainerSpec) -> Result<Spec> {
    let cfg = c.config;
    let meta = cfg.metadata.as_ref().ok_or(Error::Missing {
        what: "container metadata",
    })?;
    let pod = c.sandbox.metadata.as_ref().ok_or(Error::Missing {
        what: "pod sandbox metadata",
    })?;
    let linux = cfg.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    refuse_unsupported(cfg, sc)?;

    let mut spec = berth_spec::default_spec(CRI_NAMESPACE, c.id)?;
    util::remove_mount(&mut spec, "/run");
    process(&mut spec, c, sc)?;

    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);
    let pod_files = mounts::pod_files(c.files, readonly_rootfs, &cfg.mounts);
    mounts::apply(&mut spec, &cfg.mounts, pod_files, privileged)?;
    privileges(&mut spec, c, sc)?;
    if readonly_rootfs {
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(true));
        }
    }

    let pod_parent = c
        .sandbox
        .linux
        .as_ref()
        .map_or("", |l| l.cgroup_parent.as_str());
    let parent = cgroups::parent(pod_parent, c.cgroup_parent);
    util::linux_mut(&mut spec).set_cgroups_path(Some(cgroups::path(parent, c.id)));
    if let Some(r) = linux.and_then(|l| l.resources.as_ref()) {
        resources::apply(&mut spec, r, c.oom_score_adj_min)?;
    }
    namespaces(&mut spec, c, sc)?;
    // On cgroup v2 a cgroup namespace hides the host's hierarchy; privileged containers and
    // cgroup v1 hosts keep the host view, as with containerd.
    if cgroups::unified_hierarchy() && !privileged {
        util::set_namespace(&mut spec, LinuxNamespaceType::Cgroup, None);
    }

    let choice = if privileged {
        Seccomp::Unconfined
    } else {
        seccomp::choose(
            sc.and_then(|s| s.seccomp.as_ref()),
            sc.map_or("", seccomp_path),
            Seccomp::Unconfined,
        )?
    };
    seccomp::apply(&mut spec, &choice)?;

    ann::set(
        &mut spec,
        &cfg.annotations,
        &[
            (
                ann::CONTAINER_TYPE,
                ann::CONTAINER_TYPE_CONTAINER.to_string(),
            ),
            (ann::SANDBOX_ID, c.sandbox_id.to_string()),
            (ann::SANDBOX_NAME, pod.name.clone()),
            (ann::SANDBOX_NAMESPACE, pod.namespace.clone()),
            (ann::SANDBOX_UID, pod.uid.clone()),
            (ann::CONTAINER_NAME, meta.name.clone()),
            (ann::IMAGE_NAME, c.image_name.to_string()),
        ],
    );
    Ok(spec)
}

#[cfg(test)]
mod tests;
