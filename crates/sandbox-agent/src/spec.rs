//! The OCI `process` object of a request, and the pure decisions made from it (where to look
//! for the executable, which rlimit a name means).

use serde::Deserialize;

use crate::error::AgentError;

/// Used when the process's environment has no `PATH` (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Absent: the process keeps every capability (as guest root does by default).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

/// The OCI process's capability sets, by name (`CAP_NET_ADMIN`).
#[derive(Debug, Default, Deserialize, PartialEq, Clone)]
pub struct Capabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// Capability names in number order (linux/capability.h); the guest kernel knows 0..=40.
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The highest capability number the guest kernel knows.
pub const LAST_CAP: u32 = CAPS.len() as u32 - 1;

/// `CAP_NET_ADMIN` (or `NET_ADMIN`) → 12; None for a name this kernel does not know (runc
/// skips those too).
pub fn cap_number(name: &str) -> Option<u32> {
    let n = name.strip_prefix("CAP_").unwrap_or(name);
    CAPS.iter()
        .position(|c| c.eq_ignore_ascii_case(n))
        .map(|i| i as u32)
}

/// A set of capability names as a bit mask (unknown names skipped).
pub fn cap_mask(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| cap_number(n))
        .fold(0u64, |m, c| m | (1u64 << c))
}

#[derive(Debug, Default, Deserialize, PartialEq, Clone, Copy)]
pub struct ConsoleSize {
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub width: u32,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub umask: Option<u32>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

impl Process {
    /// Parses and checks what the agent relies on: arguments present, an absolute cwd
    /// (empty means `/`).
    pub fn parse(v: &serde_json::Value) -> Result<Process, AgentError> {
        let mut p: Process = serde_json::from_value(v.clone())
            .map_err(|e| AgentError::InvalidArgument(format!("bad process spec: {e}")))?;
        if p.args.is_empty() || p.args[0].is_empty() {
            return Err(AgentError::InvalidArgument(
                "process spec has no args".into(),
            ));
        }
        if p.cwd.is_empty() {
            p.cwd = "/".into();
        }
        if !p.cwd.starts_with('/') {
            return Err(AgentError::InvalidArgument(format!(
                "process cwd {:?} is not absolute",
                p.cwd
            )));
        }
        for e in &p.env {
            if !e.contains('=') {
                return Err(AgentError::InvalidArgument(format!(
                    "environment entry {e:?} has no '='"
                )));
            }
        }
        Ok(p)
    }

    /// The `PATH` of the process's own environment (the last one wins, as getenv sees it
    /// after a shell would have set it), or the default.
    pub fn path_var(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
    }

    pub fn console_size(&self) -> Option<(u16, u16)> {
        self.console_size.and_then(|c| {
            let w = u16::try_from(c.width).ok()?;
            let h = u16::try_from(c.height).ok()?;
            (w > 0 && h > 0).then_some((w, h))
        })
    }
}

/// The paths execvp would try for `arg0`, in order: the name itself when it has a slash,
/// otherwise each `PATH` entry joined with it (an empty entry means the current directory).
pub fn exec_candidates(arg0: &str, path: &str) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                arg0.to_string()
            } else {
                format!("{}/{arg0}", dir.trim_end_matches('/'))
            }
        })
        .collect()
}

/// The resource number of an OCI rlimit type (`RLIMIT_NOFILE`).
pub fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Container and exec ids become directory names: no separators, nothing special.
pub fn check_id(kind: &str, id: &str) -> Result<(), AgentError> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(AgentError::InvalidArgument(format!("bad {kind} id {id:?}")));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_an_oci_process() {
        let p = Process::parse(&json!({
            "terminal": true,
            "consoleSize": {"height": 24, "width": 80},
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 18},
            "args": ["sh", "-c", "id"],
            "env": ["PATH=/bin", "A=b=c"],
            "cwd": "/work",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "noNewPrivileges": true,
            "capabilities": {"bounding": ["CAP_KILL"]},
            "apparmorProfile": "x"
        }))
        .unwrap();
        assert!(p.terminal && p.no_new_privileges);
        assert_eq!(p.console_size(), Some((80, 24)));
        assert_eq!(p.user.additional_gids, vec![10, 20]);
        assert_eq!(p.user.umask, Some(18));
        assert_eq!(p.rlimits[0].kind, "RLIMIT_NOFILE");
        assert_eq!(p.path_var(), "/bin");
    }

    #[test]
    fn defaults_and_refusals() {
        let p = Process::parse(&json!({"args": ["true"]})).unwrap();
        assert_eq!(p.cwd, "/");
        assert_eq!(p.user.uid, 0);
        assert_eq!(p.path_var(), DEFAULT_PATH);
        assert_eq!(p.console_size(), None);
        for bad in [
            json!({"args": []}),
            json!({}),
            json!({"args": ["x"], "cwd": "rel"}),
            json!({"args": ["x"], "env": ["NOEQUALS"]}),
            json!({"args": "x"}),
        ] {
            let e = Process::parse(&bad).unwrap_err();
            assert!(matches!(e, AgentError::InvalidArgument(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn exec_candidates_follow_execvp() {
        assert_eq!(exec_candidates("/bin/sh", "/x"), vec!["/bin/sh"]);
        assert_eq!(exec_candidates("./run", "/x"), vec!["./run"]);
        assert_eq!(
            exec_candidates("sh", "/usr/bin:/bin/::/sbin"),
            vec!["/usr/bin/sh", "/bin/sh", "sh", "/sbin/sh"]
        );
    }

    #[test]
    fn capability_names_and_masks() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_NET_ADMIN"), Some(12));
        assert_eq!(cap_number("SYS_ADMIN"), Some(21));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(LAST_CAP));
        assert_eq!(cap_number("CAP_NOT_A_THING"), None);
        let m = cap_mask(&["CAP_KILL".into(), "CAP_NET_RAW".into(), "CAP_BOGUS".into()]);
        assert_eq!(m, (1 << 5) | (1 << 13));
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_STACK"), Some(libc::RLIMIT_STACK));
        assert_eq!(rlimit_resource("NOFILE"), None);
    }

    #[test]
    fn ids() {
        assert!(check_id("container", "c1").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(check_id("container", bad).is_err());
        }
    }
}
