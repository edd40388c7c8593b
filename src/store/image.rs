//! The one writer of image manifests: build, commit and load all end here,
//! so every image the store makes has the same shape (a pulled image keeps the
//! registry's bytes instead, so that its digest survives).

use std::collections::BTreeMap;

use super::{Result, Store};
use crate::oci::{self, Descriptor, Digest, Manifest, Platform};

impl Store {
    /// Writes an OCI manifest over a config blob and layer blobs already in
    /// the store; returns its descriptor (with `platform`) and whether the
    /// manifest blob is new to the store.
    pub fn write_manifest(
        &self,
        config: (&Digest, u64),
        layers: Vec<Descriptor>,
        platform: Option<Platform>,
    ) -> Result<(Descriptor, bool)> {
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.into()),
            config: Descriptor {
                media_type: oci::MEDIA_CONFIG.into(),
                digest: config.0.clone(),
                size: config.1,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = oci::to_blob(&manifest);
        let new = !self.has_blob(&Digest::of(&bytes));
        let (digest, size) = self.write_blob(&bytes)?;
        Ok((Descriptor { media_type: oci::MEDIA_MANIFEST.into(), digest, size, annotations: BTreeMap::new(), platform }, new))
    }
}
