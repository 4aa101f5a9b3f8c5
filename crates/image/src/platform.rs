//! Platforms (`os/arch[/variant]`), the host platform and a matcher that prefers exact matches,
//! following containerd's normalisation rules.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    pub fn new(os: &str, arch: &str, variant: &str) -> Self {
        Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
            ..Default::default()
        }
    }

    /// The platform this binary runs on (containerd's `platforms.DefaultSpec`).
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
            "powerpc64" => ("ppc64", ""),
            "riscv64" => ("riscv64", ""),
            "s390x" => ("s390x", ""),
            "loongarch64" => ("loong64", ""),
            other => (other, ""),
        };
        Platform::new(std::env::consts::OS, arch, variant).normalize()
    }

    /// Parses `os/arch[/variant]` (also a bare `os` or arch, as containerd accepts) and normalises.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidPlatform {
            platform: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if parts.iter().any(|p| !valid(p)) {
            return Err(bad("components must be non-empty [A-Za-z0-9_-]"));
        }
        let p = match parts.as_slice() {
            [one] => {
                let lower = one.to_ascii_lowercase();
                if is_known_os(&lower) {
                    let host = Platform::host();
                    Platform::new(&lower, &host.architecture, &host.variant)
                } else {
                    Platform::new(std::env::consts::OS, &lower, "")
                }
            }
            [os, arch] => Platform::new(os, arch, ""),
            [os, arch, variant] => Platform::new(os, arch, variant),
            _ => return Err(bad("expected os/arch[/variant]")),
        };
        Ok(p.normalize())
    }

    /// Canonical form: lowercase, arch aliases resolved, arm64 `v8` made explicit.
    pub fn normalize(mut self) -> Self {
        self.os = self.os.to_ascii_lowercase();
        if self.os == "macos" {
            self.os = "darwin".into();
        }
        let arch = self.architecture.to_ascii_lowercase();
        let mut variant = self.variant.to_ascii_lowercase();
        let arch = match arch.as_str() {
            "i386" => "386".to_string(),
            "x86_64" | "x86-64" | "amd64" => {
                if variant == "v1" {
                    variant.clear();
                }
                "amd64".to_string()
            }
            "aarch64" | "arm64" => {
                if variant == "8" || variant == "v8" || variant.is_empty() {
                    variant = "v8".into();
                }
                "arm64".to_string()
            }
            "armhf" => {
                variant = "v7".into();
                "arm".to_string()
            }
            "armel" => {
                variant = "v6".into();
                "arm".to_string()
            }
            "arm" => {
                if variant.is_empty() || variant == "7" {
                    variant = "v7".into();
                } else if matches!(variant.as_str(), "5" | "6" | "8") {
                    variant = format!("v{variant}");
                }
                "arm".to_string()
            }
            _ => arch,
        };
        self.architecture = arch;
        self.variant = variant;
        self
    }
}

fn is_known_os(s: &str) -> bool {
    matches!(
        s,
        "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris" | "illumos"
    )
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Matches candidate platforms against a wanted one. For arm, lower variants run on higher ones
/// (v6 images run on v7 hosts), as in containerd; [`PlatformMatcher::rank`] makes the exact
/// variant win over a compatible one.
#[derive(Debug, Clone)]
pub struct PlatformMatcher {
    want: Platform,
}

impl PlatformMatcher {
    pub fn new(want: Platform) -> Self {
        PlatformMatcher {
            want: want.normalize(),
        }
    }

    pub fn host() -> Self {
        Self::new(Platform::host())
    }

    pub fn wanted(&self) -> &Platform {
        &self.want
    }

    /// `None` when `p` cannot run; otherwise a rank where lower is better (0 = exact).
    pub fn rank(&self, p: &Platform) -> Option<u32> {
        let p = p.clone().normalize();
        if p.os != self.want.os || p.architecture != self.want.architecture {
            return None;
        }
        if p.variant == self.want.variant {
            return Some(0);
        }
        if p.architecture == "arm" || p.architecture == "arm64" {
            let have = variant_number(&p.variant)?;
            let want = variant_number(&self.want.variant)?;
            if have < want {
                return Some(want - have);
            }
            return None;
        }
        // Other architectures: an unspecified variant on either side is compatible.
        if p.variant.is_empty() || self.want.variant.is_empty() {
            return Some(1);
        }
        None
    }

    pub fn matches(&self, p: &Platform) -> bool {
        self.rank(p).is_some()
    }

    /// Index of the best match among `candidates` (first one wins ties).
    pub fn best<'a, I: IntoIterator<Item = &'a Platform>>(&self, candidates: I) -> Option<usize> {
        candidates
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| self.rank(p).map(|r| (r, i)))
            .min()
            .map(|(_, i)| i)
    }
}

fn variant_number(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_normalised() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(h.to_string(), "linux/arm64/v8");
        }
    }

    #[test]
    fn parse_table() {
        for (input, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/aarch64/8", "linux/arm64/v8"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/386", "linux/386"),
            ("linux/i386", "linux/386"),
            ("windows/amd64", "windows/amd64"),
        ] {
            assert_eq!(
                Platform::parse(input).expect(input).to_string(),
                want,
                "{input}"
            );
        }
        for bad in ["", "/", "linux//", "a/b/c/d", "linux/am d64", "linux/../x"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matcher_prefers_exact() {
        let m = PlatformMatcher::new(Platform::new("linux", "arm", "v7"));
        let cands = [
            Platform::new("linux", "arm", "v5"),
            Platform::new("linux", "arm64", ""),
            Platform::new("linux", "arm", "v7"),
            Platform::new("linux", "arm", "v6"),
        ];
        assert_eq!(m.best(&cands), Some(2));
        assert_eq!(m.best(&[cands[0].clone(), cands[3].clone()]), Some(1));
        assert!(!m.matches(&Platform::new("linux", "arm", "v8")));

        let amd = PlatformMatcher::new(Platform::parse("linux/amd64").expect("valid"));
        assert!(amd.matches(&Platform::new("linux", "x86_64", "")));
        assert!(!amd.matches(&Platform::new("windows", "amd64", "")));
        assert!(!amd.matches(&Platform::new("linux", "arm64", "")));
        // arm64 without variant means v8
        let arm64 = PlatformMatcher::new(Platform::parse("linux/arm64").expect("valid"));
        assert_eq!(arm64.rank(&Platform::new("linux", "arm64", "")), Some(0));
    }
}
