//! Finding and parsing the node's network config (the first file of the conf dir).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::Error;
use crate::validate;

/// A config file larger than this is not a network config; refuse it rather than
/// reading it into memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A network config list, normalized: a single `.conf` becomes a one-plugin list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetworkList {
    /// Where it came from, for error messages (the cache file when replayed from cache).
    pub source: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<Plugin>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plugin {
    /// The executable name (`type`).
    pub kind: String,
    /// The IPAM plugin's executable name, when the plugin delegates to one.
    pub ipam: Option<String>,
    pub conf: Map<String, Value>,
}

impl NetworkList {
    /// The normalized list as a conflist document; this is what the cache stores so a
    /// later DEL replays exactly what ADD ran.
    pub fn to_json(&self) -> Value {
        let mut list = Map::new();
        list.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        list.insert("name".into(), Value::String(self.name.clone()));
        if self.disable_check {
            list.insert("disableCheck".into(), Value::Bool(true));
        }
        list.insert(
            "plugins".into(),
            Value::Array(
                self.plugins
                    .iter()
                    .map(|p| Value::Object(p.conf.clone()))
                    .collect(),
            ),
        );
        Value::Object(list)
    }

    /// Parses a config document; `as_list` says whether it is a conflist (by file
    /// extension) or a single plugin config to wrap.
    pub fn parse(source: &Path, doc: Value, as_list: bool) -> Result<Self, Error> {
        let Value::Object(mut obj) = doc else {
            return Err(Error::invalid_config(source, "not a JSON object"));
        };
        // A `.conf` holding a list (no `type`, a `plugins` array) is read as the list
        // it obviously is instead of failing on a missing `type`.
        let is_list = as_list || (!obj.contains_key("type") && obj.contains_key("plugins"));
        let name = take_string(source, &mut obj, "name")?;
        validate::network_name(&name).map_err(|why| Error::invalid_config(source, why))?;
        let cni_version = take_string(source, &mut obj, "cniVersion")?;
        Version::parse(&cni_version).map_err(|why| Error::invalid_config(source, why))?;

        let disable_check = match obj.get("disableCheck") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            // The spec writes it as a string; many files use a boolean. Accept both.
            Some(Value::String(s)) if s == "true" => true,
            Some(Value::String(s)) if s == "false" => false,
            Some(other) => {
                return Err(Error::invalid_config(
                    source,
                    format!("disableCheck must be true or false, not {other}"),
                ))
            }
        };

        let raw_plugins = if is_list {
            match obj.remove("plugins") {
                Some(Value::Array(items)) => items,
                Some(_) => return Err(Error::invalid_config(source, "plugins is not an array")),
                None => return Err(Error::invalid_config(source, "no plugins array")),
            }
        } else {
            vec![Value::Object(obj)]
        };
        if raw_plugins.is_empty() {
            return Err(Error::invalid_config(source, "plugins array is empty"));
        }

        let plugins = raw_plugins
            .into_iter()
            .enumerate()
            .map(|(i, p)| Plugin::parse(source, i, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkList {
            source: source.to_path_buf(),
            name,
            cni_version,
            disable_check,
            plugins,
        })
    }

    pub fn version(&self) -> Version {
        // Checked in `parse`; a list cannot exist with an unparsable version.
        Version::parse(&self.cni_version).unwrap_or(Version(0, 0, 0))
    }
}

impl Plugin {
    fn parse(source: &Path, index: usize, doc: Value) -> Result<Self, Error> {
        let Value::Object(conf) = doc else {
            return Err(Error::invalid_config(
                source,
                format!("plugin #{index} is not a JSON object"),
            ));
        };
        let kind = match conf.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => {
                return Err(Error::invalid_config(
                    source,
                    format!("plugin #{index} has no string \"type\""),
                ))
            }
        };
        validate::plugin_type(&kind).map_err(|why| {
            Error::invalid_config(source, format!("plugin #{index} type {kind:?}: {why}"))
        })?;
        let ipam = match conf.get("ipam").and_then(|i| i.get("type")) {
            None => None,
            Some(Value::String(t)) => {
                validate::plugin_type(t).map_err(|why| {
                    Error::invalid_config(source, format!("plugin #{index} ipam type {t:?}: {why}"))
                })?;
                Some(t.clone())
            }
            Some(_) => {
                return Err(Error::invalid_config(
                    source,
                    format!("plugin #{index} ipam type is not a string"),
                ))
            }
        };
        Ok(Plugin { kind, ipam, conf })
    }

    /// Whether the plugin declared `capabilities.<name>: true`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.conf
            .get("capabilities")
            .and_then(|c| c.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

fn take_string(source: &Path, obj: &mut Map<String, Value>, key: &str) -> Result<String, Error> {
    match obj.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None => {
            Err(Error::invalid_config(source, format!("missing \"{key}\"")))
        }
        Some(other) => Err(Error::invalid_config(
            source,
            format!("\"{key}\" must be a string, not {other}"),
        )),
    }
}

/// Loads the first network config of `dir`, sorted by file name. Blocking.
///
/// Like containerd, only the first file counts, and a broken first file is an error
/// rather than a reason to fall through to the next one: silently using another
/// network than the administrator meant is worse than not starting pods.
pub(crate) fn load_first(dir: &Path) -> Result<NetworkList, Error> {
    let path = first_config_file(dir)?;
    load_file(&path)
}

pub(crate) fn first_config_file(dir: &Path) -> Result<PathBuf, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoConfig {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io("read CNI config dir", dir, e)),
    };
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read CNI config dir", dir, e))?;
        let name = entry.file_name();
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        // Follows symlinks on purpose: config managers commonly link files into place.
        if wanted && path.is_file() {
            names.push(name);
        }
    }
    names.sort();
    match names.into_iter().next() {
        Some(name) => Ok(dir.join(name)),
        None => Err(Error::NoConfig {
            dir: dir.to_path_buf(),
        }),
    }
}

pub(crate) fn load_file(path: &Path) -> Result<NetworkList, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open CNI config", path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read CNI config", path, e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::invalid_config(
            path,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid_config(path, format!("invalid JSON: {e}")))?;
    let as_list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
    NetworkList::parse(path, doc, as_list)
}

/// A CNI spec version (semver without pre-release parts, which the spec never uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(pub u64, pub u64, pub u64);

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("cniVersion {s:?} is not a version like \"1.0.0\"");
        let mut parts = s.split('.');
        let mut next = || -> Result<u64, String> {
            match parts.next() {
                None => Ok(0),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| bad())
                }
                Some(_) => Err(bad()),
            }
        };
        let v = Version(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }

    /// CHECK exists since spec 0.4.0.
    pub fn supports_check(self) -> bool {
        self >= Version(0, 4, 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, body: &str) {
        fs::write(dir.join(name), body).unwrap();
    }

    const BRIDGE_CONF: &str = r#"{"cniVersion":"1.0.0","name":"one","type":"bridge",
        "bridge":"cni0","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}"#;

    #[test]
    fn picks_first_file_by_name_among_known_extensions() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        );
        write(dir.path(), "10-a.conf", BRIDGE_CONF);
        write(dir.path(), "00-ignored.txt", "not json");
        write(dir.path(), "05-ignored.conf.bak", "not json");
        fs::create_dir(dir.path().join("01-dir.conf")).unwrap();
        let list = load_first(dir.path()).unwrap();
        assert_eq!(list.name, "one");
        assert_eq!(list.source, dir.path().join("10-a.conf"));
    }

    #[test]
    fn sorting_is_by_file_name_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "99-last.conf", BRIDGE_CONF);
        write(
            dir.path(),
            "50-mid.json",
            r#"{"cniVersion":"0.4.0","name":"mid","type":"ptp"}"#,
        );
        write(
            dir.path(),
            "70-list.conflist",
            r#"{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"}]}"#,
        );
        let list = load_first(dir.path()).unwrap();
        assert_eq!(list.name, "mid");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins[0].kind, "ptp");
    }

    #[test]
    fn single_conf_is_wrapped_as_one_plugin_list() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-a.conf", BRIDGE_CONF);
        let list = load_first(dir.path()).unwrap();
        assert_eq!(list.plugins.len(), 1);
        let p = &list.plugins[0];
        assert_eq!(p.kind, "bridge");
        assert_eq!(p.ipam.as_deref(), Some("host-local"));
        // name and cniVersion live on the list; they are injected back per plugin at exec time.
        assert!(!p.conf.contains_key("name"));
        assert_eq!(p.conf["bridge"], "cni0");
        let json = list.to_json();
        assert_eq!(json["name"], "one");
        assert_eq!(json["plugins"][0]["type"], "bridge");
        // The cached form parses back to the same list.
        let again = NetworkList::parse(Path::new("cache"), json, true).unwrap();
        assert_eq!(again.plugins, list.plugins);
    }

    #[test]
    fn conflist_keeps_plugin_order_and_disable_check() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-net.conflist",
            r#"{"cniVersion":"1.0.0","name":"net","disableCheck":"true","plugins":[
                {"type":"bridge","ipam":{"type":"host-local"}},
                {"type":"portmap","capabilities":{"portMappings":true}},
                {"type":"bandwidth","capabilities":{"bandwidth":false}}]}"#,
        );
        let list = load_first(dir.path()).unwrap();
        let kinds: Vec<_> = list.plugins.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["bridge", "portmap", "bandwidth"]);
        assert!(list.disable_check);
        assert!(list.plugins[1].has_capability("portMappings"));
        assert!(!list.plugins[2].has_capability("bandwidth"));
        assert!(!list.plugins[0].has_capability("portMappings"));
    }

    #[test]
    fn conf_file_holding_a_list_is_read_as_list() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-x.conf",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"loopback"}]}"#,
        );
        let list = load_first(dir.path()).unwrap();
        assert_eq!(list.plugins[0].kind, "loopback");
    }

    #[test]
    fn invalid_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-bad.conflist", "{ not json");
        write(dir.path(), "20-good.conf", BRIDGE_CONF);
        let err = load_first(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert!(msg.contains("10-bad.conflist"), "{msg}");
        assert!(msg.contains("invalid JSON"), "{msg}");
    }

    #[test]
    fn structural_errors_are_clear() {
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins array is empty",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "no plugins array"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "plugin #0 has no string \"type\"",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
                "missing \"cniVersion\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "missing \"name\"",
            ),
            (
                r#"{"cniVersion":"one","name":"n","plugins":[{"type":"bridge"}]}"#,
                "not a version",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../bin/sh"}]}"#,
                "type \"../bin/sh\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"a/b"}}]}"#,
                "ipam type",
            ),
            (r#"[1,2]"#, "not a JSON object"),
        ];
        for (body, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "10-n.conflist", body);
            let msg = load_first(dir.path()).unwrap_err().to_string();
            assert!(msg.contains(want), "{body}: got {msg:?}, want {want:?}");
            assert!(msg.contains("10-n.conflist"), "{msg}");
        }
    }

    #[test]
    fn empty_or_missing_dir_is_no_config() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "README", "nothing here");
        let err = load_first(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NoConfig { .. }), "{err:?}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        let err = load_first(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, Error::NoConfig { .. }), "{err:?}");
    }

    #[test]
    fn oversized_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","pad":"{}","plugins":[{{"type":"bridge"}}]}}"#,
            "x".repeat(MAX_CONFIG_BYTES as usize)
        );
        write(dir.path(), "10-n.conflist", &big);
        let msg = load_first(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("larger than"), "{msg}");
    }

    #[test]
    fn versions_compare() {
        assert!(Version::parse("0.4.0").unwrap().supports_check());
        assert!(Version::parse("1.0.0").unwrap().supports_check());
        assert!(Version::parse("0.10.0").unwrap().supports_check());
        assert!(!Version::parse("0.3.1").unwrap().supports_check());
        assert_eq!(Version::parse("1.1").unwrap(), Version(1, 1, 0));
        assert!(Version::parse("1.0.0.0").is_err());
        assert!(Version::parse("1.x").is_err());
        assert!(Version::parse("").is_err());
    }
}
