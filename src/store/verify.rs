//! `strata system verify`: checks every object of the store against what
//! refers to it, and with `repair` drops what is broken (and nothing else).
//!
//! Blobs are rehashed (streaming); every `index.json` entry's chain (manifest
//! or index → config → layers) must be present, whole, of the size its
//! descriptor gives and parse; a cache entry's layer must be a whole blob; a
//! snapshot must be named after a diff_id whose layer is a whole blob or a
//! layer of an intact image (snapshots are renamed into place whole, so one
//! that exists is complete); nothing may be in `strata/tmp` that no running
//! process owns (`abandoned_temp`), and records under `layer-sizes/`,
//! `mount-index/` and `compressed/` are named after a diff_id. The whole check
//! holds the gc lock exclusively: no build, load or collection runs meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{CacheEntry, Result, Store, io_err};
use crate::oci::{self, ANNOTATION_REF_NAME, Descriptor, Digest, DigestWriter, ImageConfig, Index, Manifest};

/// One thing found wrong: the object it concerns and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong, e.g. `blob sha256:…` or `tag busybox:latest`.
    pub object: String,
    /// Why, e.g. `content hashes to sha256:…`.
    pub fault: String,
    /// Whether `repair` removed the object.
    pub repaired: bool,
    fix: Fix,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.fault)?;
        if self.repaired {
            write!(f, " (removed)")?;
        }
        Ok(())
    }
}

/// How a problem is repaired: what is removed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fix {
    /// An `index.json` entry, by its tag (if any) and manifest digest.
    IndexEntry(Option<String>, Digest),
    /// A file or folder of the store.
    Path(PathBuf),
}

/// What `verify` looked at and what it found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blobs: usize,
    pub images: usize,
    pub cache_entries: usize,
    pub snapshots: usize,
    pub problems: Vec<Problem>,
}

/// A blob's state after rehashing.
#[derive(Clone, Debug)]
enum BlobState {
    Whole(u64),
    Corrupt,
}

/// How deep indexes may nest in a chain (an index of indexes of manifests is already unusual).
const MAX_INDEX_DEPTH: usize = 4;

impl Store {
    /// Checks the whole store; with `repair`, removes every broken object.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let _gc = self.lock_gc()?;
        let mut report = VerifyReport::default();
        let mut problems = Vec::new();

        // Leftovers first: what no running process owns (opening the store swept what it could).
        for path in self.abandoned_temp()? {
            problems.push(problem(format!("temp file {}", self.shown(&path)), "left by an interrupted write", Fix::Path(path)));
        }

        let blobs = self.rehash_blobs(&mut problems)?;
        report.blobs = blobs.len();

        // Tags: each index.json entry's chain, whole or dropped.
        let mut intact_layers: HashSet<Digest> = HashSet::new();
        for descriptor in self.index()?.manifests {
            report.images += 1;
            let tag = descriptor.annotations.get(ANNOTATION_REF_NAME).cloned();
            let mut diff_ids = Vec::new();
            if let Err(fault) = self.check_chain(&descriptor, &blobs, 0, &mut diff_ids) {
                let object = match &tag {
                    Some(tag) => format!("tag {tag} ({})", descriptor.digest),
                    None => format!("image {} (untagged)", descriptor.digest),
                };
                problems.push(problem(object, fault, Fix::IndexEntry(tag, descriptor.digest.clone())));
            } else {
                intact_layers.extend(diff_ids);
            }
        }

        let cache = self.strata_dir("cache");
        for entry in fs::read_dir(&cache).map_err(io_err("list", &cache))?.flatten() {
            report.cache_entries += 1;
            let name = entry.file_name().to_string_lossy().into_owned();
            let object = format!("cache entry {name}");
            let fault = match (Digest::from_hex(&name), fs::read(entry.path())) {
                (Err(_), _) => Some("its name is not a cache key".to_string()),
                (_, Err(e)) => Some(format!("cannot be read: {e}")),
                (Ok(_), Ok(bytes)) => match serde_json::from_slice::<CacheEntry>(&bytes) {
                    Err(e) => Some(format!("does not parse: {e}")),
                    Ok(CacheEntry { diff_id: Some(layer), .. }) => match blobs.get(&layer) {
                        None => Some(format!("its layer {layer} is missing")),
                        Some(BlobState::Corrupt) => Some(format!("its layer {layer} is corrupt")),
                        Some(BlobState::Whole(_)) => None,
                    },
                    Ok(_) => None,
                },
            };
            if let Some(fault) = fault {
                problems.push(problem(object, fault, Fix::Path(entry.path())));
            }
        }

        // A snapshot stands for a layer: a whole uncompressed blob (digest = diff_id) or a layer of an intact image.
        let snapshots = self.strata_dir("snapshots");
        for entry in fs::read_dir(&snapshots).map_err(io_err("list", &snapshots))?.flatten() {
            report.snapshots += 1;
            let name = entry.file_name().to_string_lossy().into_owned();
            let object = format!("snapshot {name}");
            let fault = match Digest::from_hex(&name) {
                Err(_) => Some("its name is not a diff_id".to_string()),
                Ok(_) if !entry.file_type().is_ok_and(|t| t.is_dir()) => Some("not a directory".to_string()),
                Ok(diff_id) => {
                    let whole_blob = matches!(blobs.get(&diff_id), Some(BlobState::Whole(_)));
                    (!whole_blob && !intact_layers.contains(&diff_id)).then(|| format!("its layer {diff_id} is gone"))
                }
            };
            if let Some(fault) = fault {
                problems.push(problem(object, fault, Fix::Path(entry.path())));
            }
        }

        // Records named after a layer (`<diff_id hex>[.…]`): anything else is a temp file a killed writer left.
        for dir in ["layer-sizes", "mount-index", "compressed"].map(|name| self.strata_dir(name)) {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if Digest::from_hex(name.split('.').next().unwrap_or_default()).is_err() {
                    let object = format!("temp file {}", self.shown(&entry.path()));
                    problems.push(problem(object, "left by an interrupted write", Fix::Path(entry.path())));
                }
            }
        }

        if repair {
            self.repair(&mut problems)?;
        }
        report.problems = problems;
        Ok(report)
    }

    /// Rehashes every blob (streaming, in parallel); a misnamed file is a problem of its own.
    fn rehash_blobs(&self, problems: &mut Vec<Problem>) -> Result<HashMap<Digest, BlobState>> {
        let dir = self.root.join("blobs/sha256");
        let mut named = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match Digest::from_hex(&name) {
                Ok(digest) if entry.file_type().is_ok_and(|t| t.is_file()) => named.push((digest, entry.path())),
                Ok(_) => problems.push(problem(format!("blob {}", self.shown(&entry.path())), "not a file", Fix::Path(entry.path()))),
                Err(_) => problems.push(problem(
                    format!("blob {}", self.shown(&entry.path())),
                    "its name is not a digest",
                    Fix::Path(entry.path()),
                )),
            }
        }
        let hashed: Vec<_> = named.into_par_iter().map(|(digest, path)| (digest, hash_file(&path), path)).collect();
        let mut blobs = HashMap::new();
        for (digest, hashed, path) in hashed {
            match hashed {
                Ok((actual, size)) if actual == digest => {
                    blobs.insert(digest, BlobState::Whole(size));
                }
                Ok((actual, _)) => {
                    problems.push(problem(format!("blob {digest}"), format!("corrupt: its content hashes to {actual}"), Fix::Path(path)));
                    blobs.insert(digest, BlobState::Corrupt);
                }
                Err(e) => {
                    problems.push(problem(format!("blob {digest}"), format!("cannot be read: {e}"), Fix::Path(path)));
                    blobs.insert(digest.clone(), BlobState::Corrupt);
                }
            }
        }
        Ok(blobs)
    }

    /// Checks one descriptor's chain; gathers the diff_ids of the images it holds.
    fn check_chain(
        &self,
        descriptor: &Descriptor,
        blobs: &HashMap<Digest, BlobState>,
        depth: usize,
        diff_ids: &mut Vec<Digest>,
    ) -> Result<(), String> {
        let bytes = self.whole_blob(descriptor, "manifest", blobs)?;
        if matches!(descriptor.media_type.as_str(), oci::MEDIA_INDEX | oci::DOCKER_MANIFEST_LIST) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(format!("index {} nests deeper than {MAX_INDEX_DEPTH}", descriptor.digest));
            }
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| format!("index {} does not parse: {e}", descriptor.digest))?;
            for child in &index.manifests {
                self.check_chain(child, blobs, depth + 1, diff_ids)?;
            }
            return Ok(());
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| format!("manifest {} does not parse: {e}", descriptor.digest))?;
        let config_bytes = self.whole_blob(&manifest.config, "config", blobs)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| format!("config {} does not parse: {e}", manifest.config.digest))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(format!(
                "config {} lists {} diff_ids for {} layers",
                manifest.config.digest,
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ));
        }
        for layer in &manifest.layers {
            self.check_blob(layer, "layer", blobs)?;
        }
        diff_ids.extend(config.rootfs.diff_ids);
        Ok(())
    }

    /// A descriptor's blob must be present, whole and of the size it gives.
    fn check_blob(&self, descriptor: &Descriptor, what: &str, blobs: &HashMap<Digest, BlobState>) -> Result<(), String> {
        let digest = &descriptor.digest;
        match blobs.get(digest) {
            None => Err(format!("{what} {digest} is missing")),
            Some(BlobState::Corrupt) => Err(format!("{what} {digest} is corrupt")),
            Some(BlobState::Whole(size)) if *size != descriptor.size => {
                Err(format!("{what} {digest} is {size} bytes, its descriptor says {}", descriptor.size))
            }
            Some(BlobState::Whole(_)) => Ok(()),
        }
    }

    /// `check_blob`, then the (small, JSON) blob's bytes.
    fn whole_blob(&self, descriptor: &Descriptor, what: &str, blobs: &HashMap<Digest, BlobState>) -> Result<Vec<u8>, String> {
        self.check_blob(descriptor, what, blobs)?;
        self.read_blob(&descriptor.digest).map_err(|e| format!("{what} {}: {e}", descriptor.digest))
    }

    /// Removes what each problem names: index entries in one rewrite, then files and folders.
    fn repair(&self, problems: &mut [Problem]) -> Result<()> {
        let entries: BTreeMap<(Option<String>, Digest), ()> = problems
            .iter()
            .filter_map(|p| match &p.fix {
                Fix::IndexEntry(tag, digest) => Some(((tag.clone(), digest.clone()), ())),
                Fix::Path(_) => None,
            })
            .collect();
        if !entries.is_empty() {
            self.remove_entries(|tag, d| entries.contains_key(&(tag.map(str::to_string), d.digest.clone())))?;
        }
        for problem in problems.iter_mut() {
            if let Fix::Path(path) = &problem.fix {
                remove_path(path)?;
            }
            problem.repaired = true;
        }
        Ok(())
    }

    /// A store path as the user sees it, relative to the root.
    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}

fn problem(object: String, fault: impl Into<String>, fix: Fix) -> Problem {
    Problem { object, fault: fault.into(), repaired: false, fix }
}

/// The sha256 and size of a file, read in 1 MiB pieces.
fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hashing = DigestWriter::new(io::sink());
    io::copy(&mut file, &mut hashing)?;
    let (digest, size, _) = hashing.finish();
    Ok((digest, size))
}

/// Removes a file or a folder (a snapshot may hold read-only folders: they are opened up first).
fn remove_path(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.is_dir() {
        return fs::remove_file(path).map_err(io_err("remove", path));
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    fs::remove_dir_all(path).map_err(io_err("remove", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        (dir, store)
    }

    /// A one-layer image tagged `name`; returns its manifest descriptor and layer digest.
    fn image(store: &Store, name: &str, layer: &[u8]) -> (Descriptor, Digest) {
        let (layer_digest, layer_size) = store.write_blob(layer).expect("layer");
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids.push(layer_digest.clone());
        let config_bytes = oci::to_blob(&config);
        let (config_digest, config_size) = store.write_blob(&config_bytes).expect("config");
        let descriptor = |media_type: &str, digest: Digest, size| Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.into()),
            config: descriptor(oci::MEDIA_CONFIG, config_digest, config_size),
            layers: vec![descriptor(oci::MEDIA_LAYER, layer_digest.clone(), layer_size)],
            annotations: Default::default(),
        };
        let (digest, size) = store.write_blob(&oci::to_blob(&manifest)).expect("manifest");
        let manifest = descriptor(oci::MEDIA_MANIFEST, digest, size);
        store.set_tag(&name.parse().expect("tag"), &manifest).expect("tag");
        (manifest, layer_digest)
    }

    fn lines(report: &VerifyReport) -> Vec<String> {
        report.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_whole_store_verifies_clean() {
        let (_dir, store) = store();
        image(&store, "a:1", b"layer a");
        let report = store.verify(false).expect("verify");
        assert_eq!(lines(&report), Vec::<String>::new());
        assert_eq!((report.blobs, report.images), (3, 1));
    }

    #[test]
    fn a_corrupt_layer_is_named_and_repair_drops_only_its_tag() {
        let (_dir, store) = store();
        let (_, layer) = image(&store, "broken:1", b"layer b");
        let (whole, _) = image(&store, "whole:1", b"layer w");
        fs::write(store.blob_path(&layer), b"flipped").expect("corrupt");
        let found = lines(&store.verify(false).expect("verify"));
        assert!(found.iter().any(|l| l.starts_with(&format!("blob {layer}: corrupt"))), "{found:?}");
        assert!(found.iter().any(|l| l.starts_with("tag broken:1") && l.contains("is corrupt")), "{found:?}");
        let repaired = store.verify(true).expect("repair");
        assert!(repaired.problems.iter().all(|p| p.repaired));
        assert!(store.verify(false).expect("verify").problems.is_empty());
        assert_eq!(store.resolve("whole:1").expect("whole image stays").manifest_descriptor.digest, whole.digest);
        assert!(store.resolve("broken:1").is_err());
    }

    #[test]
    fn cache_entry_to_a_missing_layer_is_removed() {
        let (_dir, store) = store();
        let key = crate::store::CacheKey::from_sha256([7; 32]);
        let entry = CacheEntry { diff_id: Some(Digest::of(b"gone")), size: 4, created: "2024-01-01T00:00:00Z".into() };
        store.cache_put(&key, &entry).expect("cache put");
        let found = lines(&store.verify(true).expect("verify"));
        assert_eq!(found, vec![format!("cache entry {}: its layer {} is missing (removed)", key.hex(), Digest::of(b"gone"))]);
        assert!(store.cache_entries().expect("entries").is_empty());
    }

    #[test]
    fn snapshot_of_a_gone_layer_and_temp_files_are_removed() {
        let (_dir, store) = store();
        let gone = Digest::of(b"gone");
        let snapshot = store.strata_dir("snapshots").join(gone.hex());
        fs::create_dir_all(snapshot.join("etc")).expect("snapshot");
        fs::create_dir_all(store.strata_dir("snapshots").join("not-a-digest")).expect("snapshot");
        fs::write(store.strata_dir("tmp").join(".tmpAbCd"), b"half").expect("temp file");
        let found = lines(&store.verify(true).expect("verify"));
        assert!(found.contains(&format!("snapshot {}: its layer {gone} is gone (removed)", gone.hex())), "{found:?}");
        assert!(found.contains(&"snapshot not-a-digest: its name is not a diff_id (removed)".to_string()), "{found:?}");
        assert!(found.contains(&"temp file strata/tmp/.tmpAbCd: left by an interrupted write (removed)".to_string()), "{found:?}");
        assert!(!snapshot.exists());
        assert!(store.verify(false).expect("verify").problems.is_empty());
    }

    #[test]
    fn a_truncated_manifest_breaks_its_tag() {
        let (_dir, store) = store();
        let (manifest, _) = image(&store, "t:1", b"layer t");
        let path = store.blob_path(&manifest.digest);
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        let found = lines(&store.verify(false).expect("verify"));
        assert!(found.contains(&format!("tag t:1 ({}): manifest {} is corrupt", manifest.digest, manifest.digest)), "{found:?}");
    }
}
