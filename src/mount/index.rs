//! A layer's index: every tar header with where its data starts in the
//! layer's uncompressed bytes (for a GNU sparse file, its map of data
//! segments). Made once per layer (a compressed layer gets an uncompressed
//! copy first) and cached as JSON under `strata/mount-index/`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MountError;
use crate::oci::{Descriptor, Digest};
use crate::store::Store;
use crate::store::snapshot::{clean_layer_path, decompress};

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One tar header of a layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Path bytes, relative, cleaned (names need not be UTF-8).
    #[serde(with = "hex_bytes")]
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    /// Where the data starts in the uncompressed layer (regular files).
    pub offset: u64,
    /// Symlink target or hard-link target path.
    #[serde(with = "hex_bytes")]
    pub link: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// For GNU sparse files: the data segments (offset in the file, length), stored one
    /// after the other from `offset`; everything between them reads as zeros.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse: Vec<(u64, u64)>,
}

/// A layer's entries and the file holding its uncompressed bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct LayerIndex {
    pub data: PathBuf,
    pub entries: Vec<IndexEntry>,
}

/// Bumped when the cached format changes.
const FORMAT: &str = "v3";

/// The index of one layer, from the cache or made now.
pub fn layer_index(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<LayerIndex, MountError> {
    // As a build: a collection meanwhile would remove the temp files this writes.
    let _build = store.lock_build()?;
    let dir = store.root().join("strata/mount-index");
    fs::create_dir_all(&dir).map_err(|e| MountError::io("create", &dir, e))?;
    let cached = dir.join(format!("{}.{FORMAT}.json", diff_id.hex()));
    if let Ok(bytes) = fs::read(&cached)
        && let Ok(index) = serde_json::from_slice::<LayerIndex>(&bytes)
        && index.data.exists()
    {
        return Ok(index);
    }
    let data = uncompressed(store, layer, diff_id, &dir)?;
    let index = build(&data).map_err(|e| MountError::Layer { digest: layer.digest.clone(), message: e })?;
    store.write_file(&cached, &serde_json::to_vec(&index).unwrap_or_default())?;
    Ok(index)
}

/// The layer's uncompressed bytes: the blob itself when stored plain, else a copy made once.
fn uncompressed(store: &Store, layer: &Descriptor, diff_id: &Digest, dir: &Path) -> Result<PathBuf, MountError> {
    let blob = store.blob_path(&layer.digest);
    let mut head = [0u8; 4];
    let n = File::open(&blob).and_then(|mut f| f.read(&mut head)).map_err(|e| MountError::io("open layer", &blob, e))?;
    let compressed = head[..n].starts_with(&[0x1f, 0x8b]) || head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if !compressed {
        return Ok(blob);
    }
    let copy = dir.join(format!("{}.tar", diff_id.hex()));
    if copy.exists() {
        return Ok(copy);
    }
    let tmp = store.tmp_dir();
    let mut writer = tempfile::NamedTempFile::new_in(&tmp).map_err(|e| MountError::io("create temp file in", &tmp, e))?;
    let file = File::open(&blob).map_err(|e| MountError::io("open layer", &blob, e))?;
    let mut reader =
        decompress(BufReader::new(file)).map_err(|e| MountError::Layer { digest: layer.digest.clone(), message: e.to_string() })?;
    let mut hashing = crate::oci::DigestWriter::new(&mut writer);
    io::copy(&mut reader, &mut hashing)
        .map_err(|e| MountError::Layer { digest: layer.digest.clone(), message: format!("decompress: {e}") })?;
    let (actual, _, _) = hashing.finish();
    if &actual != diff_id {
        return Err(MountError::Layer {
            digest: layer.digest.clone(),
            message: format!("uncompressed content is {actual}, the config says {diff_id}"),
        });
    }
    writer.persist(&copy).map_err(|e| MountError::io("keep uncompressed layer", &copy, e.error))?;
    Ok(copy)
}

fn build(data: &Path) -> Result<LayerIndex, String> {
    let file = File::open(data).map_err(|e| format!("open {}: {e}", data.display()))?;
    let total = file.metadata().map_err(|e| e.to_string())?.len();
    let extensions = file.try_clone().map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(256 * 1024, file));
    let mut entries = Vec::new();
    for (n, entry) in archive.entries().map_err(|e| e.to_string())?.enumerate() {
        let mut entry = entry.map_err(|e| format!("read header {n}: {e}"))?;
        let raw = entry.path_bytes().into_owned();
        let path = clean_layer_path(Path::new(std::ffi::OsStr::from_bytes(&raw)))
            .filter(|_| !raw.starts_with(b"/"))
            .ok_or_else(|| format!("path {:?} is absolute or leaves the layer root", String::from_utf8_lossy(&raw)))?;
        if path.as_os_str().is_empty() {
            continue;
        }
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Char => EntryKind::Char,
            tar::EntryType::Block => EntryKind::Block,
            tar::EntryType::Fifo => EntryKind::Fifo,
            _ => continue,
        };
        let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let link = if kind == EntryKind::Hardlink {
            clean_layer_path(Path::new(std::ffi::OsStr::from_bytes(&link)))
                .ok_or_else(|| format!("hard link {:?} leaves the layer root", String::from_utf8_lossy(&link)))?
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            link
        };
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Ok(key) = ext.key()
                    && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let header = entry.header();
        let size = entry.size();
        let offset = entry.raw_file_position();
        let mut index_entry = IndexEntry {
            path: path.as_os_str().as_bytes().to_vec(),
            kind,
            mode: header.mode().map_err(|e| e.to_string())? & 0o7777,
            uid: header.uid().map_err(|e| e.to_string())? as u32,
            gid: header.gid().map_err(|e| e.to_string())? as u32,
            mtime: header.mtime().map_err(|e| e.to_string())? as i64,
            size,
            offset,
            link,
            major: header.device_major().ok().flatten().unwrap_or(0),
            minor: header.device_minor().ok().flatten().unwrap_or(0),
            xattrs,
            sparse: Vec::new(),
        };
        let mut stored = size;
        if header.entry_type() == tar::EntryType::GNUSparse {
            let map = sparse_map(header, &extensions, offset).map_err(|e| format!("read sparse map of {}: {e}", path.display()))?;
            (index_entry.size, index_entry.offset, index_entry.sparse) = (map.real_size, map.data_start, map.segments);
            stored = index_entry.sparse.iter().map(|(_, len)| len).sum();
        }
        if kind == EntryKind::File && index_entry.offset + stored > total {
            return Err(format!("{} is truncated: its data ends past the end of the layer", path.display()));
        }
        entries.push(index_entry);
    }
    Ok(LayerIndex { data: data.to_path_buf(), entries })
}

/// Where a GNU sparse file's segments lie, read from its header and extension headers.
struct SparseMap {
    real_size: u64,
    /// Where the first segment's bytes start in the layer (after the extension headers).
    data_start: u64,
    segments: Vec<(u64, u64)>,
}

/// The tar crate reads sparse files only as a stream: this finds the segments' positions
/// so reads can `pread` them. `file_pos` is where the entry's extension headers begin.
fn sparse_map(header: &tar::Header, layer: &File, file_pos: u64) -> io::Result<SparseMap> {
    use std::os::unix::fs::FileExt;
    let gnu = header.as_gnu().ok_or_else(|| io::Error::other("a sparse entry without a GNU header"))?;
    let mut segments = Vec::new();
    let mut push = |block: &tar::GnuSparseHeader| -> io::Result<()> {
        if !block.is_empty() {
            segments.push((block.offset()?, block.length()?));
        }
        Ok(())
    };
    for block in &gnu.sparse {
        push(block)?;
    }
    let mut data_start = file_pos;
    let mut extended = gnu.is_extended();
    while extended {
        let mut ext = tar::GnuExtSparseHeader::new();
        layer.read_exact_at(ext.as_mut_bytes(), data_start)?;
        data_start += 512;
        for block in &ext.sparse {
            push(block)?;
        }
        extended = ext.is_extended();
    }
    let real_size = gnu.real_size()?;
    let mut end = 0;
    for (offset, len) in &segments {
        if *offset < end || offset.checked_add(*len).is_none_or(|e| e > real_size) {
            return Err(io::Error::other("segments overlap, are out of order or pass the end of the file"));
        }
        end = offset + len;
    }
    Ok(SparseMap { real_size, data_start, segments })
}

/// Byte strings as hex in the cached index: far quicker to parse than JSON arrays of numbers.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}
