//! Moving images in and out of the store: OCI layout directories, OCI
//! archives (a tar of a layout) and `docker save` tarballs. Blobs and OCI
//! manifests are copied as they are, so digests survive the trip; the images
//! of a `docker save` tarball get their manifests from the store's one writer
//! (`Store::write_manifest`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Store, StoreError, StoredImage};
use crate::oci::{self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfig, ImageRef, Index, Manifest, to_blob};

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An OCI layout (directory), or an OCI archive when the path ends in `.tar`.
    Oci,
    /// A `docker save` tarball (`manifest.json`, `<config>.json`, `<layer>/layer.tar`).
    Docker,
}

/// Why an import or export failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("{0}")]
    Format(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { action, path, source }
}

/// One entry of a `docker save` manifest.json.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Writes `images` to `output`; nothing is left at `output` if it fails.
pub fn save(store: &Store, images: &[StoredImage], output: &Path, format: Format) -> Result<(), ArchiveError> {
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let as_dir = format == Format::Oci && output.extension().is_none_or(|e| e != "tar");
    if as_dir {
        let tmp = tempfile::Builder::new().prefix(".strata-save-").tempdir_in(parent).map_err(io_err("create temp dir in", parent))?;
        write_layout(store, images, tmp.path())?;
        if output.exists() {
            fs::remove_dir_all(output).map_err(io_err("replace", output))?;
        }
        fs::rename(tmp.path(), output).map_err(io_err("rename into place", output))?;
        let _ = tmp.keep();
        return Ok(());
    }
    let tmp = tempfile::Builder::new().prefix(".strata-save-").tempfile_in(parent).map_err(io_err("create temp file in", parent))?;
    {
        let mut builder = tar::Builder::new(BufWriter::new(tmp.as_file()));
        builder.mode(tar::HeaderMode::Deterministic);
        match format {
            Format::Oci => write_oci_tar(store, images, &mut builder)?,
            Format::Docker => write_docker_tar(store, images, &mut builder)?,
        }
        builder.into_inner().and_then(|mut w| w.flush()).map_err(io_err("write", output))?;
    }
    tmp.as_file().sync_all().map_err(io_err("fsync", output))?;
    tmp.persist(output).map_err(|e| ArchiveError::Io { action: "rename into place", path: output.to_path_buf(), source: e.error })?;
    Ok(())
}

/// The index of an exported layout, each image named as BuildKit's OCI
/// exporter and `docker save` name it: the fully qualified name in
/// `io.containerd.image.name`, the tag alone in `org.opencontainers.image.ref.name`.
fn layout_index(images: &[StoredImage]) -> Index {
    let manifests = images
        .iter()
        .map(|image| {
            let mut d = image.manifest_descriptor.clone();
            d.annotations.clear();
            if let Some(name) = &image.tag {
                match name.parse::<ImageRef>() {
                    Ok(reference) => {
                        d.annotations.insert(ANNOTATION_IMAGE_NAME.into(), reference.full());
                        d.annotations.insert(ANNOTATION_REF_NAME.into(), reference.tag);
                    }
                    Err(_) => {
                        d.annotations.insert(ANNOTATION_REF_NAME.into(), name.clone());
                    }
                }
            }
            d
        })
        .collect();
    Index { schema_version: 2, media_type: Some(oci::MEDIA_INDEX.into()), manifests, annotations: BTreeMap::new() }
}

fn image_blobs(image: &StoredImage) -> Vec<Digest> {
    let mut blobs = vec![image.manifest_descriptor.digest.clone(), image.manifest.config.digest.clone()];
    blobs.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
    blobs
}

fn write_layout(store: &Store, images: &[StoredImage], dir: &Path) -> Result<(), ArchiveError> {
    let blobs_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).map_err(io_err("create", &blobs_dir))?;
    for image in images {
        for digest in image_blobs(image) {
            let dest = blobs_dir.join(digest.hex());
            if dest.exists() {
                continue;
            }
            // A copy, not a hard link: an edit to the export must never reach the store.
            let src = store.blob_path(&digest);
            fs::copy(&src, &dest).map_err(io_err("copy blob", &src))?;
        }
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err("write", dir))?;
    fs::write(dir.join("index.json"), to_blob(&layout_index(images))).map_err(io_err("write", dir))?;
    Ok(())
}

fn append_bytes(builder: &mut tar::Builder<impl Write>, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, bytes).map_err(io_err("write", Path::new(path)))
}

fn append_blob(store: &Store, builder: &mut tar::Builder<impl Write>, path: &str, digest: &Digest) -> Result<(), ArchiveError> {
    let file = store.open_blob(digest)?;
    let size = file.metadata().map_err(io_err("stat", &store.blob_path(digest)))?.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, BufReader::new(file)).map_err(io_err("write", Path::new(path)))
}

fn write_oci_tar(store: &Store, images: &[StoredImage], builder: &mut tar::Builder<impl Write>) -> Result<(), ArchiveError> {
    append_bytes(builder, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_bytes(builder, "index.json", &to_blob(&layout_index(images)))?;
    let mut written = std::collections::HashSet::new();
    for image in images {
        for digest in image_blobs(image) {
            if written.insert(digest.clone()) {
                append_blob(store, builder, &format!("blobs/sha256/{}", digest.hex()), &digest)?;
            }
        }
    }
    Ok(())
}

fn write_docker_tar(store: &Store, images: &[StoredImage], builder: &mut tar::Builder<impl Write>) -> Result<(), ArchiveError> {
    let mut items = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written = std::collections::HashSet::new();
    for image in images {
        let config = format!("{}.json", image.id().hex());
        if written.insert(config.clone()) {
            append_blob(store, builder, &config, image.id())?;
        }
        let mut layers = Vec::new();
        for layer in &image.manifest.layers {
            let path = format!("{}/layer.tar", layer.digest.hex());
            if written.insert(path.clone()) {
                append_blob(store, builder, &path, &layer.digest)?;
            }
            layers.push(path);
        }
        let tags: Vec<String> = image.tag.iter().cloned().collect();
        for tag in &tags {
            if let Ok(r) = tag.parse::<ImageRef>() {
                let top = image.manifest.layers.last().map(|l| l.digest.hex().to_string()).unwrap_or_default();
                repositories.entry(r.name).or_default().insert(r.tag, top);
            }
        }
        items.push(DockerItem { config, repo_tags: Some(tags), layers });
    }
    append_bytes(builder, "manifest.json", &serde_json::to_vec(&items).unwrap_or_default())?;
    append_bytes(builder, "repositories", &serde_json::to_vec(&repositories).unwrap_or_default())?;
    Ok(())
}

/// An image read and verified, not yet tagged: its manifest, tags and id.
struct Staged {
    descriptor: Descriptor,
    tags: Vec<ImageRef>,
    id: Digest,
}

/// What a load has verified so far, and the blobs it added to the store.
#[derive(Default)]
struct Loading {
    images: Vec<Staged>,
    /// Every blob the staged images need.
    needed: std::collections::HashSet<Digest>,
    /// Blobs this load added, removed again if it fails (or if nothing needs them).
    created: Vec<Digest>,
}

/// Imports every image of `input`; returns each one's tag (if any) and id.
///
/// Every blob is checked against its digest as it is copied, every
/// descriptor's size against its blob, every config against its manifest
/// (one diff_id per layer, and each layer uncompresses to its diff_id). Only
/// then is anything tagged; a refused input leaves no blob and no tag.
pub fn load(store: &Store, input: &Path, tag: Option<&ImageRef>) -> Result<Vec<(Option<String>, Digest)>, ArchiveError> {
    // As a build: a collection meanwhile would free the blobs copied in before they are tagged, and the temp files being written.
    let _build = store.lock_build()?;
    let mut loading = Loading::default();
    let staged = stage(store, input, tag, &mut loading);
    // Blobs of a refused input, and blobs of an archive that no image needs, go.
    for digest in &loading.created {
        if staged.is_err() || !loading.needed.contains(digest) {
            let _ = fs::remove_file(store.blob_path(digest));
        }
    }
    staged?;
    let mut loaded = Vec::new();
    for image in &loading.images {
        if image.tags.is_empty() {
            store.add_untagged(&image.descriptor)?;
            loaded.push((None, image.id.clone()));
        }
        for tag in &image.tags {
            store.set_tag(tag, &image.descriptor)?;
            loaded.push((Some(tag.to_string()), image.id.clone()));
        }
    }
    Ok(loaded)
}

fn stage(store: &Store, input: &Path, tag: Option<&ImageRef>, loading: &mut Loading) -> Result<(), ArchiveError> {
    let meta = fs::metadata(input).map_err(io_err("open", input))?;
    // `…/debian-minbase` or `debian-minbase.tar` names images whose index gives only a tag.
    let default_name =
        input.file_stem().map(|s| s.to_string_lossy().to_lowercase()).filter(|s| format!("{s}:x").parse::<ImageRef>().is_ok());
    if meta.is_dir() {
        if !input.join("oci-layout").exists() {
            return Err(ArchiveError::Format(format!("{} is a directory but not an OCI layout (no oci-layout file)", input.display())));
        }
        let blob = |digest: &Digest| -> Result<Box<dyn Read>, ArchiveError> {
            let path = input.join("blobs/sha256").join(digest.hex());
            Ok(Box::new(BufReader::new(File::open(&path).map_err(io_err("open blob", &path))?)))
        };
        let index: Index = read_json(&mut blob_or_file(&input.join("index.json"))?, "index.json")?;
        let mut created = Vec::new();
        let result = import_layout(store, &index, tag, default_name.as_deref(), loading, &mut |d| {
            if copy_in(store, d, blob(d)?)? {
                created.push(d.clone());
            }
            Ok(())
        });
        loading.created.extend(created);
        return result;
    }
    // A tar: first learn its shape and its small JSON files, then stream the blobs in.
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    for_each_entry(input, &mut |path, entry| {
        if matches!(path, "oci-layout" | "index.json" | "manifest.json" | "repositories") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io_err("read", Path::new(path)))?;
            small.insert(path.to_string(), bytes);
        }
        Ok(())
    })?;
    if small.contains_key("oci-layout") {
        let index: Index = read_json(&mut small.get("index.json").map(Vec::as_slice).unwrap_or_default(), "index.json")?;
        let mut blobs = HashMap::new();
        let created = &mut loading.created;
        for_each_entry(input, &mut |path, entry| {
            if let Some(hex) = path.strip_prefix("blobs/sha256/")
                && let Ok(digest) = Digest::from_hex(hex)
            {
                if copy_in(store, &digest, Box::new(entry))? {
                    created.push(digest.clone());
                }
                blobs.insert(digest, ());
            }
            Ok(())
        })?;
        return import_layout(store, &index, tag, default_name.as_deref(), loading, &mut |d| {
            if blobs.contains_key(d) || store.has_blob(d) {
                Ok(())
            } else {
                Err(ArchiveError::Format(format!("blob {d} is missing from the archive")))
            }
        });
    }
    let Some(manifest_json) = small.get("manifest.json") else {
        return Err(ArchiveError::Format("not an OCI archive or docker save tarball: no oci-layout or manifest.json".into()));
    };
    let items: Vec<DockerItem> = read_json(&mut manifest_json.as_slice(), "manifest.json")?;
    let wanted: std::collections::HashSet<String> = items.iter().flat_map(|i| i.layers.iter().cloned().chain([i.config.clone()])).collect();
    let mut stored: HashMap<String, (Digest, u64, bool)> = HashMap::new();
    let created = &mut loading.created;
    for_each_entry(input, &mut |path, entry| {
        if wanted.contains(path) {
            let mut head = [0u8; 4];
            let mut writer = store.blob_writer()?;
            let mut first = true;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(io_err("read", Path::new(path)))?;
                if n == 0 {
                    break;
                }
                if first {
                    head[..n.min(4)].copy_from_slice(&buf[..n.min(4)]);
                    first = false;
                }
                writer.write_all(&buf[..n]).map_err(io_err("write blob for", Path::new(path)))?;
            }
            let blob = writer.commit(None)?;
            if blob.added {
                created.push(blob.digest.clone());
            }
            stored.insert(path.to_string(), (blob.digest, blob.size, head[..2] == [0x1f, 0x8b]));
        }
        Ok(())
    })?;
    check_diff_ids(store, &items, &stored)?;
    for item in &items {
        let missing = |p: &str| ArchiveError::Format(format!("{p} is listed in manifest.json but missing from the tarball"));
        let (config_digest, config_size, _) = stored.get(&item.config).cloned().ok_or_else(|| missing(&item.config))?;
        let config: ImageConfig = read_json(&mut store.read_blob(&config_digest)?.as_slice(), &item.config)?;
        if config.rootfs.diff_ids.len() != item.layers.len() {
            return Err(ArchiveError::Format(format!(
                "{} lists {} diff_ids but manifest.json lists {} layers",
                item.config,
                config.rootfs.diff_ids.len(),
                item.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for layer in &item.layers {
            let (digest, size, gzip) = stored.get(layer).cloned().ok_or_else(|| missing(layer))?;
            let media_type = if gzip { oci::MEDIA_LAYER_GZIP } else { oci::MEDIA_LAYER };
            layers.push(Descriptor { media_type: media_type.into(), digest, size, annotations: BTreeMap::new(), platform: None });
        }
        loading.needed.extend(layers.iter().map(|l| l.digest.clone()).chain([config_digest.clone()]));
        let (descriptor, new) = store.write_manifest((&config_digest, config_size), layers, None)?;
        if new {
            loading.created.push(descriptor.digest.clone());
        }
        loading.needed.insert(descriptor.digest.clone());
        let tags: Vec<String> = match tag {
            Some(t) => vec![t.to_string()],
            None => item.repo_tags.clone().unwrap_or_default(),
        };
        loading.images.push(Staged { descriptor, tags: parse_tags(&tags)?, id: config_digest });
    }
    Ok(())
}

/// Every layer of a `docker save` tarball must uncompress to the diff_id its config lists.
fn check_diff_ids(store: &Store, items: &[DockerItem], stored: &HashMap<String, (Digest, u64, bool)>) -> Result<(), ArchiveError> {
    for item in items {
        let Some((config_digest, _, _)) = stored.get(&item.config) else { continue };
        let config: ImageConfig = read_json(&mut store.read_blob(config_digest)?.as_slice(), &item.config)?;
        for (layer, expected) in item.layers.iter().zip(&config.rootfs.diff_ids) {
            let Some((digest, _, gzip)) = stored.get(layer) else { continue };
            let actual = if *gzip { uncompressed_digest(store, digest, layer)? } else { digest.clone() };
            if &actual != expected {
                return Err(ArchiveError::Format(format!(
                    "{layer} is corrupt: its content hashes to {actual}, but {} lists {expected}",
                    item.config
                )));
            }
        }
    }
    Ok(())
}

/// The digest of a layer's uncompressed bytes (its diff_id).
fn uncompressed_digest(store: &Store, digest: &Digest, what: &str) -> Result<Digest, ArchiveError> {
    let mut reader =
        super::snapshot::decompress(BufReader::new(store.open_blob(digest)?)).map_err(|e| ArchiveError::Format(format!("{what}: {e}")))?;
    let mut hashing = oci::DigestWriter::new(io::sink());
    io::copy(&mut reader, &mut hashing).map_err(|e| ArchiveError::Format(format!("{what}: {e}")))?;
    Ok(hashing.finish().0)
}

/// An archive's tag names, checked before any is set.
fn parse_tags(tags: &[String]) -> Result<Vec<ImageRef>, ArchiveError> {
    tags.iter()
        .map(|tag| {
            // docker save writes "docker.io/library/x:tag" or "x:tag"; keep what the user would type.
            let short = tag.strip_prefix("docker.io/library/").unwrap_or(tag);
            short.parse().map_err(|e: oci::RefError| ArchiveError::Format(format!("tag {tag:?}: {e}")))
        })
        .collect()
}

/// A descriptor must give its blob's real size.
fn check_size(store: &Store, descriptor: &Descriptor) -> Result<(), ArchiveError> {
    let path = store.blob_path(&descriptor.digest);
    let actual = fs::metadata(&path).map_err(io_err("read", &path))?.len();
    if actual != descriptor.size {
        return Err(ArchiveError::Format(format!(
            "blob {} is {actual} bytes, but its descriptor says {}",
            descriptor.digest, descriptor.size
        )));
    }
    Ok(())
}

fn blob_or_file(path: &Path) -> Result<Box<dyn Read>, ArchiveError> {
    Ok(Box::new(BufReader::new(File::open(path).map_err(io_err("open", path))?)))
}

fn read_json<T: serde::de::DeserializeOwned>(reader: &mut dyn Read, what: &str) -> Result<T, ArchiveError> {
    serde_json::from_reader(reader).map_err(|e| ArchiveError::Format(format!("parse {what}: {e}")))
}

/// Copies a blob into the store, checked against `digest`; whether it was new.
fn copy_in(store: &Store, digest: &Digest, mut reader: Box<dyn Read + '_>) -> Result<bool, ArchiveError> {
    if store.has_blob(digest) {
        return Ok(false);
    }
    let mut writer = store.blob_writer()?;
    io::copy(&mut reader, &mut writer).map_err(io_err("copy blob", Path::new(digest.as_str())))?;
    Ok(writer.commit(Some(digest))?.added)
}

/// Called with each entry's path and reader.
type EntryVisitor<'a> = dyn FnMut(&str, &mut tar::Entry<'_, BufReader<File>>) -> Result<(), ArchiveError> + 'a;

fn for_each_entry(input: &Path, visit: &mut EntryVisitor<'_>) -> Result<(), ArchiveError> {
    let file = File::open(input).map_err(io_err("open", input))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(256 * 1024, file));
    for entry in archive.entries().map_err(io_err("read tar", input))? {
        let mut entry = entry.map_err(io_err("read tar", input))?;
        let path = entry.path().map_err(io_err("read tar", input))?.to_string_lossy().trim_start_matches("./").to_string();
        visit(&path, &mut entry)?;
    }
    Ok(())
}

/// Stages the manifests an index names, verified; `fetch` brings each blob into the store.
fn import_layout(
    store: &Store,
    index: &Index,
    tag: Option<&ImageRef>,
    default_name: Option<&str>,
    loading: &mut Loading,
    fetch: &mut dyn FnMut(&Digest) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut fetch = |descriptor: &Descriptor, loading: &mut Loading| -> Result<(), ArchiveError> {
        fetch(&descriptor.digest)?;
        check_size(store, descriptor)?;
        loading.needed.insert(descriptor.digest.clone());
        Ok(())
    };
    for descriptor in &index.manifests {
        fetch(descriptor, loading)?;
        let mut descriptor = descriptor.clone();
        if descriptor.media_type == oci::MEDIA_INDEX || descriptor.media_type == oci::DOCKER_MANIFEST_LIST {
            // A multi-platform index: take the manifest for this machine.
            let nested: Index = store.read_json(&descriptor.digest, "image index")?;
            let arch = oci::host_architecture();
            let chosen = nested
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_none_or(|p| p.architecture == arch && p.os == "linux"))
                .ok_or_else(|| ArchiveError::Format(format!("index {} has no manifest for linux/{arch}", descriptor.digest)))?;
            fetch(chosen, loading)?;
            let annotations = descriptor.annotations.clone();
            descriptor = chosen.clone();
            descriptor.annotations = annotations;
        }
        let manifest: Manifest = store.read_json(&descriptor.digest, "manifest")?;
        fetch(&manifest.config, loading)?;
        let config: ImageConfig = store.read_json(&manifest.config.digest, "image config")?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ArchiveError::Format(format!(
                "config {} lists {} diff_ids but manifest {} lists {} layers",
                manifest.config.digest,
                config.rootfs.diff_ids.len(),
                descriptor.digest,
                manifest.layers.len()
            )));
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            fetch(layer, loading)?;
            if &layer.digest != diff_id {
                let actual = uncompressed_digest(store, &layer.digest, layer.digest.as_str())?;
                if &actual != diff_id {
                    return Err(ArchiveError::Format(format!(
                        "layer {} is corrupt: it uncompresses to {actual}, but config {} lists {diff_id}",
                        layer.digest, manifest.config.digest
                    )));
                }
            }
        }
        let annotation = |key: &str| descriptor.annotations.get(key);
        let tags: Vec<String> = match (tag, annotation(ANNOTATION_IMAGE_NAME), annotation(ANNOTATION_REF_NAME)) {
            (Some(t), _, _) => vec![t.to_string()],
            // The full name, as BuildKit and `docker save` write it beside a bare tag.
            (None, Some(full), _) => vec![full.clone()],
            (None, None, Some(name)) if name.contains(':') => vec![name.clone()],
            // A bare tag (as umoci and skopeo write): the layout's name supplies the repository.
            (None, None, Some(tag)) => match default_name {
                Some(repo) => vec![format!("{repo}:{tag}")],
                None => Vec::new(),
            },
            (None, None, None) => Vec::new(),
        };
        descriptor.annotations.remove(ANNOTATION_REF_NAME);
        descriptor.annotations.remove(ANNOTATION_IMAGE_NAME);
        loading.images.push(Staged { descriptor, tags: parse_tags(&tags)?, id: manifest.config.digest.clone() });
    }
    Ok(())
}
