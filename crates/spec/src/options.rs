//! The user's run options (ctr's flags) applied over a spec: env, cwd, user, bind mounts,
//! cpu and memory limits, terminal.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxResources, Mount, MountBuilder, Process, Spec, UserBuilder};

use crate::error::{Error, Result};
use crate::user::resolve_user;

/// The CFS period containerd uses for `--cpus` (100ms).
pub const CPU_PERIOD: u64 = 100_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// `KEY=VALUE` entries replacing same-named ones; a bare `KEY` removes it.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `uid[:gid]` or `name[:group]` (names need the rootfs).
    pub user: Option<String>,
    /// ctr `--mount` syntax: `type=bind,src=/a,dst=/b,options=rbind:ro`.
    pub mounts: Vec<String>,
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    pub terminal: bool,
}

pub(crate) fn process_mut(spec: &mut Spec) -> Result<&mut Process> {
    if spec.process().is_none() {
        spec.set_process(Some(Process::default()));
    }
    spec.process_mut()
        .as_mut()
        .ok_or_else(|| Error::InvalidUser("spec has no process".into()))
}

fn resources_mut(spec: &mut Spec) -> &mut LinuxResources {
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    linux.resources_mut().get_or_insert_with(Default::default)
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// containerd's `replaceOrAppendEnvValues`: each override replaces the default with the same
/// key in place, or is appended; an override without `=` deletes the key.
pub fn replace_or_append_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = defaults.to_vec();
    for o in overrides {
        let key = env_key(o);
        match out.iter().position(|e| env_key(e) == key) {
            Some(i) if o.contains('=') => out[i] = o.clone(),
            Some(i) => {
                out.remove(i);
            }
            None if o.contains('=') => out.push(o.clone()),
            None => {}
        }
    }
    out
}

/// `16m`, `1G`, `512k`, `1048576`: binary multiples, as ctr and docker read them.
pub fn parse_memory(s: &str) -> Result<i64> {
    let bad = || Error::InvalidMemory(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult): (&str, i64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = num.parse().map_err(|_| bad())?;
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v <= 0 {
        return Err(bad());
    }
    Ok(v)
}

/// `--cpus N` as a CFS (quota, period).
pub fn cpu_quota(cpus: f64) -> Result<(i64, u64)> {
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 1e6 {
        return Err(Error::InvalidCpus(cpus));
    }
    let quota = (cpus * CPU_PERIOD as f64) as i64;
    // The kernel refuses quotas under 1ms.
    Ok((quota.max(1000), CPU_PERIOD))
}

fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| c == Component::ParentDir)
}

/// One ctr `--mount` value.
pub fn parse_mount(spec: &str) -> Result<Mount> {
    let bad = |reason: &str| Error::InvalidMount {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (mut typ, mut src, mut dst, mut opts) = (None, None, None, Vec::new());
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| bad("fields are key=value"))?;
        match k {
            "type" => typ = Some(v.to_string()),
            "source" | "src" => src = Some(PathBuf::from(v)),
            "destination" | "dst" | "target" => dst = Some(PathBuf::from(v)),
            "options" => {
                opts = v
                    .split(':')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            _ => return Err(bad(&format!("unknown key {k:?}"))),
        }
    }
    let dst = dst.ok_or_else(|| bad("missing destination"))?;
    if !is_clean_absolute(&dst) {
        return Err(bad("destination must be an absolute path without '..'"));
    }
    let typ = typ.unwrap_or_else(|| "bind".to_string());
    if typ.is_empty() {
        return Err(bad("empty type"));
    }
    let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind {
        let s = src
            .as_ref()
            .ok_or_else(|| bad("a bind mount needs a source"))?;
        if !s.is_absolute() {
            return Err(bad("source must be an absolute path"));
        }
        // runc binds only with a bind option; `type=bind` alone means rbind to ctr users.
        if !opts.iter().any(|o| o == "bind" || o == "rbind") {
            opts.insert(0, "rbind".to_string());
        }
    }
    let mut b = MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .options(opts);
    if let Some(s) = src {
        b = b.source(s);
    }
    Ok(b.build()?)
}

/// Applies `opts` to `spec` (after the image config). `rootfs` resolves user names.
pub fn apply_options(spec: &mut Spec, opts: &Options, rootfs: Option<&Path>) -> Result<()> {
    for e in &opts.env {
        if env_key(e).is_empty() {
            return Err(Error::InvalidEnv(e.clone()));
        }
    }
    let mounts = opts
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>>>()?;
    let cpu = opts.cpus.map(cpu_quota).transpose()?;
    if let Some(m) = opts.memory {
        if m <= 0 {
            return Err(Error::InvalidMemory(m.to_string()));
        }
    }
    if let Some(cwd) = &opts.cwd {
        if !Path::new(cwd).is_absolute() {
            return Err(Error::InvalidCwd(cwd.clone()));
        }
    }
    let user = opts
        .user
        .as_deref()
        .map(|u| resolve_user(u, rootfs))
        .transpose()?;

    let process = process_mut(spec)?;
    let mut env = process.env().clone().unwrap_or_default();
    env = replace_or_append_env(&env, &opts.env);
    if opts.terminal {
        process.set_terminal(Some(true));
        // containerd's WithTTY: programs need to know what terminal they drive.
        env = replace_or_append_env(&["TERM=xterm".to_string()], &env);
    }
    process.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        process.set_cwd(cwd.into());
    }
    if let Some(u) = user {
        let mut ou = UserBuilder::default().uid(u.uid).gid(u.gid).build()?;
        if !u.additional_gids.is_empty() {
            ou.set_additional_gids(Some(u.additional_gids));
        }
        process.set_user(ou);
    }
    if !mounts.is_empty() {
        let all = spec.mounts_mut().get_or_insert_with(Vec::new);
        // A user mount over a default destination replaces it (as containerd's WithMounts).
        all.retain(|m| !mounts.iter().any(|n| n.destination() == m.destination()));
        all.extend(mounts);
    }
    if let Some((quota, period)) = cpu {
        let r = resources_mut(spec);
        let mut c = r.cpu().clone().unwrap_or_default();
        c.set_quota(Some(quota));
        c.set_period(Some(period));
        r.set_cpu(Some(c));
    }
    if let Some(limit) = opts.memory {
        let r = resources_mut(spec);
        let mut m = (*r.memory()).unwrap_or_default();
        m.set_limit(Some(limit));
        r.set_memory(Some(m));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_spec;

    fn v(spec: &Spec) -> serde_json::Value {
        serde_json::to_value(spec).expect("json")
    }

    #[test]
    fn env_replace_append_remove() {
        let d = vec![
            "PATH=/bin".to_string(),
            "A=1".to_string(),
            "B=2".to_string(),
        ];
        let o = vec!["A=x".to_string(), "C=3".to_string(), "B".to_string()];
        assert_eq!(replace_or_append_env(&d, &o), ["PATH=/bin", "A=x", "C=3"]);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("16m").expect("m"), 16 << 20);
        assert_eq!(parse_memory("16M").expect("M"), 16 << 20);
        assert_eq!(parse_memory("1g").expect("g"), 1 << 30);
        assert_eq!(parse_memory("512kb").expect("kb"), 512 << 10);
        assert_eq!(parse_memory("2MiB").expect("MiB"), 2 << 20);
        assert_eq!(parse_memory("1048576").expect("bytes"), 1 << 20);
        for bad in [
            "",
            "m",
            "-1",
            "0",
            "1.5m",
            "12x",
            "99999999999999999999",
            "9999999999t",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus_to_quota() {
        assert_eq!(cpu_quota(0.5).expect("0.5"), (50_000, 100_000));
        assert_eq!(cpu_quota(2.0).expect("2"), (200_000, 100_000));
        assert_eq!(cpu_quota(0.001).expect("tiny"), (1000, 100_000));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(cpu_quota(bad).is_err());
        }
    }

    #[test]
    fn mounts_like_ctr() {
        let m = parse_mount("type=bind,src=/data,dst=/mnt,options=rbind:ro").expect("mount");
        let j = serde_json::to_value(&m).expect("json");
        assert_eq!(
            j,
            serde_json::json!({"destination": "/mnt", "type": "bind", "source": "/data",
                                "options": ["rbind", "ro"]})
        );
        let m = parse_mount("source=/a,destination=/b").expect("default bind");
        assert_eq!(m.options().as_deref().expect("opts"), ["rbind"]);
        let m = parse_mount("type=tmpfs,dst=/scratch,options=size=1m").expect("tmpfs");
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        for bad in [
            "type=bind,src=/a",
            "type=bind,dst=/b",
            "src=a,dst=/b",
            "src=/a,dst=b",
            "src=/a,dst=/b/../../etc",
            "src=/a,dst=/b,color=red",
            "garbage",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_apply() {
        let mut s = default_spec("default", "x").expect("spec");
        let opts = Options {
            env: vec!["FOO=bar".into(), "PATH=/custom".into()],
            cwd: Some("/tmp".into()),
            user: Some("65534".into()),
            mounts: vec!["type=bind,src=/srv,dst=/srv,options=rbind:ro".into()],
            cpus: Some(0.5),
            memory: Some(16 << 20),
            terminal: true,
        };
        apply_options(&mut s, &opts, None).expect("apply");
        let j = v(&s);
        let p = &j["process"];
        assert_eq!(p["terminal"], true);
        assert_eq!(
            p["env"],
            serde_json::json!(["TERM=xterm", "PATH=/custom", "FOO=bar"])
        );
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["user"]["uid"], 65534);
        assert_eq!(p["user"]["gid"], 0);
        let r = &j["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["memory"]["limit"], 16 << 20);
        // Device rules survive resource changes.
        assert_eq!(r["devices"][0]["allow"], false);
        let mounts = j["mounts"].as_array().expect("mounts");
        assert_eq!(mounts.last().expect("last")["destination"], "/srv");
        assert_eq!(mounts.len(), 8);
    }

    #[test]
    fn mount_replaces_default_destination() {
        let mut s = default_spec("default", "x").expect("spec");
        let opts = Options {
            mounts: vec!["type=tmpfs,src=tmpfs,dst=/run,options=size=1m".into()],
            ..Default::default()
        };
        apply_options(&mut s, &opts, None).expect("apply");
        let j = v(&s);
        let runs: Vec<_> = j["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter(|m| m["destination"] == "/run")
            .collect();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["options"], serde_json::json!(["size=1m"]));
    }

    #[test]
    fn bad_options_change_nothing() {
        let orig = default_spec("default", "x").expect("spec");
        for opts in [
            Options {
                env: vec!["=x".into()],
                ..Default::default()
            },
            Options {
                cpus: Some(-1.0),
                ..Default::default()
            },
            Options {
                memory: Some(0),
                ..Default::default()
            },
            Options {
                user: Some("nobody".into()),
                ..Default::default()
            },
            Options {
                mounts: vec!["dst=rel".into()],
                ..Default::default()
            },
        ] {
            let mut s = orig.clone();
            assert!(apply_options(&mut s, &opts, None).is_err(), "{opts:?}");
            assert_eq!(s, orig);
        }
    }
}
