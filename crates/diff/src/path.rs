//! Lexical handling of tar entry names and hard link targets. Nothing here touches the
//! filesystem; resolution on disk happens in `root`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A path relative to the apply root, as validated components (no `.`, `..`, `/` or NUL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RelPath(Vec<OsString>);

impl RelPath {
    pub fn components(&self) -> &[OsString] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Parent path and final name; `None` for the root itself.
    pub fn split_last(&self) -> Option<(RelPath, &OsString)> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last))
    }

    pub fn join(&self, name: &OsString) -> RelPath {
        let mut v = self.0.clone();
        v.push(name.clone());
        RelPath(v)
    }

    pub fn prefix(&self, n: usize) -> RelPath {
        RelPath(self.0[..n.min(self.0.len())].to_vec())
    }

    /// As a relative path for `*at` calls ("." for the root).
    pub fn to_path(&self) -> PathBuf {
        if self.0.is_empty() {
            PathBuf::from(".")
        } else {
            self.0.iter().collect()
        }
    }

    pub fn display(&self) -> String {
        format!("/{}", self.to_path().display()).replace("/.", "/")
    }
}

fn component(bytes: &[u8], whole: &[u8]) -> Result<OsString> {
    if bytes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "tar path {:?} contains a NUL byte",
            String::from_utf8_lossy(whole)
        )));
    }
    Ok(OsString::from_vec(bytes.to_vec()))
}

/// An entry name: a leading `/` is stripped, `.` and empty components are dropped, and any
/// `..` component is refused outright.
pub(crate) fn entry_path(raw: &[u8]) -> Result<RelPath> {
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::Escape(format!(
                    "tar entry {:?} has a '..' component",
                    String::from_utf8_lossy(raw)
                )))
            }
            _ => out.push(component(c, raw)?),
        }
    }
    Ok(RelPath(out))
}

/// A hard link target: cleaned lexically; `..` may not climb above the root.
pub(crate) fn link_target(raw: &[u8]) -> Result<RelPath> {
    let mut out: Vec<OsString> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(Error::Escape(format!(
                        "hard link target {:?} escapes the root",
                        String::from_utf8_lossy(raw)
                    )));
                }
            }
            _ => out.push(component(c, raw)?),
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "hard link target {:?} names the root",
            String::from_utf8_lossy(raw)
        )));
    }
    Ok(RelPath(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let p = entry_path(b"/./a//b/./c/").expect("valid");
        assert_eq!(p.to_path(), PathBuf::from("a/b/c"));
        assert!(entry_path(b"./").expect("root").is_root());
        assert!(matches!(entry_path(b"a/../b"), Err(Error::Escape(_))));
        assert!(matches!(entry_path(b"../x"), Err(Error::Escape(_))));
    }

    #[test]
    fn link_targets() {
        assert_eq!(
            link_target(b"/a/b/../c").expect("ok").to_path(),
            PathBuf::from("a/c")
        );
        assert!(matches!(
            link_target(b"a/../../etc/passwd"),
            Err(Error::Escape(_))
        ));
        assert!(matches!(link_target(b"/"), Err(Error::InvalidArgument(_))));
    }
}
