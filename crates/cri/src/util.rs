//! Small accessors for the parts of a spec every rule touches, creating them when absent.

use std::path::Path;

use crate::error::{Error, Result};

use k8s_cri::v1::NamespaceMode;
use oci_spec::runtime::{
    Linux, LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount, Process, Spec,
};

pub(crate) fn process_mut(spec: &mut Spec) -> &mut Process {
    spec.process_mut().get_or_insert_with(Process::default)
}

pub(crate) fn linux_mut(spec: &mut Spec) -> &mut Linux {
    spec.linux_mut().get_or_insert_with(Linux::default)
}

pub(crate) fn resources_mut(spec: &mut Spec) -> &mut LinuxResources {
    linux_mut(spec)
        .resources_mut()
        .get_or_insert_with(LinuxResources::default)
}

/// Makes the spec's namespace of type `typ` a new one (`path` None) or joins `path`.
pub(crate) fn set_namespace(spec: &mut Spec, typ: LinuxNamespaceType, path: Option<&Path>) {
    let namespaces = linux_mut(spec)
        .namespaces_mut()
        .get_or_insert_with(Vec::new);
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    match namespaces.iter_mut().find(|n| n.typ() == typ) {
        Some(existing) => *existing = ns,
        None => namespaces.push(ns),
    }
}

/// The process shares the host's namespace of type `typ`.
pub(crate) fn remove_namespace(spec: &mut Spec, typ: LinuxNamespaceType) {
    if let Some(namespaces) = linux_mut(spec).namespaces_mut() {
        namespaces.retain(|n| n.typ() != typ);
    }
}

pub(crate) fn remove_mount(spec: &mut Spec, destination: &str) {
    if let Some(mounts) = spec.mounts_mut() {
        mounts.retain(|m| m.destination() != Path::new(destination));
    }
}

pub(crate) fn mounts_mut(spec: &mut Spec) -> &mut Vec<Mount> {
    spec.mounts_mut().get_or_insert_with(Vec::new)
}

/// A bind mount of `source` at `destination` with `options` after `rbind`.
pub(crate) fn bind(source: &Path, destination: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    let mut opts = vec!["rbind".to_string()];
    opts.extend(options.iter().map(|o| o.to_string()));
    m.set_options(Some(opts));
    m
}

/// A CRI namespace mode, refusing values the CRI does not define.
pub(crate) fn namespace_mode(which: &'static str, v: i32) -> Result<NamespaceMode> {
    NamespaceMode::try_from(v).map_err(|_| Error::InvalidValue {
        field: which,
        value: v.to_string(),
        why: "unknown namespace mode",
    })
}
