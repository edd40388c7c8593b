//! The build cache: one small JSON file per cache key under `strata/cache/`,
//! recording what the step produced (its layer, if any) and when; and the
//! seam to a cache shared beyond this store (`SharedCache`, a registry or a
//! directory, implemented by `registry::cache`): consulted where the local
//! cache misses, its layers fetched only when a blob is first needed.

use std::fmt;
use std::fs;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Result, Store, io_err};
use crate::oci::{Digest, DigestError};

/// A build-cache key: the hash of a step's inputs chained on the key before
/// it (`exec::key`). Written as a digest (`sha256:<hex>`), but it names no
/// content, so it cannot stand where a blob digest or diff_id is meant.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CacheKey(Digest);

impl CacheKey {
    /// The key whose hash is `sum`: made by the key derivation (`exec::key`) only.
    pub(crate) fn from_sha256(sum: [u8; 32]) -> CacheKey {
        CacheKey(Digest::from_sha256(sum))
    }

    /// The 64 hex digits (file names under `strata/cache/`, registry tags).
    pub fn hex(&self) -> &str {
        self.0.hex()
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A key read back from where it was written (an alias file, a cache manifest's annotation).
impl FromStr for CacheKey {
    type Err = DigestError;

    fn from_str(text: &str) -> std::result::Result<CacheKey, DigestError> {
        text.parse().map(CacheKey)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a cached step produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The layer (uncompressed, so blob digest = diff_id), or none for a config-only step.
    pub diff_id: Option<Digest>,
    pub size: u64,
    /// The history timestamp first recorded, so a cached rebuild gives the same image.
    pub created: String,
}

/// A build cache shared by many stores (`--cache-from`/`--cache-to`). The
/// store asks it only for what it lacks: an entry where the local cache
/// misses, a layer blob where one is first read (`Store::ensure_blob`).
pub trait SharedCache: Send + Sync {
    /// The entry recorded for `key` in any source; its layer is not fetched.
    fn lookup(&self, key: &CacheKey) -> Option<CacheEntry>;
    /// Brings the layer `diff_id` of an entry `lookup` gave into `store`,
    /// uncompressed and verified against `diff_id`. An error makes that
    /// entry unusable (the caller builds again without it).
    fn fetch_layer(&self, store: &Store, diff_id: &Digest) -> Result<()>;
    /// Every step of a build, hit or built, with the key it follows (for `--cache-to`).
    fn record(&self, parent: &CacheKey, key: &CacheKey, entry: &CacheEntry);
    /// The key and entry a fast key (a COPY's, known without reading any
    /// layer) stands for.
    fn lookup_alias(&self, fast: &CacheKey) -> Option<(CacheKey, CacheEntry)>;
    /// A fast key of this build and the key it stands for (for `--cache-to`).
    fn record_alias(&self, fast: &CacheKey, key: &CacheKey);
}

/// The attached shared cache (a newtype only for `Debug`).
#[derive(Clone)]
pub(super) struct Shared(Arc<dyn SharedCache>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCache")
    }
}

impl Store {
    /// This store, consulting `cache` where its own cache misses.
    pub fn with_shared_cache(mut self, cache: Arc<dyn SharedCache>) -> Store {
        self.shared = Some(Shared(cache));
        self
    }

    /// The entry for `key` from the shared cache, recorded locally too (its
    /// layer comes later, when `ensure_blob` first needs it).
    pub fn shared_cache_get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let entry = self.shared.as_ref()?.0.lookup(key)?;
        // Best effort: a lost record only costs another lookup.
        let _ = self.cache_put(key, &entry);
        Some(entry)
    }

    /// Tells the shared cache, if any, what a step gave (`--cache-to` exports it).
    pub fn shared_cache_record(&self, parent: &CacheKey, key: &CacheKey, entry: &CacheEntry) {
        if let Some(shared) = &self.shared {
            shared.0.record(parent, key, entry);
        }
    }

    /// The key and entry a fast key stands for (`strata/cache-alias/<fast>`
    /// holds the key), from this store or the shared cache.
    pub fn cache_alias_get(&self, fast: &CacheKey) -> Option<(CacheKey, CacheEntry)> {
        let local =
            fs::read_to_string(self.strata_dir("cache-alias").join(fast.hex())).ok().and_then(|t| t.trim().parse::<CacheKey>().ok());
        let found = match local {
            Some(key) => self.cache_get(&key).or_else(|| self.shared_cache_get(&key)).map(|entry| (key, entry)),
            None => None,
        };
        let found = found.or_else(|| {
            let (key, entry) = self.shared.as_ref()?.0.lookup_alias(fast)?;
            let _ = self.cache_put(&key, &entry);
            Some((key, entry))
        })?;
        self.cache_alias_put(fast, &found.0);
        Some(found)
    }

    /// Records that `fast` stands for `key` (best effort: a lost record costs a slower lookup).
    pub fn cache_alias_put(&self, fast: &CacheKey, key: &CacheKey) {
        let dir = self.strata_dir("cache-alias");
        let path = dir.join(fast.hex());
        if fs::read_to_string(&path).ok().is_none_or(|t| t.trim() != key.as_str()) {
            let _ = fs::create_dir_all(&dir).map(|_| self.write_file_with(&path, key.as_str().as_bytes(), false));
        }
        if let Some(shared) = &self.shared {
            shared.0.record_alias(fast, key);
        }
    }

    /// Makes sure the blob `digest` is in the store: a layer named by a shared
    /// cache entry is fetched now, the first time it is read.
    pub fn ensure_blob(&self, digest: &Digest) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        match &self.shared {
            Some(shared) => shared.0.fetch_layer(self, digest),
            None => Err(super::StoreError::MissingBlob(digest.clone())),
        }
    }

    /// The entry for `key`, if present and its layer is still in the store.
    pub fn cache_get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let bytes = fs::read(self.strata_dir("cache").join(key.hex())).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        match &entry.diff_id {
            Some(layer) if !self.has_blob(layer) => None,
            _ => Some(entry),
        }
    }

    pub fn cache_put(&self, key: &CacheKey, entry: &CacheEntry) -> Result<()> {
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
        for name in ["file-hashes", "cache-alias"] {
            let dir = self.strata_dir(name);
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            }
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
