//! The build cache: one small JSON file per cache key under `strata/cache/`,
//! recording what the step produced (its layer, if any) and when.

use std::fs;

use serde::{Deserialize, Serialize};

use super::{Result, Store, io_err};
use crate::oci::Digest;

/// What a cached step produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The layer (uncompressed, so blob digest = diff_id), or none for a config-only step.
    pub diff_id: Option<Digest>,
    pub size: u64,
    /// The history timestamp first recorded, so a cached rebuild gives the same image.
    pub created: String,
}

impl Store {
    /// The entry for `key`, if present and its layer is still in the store.
    pub fn cache_get(&self, key: &Digest) -> Option<CacheEntry> {
        let bytes = fs::read(self.strata_dir("cache").join(key.hex())).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        match &entry.diff_id {
            Some(layer) if !self.has_blob(layer) => None,
            _ => Some(entry),
        }
    }

    pub fn cache_put(&self, key: &Digest, entry: &CacheEntry) -> Result<()> {
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        self.write_file_with(&self.strata_dir("cache").join(key.hex()), &bytes, false)
    }

    /// Every cache entry (for garbage collection and `system df`).
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>> {
        let dir = self.strata_dir("cache");
        let mut entries = Vec::new();
        for file in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            if let Ok(entry) = fs::read(file.path()).map(|b| serde_json::from_slice::<CacheEntry>(&b)) {
                entries.extend(entry.ok());
            }
        }
        Ok(entries)
    }

    /// Drops the whole build cache; returns how many entries went.
    pub fn cache_clear(&self) -> Result<usize> {
        let dir = self.strata_dir("cache");
        let mut removed = 0;
        for file in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            fs::remove_file(file.path()).map_err(io_err("remove", &file.path()))?;
            removed += 1;
        }
        let hashes = self.strata_dir("file-hashes");
        if hashes.exists() {
            fs::remove_dir_all(&hashes).map_err(io_err("remove", &hashes))?;
        }
        Ok(removed)
    }

    /// The content hash recorded for a file whose identity and change times
    /// hash to `stat` (see `exec::copy`), if any.
    pub fn file_hash_get(&self, stat: &Digest) -> Option<[u8; 32]> {
        fs::read(self.strata_dir("file-hashes").join(stat.hex())).ok()?.try_into().ok()
    }

    /// Records a file's content hash under its `stat` identity. Not durable:
    /// a lost record only costs hashing the file again.
    pub fn file_hash_put(&self, stat: &Digest, hash: &[u8; 32]) -> Result<()> {
        let dir = self.strata_dir("file-hashes");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        self.write_file_with(&dir.join(stat.hex()), hash, false)
    }
}
