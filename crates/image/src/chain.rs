//! Layer chain ids: the identity of a stack of layers, used as committed snapshot names.

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// containerd's ChainID: chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]).
/// Returns `None` for an empty list (an image with no layers has no chain).
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// Every prefix's chain id, in order.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => {
                let h = Sha256::digest(format!("{parent} {d}").as_bytes());
                Digest::from_hex(&hex::encode(h)).expect("sha256 hex is a valid digest")
            }
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let a = Digest::parse(
            "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
        )
        .expect("valid");
        let b = Digest::parse(
            "sha256:9c27e219663c25e0f28493790cc0b88bc973ba3b1686355f221c38a36978ac63",
        )
        .expect("valid");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        // Computed independently: printf '%s %s' "$a" "$b" | sha256sum
        let want = Digest::parse(
            "sha256:820055974ba9611fba1d7b6c5783a9636318b3ba116207bc6d168a4ff3982d25",
        )
        .expect("valid");
        assert_eq!(chain_id(&[a.clone(), b.clone()]), Some(want.clone()));
        let ids = chain_ids(&[a.clone(), b.clone(), a.clone()]);
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[1], want);
        assert_eq!(ids[2], Digest::of(format!("{want} {a}").as_bytes()));
    }
}
