//! The content labels containerd's garbage collector follows: a blob labelled with
//! `containerd.io/gc.ref.*` keeps what the label names alive.

use std::collections::BTreeMap;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::manifest::{Index, Manifest};

pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";

pub type Labels = BTreeMap<String, String>;

/// Index → `containerd.io/gc.ref.content.m.<i>` = each child manifest.
pub fn index_labels(index: &Index) -> Labels {
    index
        .manifests
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{GC_REF_CONTENT}.m.{i}"), d.digest.to_string()))
        .collect()
}

/// Manifest → `...content.config` = config and `...content.l.<i>` = each layer.
pub fn manifest_labels(manifest: &Manifest) -> Labels {
    let mut l: Labels = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{GC_REF_CONTENT}.l.{i}"), d.digest.to_string()))
        .collect();
    l.insert(
        format!("{GC_REF_CONTENT}.config"),
        manifest.config.digest.to_string(),
    );
    l
}

/// Config → `containerd.io/gc.ref.snapshot.<snapshotter>` = top chain id, set after unpack.
pub fn config_snapshot_label(snapshotter: &str, top_chain_id: &Digest) -> (String, String) {
    (
        format!("{GC_REF_SNAPSHOT}.{snapshotter}"),
        top_chain_id.to_string(),
    )
}

/// Layer blob → `containerd.io/uncompressed` = its diff id.
pub fn layer_labels(diff_id: &Digest) -> Labels {
    Labels::from([(UNCOMPRESSED.to_string(), diff_id.to_string())])
}

/// Children a manifest or index references, in label order (for walking the graph).
pub fn manifest_children(manifest: &Manifest) -> Vec<Descriptor> {
    std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_types as mt;

    fn d(n: u8) -> Descriptor {
        Descriptor::new(mt::OCI_LAYER, Digest::of(&[n]), 1)
    }

    #[test]
    fn label_keys_match_containerd() {
        let m = Manifest {
            schema_version: 2,
            media_type: None,
            config: d(0),
            layers: vec![d(1), d(2)],
            annotations: Default::default(),
        };
        let l = manifest_labels(&m);
        assert_eq!(l.len(), 3);
        assert_eq!(
            l["containerd.io/gc.ref.content.config"],
            d(0).digest.to_string()
        );
        assert_eq!(
            l["containerd.io/gc.ref.content.l.1"],
            d(2).digest.to_string()
        );
        let i = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d(5), d(6)],
            annotations: Default::default(),
        };
        let l = index_labels(&i);
        assert_eq!(
            l["containerd.io/gc.ref.content.m.0"],
            d(5).digest.to_string()
        );
        assert_eq!(
            l["containerd.io/gc.ref.content.m.1"],
            d(6).digest.to_string()
        );
        let (k, v) = config_snapshot_label("overlayfs", &d(3).digest);
        assert_eq!(k, "containerd.io/gc.ref.snapshot.overlayfs");
        assert_eq!(v, d(3).digest.to_string());
        assert_eq!(
            layer_labels(&d(4).digest)["containerd.io/uncompressed"],
            d(4).digest.to_string()
        );
    }
}
