//! Which user a pod's or container's first process runs as, and its supplementary groups.

use std::path::Path;

use k8s_cri::v1::Int64Value;
use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

fn id(field: &'static str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidValue {
        field,
        value: v.to_string(),
        why: "not a valid uid/gid",
    })
}

/// The `user[:group]` string the CRI security context asks for, None when it asks nothing.
/// A name wins over a uid, as in containerd; a group alone is an error, as the CRI says.
pub(crate) fn requested(
    username: &str,
    uid: Option<&Int64Value>,
    gid: Option<&Int64Value>,
) -> Result<Option<String>> {
    let user = if !username.is_empty() {
        username.to_string()
    } else if let Some(u) = uid {
        id("run_as_user", u.value)?.to_string()
    } else {
        if let Some(g) = gid {
            return Err(Error::InvalidValue {
                field: "run_as_group",
                value: g.value.to_string(),
                why: "needs run_as_user or run_as_username",
            });
        }
        return Ok(None);
    };
    Ok(Some(match gid {
        Some(g) => format!("{user}:{}", id("run_as_group", g.value)?),
        None => user,
    }))
}

/// Sets the process user from `user` (names resolved in `rootfs`). Its groups are the primary
/// gid, the user's groups in the image's `/etc/group` (unless `strict`), then `supplemental`.
pub(crate) fn apply(
    spec: &mut Spec,
    user: &str,
    rootfs: Option<&Path>,
    supplemental: &[i64],
    strict: bool,
) -> Result<()> {
    let resolved = berth_spec::resolve_user(user, rootfs)?;
    let mut gids = vec![resolved.gid];
    if !strict {
        gids.extend(resolved.additional_gids.iter().copied());
    }
    for g in supplemental {
        gids.push(id("supplemental_groups", *g)?);
    }
    let mut unique = Vec::with_capacity(gids.len());
    for g in gids {
        if !unique.contains(&g) {
            unique.push(g);
        }
    }
    let u = crate::util::process_mut(spec).user_mut();
    u.set_uid(resolved.uid);
    u.set_gid(resolved.gid);
    u.set_additional_gids(Some(unique));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: i64) -> Int64Value {
        Int64Value { value }
    }

    #[test]
    fn user_strings() {
        assert_eq!(requested("", None, None).expect("none"), None);
        assert_eq!(
            requested("", Some(&v(1000)), None).expect("uid"),
            Some("1000".into())
        );
        assert_eq!(
            requested("", Some(&v(1000)), Some(&v(50))).expect("uid:gid"),
            Some("1000:50".into())
        );
        assert_eq!(
            requested("www", Some(&v(1000)), Some(&v(50))).expect("name wins"),
            Some("www:50".into())
        );
        assert!(matches!(
            requested("", None, Some(&v(5))),
            Err(Error::InvalidValue {
                field: "run_as_group",
                ..
            })
        ));
        assert!(requested("", Some(&v(-1)), None).is_err());
        assert!(requested("", Some(&v(1 << 40)), None).is_err());
    }
}
