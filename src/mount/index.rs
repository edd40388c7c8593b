//! A layer's index: every tar header with where its data starts in the
//! layer's uncompressed bytes. Made once per layer (a compressed layer gets
//! an uncompressed copy first) and cached as JSON under `strata/mount-index/`.

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
pub enum Kind {
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
    pub kind: Kind,
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
    /// For GNU sparse files: the expanded data's own file, made once.
    pub data_file: Option<PathBuf>,
}

/// A layer's entries and the file holding its uncompressed bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct LayerIndex {
    pub data: PathBuf,
    pub entries: Vec<IndexEntry>,
}

/// Bumped when the cached format changes.
const FORMAT: &str = "v2";

/// The index of one layer, from the cache or made now.
pub fn layer_index(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<LayerIndex, MountError> {
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
    let index = build(&data, &dir.join(format!("{}.sparse", diff_id.hex())))
        .map_err(|e| MountError::Layer { digest: layer.digest.clone(), message: e })?;
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
    let mut writer = tempfile::NamedTempFile::new_in(dir).map_err(|e| MountError::io("create temp file in", dir, e))?;
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

fn build(data: &Path, sparse_dir: &Path) -> Result<LayerIndex, String> {
    let file = File::open(data).map_err(|e| format!("open {}: {e}", data.display()))?;
    let total = file.metadata().map_err(|e| e.to_string())?.len();
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
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            _ => continue,
        };
        let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let link = if kind == Kind::Hardlink {
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
            data_file: None,
        };
        if kind == Kind::File && header.entry_type() == tar::EntryType::GNUSparse {
            // Sparse data is not contiguous in the tar: expand it once into its own file.
            fs::create_dir_all(sparse_dir).map_err(|e| e.to_string())?;
            let target = sparse_dir.join(n.to_string());
            let mut out = File::create(&target).map_err(|e| e.to_string())?;
            index_entry.size = copy_with_holes(&mut entry, &mut out).map_err(|e| format!("expand sparse {}: {e}", path.display()))?;
            index_entry.offset = 0;
            index_entry.data_file = Some(target);
        } else if kind == Kind::File && offset + size > total {
            return Err(format!("{} is truncated: its data ends past the end of the layer", path.display()));
        }
        entries.push(index_entry);
    }
    Ok(LayerIndex { data: data.to_path_buf(), entries })
}

/// Copies `reader` into `out`, seeking over all-zero blocks so the copy stays sparse.
fn copy_with_holes(reader: &mut impl Read, out: &mut File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(filled as i64))?;
        } else {
            out.write_all(&buf[..filled])?;
        }
        total += filled as u64;
    }
    out.set_len(total)?;
    Ok(total)
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
