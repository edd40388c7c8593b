//! The local store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) that skopeo, umoci and buildah read as it is, plus
//! strata's own state under `strata/`: the build cache, unpacked layer
//! snapshots, temp files and locks. It knows nothing of Dockerfiles or steps.
//!
//! Every write is temp file + fsync + rename; `index.json` changes under an
//! exclusive lock; builds hold a shared "gc" lock so that garbage collection
//! never frees a blob a running build has written but not yet tagged.

pub mod archive;
mod blob;
mod cache;
mod image;
pub mod rootfs;
pub mod snapshot;
mod tmp;
mod verify;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::oci::{self, ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfig, ImageRef, Index, Manifest};

pub use blob::{BlobWriter, StoredBlob};
pub use cache::{CacheEntry, CacheKey, SharedCache};
pub use verify::{Problem, VerifyReport};

/// A store error: "verb object: cause", naming the path or digest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("blob {0} is missing from the store")]
    MissingBlob(Digest),
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    Corrupt { expected: Digest, actual: Digest },
    #[error("parse {what} {path}")]
    Json { what: &'static str, path: PathBuf, source: serde_json::Error },
    #[error("image {0:?} not found in the store")]
    UnknownImage(String),
    #[error("image {name}@{digest} not found: no image in the store has that manifest digest")]
    UnknownDigest { name: String, digest: Digest },
    #[error("image id prefix {0:?} matches several images; give more digits")]
    Ambiguous(String),
    #[error("unpack layer {digest}: {message}")]
    Unpack { digest: Digest, message: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// An image found in the store.
#[derive(Clone, Debug)]
pub struct StoredImage {
    /// The tag it was found by, if any.
    pub tag: Option<String>,
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl StoredImage {
    /// The image id Docker shows: the config's digest.
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }
}

/// A handle on a store root.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// A build cache beyond this store (`--cache-from`), if the caller attached one.
    shared: Option<cache::Shared>,
}

/// A held lock on the store; released on drop.
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code)] File);

impl Store {
    /// `$STRATA_ROOT`, else `/var/lib/strata` as root, else `$XDG_DATA_HOME/strata`.
    pub fn default_root() -> PathBuf {
        if let Some(root) = std::env::var_os("STRATA_ROOT") {
            return PathBuf::from(root);
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/strata");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(dir) => PathBuf::from(dir).join("strata"),
            None => {
                let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
                PathBuf::from(home).join(".local/share/strata")
            }
        }
    }

    /// Opens the store at `root`, creating an empty layout if there is none.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store { root: root.to_path_buf(), shared: None };
        for dir in ["blobs/sha256", "strata/tmp", "strata/cache", "strata/snapshots", "strata/runs"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("create store directory", &path))?;
        }
        if !root.join("oci-layout").exists() {
            store.write_file(&root.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !root.join("index.json").exists() {
            let index = Index { schema_version: 2, media_type: Some(oci::MEDIA_INDEX.into()), ..Default::default() };
            store.write_file(&root.join("index.json"), &oci::to_blob(&index))?;
        }
        store.sweep_abandoned();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn strata_dir(&self, name: &str) -> PathBuf {
        self.root.join("strata").join(name)
    }

    /// Writes `bytes` to `path` atomically: temp file in the store, fsync, rename.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.write_file_with(path, bytes, true)
    }

    /// `write_file`, with the fsync optional for data whose loss after a crash is
    /// harmless (a cache entry: the step is then a miss). The rename keeps it whole.
    pub(crate) fn write_file_with(&self, path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
        use std::io::Write;
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io_err("create temp file in", &tmp_dir))?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        if durable {
            tmp.as_file().sync_all().map_err(io_err("fsync", path))?;
        }
        tmp.persist(path).map_err(|e| StoreError::Io { action: "rename into place", path: path.to_path_buf(), source: e.error })?;
        Ok(())
    }

    fn lock_file(&self, name: &str, exclusive: bool) -> Result<StoreLock> {
        let path = self.strata_dir(name);
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io_err("open lock", &path))?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(io_err("lock", &path))?;
        Ok(StoreLock(file))
    }

    /// Guards `index.json` against concurrent writers.
    pub fn lock_index(&self) -> Result<StoreLock> {
        self.lock_file("index.lock", true)
    }

    /// Held (shared) by every build; garbage collection takes it exclusively.
    pub fn lock_build(&self) -> Result<StoreLock> {
        self.lock_file("gc.lock", false)
    }

    pub(crate) fn lock_gc(&self) -> Result<StoreLock> {
        self.lock_file("gc.lock", true)
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { what: "index", path, source })
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        self.write_file(&self.root.join("index.json"), &oci::to_blob(index))
    }

    /// Every manifest in `index.json` with the tag it carries, if any.
    pub fn entries(&self) -> Result<Vec<(Option<String>, Descriptor)>> {
        Ok(self.index()?.manifests.into_iter().map(|d| (d.annotations.get(ANNOTATION_REF_NAME).cloned(), d)).collect())
    }

    /// Points `tag` at `manifest`; an untagged entry for the same manifest is
    /// dropped. The new entry keeps the annotations other entries of that
    /// manifest carry (what a registry knows it by), under `manifest`'s own.
    pub fn set_tag(&self, tag: &ImageRef, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let name = tag.to_string();
        let mut entry = manifest.clone();
        for other in index.manifests.iter().filter(|d| d.digest == manifest.digest) {
            for (key, value) in &other.annotations {
                entry.annotations.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        index.manifests.retain(|d| {
            let ref_name = d.annotations.get(ANNOTATION_REF_NAME);
            ref_name != Some(&name) && !(ref_name.is_none() && d.digest == manifest.digest)
        });
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), name);
        index.manifests.push(entry);
        self.write_index(&index)
    }

    /// Sets annotation `key` on every index entry of `manifest` to what
    /// `update` makes of its old value; tags are left as they are.
    pub fn annotate(&self, manifest: &Digest, key: &str, update: impl Fn(Option<&str>) -> String) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let mut changed = false;
        for entry in index.manifests.iter_mut().filter(|d| &d.digest == manifest && key != ANNOTATION_REF_NAME) {
            let value = update(entry.annotations.get(key).map(String::as_str));
            if entry.annotations.get(key) != Some(&value) {
                entry.annotations.insert(key.to_string(), value);
                changed = true;
            }
        }
        if changed { self.write_index(&index) } else { Ok(()) }
    }

    /// Records an untagged image (Docker's `<none>`), unless it is already in the index.
    pub fn add_untagged(&self, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        if index.manifests.iter().any(|d| d.digest == manifest.digest) {
            return Ok(());
        }
        let mut entry = manifest.clone();
        entry.annotations.remove(ANNOTATION_REF_NAME);
        index.manifests.push(entry);
        self.write_index(&index)
    }

    /// Removes index entries for which `remove` says yes; returns how many went.
    pub fn remove_entries(&self, remove: impl Fn(Option<&str>, &Descriptor) -> bool) -> Result<usize> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let before = index.manifests.len();
        index.manifests.retain(|d| !remove(d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str), d));
        let removed = before - index.manifests.len();
        if removed > 0 {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// Loads an image by manifest descriptor.
    pub fn load_image(&self, tag: Option<String>, descriptor: Descriptor) -> Result<StoredImage> {
        let manifest: Manifest = self.read_json(&descriptor.digest, "manifest")?;
        let config: ImageConfig = self.read_json(&manifest.config.digest, "image config")?;
        Ok(StoredImage { tag, manifest_descriptor: descriptor, manifest, config })
    }

    /// Finds an image by `name[:tag]`, by image id (config digest) or manifest digest, or a unique prefix of either.
    pub fn resolve(&self, name: &str) -> Result<StoredImage> {
        let entries = self.entries()?;
        if let Ok(reference) = name.parse::<ImageRef>() {
            // A digest names one manifest: that image or none, whatever the tag says.
            if let Some(digest) = &reference.digest {
                let same_name = |tag: &Option<String>| {
                    tag.as_deref().and_then(|t| t.parse::<ImageRef>().ok()).is_some_and(|t| t.name == reference.name)
                };
                let pinned: Vec<_> = entries.iter().filter(|(_, d)| &d.digest == digest).collect();
                let found = pinned.iter().find(|(tag, _)| same_name(tag)).or(pinned.first());
                return match found {
                    Some((tag, d)) => self.load_image(tag.clone(), d.clone()),
                    None => Err(StoreError::UnknownDigest { name: reference.name.clone(), digest: digest.clone() }),
                };
            }
            let wanted = reference.to_string();
            if let Some((tag, d)) = entries.iter().find(|(tag, _)| tag.as_deref() == Some(&wanted)) {
                return self.load_image(tag.clone(), d.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found: Option<StoredImage> = None;
            for (tag, d) in entries {
                let image = self.load_image(tag, d)?;
                if image.id().hex().starts_with(hex) || image.manifest_descriptor.digest.hex().starts_with(hex) {
                    match &found {
                        Some(other) if other.id() != image.id() => return Err(StoreError::Ambiguous(name.into())),
                        Some(_) => {}
                        None => found = Some(image),
                    }
                }
            }
            if let Some(image) = found {
                return Ok(image);
            }
        }
        Err(StoreError::UnknownImage(name.into()))
    }

    /// Reads a JSON blob, verifying its digest.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest, what: &'static str) -> Result<T> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json { what, path: self.blob_path(digest), source })
    }

    /// Frees blobs and snapshots referenced by no image and no cache entry. Returns bytes freed.
    pub fn gc(&self) -> Result<u64> {
        let _gc = self.lock_gc()?;
        let mut live = std::collections::HashSet::new();
        for (tag, d) in self.entries()? {
            let image = self.load_image(tag, d.clone())?;
            live.insert(d.digest.clone());
            live.insert(image.manifest.config.digest.clone());
            live.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
            live.extend(image.config.rootfs.diff_ids.iter().cloned());
        }
        for entry in self.cache_entries()? {
            live.extend(entry.diff_id);
        }
        // What is made from a layer goes before the layer: a collection killed half way
        // then leaves unreferenced blobs (collected next time), never a snapshot whose layer is gone.
        let mut freed = self.remove_snapshots_except(&live)?;
        // Mount indexes, uncompressed layer copies and size records are named after their layer's diff_id.
        let derived = ["mount-index", "layer-sizes"].map(|name| self.strata_dir(name));
        for entry in derived.iter().flat_map(fs::read_dir).flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.split('.').next().unwrap_or_default();
            if !Digest::from_hex(hex).is_ok_and(|d| live.contains(&d)) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                let path = entry.path();
                let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(io_err("list", &blobs))? {
            let entry = entry.map_err(io_err("list", &blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match Digest::from_hex(&name) {
                Ok(digest) if live.contains(&digest) => {}
                _ => {
                    freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
                }
            }
        }
        self.sweep_abandoned();
        Ok(freed)
    }
}
