//! Which seccomp filter a sandbox or container gets, from the CRI's `seccomp` field or the
//! deprecated `seccomp_profile_path` string, and the filter itself.

mod default_profile;

use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::SecurityProfile;
use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::error::{Error, Result};

pub use default_profile::runtime_default;

/// Profile files larger than this are not profiles.
const MAX_PROFILE_SIZE: u64 = 1 << 20;

/// The prefix of a node-local profile in the string form, also tolerated in `localhost_ref`.
const LOCALHOST_PREFIX: &str = "localhost/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    /// berth's own allowlist, tuned to the container's capabilities.
    RuntimeDefault,
    /// No filter.
    Unconfined,
    /// An OCI seccomp JSON file on the node.
    Localhost(PathBuf),
}

fn localhost(path: &str) -> Result<Seccomp> {
    let trimmed = path.strip_prefix(LOCALHOST_PREFIX).unwrap_or(path);
    if !Path::new(trimmed).is_absolute() {
        return Err(Error::SeccompProfileName(path.to_string()));
    }
    Ok(Seccomp::Localhost(PathBuf::from(trimmed)))
}

/// Chooses the filter. `profile` wins over the deprecated `path`; when both are unset the
/// result is `unset` (the CRI says unconfined for containers; berth confines sandboxes).
pub fn choose(profile: Option<&SecurityProfile>, path: &str, unset: Seccomp) -> Result<Seccomp> {
    if let Some(p) = profile {
        let typ = ProfileType::try_from(p.profile_type).map_err(|_| Error::InvalidValue {
            field: "seccomp profile_type",
            value: p.profile_type.to_string(),
            why: "unknown profile type",
        })?;
        if typ != ProfileType::Localhost && !p.localhost_ref.is_empty() {
            return Err(Error::SeccompLocalhostRef(p.localhost_ref.clone()));
        }
        return match typ {
            ProfileType::RuntimeDefault => Ok(Seccomp::RuntimeDefault),
            ProfileType::Unconfined => Ok(Seccomp::Unconfined),
            ProfileType::Localhost => localhost(&p.localhost_ref),
        };
    }
    match path {
        "" => Ok(unset),
        "runtime/default" | "docker/default" => Ok(Seccomp::RuntimeDefault),
        "unconfined" => Ok(Seccomp::Unconfined),
        p if p.starts_with(LOCALHOST_PREFIX) => localhost(p),
        other => Err(Error::SeccompProfileName(other.to_string())),
    }
}

/// Reads a node-local profile: the OCI `linux.seccomp` object as JSON. Docker-format profiles
/// parse too as long as they only use the fields the OCI object shares with them.
pub fn load(path: &Path) -> Result<LinuxSeccomp> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::SeccompProfileNotFound {
            path: path.to_path_buf(),
        },
        _ => Error::SeccompProfile {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
    })?;
    let mut buf = Vec::new();
    file.take(MAX_PROFILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::SeccompProfile {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if buf.len() as u64 > MAX_PROFILE_SIZE {
        return Err(Error::SeccompProfile {
            path: path.to_path_buf(),
            why: format!("larger than {MAX_PROFILE_SIZE} bytes"),
        });
    }
    serde_json::from_slice(&buf).map_err(|e| Error::SeccompProfile {
        path: path.to_path_buf(),
        why: format!("not an OCI seccomp profile: {e}"),
    })
}

/// Puts the chosen filter in the spec. Call it last: the default profile depends on the final
/// capability set.
pub fn apply(spec: &mut Spec, choice: &Seccomp) -> Result<()> {
    let filter = match choice {
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => Some(runtime_default(&crate::caps::bounding(spec))?),
        Seccomp::Localhost(path) => Some(load(path)?),
    };
    crate::util::linux_mut(spec).set_seccomp(filter);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(typ: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: typ as i32,
            localhost_ref: r.to_string(),
        }
    }

    #[test]
    fn field_wins_over_string() {
        let p = sp(ProfileType::Unconfined, "");
        assert_eq!(
            choose(Some(&p), "runtime/default", Seccomp::RuntimeDefault).expect("choose"),
            Seccomp::Unconfined
        );
        let p = sp(ProfileType::RuntimeDefault, "");
        assert_eq!(
            choose(Some(&p), "", Seccomp::Unconfined).expect("choose"),
            Seccomp::RuntimeDefault
        );
        let p = sp(ProfileType::Localhost, "/etc/seccomp/a.json");
        assert_eq!(
            choose(Some(&p), "", Seccomp::Unconfined).expect("choose"),
            Seccomp::Localhost("/etc/seccomp/a.json".into())
        );
        let p = sp(ProfileType::Localhost, "localhost//etc/seccomp/a.json");
        assert_eq!(
            choose(Some(&p), "", Seccomp::Unconfined).expect("choose"),
            Seccomp::Localhost("/etc/seccomp/a.json".into())
        );
    }

    #[test]
    fn field_errors() {
        let p = sp(ProfileType::RuntimeDefault, "/x.json");
        assert!(matches!(
            choose(Some(&p), "", Seccomp::Unconfined),
            Err(Error::SeccompLocalhostRef(r)) if r == "/x.json"
        ));
        let p = sp(ProfileType::Localhost, "relative.json");
        assert!(matches!(
            choose(Some(&p), "", Seccomp::Unconfined),
            Err(Error::SeccompProfileName(_))
        ));
        let p = SecurityProfile {
            profile_type: 9,
            localhost_ref: String::new(),
        };
        assert!(choose(Some(&p), "", Seccomp::Unconfined).is_err());
    }

    #[test]
    fn deprecated_strings() {
        let c = |s| choose(None, s, Seccomp::Unconfined);
        assert_eq!(c("").expect("empty"), Seccomp::Unconfined);
        assert_eq!(
            choose(None, "", Seccomp::RuntimeDefault).expect("unset"),
            Seccomp::RuntimeDefault
        );
        assert_eq!(c("runtime/default").expect("rd"), Seccomp::RuntimeDefault);
        assert_eq!(c("docker/default").expect("dd"), Seccomp::RuntimeDefault);
        assert_eq!(c("unconfined").expect("u"), Seccomp::Unconfined);
        assert_eq!(
            c("localhost//var/lib/kubelet/seccomp/p.json").expect("lh"),
            Seccomp::Localhost("/var/lib/kubelet/seccomp/p.json".into())
        );
        for bad in ["runtime/other", "localhost/rel.json", "Unconfined"] {
            assert!(
                matches!(c(bad), Err(Error::SeccompProfileName(ref s)) if s == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn load_profiles() {
        let d = tempfile::tempdir().expect("tempdir");
        let good = d.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
                              "comment": "docker-style extra fields are ignored"}]}"#,
        )
        .expect("write");
        let s = load(&good).expect("load");
        assert_eq!(
            s.syscalls().as_ref().expect("syscalls")[0].names(),
            &["read", "write"]
        );
        let missing = d.path().join("missing.json");
        assert!(matches!(
            load(&missing),
            Err(Error::SeccompProfileNotFound { path }) if path == missing
        ));
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, "{not json").expect("write");
        let e = load(&bad).expect_err("bad");
        assert!(e.to_string().contains("bad.json"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }
}
