//! Turning an overlay upperdir into a layer: overlay whiteouts (0/0 character
//! devices) become `.wh.NAME` entries, opaque directories get `.wh..wh..opq`,
//! and hard links, symlinks, modes, owners, xattrs and empty directories are kept.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::ExecError;
use super::layer::{Attrs, LayerWriter};
use crate::oci::Digest;
use crate::store::Store;

/// The extended attributes of `path` that belong in a layer, sorted.
pub(crate) fn list_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else { return Vec::new() };
    let mut out = Vec::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        // Overlay's own bookkeeping never belongs in a layer.
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") || name.starts_with("user.strata.") {
            continue;
        }
        if let Some(value) = crate::store::snapshot::xattr_get(path, &name) {
            out.push((name, value));
        }
    }
    out.sort();
    out
}

/// Whether overlay marked this upper directory opaque.
pub(crate) fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| crate::store::snapshot::xattr_get(path, name).is_some_and(|v| v == b"y"))
}

/// Writes the changes recorded in `upper` as a layer; `skip` lists image paths
/// (no leading `/`) that are sandbox mount points, not changes.
/// `ids` maps the owners the sandbox wrote back to container ids (rootless builds).
pub fn upper_to_layer(
    store: &Store,
    upper: &Path,
    skip: &[String],
    clamp: Option<u64>,
    ids: &Option<super::idmap::IdMap>,
) -> Result<(Digest, u64), ExecError> {
    let mut layer = LayerWriter::new(store, clamp)?;
    let mut first_of_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let walker = walkdir::WalkDir::new(upper).min_depth(1).sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(|e| ExecError::Io { action: "read changes in", path: upper.to_path_buf(), source: e.into() })?;
        let real: PathBuf = entry.path().to_path_buf();
        let rel = real.strip_prefix(upper).unwrap_or(&real).to_path_buf();
        if skip.iter().any(|s| Path::new(s) == rel) {
            continue;
        }
        let meta = fs::symlink_metadata(&real).map_err(|e| ExecError::io("stat", &real, e))?;
        let ft = meta.file_type();
        let attrs = Attrs { mode: meta.mode() & 0o7777, uid: meta.uid().into(), gid: meta.gid().into(), mtime: meta.mtime().max(0) as u64 }
            .mapped(ids);
        let wrap = |e: std::io::Error| ExecError::WriteLayer { path: rel.to_path_buf(), source: e };
        if ft.is_char_device() && meta.rdev() == 0 {
            layer.whiteout(&rel, attrs).map_err(wrap)?;
            continue;
        }
        layer.xattrs(&list_xattrs(&real)).map_err(wrap)?;
        if ft.is_dir() {
            layer.dir(&rel, attrs).map_err(wrap)?;
            if is_opaque(&real) {
                layer.file(rel.join(".wh..wh..opq"), Attrs { mode: 0o644, ..attrs }, 0, std::io::empty()).map_err(wrap)?;
            }
        } else {
            layer.object(&rel, &real, &meta, attrs, &mut first_of_inode).map_err(wrap)?;
        }
    }
    Ok(layer.finish()?)
}
