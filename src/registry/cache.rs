//! The shared build cache (`--cache-to`, `--cache-from`, `strata cache prune`):
//! cache entries as plain OCI objects in a registry repository or an OCI
//! layout directory (format in `docs/cache-format.md`).
//!
//! One entry per cache key: a manifest tagged `sha256-<key hex>` whose
//! annotations carry the entry (so a lookup is one GET), whose config is a
//! one-layer image config (diff_id, created) and whose single layer, if the
//! step made one, is the step's layer compressed for transport. A writer
//! only adds a tag that is not there yet, after the blobs it names: a reader
//! sees a whole entry or none, and concurrent writers cannot clobber each
//! other. A hit brings the entry only; its layer is fetched when the store
//! first reads it (`SharedCache::fetch_layer`), decompressed and verified
//! against both its blob digest and its diff_id as it streams, so a bad
//! cache can make a step miss but never put other bytes into an image.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ureq::http::{Method, StatusCode};

use super::client::{self, Client, Payload};
use super::push::{self, Compression};
use super::{Options, PARALLEL, RegistryError, Result};
use crate::oci::{self, Descriptor, Digest, DigestWriter, History, ImageConfig, Index, Manifest, RootFs};
use crate::store::{self, CacheEntry, CacheKey, SharedCache, Store, StoreError};

/// Annotations of an entry's manifest.
pub const ANNOTATION_KEY: &str = "dev.strata.cache.key";
pub const ANNOTATION_DIFF_ID: &str = "dev.strata.cache.diff-id";
pub const ANNOTATION_SIZE: &str = "dev.strata.cache.size";
pub const ANNOTATION_CREATED: &str = "dev.strata.cache.created";
/// When the entry was first exported (what `cache prune --older-than` reads).
pub const ANNOTATION_EXPORTED: &str = "dev.strata.cache.exported";

/// The tag of the entry for `key`.
pub fn tag_of(key: &CacheKey) -> String {
    format!("sha256-{}", key.hex())
}

/// Where a cache lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `REGISTRY/REPOSITORY` (a tag, if given, is ignored: entries carry their own).
    Registry { registry: String, repository: String },
    /// An OCI image layout directory.
    Local(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Registry { registry, repository } => write!(f, "{registry}/{repository}"),
            Location::Local(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// Which steps `--cache-to` exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The steps of the images built (their layers and their bases' stages).
    #[default]
    Min,
    /// Every step of every stage built.
    Max,
}

/// A parsed `--cache-to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheTo {
    pub location: Location,
    pub mode: Mode,
    pub compression: Compression,
}

/// Reads `type=registry,ref=REG/REPO[,mode=min|max][,compression=gzip|zstd|none]`
/// or `type=local,dest=DIR[,…]`; an error says what is wrong, the caller where it was written.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo, String> {
    let fields = fields(spec)?;
    let mut to = CacheTo { location: location(&fields, "dest")?, mode: Mode::Min, compression: Compression::Gzip };
    for (name, value) in &fields {
        match (name.as_str(), value.as_str()) {
            ("type" | "ref" | "dest", _) => {}
            ("mode", "min") => to.mode = Mode::Min,
            ("mode", "max") => to.mode = Mode::Max,
            ("mode", other) => return Err(format!("mode={other}: expected min or max")),
            ("compression", value) => to.compression = value.parse()?,
            (other, _) => return Err(format!("unknown field {other:?}")),
        }
    }
    Ok(to)
}

/// Reads `type=registry,ref=REG/REPO` or `type=local,src=DIR` (a bare `REG/REPO` is a registry).
pub fn parse_cache_from(spec: &str) -> Result<Location, String> {
    let fields = fields(spec)?;
    for (name, _) in &fields {
        if !["type", "ref", "src"].contains(&name.as_str()) {
            return Err(format!("unknown field {name:?}"));
        }
    }
    location(&fields, "src")
}

fn fields(spec: &str) -> Result<Vec<(String, String)>, String> {
    if !spec.contains('=') {
        return Ok(vec![("type".into(), "registry".into()), ("ref".into(), spec.into())]);
    }
    spec.split(',')
        .map(|field| match field.split_once('=') {
            Some((name, value)) => Ok((name.trim().to_string(), value.trim().to_string())),
            None => Err(format!("expected NAME=VALUE, found {field:?}")),
        })
        .collect()
}

fn location(fields: &[(String, String)], dir_field: &str) -> Result<Location, String> {
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    match get("type").as_deref() {
        Some("registry") | None => {
            let text = get("ref").ok_or_else(|| "missing ref=".to_string())?;
            let reference = super::parse_reference(&text).map_err(|e| e.to_string())?;
            Ok(Location::Registry { registry: reference.domain().to_string(), repository: reference.repository() })
        }
        Some("local") => {
            let dir = get(dir_field).ok_or_else(|| format!("type=local needs {dir_field}=DIR"))?;
            Ok(Location::Local(PathBuf::from(dir)))
        }
        Some(other) => Err(format!("unknown type {other:?} (registry, local)")),
    }
}

/// One cache location, opened.
enum Backend {
    Registry(Client),
    Local(LocalDir),
}

/// An OCI layout directory: blobs written once (temp file, rename), and
/// `index.json` changed under a lock by reading, adding and renaming.
struct LocalDir {
    dir: PathBuf,
    /// Tags in `index.json`, read once per process for lookups.
    tags: Mutex<Option<HashMap<String, Descriptor>>>,
}

impl Backend {
    fn open(location: &Location, push: bool, options: &Options) -> Result<Backend> {
        match location {
            Location::Registry { registry, repository } => {
                let actions = if push { "pull,push" } else { "pull" };
                Ok(Backend::Registry(Client::connect(registry, repository, actions, options.tls_verify)?))
            }
            Location::Local(dir) => {
                if push {
                    fs::create_dir_all(dir.join("blobs/sha256")).map_err(local_err("create", dir))?;
                    if !dir.join("oci-layout").exists() {
                        write_atomic(dir, &dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
                    }
                }
                Ok(Backend::Local(LocalDir { dir: dir.clone(), tags: Mutex::new(None) }))
            }
        }
    }

    /// The manifest tagged `tag`, if any.
    fn manifest(&self, tag: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Registry(client) => {
                let url = client.repo_url(&format!("manifests/{tag}"));
                let mut response = client.send(Method::GET, &url, &[("accept", oci::MEDIA_MANIFEST)], &Payload::Empty)?;
                match response.status() {
                    StatusCode::OK => {}
                    StatusCode::NOT_FOUND => return Ok(None),
                    _ => return Err(RegistryError::Request { what: format!("GET {url}"), message: client::error_text(&mut response) }),
                }
                let bytes = response.body_mut().with_config().limit(super::MAX_MANIFEST).read_to_vec();
                bytes.map(Some).map_err(|e| RegistryError::Request { what: format!("GET {url}"), message: e.to_string() })
            }
            Backend::Local(local) => {
                let mut tags = local.tags.lock().unwrap_or_else(|p| p.into_inner());
                if tags.is_none() {
                    *tags = Some(local.read_index()?.manifests.into_iter().filter_map(|d| Some((ref_name(&d)?, d))).collect());
                }
                let Some(descriptor) = tags.as_ref().and_then(|t| t.get(tag)).cloned() else { return Ok(None) };
                drop(tags);
                let bytes = fs::read(local.blob(&descriptor.digest)).map_err(local_err("read", &local.dir))?;
                if Digest::of(&bytes) != descriptor.digest {
                    return Err(RegistryError::DigestMismatch {
                        what: format!("manifest {tag} in {}", local.dir.display()),
                        digest: descriptor.digest,
                        actual: Digest::of(&bytes),
                    });
                }
                Ok(Some(bytes))
            }
        }
    }

    /// Whether an entry is tagged `tag` already (the exporter's check before it writes).
    fn has_manifest(&self, tag: &str) -> Result<bool> {
        match self {
            Backend::Registry(client) => {
                let url = client.repo_url(&format!("manifests/{tag}"));
                let response = client.send(Method::HEAD, &url, &[("accept", oci::MEDIA_MANIFEST)], &Payload::Empty)?;
                Ok(response.status() == StatusCode::OK)
            }
            Backend::Local(local) => Ok(local.read_index()?.manifests.iter().any(|d| ref_name(d).as_deref() == Some(tag))),
        }
    }

    /// A blob's bytes as they stream in (not verified here).
    fn open_blob(&self, blob: &Descriptor) -> Result<Box<dyn Read + Send>> {
        match self {
            Backend::Registry(client) => {
                let url = client.repo_url(&format!("blobs/{}", blob.digest));
                let mut response = client.send(Method::GET, &url, &[], &Payload::Empty)?;
                if response.status() != StatusCode::OK {
                    return Err(RegistryError::NotFound {
                        reference: format!("blob {}", blob.digest),
                        message: client::error_text(&mut response),
                    });
                }
                Ok(Box::new(response.into_body().into_reader()))
            }
            Backend::Local(local) => {
                let path = local.blob(&blob.digest);
                Ok(Box::new(fs::File::open(&path).map_err(local_err("open", &path))?))
            }
        }
    }

    /// Sends a blob of the store unless the location has it.
    fn put_blob(&self, store: &Store, blob: &Descriptor, shown: &str) -> Result<()> {
        match self {
            Backend::Registry(client) => push::upload(client, store, blob, shown, None, &indicatif::ProgressBar::hidden()).map(|_| ()),
            Backend::Local(local) => {
                let path = local.blob(&blob.digest);
                if path.exists() {
                    return Ok(());
                }
                let mut input = store.open_blob(&blob.digest)?;
                let mut tmp = tempfile::NamedTempFile::new_in(&local.dir).map_err(local_err("create temp file in", &local.dir))?;
                io::copy(&mut input, &mut tmp).map_err(local_err("write", tmp.path()))?;
                tmp.as_file().sync_all().map_err(local_err("fsync", &path))?;
                tmp.persist(&path).map_err(|e| local_err("rename into place", &path)(e.error))?;
                Ok(())
            }
        }
    }

    /// Tags `bytes` (a manifest whose blobs are all in place) as `tag`.
    fn put_manifest(&self, tag: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Backend::Registry(client) => {
                let url = client.repo_url(&format!("manifests/{tag}"));
                let mut response = client.send(Method::PUT, &url, &[("content-type", oci::MEDIA_MANIFEST)], &Payload::Bytes(bytes))?;
                if !response.status().is_success() {
                    return Err(RegistryError::Request { what: format!("PUT {url}"), message: client::error_text(&mut response) });
                }
                Ok(())
            }
            Backend::Local(local) => {
                let digest = Digest::of(bytes);
                let path = local.blob(&digest);
                if !path.exists() {
                    write_atomic(&local.dir, &path, bytes)?;
                }
                let mut descriptor = Descriptor {
                    media_type: oci::MEDIA_MANIFEST.into(),
                    digest,
                    size: bytes.len() as u64,
                    annotations: BTreeMap::new(),
                    platform: None,
                };
                descriptor.annotations.insert(oci::ANNOTATION_REF_NAME.into(), tag.into());
                local.change_index(|index| {
                    index.manifests.retain(|d| ref_name(d).as_deref() != Some(tag));
                    index.manifests.push(descriptor.clone());
                })
            }
        }
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<String> {
    descriptor.annotations.get(oci::ANNOTATION_REF_NAME).cloned()
}

fn local_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RegistryError {
    let path = path.to_path_buf();
    move |source| RegistryError::Store(StoreError::Io { action, path, source })
}

/// Writes a file of the directory `dir` whole: temp file beside it, fsync, rename.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(local_err("create temp file in", dir))?;
    tmp.write_all(bytes).map_err(local_err("write", path))?;
    tmp.as_file().sync_all().map_err(local_err("fsync", path))?;
    tmp.persist(path).map_err(|e| local_err("rename into place", path)(e.error))?;
    Ok(())
}

impl LocalDir {
    fn blob(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| RegistryError::Store(StoreError::Json { what: "cache index", path, source })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(Index { schema_version: 2, media_type: Some(oci::MEDIA_INDEX.into()), ..Default::default() })
            }
            Err(e) => Err(local_err("read", &path)(e)),
        }
    }

    /// Changes `index.json` under an exclusive lock (`index.json.lock`), so concurrent writers add, never overwrite.
    fn change_index(&self, change: impl FnOnce(&mut Index)) -> Result<()> {
        let lock_path = self.dir.join("index.json.lock");
        let lock = fs::File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(local_err("open", &lock_path))?;
        lock.lock().map_err(local_err("lock", &lock_path))?;
        let mut index = self.read_index()?;
        change(&mut index);
        write_atomic(&self.dir, &self.dir.join("index.json"), &oci::to_blob(&index))
    }
}

/// An entry found in a source, with where its layer is.
#[derive(Clone, Debug)]
struct Found {
    source: usize,
    entry: CacheEntry,
    layer: Option<Descriptor>,
}

/// The `SharedCache` of one build: the `--cache-from` sources tried in order,
/// and the steps the build went through, for `--cache-to`.
pub struct BuildCache {
    sources: Vec<(Location, Option<Backend>)>,
    options: Options,
    /// Layers of entries found, by diff_id.
    layers: Mutex<HashMap<Digest, Found>>,
    /// Layers that could not be fetched: their entries are misses from now on.
    failed: Mutex<HashSet<Digest>>,
    /// Every step: key → (the key it follows, its entry), in order of first sight.
    steps: Mutex<Vec<(CacheKey, CacheKey, CacheEntry)>>,
    /// Fast keys of COPY steps and the keys they stand for.
    aliases: Mutex<Vec<(CacheKey, CacheKey)>>,
}

impl BuildCache {
    /// Opens the sources (one unreachable is a warning and is skipped).
    pub fn new(sources: &[Location], options: &Options) -> BuildCache {
        let sources = sources
            .iter()
            .map(|location| match Backend::open(location, false, options) {
                Ok(backend) => (location.clone(), Some(backend)),
                Err(e) => {
                    eprintln!("warning: --cache-from {location}: {e}; building without it");
                    (location.clone(), None)
                }
            })
            .collect();
        BuildCache {
            sources,
            options: options.clone(),
            layers: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashSet::new()),
            steps: Mutex::new(Vec::new()),
            aliases: Mutex::new(Vec::new()),
        }
    }

    /// Layers that failed since the last call (the build then runs again without them).
    pub fn take_new_failures(&self, seen: &mut usize) -> bool {
        let failed = self.failed.lock().map(|f| f.len()).unwrap_or(0);
        let new = failed > *seen;
        *seen = failed;
        new
    }

    /// The entry tagged for `key` in one source; for an alias (`alias`), the entry and the key it names.
    fn lookup_in(&self, source: usize, backend: &Backend, key: &CacheKey, alias: bool) -> Result<Option<(CacheKey, Found)>> {
        let Some(bytes) = backend.manifest(&tag_of(key))? else { return Ok(None) };
        let invalid = |message: &str| RegistryError::Invalid { reference: tag_of(key), message: message.into() };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(&format!("parse cache manifest: {e}")))?;
        let get = |name: &str| manifest.annotations.get(name);
        let named = get(ANNOTATION_KEY).and_then(|k| k.parse::<CacheKey>().ok()).ok_or_else(|| invalid("no cache key annotation"))?;
        if (named == *key) == alias {
            return Err(invalid("the manifest names another cache key"));
        }
        let created = get(ANNOTATION_CREATED).ok_or_else(|| invalid("no created annotation"))?.clone();
        let size: u64 = get(ANNOTATION_SIZE).and_then(|s| s.parse().ok()).unwrap_or(0);
        let diff_id = match get(ANNOTATION_DIFF_ID) {
            Some(text) => Some(text.parse::<Digest>().map_err(|e| invalid(&format!("diff-id: {e}")))?),
            None => None,
        };
        let layer = match (&diff_id, manifest.layers.as_slice()) {
            (None, []) => None,
            (Some(_), [layer]) if super::pull::known_layer(&layer.media_type) => Some(layer.clone()),
            _ => return Err(invalid("the layers do not match the entry")),
        };
        Ok(Some((named, Found { source, entry: CacheEntry { diff_id, size, created }, layer })))
    }

    /// Streams a layer from its source into the store, uncompressed; both
    /// the blob digest and the diff_id are checked before anything stays.
    fn fetch(&self, store: &Store, found: &Found, diff_id: &Digest) -> Result<()> {
        let Some(layer) = &found.layer else { return Ok(()) };
        let Some(backend) = &self.sources[found.source].1 else {
            return Err(RegistryError::Invalid { reference: self.sources[found.source].0.to_string(), message: "unreachable".into() });
        };
        let started = std::time::Instant::now();
        let reader = backend.open_blob(layer)?;
        let hasher = Rc::new(RefCell::new(DigestWriter::new(io::sink())));
        let tee = Tee { inner: reader, hasher: hasher.clone(), limit: layer.size, read: 0 };
        let mut decoder = store::snapshot::decompress(tee).map_err(|e| transfer(layer, e))?;
        let mut writer = store.blob_writer()?;
        io::copy(&mut decoder, &mut writer).map_err(|e| transfer(layer, e))?;
        io::copy(&mut decoder, &mut io::sink()).map_err(|e| transfer(layer, e))?;
        drop(decoder);
        let (actual, size, _) = Rc::try_unwrap(hasher).map_err(|_| transfer(layer, io::Error::other("reader kept")))?.into_inner().finish();
        if size != layer.size || actual != layer.digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("cache layer {}", layer.digest),
                digest: layer.digest.clone(),
                actual,
            });
        }
        writer.commit(Some(diff_id)).map_err(|e| match e {
            StoreError::Corrupt { expected, actual } => {
                RegistryError::DigestMismatch { what: "cache layer's content (its diff_id)".into(), digest: expected, actual }
            }
            e => e.into(),
        })?;
        super::note(
            &self.options,
            format_args!(
                "cache: layer {} {:.1} MB from {} in {:.1}s",
                diff_id.short(),
                layer.size as f64 / 1e6,
                self.sources[found.source].0,
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    /// The keys `--cache-to` exports: every step (max), or the chains of the images built (min).
    fn selected(&self, mode: Mode, finals: &[CacheKey]) -> Vec<(CacheKey, CacheEntry)> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        match mode {
            Mode::Max => {
                for (_, key, entry) in steps {
                    if seen.insert(key.clone()) {
                        out.push((key, entry));
                    }
                }
            }
            Mode::Min => {
                let by_key: HashMap<CacheKey, (CacheKey, CacheEntry)> = steps.into_iter().map(|(p, k, e)| (k, (p, e))).collect();
                for last in finals {
                    let mut key = last.clone();
                    while let Some((parent, entry)) = by_key.get(&key) {
                        if !seen.insert(key.clone()) {
                            break;
                        }
                        out.push((key.clone(), entry.clone()));
                        key = parent.clone();
                    }
                }
            }
        }
        out
    }

    /// Writes the entries of this build's steps to `to` (`finals`: the last
    /// keys of the images built, for `mode=min`). Entries already there are
    /// left as they are. Returns (written, already there).
    pub fn export(&self, store: &Store, to: &CacheTo, finals: &[CacheKey]) -> Result<(usize, usize)> {
        let _build = store.lock_build()?;
        let backend = Backend::open(&to.location, true, &self.options)?;
        let shown = to.location.to_string();
        let entries = self.selected(to.mode, finals);
        let mut aliases: HashMap<CacheKey, Vec<CacheKey>> = HashMap::new();
        for (fast, key) in self.aliases.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let list = aliases.entry(key.clone()).or_default();
            if !list.contains(fast) {
                list.push(fast.clone());
            }
        }
        let next = AtomicUsize::new(0);
        let written = AtomicUsize::new(0);
        let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL.min(entries.len()) {
                scope.spawn(|| {
                    while let Some((key, entry)) = entries.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                            return;
                        }
                        let fast = aliases.get(key).map(Vec::as_slice).unwrap_or_default();
                        match export_one(store, &backend, to.compression, key, entry, fast, &shown) {
                            Ok(true) => {
                                written.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                if let Ok(mut slot) = failure.lock() {
                                    slot.get_or_insert(e);
                                }
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(e);
        }
        let written = written.into_inner();
        super::note(
            &self.options,
            format_args!("cache: exported {written} entries to {shown} ({} there already)", entries.len() - written),
        );
        Ok((written, entries.len() - written))
    }
}

fn transfer(layer: &Descriptor, e: io::Error) -> RegistryError {
    RegistryError::Request { what: format!("cache layer {}", layer.digest), message: e.to_string() }
}

/// Hashes what is read through it; more than `limit` bytes is an error.
struct Tee {
    inner: Box<dyn Read + Send>,
    hasher: Rc<RefCell<DigestWriter<io::Sink>>>,
    limit: u64,
    read: u64,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(format!("the source sent more than the {} bytes its manifest names", self.limit)));
        }
        self.hasher.borrow_mut().write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The bytes of an entry: its config blob and its manifest (both into the store,
/// so an upload reads them as any blob). The same entry gives the same config.
fn entry_objects(store: &Store, key: &CacheKey, entry: &CacheEntry, layer: Option<&Descriptor>, exported: &str) -> Result<Vec<u8>> {
    let config = ImageConfig {
        created: Some(entry.created.clone()),
        rootfs: RootFs { kind: "layers".into(), diff_ids: entry.diff_id.iter().cloned().collect() },
        history: vec![History {
            created: Some(entry.created.clone()),
            created_by: Some(format!("strata cache {key}")),
            empty_layer: entry.diff_id.is_none(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (config_digest, config_size) = store.write_blob(&oci::to_blob(&config))?;
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_KEY.to_string(), key.to_string());
    annotations.insert(ANNOTATION_CREATED.to_string(), entry.created.clone());
    annotations.insert(ANNOTATION_EXPORTED.to_string(), exported.to_string());
    annotations.insert(ANNOTATION_SIZE.to_string(), entry.size.to_string());
    if let Some(diff_id) = &entry.diff_id {
        annotations.insert(ANNOTATION_DIFF_ID.to_string(), diff_id.to_string());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        config: Descriptor {
            media_type: oci::MEDIA_CONFIG.into(),
            digest: config_digest,
            size: config_size,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: layer.into_iter().cloned().collect(),
        annotations,
    };
    Ok(oci::to_blob(&manifest))
}

/// Writes one entry unless its tag is there, and tags it under its fast keys
/// too (an alias is the same manifest under another tag); true if written.
fn export_one(
    store: &Store,
    backend: &Backend,
    compression: Compression,
    key: &CacheKey,
    entry: &CacheEntry,
    fast: &[CacheKey],
    shown: &str,
) -> Result<bool> {
    let tag = tag_of(key);
    let mut missing = Vec::new();
    for alias in fast {
        if !backend.has_manifest(&tag_of(alias))? {
            missing.push(tag_of(alias));
        }
    }
    if backend.has_manifest(&tag)? {
        if !missing.is_empty()
            && let Some(bytes) = backend.manifest(&tag)?
        {
            for alias in &missing {
                while_links_settle(|| backend.put_manifest(alias, &bytes))?;
            }
        }
        return Ok(false);
    }
    let layer = match &entry.diff_id {
        None => None,
        Some(diff_id) => {
            // A hit from another source not read by this build is fetched first.
            store.ensure_blob(diff_id)?;
            let plain = Descriptor {
                media_type: oci::MEDIA_LAYER.into(),
                digest: diff_id.clone(),
                size: entry.size,
                annotations: BTreeMap::new(),
                platform: None,
            };
            Some(push::compressed(store, &plain, diff_id, compression)?)
        }
    };
    let exported = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let manifest = entry_objects(store, key, entry, layer.as_ref(), &exported)?;
    let parsed: Manifest =
        serde_json::from_slice(&manifest).map_err(|e| RegistryError::Invalid { reference: tag.clone(), message: e.to_string() })?;
    while_links_settle(|| {
        if let Some(layer) = &layer {
            backend.put_blob(store, layer, shown)?;
        }
        backend.put_blob(store, &parsed.config, shown)?;
        backend.put_manifest(&tag, &manifest)
    })?;
    for alias in &missing {
        while_links_settle(|| backend.put_manifest(alias, &manifest))?;
    }
    Ok(true)
}

/// Runs `send` (blobs and a manifest, or a manifest) until the registry takes it.
/// The distribution registry links a blob into a repository by truncating and
/// rewriting a small file, so while other writers upload the same blob a manifest
/// naming it can be refused for a moment ("blob unknown", "digest invalid"):
/// send again after a pause that grows and is jittered, so that writers which
/// collided do not collide again in step.
fn while_links_settle(mut send: impl FnMut() -> Result<()>) -> Result<()> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 0;
    loop {
        match send() {
            Err(RegistryError::Request { .. }) if attempt + 1 < ATTEMPTS => {
                attempt += 1;
                let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() % 100);
                std::thread::sleep(Duration::from_millis((50 << attempt.min(5)) + u64::from(jitter) * 2));
            }
            other => return other,
        }
    }
}

impl BuildCache {
    /// The first source's entry for `key` whose layer has not failed.
    fn find(&self, key: &CacheKey, alias: bool) -> Option<(CacheKey, CacheEntry)> {
        for (source, (location, backend)) in self.sources.iter().enumerate() {
            let Some(backend) = backend else { continue };
            match self.lookup_in(source, backend, key, alias) {
                Ok(Some((named, found))) => {
                    let failed = found.entry.diff_id.as_ref().is_some_and(|d| self.failed.lock().map(|f| f.contains(d)).unwrap_or(true));
                    if failed {
                        continue;
                    }
                    if let Some(diff_id) = &found.entry.diff_id
                        && let Ok(mut layers) = self.layers.lock()
                    {
                        layers.entry(diff_id.clone()).or_insert_with(|| found.clone());
                    }
                    return Some((named, found.entry));
                }
                Ok(None) => {}
                Err(e) => eprintln!("warning: --cache-from {location}: entry {}: {e}; treated as a miss", tag_of(key)),
            }
        }
        None
    }
}

impl SharedCache for BuildCache {
    fn lookup(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.find(key, false).map(|(_, entry)| entry)
    }

    fn lookup_alias(&self, fast: &CacheKey) -> Option<(CacheKey, CacheEntry)> {
        self.find(fast, true)
    }

    fn record_alias(&self, fast: &CacheKey, key: &CacheKey) {
        if let Ok(mut aliases) = self.aliases.lock() {
            aliases.push((fast.clone(), key.clone()));
        }
    }

    fn fetch_layer(&self, store: &Store, diff_id: &Digest) -> store::Result<()> {
        let found = self.layers.lock().ok().and_then(|l| l.get(diff_id).cloned());
        let Some(found) = found else { return Err(StoreError::MissingBlob(diff_id.clone())) };
        if let Err(e) = self.fetch(store, &found, diff_id) {
            eprintln!("warning: --cache-from {}: layer {diff_id}: {e}; its steps will be built", self.sources[found.source].0);
            if let Ok(mut failed) = self.failed.lock() {
                failed.insert(diff_id.clone());
            }
            return Err(StoreError::MissingBlob(diff_id.clone()));
        }
        Ok(())
    }

    fn record(&self, parent: &CacheKey, key: &CacheKey, entry: &CacheEntry) {
        if let Ok(mut steps) = self.steps.lock() {
            steps.push((parent.clone(), key.clone(), entry.clone()));
        }
    }
}

/// What `cache prune` did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pruned {
    pub removed: usize,
    pub kept: usize,
}

/// Deletes the entries of a cache (all of them, or those first exported
/// longer than `older_than` ago). A registry deletes manifests by digest
/// (it needs `storage.delete.enabled`); its blobs go at its own garbage
/// collection. A directory loses the index entries and unreferenced blobs.
pub fn prune(location: &Location, older_than: Option<Duration>, options: &Options) -> Result<Pruned> {
    let backend = Backend::open(location, true, options)?;
    let cutoff = older_than.map(|age| SystemTime::now() - age);
    let expired = |manifest: &Manifest| match cutoff {
        None => true,
        Some(cutoff) => manifest
            .annotations
            .get(ANNOTATION_EXPORTED)
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .is_none_or(|t| SystemTime::from(t) < cutoff),
    };
    let mut pruned = Pruned::default();
    match &backend {
        Backend::Registry(client) => {
            for tag in list_tags(client)?.into_iter().filter(|t| t.starts_with("sha256-")) {
                let url = client.repo_url(&format!("manifests/{tag}"));
                let mut response = client.send(Method::GET, &url, &[("accept", oci::MEDIA_MANIFEST)], &Payload::Empty)?;
                if response.status() != StatusCode::OK {
                    continue;
                }
                let bytes = response.body_mut().with_config().limit(super::MAX_MANIFEST).read_to_vec().unwrap_or_default();
                let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else { continue };
                if !manifest.annotations.contains_key(ANNOTATION_KEY) || !expired(&manifest) {
                    pruned.kept += 1;
                    continue;
                }
                let digest = client::header(&response, "docker-content-digest")
                    .map(str::to_string)
                    .unwrap_or_else(|| Digest::of(&bytes).to_string());
                let url = client.repo_url(&format!("manifests/{digest}"));
                let mut deleted = client.send(Method::DELETE, &url, &[], &Payload::Empty)?;
                match deleted.status() {
                    StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NOT_FOUND => pruned.removed += 1,
                    _ => {
                        return Err(RegistryError::Request {
                            what: format!("DELETE {url}"),
                            message: format!(
                                "{} (the registry must allow deletes: storage.delete.enabled)",
                                client::error_text(&mut deleted)
                            ),
                        });
                    }
                }
            }
        }
        Backend::Local(local) => {
            let mut removed = Vec::new();
            let index = local.read_index()?;
            for descriptor in &index.manifests {
                let Some(tag) = ref_name(descriptor).filter(|t| t.starts_with("sha256-")) else { continue };
                let manifest = fs::read(local.blob(&descriptor.digest)).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
                if manifest.as_ref().is_none_or(expired) {
                    removed.push(tag);
                } else {
                    pruned.kept += 1;
                }
            }
            pruned.removed = removed.len();
            local.change_index(|index| index.manifests.retain(|d| !ref_name(d).is_some_and(|t| removed.contains(&t))))?;
            // Blobs no remaining manifest names go too.
            let index = local.read_index()?;
            let mut live: HashSet<Digest> = HashSet::new();
            for descriptor in &index.manifests {
                live.insert(descriptor.digest.clone());
                if let Some(manifest) =
                    fs::read(local.blob(&descriptor.digest)).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                {
                    live.insert(manifest.config.digest.clone());
                    live.extend(manifest.layers.iter().map(|l| l.digest.clone()));
                }
            }
            let blobs = local.dir.join("blobs/sha256");
            for file in fs::read_dir(&blobs).map_err(local_err("list", &blobs))?.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if Digest::from_hex(&name).is_ok_and(|d| !live.contains(&d)) {
                    let _ = fs::remove_file(file.path());
                }
            }
        }
    }
    Ok(pruned)
}

/// Every tag of the repository (`GET /v2/NAME/tags/list`, following `Link` pages).
fn list_tags(client: &Client) -> Result<Vec<String>> {
    let mut tags = Vec::new();
    let mut url = client.repo_url("tags/list?n=1000");
    loop {
        let mut response = client.send(Method::GET, &url, &[], &Payload::Empty)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(tags),
            _ => return Err(RegistryError::Request { what: format!("GET {url}"), message: client::error_text(&mut response) }),
        }
        let next = client::header(&response, "link")
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(u, _)| u.to_string());
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::Request { what: format!("GET {url}"), message: e.to_string() })?;
        let page: Tags =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Request { what: format!("GET {url}"), message: e.to_string() })?;
        tags.extend(page.tags.unwrap_or_default());
        match next {
            Some(next) => url = client.url(&next),
            None => return Ok(tags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cache_specs() {
        let to = parse_cache_to("type=registry,ref=127.0.0.1:5000/cache,mode=max,compression=zstd").unwrap();
        assert_eq!(to.location, Location::Registry { registry: "127.0.0.1:5000".into(), repository: "cache".into() });
        assert_eq!((to.mode, to.compression), (Mode::Max, Compression::Zstd));
        let to = parse_cache_to("type=local,dest=/tmp/c").unwrap();
        assert_eq!((to.location, to.mode, to.compression), (Location::Local("/tmp/c".into()), Mode::Min, Compression::Gzip));
        assert_eq!(parse_cache_from("type=local,src=/tmp/c").unwrap(), Location::Local("/tmp/c".into()));
        assert_eq!(
            parse_cache_from("localhost:5000/team/cache").unwrap(),
            Location::Registry { registry: "localhost:5000".into(), repository: "team/cache".into() }
        );
        for bad in ["type=s3,ref=x", "type=registry", "type=local,src=/x,mode=max", "type=registry,ref=r/c,mode=all"] {
            assert!(parse_cache_to(bad).is_err() || parse_cache_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_entry_gives_one_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = CacheKey::from_sha256([7; 32]);
        let entry = CacheEntry { diff_id: None, size: 0, created: "1970-01-01T00:00:00Z".into() };
        let a = entry_objects(&store, &key, &entry, None, "2024-01-01T00:00:00Z").unwrap();
        let b = entry_objects(&store, &key, &entry, None, "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(a, b);
        let manifest: Manifest = serde_json::from_slice(&a).unwrap();
        assert_eq!(manifest.annotations[ANNOTATION_KEY], key.to_string());
        assert!(store.has_blob(&manifest.config.digest));
    }
}
