//! Docker image references: parsing and normalisation to the fully qualified form containerd
//! stores (`busybox` → `docker.io/library/busybox:latest`).

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

use crate::digest::Digest;
use crate::error::{Error, Result};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;

/// A normalised reference: `domain/path[:tag][@digest]`. A reference without tag or digest gets
/// the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn domain_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // domain-component ('.' domain-component)* [':' port]; also bracketed IPv6
        Regex::new(
            r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$",
        )
        .expect("static regex")
    })
}

fn component_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("static regex"))
}

fn tag_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[\w][\w.-]{0,127}$").expect("static regex"))
}

impl Reference {
    /// Parses and normalises a reference the way `docker`/`ctr` do for Docker Hub names.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad("invalid digest (want sha256:<64 hex>)"))?),
            ),
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !tag_re().is_match(t) {
                return Err(bad("invalid tag (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"));
            }
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (domain, path) = split_domain(name);
        if !domain_re().is_match(&domain) {
            return Err(bad("invalid registry host"));
        }
        if path.is_empty() {
            return Err(bad("empty repository path"));
        }
        for comp in path.split('/') {
            if !component_re().is_match(comp) {
                if comp.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(bad("repository name must be lowercase"));
                }
                return Err(bad("invalid repository path component"));
            }
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

/// Splits `name` into (domain, path): the first component is a registry host only if it looks
/// like one (has '.' or ':', is `localhost`, or has uppercase letters — a repository cannot).
fn split_domain(name: &str) -> (String, String) {
    let (domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_PREFIX}{path}");
    }
    (domain, path)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalisation_table() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_string()),
            ("foo/bar", "docker.io/foo/bar:latest".to_string()),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".to_string(),
            ),
            (
                "index.docker.io/foo/bar:v1",
                "docker.io/foo/bar:v1".to_string(),
            ),
            ("host:5000/repo:tag", "host:5000/repo:tag".to_string()),
            ("localhost/repo", "localhost/repo:latest".to_string()),
            (
                "localhost:5000/a/b/c",
                "localhost:5000/a/b/c:latest".to_string(),
            ),
            (
                "quay.io/a-b/c__d.e:1_2-3",
                "quay.io/a-b/c__d.e:1_2-3".to_string(),
            ),
            (&*format!("repo@{D}"), format!("docker.io/library/repo@{D}")),
            (
                &*format!("repo:tag@{D}"),
                format!("docker.io/library/repo:tag@{D}"),
            ),
            (&*format!("host:5000/r@{D}"), format!("host:5000/r@{D}")),
        ];
        for (input, want) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
        }
        let r = Reference::parse("host:5000/repo:tag").expect("valid");
        assert_eq!(r.domain, "host:5000");
        assert_eq!(r.path, "repo");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        assert_eq!(r.name(), "host:5000/repo");
    }

    #[test]
    fn invalid_references() {
        let long = "a".repeat(256);
        let long_tag = format!("repo:{}", "t".repeat(129));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("foo/Bar", "lowercase"),
            ("repo:", "tag"),
            ("repo:-tag", "tag"),
            (&long_tag, "tag"),
            ("repo@sha256:abc", "digest"),
            ("repo@md5:abc", "digest"),
            ("a//b", "path"),
            ("-a", "path"),
            ("a-", "path"),
            ("a..b", "path"),
            ("host:5000/", "path"),
            (&long, "255"),
            ("exa mple/foo", "path"),
            ("bad_host.com:x/foo", "host"),
            ("repo:tag:tag2", "path"),
        ];
        for (input, needle) in cases {
            let err = Reference::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }
}
