//! Checks on identifiers that end up in file names, environment variables and plugin
//! input. They come from API requests and config files, so they are treated as hostile.

/// Container ids and network names, as the CNI spec defines them: an alphanumeric
/// first character, then alphanumerics, `_`, `.` or `-`. This also makes them safe
/// as a single path component (no `/`, never `.` or `..`).
fn spec_identifier(what: &str, s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err(format!("{what} is empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(format!("{what} {s:?} must start with a letter or digit"))
        }
        Some(_) => {}
    }
    if s.len() > 255 {
        return Err(format!("{what} is longer than 255 bytes"));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!(
            "{what} {s:?} contains {c:?} (allowed: letters, digits, _ . -)"
        ));
    }
    Ok(())
}

pub(crate) fn container_id(s: &str) -> Result<(), String> {
    spec_identifier("container id", s)
}

pub(crate) fn network_name(s: &str) -> Result<(), String> {
    spec_identifier("network name", s)
}

/// A netns file name under berth's netns dir: the same rules as container ids.
pub(crate) fn netns_name(s: &str) -> Result<(), String> {
    spec_identifier("netns name", s)
}

/// A plugin `type` is looked up as a file name in the plugin dirs; it must not be able
/// to point anywhere else.
pub(crate) fn plugin_type(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err("must be a plain file name".into());
    }
    Ok(())
}

/// Linux interface names: 1..=15 bytes, no `/`, `:` or whitespace, not `.`/`..`.
pub(crate) fn ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("interface name {s:?} must be 1 to 15 bytes"));
    }
    if s == "." || s == ".." {
        return Err(format!("interface name {s:?} is not allowed"));
    }
    if s.chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(format!(
            "interface name {s:?} contains '/', ':' or whitespace"
        ));
    }
    Ok(())
}

/// Builds CNI_ARGS (`K=V;K2=V2`); a `;` or `=` inside a pair would smuggle extra
/// arguments to the plugins, so it is refused.
pub(crate) fn cni_args(args: &[(String, String)]) -> Result<String, String> {
    let mut out = Vec::with_capacity(args.len());
    for (k, v) in args {
        if k.is_empty() {
            return Err("CNI_ARGS key is empty".into());
        }
        if k.contains(['=', ';', '\0']) || v.contains([';', '\0']) {
            return Err(format!(
                "CNI_ARGS pair {k:?}={v:?} contains '=' in the key or ';'"
            ));
        }
        out.push(format!("{k}={v}"));
    }
    Ok(out.join(";"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(container_id("abc-1.2_3").is_ok());
        assert!(container_id("0f3e").is_ok());
        for bad in ["", ".", "..", "-x", "a/b", "a b", "../etc", "a\0b"] {
            assert!(container_id(bad).is_err(), "{bad:?}");
        }
        assert!(container_id(&"a".repeat(256)).is_err());
    }

    #[test]
    fn interface_names() {
        assert!(ifname("eth0").is_ok());
        assert!(ifname("net1-abcdefghij").is_ok());
        for bad in ["", ".", "..", "eth/0", "eth:0", "eth 0", "abcdefghijklmnop"] {
            assert!(ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plugin_types() {
        assert!(plugin_type("host-local").is_ok());
        for bad in ["", ".", "..", "../sh", "/bin/sh"] {
            assert!(plugin_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn args_are_joined_and_checked() {
        let args = vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAME".to_string(), "web-0".to_string()),
            ("X".to_string(), "a=b".to_string()),
        ];
        assert_eq!(
            cni_args(&args).unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAME=web-0;X=a=b"
        );
        assert_eq!(cni_args(&[]).unwrap(), "");
        assert!(cni_args(&[("A".into(), "1;B=2".into())]).is_err());
        assert!(cni_args(&[("A=B".into(), "1".into())]).is_err());
        assert!(cni_args(&[(String::new(), "1".into())]).is_err());
    }
}
