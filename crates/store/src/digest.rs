//! Content digests. Only sha256 is supported; the hex part is the blob's file name, so it is
//! checked strictly (64 lowercase hex digits) before it ever reaches a path.

use std::fmt;

use crate::error::{Error, Result};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

const PREFIX: &str = "sha256:";

/// Parses and validates a digest string.
pub fn parse(s: &str) -> Result<Digest> {
    let Some((algo, hex)) = s.split_once(':') else {
        return Err(Error::InvalidArgument(format!(
            "invalid digest {s:?}: missing algorithm"
        )));
    };
    if algo != "sha256" {
        return Err(Error::InvalidArgument(format!(
            "unsupported digest algorithm {algo:?} in {s:?}"
        )));
    }
    if !is_sha256_hex(hex) {
        return Err(Error::InvalidArgument(format!(
            "invalid digest {s:?}: expected 64 lowercase hex digits"
        )));
    }
    Ok(Digest(s.to_string()))
}

/// True when `hex` is exactly 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Digest {
    /// Same as [`parse`].
    pub fn parse(s: &str) -> Result<Digest> {
        parse(s)
    }

    /// Builds a digest from a raw 32-byte sha256 output.
    pub fn from_sha256(bytes: &[u8]) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64-digit hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    pub fn algorithm(&self) -> &str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const GOOD: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256() {
        let d = parse(GOOD).expect("valid");
        assert_eq!(d.as_str(), GOOD);
        assert_eq!(d.hex(), &GOOD[7..]);
        assert_eq!(d.to_string(), GOOD);
    }

    #[test]
    fn rejects_other_algorithms() {
        let err = parse("sha512:abcd").expect_err("sha512");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains("unsupported digest algorithm"),
            "{err}"
        );
    }

    #[test]
    fn rejects_malformed() {
        let upper = GOOD.to_uppercase().replacen("SHA256", "sha256", 1);
        let short = &GOOD[..GOOD.len() - 1];
        let traversal = format!("sha256:../../{}", &GOOD[13..]);
        for bad in [
            "",
            "sha256",
            "sha256:",
            short,
            upper.as_str(),
            traversal.as_str(),
            "e3b0c442",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn from_sha256_bytes() {
        let d = Digest::from_sha256(&[0u8; 32]);
        assert_eq!(d.hex(), "0".repeat(64));
    }
}
