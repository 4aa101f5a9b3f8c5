//! Unpack planning: which manifest to unpack and, per layer, the snapshot chain to build.

use crate::chain::chain_ids;
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ImageConfig, Index, Manifest};
use crate::platform::PlatformMatcher;

/// One layer to apply: on top of the snapshot `parent` (none for the base layer), applying
/// `layer` must produce `diff_id`, and the result is committed as `chain_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStep {
    pub layer: Descriptor,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
}

/// Picks the manifest for `matcher` from an index: the best-ranked platform; entries without a
/// platform are skipped (they are attestations or other non-image manifests).
pub fn select_manifest(index: &Index, matcher: &PlatformMatcher) -> Result<Descriptor> {
    let candidates: Vec<(usize, &crate::platform::Platform)> = index
        .manifests
        .iter()
        .enumerate()
        .filter(|(_, d)| crate::media_types::is_manifest(&d.media_type) || d.media_type.is_empty())
        .filter_map(|(i, d)| d.platform.as_ref().map(|p| (i, p)))
        .collect();
    let best = matcher
        .best(candidates.iter().map(|(_, p)| *p))
        .ok_or_else(|| Error::NoMatchingPlatform(matcher.wanted().to_string()))?;
    Ok(index.manifests[candidates[best].0].clone())
}

/// The ordered steps to unpack `manifest` whose config is `config`. Fails when the layer count
/// and diff id count disagree: applying such an image would build a wrong rootfs.
pub fn plan_unpack(manifest: &Manifest, config: &ImageConfig) -> Result<Vec<LayerStep>> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::malformed(
            "image",
            format!(
                "{} layers but {} diff_ids in config",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = chain_ids(diff_ids);
    Ok(manifest
        .layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, (layer, diff_id))| LayerStep {
            layer: layer.clone(),
            diff_id: diff_id.clone(),
            chain_id: chains[i].clone(),
            parent: if i == 0 {
                None
            } else {
                Some(chains[i - 1].clone())
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::RootFs;
    use crate::media_types as mt;
    use crate::platform::Platform;

    fn desc(n: u8, p: Option<Platform>) -> Descriptor {
        let mut d = Descriptor::new(mt::OCI_MANIFEST, Digest::of(&[n]), 1);
        d.platform = p;
        d
    }

    #[test]
    fn selects_host_from_index() {
        let idx = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                desc(0, None),
                desc(1, Some(Platform::new("linux", "s390x", ""))),
                desc(2, Some(Platform::host())),
                desc(3, Some(Platform::new("windows", "amd64", ""))),
            ],
            annotations: Default::default(),
        };
        let got = select_manifest(&idx, &PlatformMatcher::host()).expect("host manifest");
        assert_eq!(got.digest, Digest::of(&[2]));
        let none = PlatformMatcher::new(Platform::new("plan9", "mips", ""));
        assert!(matches!(
            select_manifest(&idx, &none),
            Err(Error::NoMatchingPlatform(_))
        ));
    }

    #[test]
    fn plan_orders_layers_with_parents() {
        let layers: Vec<Descriptor> = (10..13)
            .map(|n| Descriptor::new(mt::OCI_LAYER_GZIP, Digest::of(&[n]), 1))
            .collect();
        let diff_ids: Vec<Digest> = (20..23).map(|n| Digest::of(&[n])).collect();
        let m = Manifest {
            schema_version: 2,
            media_type: None,
            config: Descriptor::new(mt::OCI_CONFIG, Digest::of(b"c"), 1),
            layers: layers.clone(),
            annotations: Default::default(),
        };
        let mut c = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: String::new(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: diff_ids.clone(),
            },
        };
        let plan = plan_unpack(&m, &c).expect("plan");
        let chains = chain_ids(&diff_ids);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[0].parent, None);
        assert_eq!(plan[0].chain_id, diff_ids[0]);
        assert_eq!(plan[2].parent.as_ref(), Some(&chains[1]));
        assert_eq!(plan[2].chain_id, chains[2]);
        assert_eq!(plan[1].layer, layers[1]);
        c.rootfs.diff_ids.pop();
        assert!(plan_unpack(&m, &c).is_err());
    }
}
