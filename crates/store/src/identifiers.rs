//! containerd's identifier rule, used for namespaces, leases and containers: these names end up
//! in paths and keys elsewhere, so they are kept to a small safe alphabet.

use crate::error::{Error, Result};

/// Longest identifier accepted (containerd's limit).
pub const MAX_LENGTH: usize = 76;

/// Checks `id` against `^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`, at most 76 characters.
pub fn validate(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(
            "identifier must not be empty".into(),
        ));
    }
    if id.len() > MAX_LENGTH {
        return Err(Error::InvalidArgument(format!(
            "identifier {id:?} greater than maximum length ({MAX_LENGTH} characters)"
        )));
    }
    // Separators must sit between alphanumerics: not first, not last, never two in a row.
    let mut prev_sep = true;
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(invalid(id));
        }
    }
    if prev_sep {
        return Err(invalid(id));
    }
    Ok(())
}

/// Longest lease id accepted.
pub const MAX_LEASE_ID: usize = 255;

/// Lease ids are looser than identifiers: containerd's clients generate them as
/// `<nanos>-<url-safe base64>` (`568228544-t9k_-Q==`), which the identifier rule refuses. They only
/// ever live in the database as keys, so any printable ASCII is safe.
pub fn validate_lease_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_LEASE_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidArgument(format!(
            "lease id {id:?} must be 1 to {MAX_LEASE_ID} printable ASCII characters"
        )));
    }
    Ok(())
}

fn invalid(id: &str) -> Error {
    Error::InvalidArgument(format!(
        "identifier {id:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
    ))
}

#[cfg(test)]
mod tests {
    use super::validate;
    use crate::ErrorKind;

    #[test]
    fn accepts_containerd_style_ids() {
        for id in [
            "default",
            "k8s.io",
            "a",
            "A1-b_2.c",
            "moby",
            "x".repeat(76).as_str(),
        ] {
            assert!(validate(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_bad_ids() {
        let long = "x".repeat(77);
        for id in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "../x",
            "a b",
            "é",
            ".",
            "a\0",
            "a_-b",
            long.as_str(),
        ] {
            let err = validate(id).expect_err(id);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id}");
        }
    }
}
