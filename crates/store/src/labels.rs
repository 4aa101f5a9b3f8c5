//! Label validation and containerd's field-path updates of label maps.

use crate::error::{Error, Result};
use crate::records::Labels;

/// containerd's bound: a key, and a key with its value, must each fit in 4096 bytes.
pub const MAX_LABEL_SIZE: usize = 4096;

pub fn validate(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::InvalidArgument("label key must not be empty".into()));
        }
        if k.len() > MAX_LABEL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "label key {:?}... longer than {MAX_LABEL_SIZE} bytes",
                truncate(k)
            )));
        }
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "label {:?}: key and value longer than {MAX_LABEL_SIZE} bytes",
                truncate(k)
            )));
        }
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Applies one field path that concerns a string map: `<prefix>` replaces the whole map, and
/// `<prefix>.<k>` copies that key from `from` (or removes it when absent or empty there).
/// Returns false when `path` is not about this map.
pub(crate) fn apply_map_path<V: Clone + Default + PartialEq>(
    path: &str,
    prefix: &str,
    target: &mut std::collections::HashMap<String, V>,
    from: &std::collections::HashMap<String, V>,
) -> bool {
    if path == prefix {
        *target = from.clone();
        return true;
    }
    let Some(key) = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return false;
    };
    match from.get(key) {
        Some(v) if *v != V::default() => {
            target.insert(key.to_string(), v.clone());
        }
        _ => {
            target.remove(key);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn label_bounds() {
        let ok: Labels = [("k".to_string(), "v".repeat(4095))].into();
        assert!(validate(&ok).is_ok());
        let too_big: Labels = [("k".to_string(), "v".repeat(4096))].into();
        assert_eq!(
            validate(&too_big).expect_err("big").kind(),
            ErrorKind::InvalidArgument
        );
        let long_key: Labels = [("k".repeat(4097), String::new())].into();
        assert_eq!(
            validate(&long_key).expect_err("key").kind(),
            ErrorKind::InvalidArgument
        );
        let empty_key: Labels = [(String::new(), "v".into())].into();
        assert!(validate(&empty_key).is_err());
    }

    #[test]
    fn map_paths() {
        let mut t: Labels = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let from: Labels = [("a".into(), "9".into()), ("c".into(), "3".into())].into();
        assert!(apply_map_path("labels.a", "labels", &mut t, &from));
        assert_eq!(t["a"], "9");
        assert!(apply_map_path("labels.b", "labels", &mut t, &from));
        assert!(!t.contains_key("b"));
        assert!(!apply_map_path("labelsx", "labels", &mut t, &from));
        assert!(!apply_map_path("image", "labels", &mut t, &from));
        assert!(apply_map_path("labels", "labels", &mut t, &from));
        assert_eq!(t, from);
    }
}
