//! The snapshotter for where overlayfs cannot be used: the merged image is
//! copied into a plain directory, the command runs there, and a tree diff
//! against the image gives the same layer the overlay upperdir would:
//! new and changed paths in full, removed ones as whiteouts.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::ExecError;
use super::diff::list_xattrs;
use super::layer::{Attrs, LayerWriter};
use crate::oci::Digest;
use crate::store::Store;
use crate::store::rootfs::RootfsView;
use crate::store::snapshot::{xattr_get, xattr_set};

fn set_times_and_owner(path: &Path, meta: &fs::Metadata) {
    let _ = std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()));
    let time = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    let _ = nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink);
}

/// Marks every directory of a copied root; one found later without it was
/// removed and made again, which the layer records as opaque, as overlayfs does.
const COPIED_MARK: &str = "user.strata.copied";

/// Whether a copied root can tell which directories a step removed and made again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirMarks {
    /// Every copied directory carries `COPIED_MARK`: one found without it was remade (opaque).
    Marked,
    /// The file system refused the mark (or nothing was copied): no directory counts as remade.
    #[default]
    Unmarked,
}

/// Copies the merged image into `dest`, keeping owners, modes, mtimes, links and devices.
pub fn materialize(view: &RootfsView, dest: &Path) -> Result<DirMarks, ExecError> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut marked = true;
    copy_dir(view, Path::new(""), dest, &mut links, &mut marked)?;
    if let Some(meta) = view.lookup(Path::new("")).and_then(|r| fs::metadata(r).ok()) {
        let _ = fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    Ok(if marked { DirMarks::Marked } else { DirMarks::Unmarked })
}

fn copy_dir(
    view: &RootfsView,
    rel: &Path,
    dest: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
    marked: &mut bool,
) -> Result<(), ExecError> {
    for (name, real) in view.read_dir(rel) {
        let child_rel = rel.join(&name);
        let target = dest.join(&child_rel);
        let meta = fs::symlink_metadata(&real).map_err(|e| ExecError::io("stat", &real, e))?;
        let ft = meta.file_type();
        let io = |action, e| ExecError::io(action, &target, e);
        if ft.is_dir() {
            fs::create_dir(&target).map_err(|e| io("create", e))?;
            *marked &= xattr_set(&target, COPIED_MARK, b"1").is_ok();
            copy_dir(view, &child_rel, dest, links, marked)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(|e| io("chmod", e))?;
        } else if ft.is_symlink() {
            let link = fs::read_link(&real).map_err(|e| ExecError::io("read link", &real, e))?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| io("create symlink", e))?;
        } else if ft.is_file() {
            let inode = (meta.dev(), meta.ino());
            if meta.nlink() > 1
                && let Some(first) = links.get(&inode)
            {
                fs::hard_link(first, &target).map_err(|e| io("link", e))?;
                continue;
            }
            fs::copy(&real, &target).map_err(|e| io("copy", e))?;
            links.insert(inode, target.clone());
        } else {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if ft.is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else if ft.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else {
                continue;
            };
            let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
            nix::sys::stat::mknod(&target, kind, mode, meta.rdev()).map_err(|e| io("create device", e.into()))?;
        }
        for (name, value) in list_xattrs(&real) {
            let _ = xattr_set(&target, &name, &value);
        }
        set_times_and_owner(&target, &meta);
    }
    let dir = dest.join(rel);
    if let Some(meta) = view.lookup(rel).and_then(|r| fs::symlink_metadata(r).ok()) {
        set_times_and_owner(&dir, &meta);
    }
    Ok(())
}

fn attrs(meta: &fs::Metadata) -> Attrs {
    Attrs { mode: meta.mode() & 0o7777, uid: meta.uid().into(), gid: meta.gid().into(), mtime: meta.mtime().max(0) as u64 }
}

fn changed(old: &fs::Metadata, new: &fs::Metadata, old_path: &Path, new_path: &Path) -> bool {
    if old.file_type() != new.file_type() {
        return true;
    }
    // A directory's mtime moves whenever an entry is added or removed; that shows as the entry itself.
    let (a, b) = (attrs(old), attrs(new));
    if new.is_dir() {
        return (a.mode, a.uid, a.gid) != (b.mode, b.uid, b.gid) || list_xattrs(old_path) != list_xattrs(new_path);
    }
    if a != b || list_xattrs(old_path) != list_xattrs(new_path) {
        return true;
    }
    if new.file_type().is_symlink() {
        return fs::read_link(old_path).ok() != fs::read_link(new_path).ok();
    }
    new.is_file() && (old.len() != new.len() || old.mtime_nsec() != new.mtime_nsec())
}

/// Writes what differs between the image (`view`) and the copy at `root` as a layer.
pub fn diff_to_layer(
    store: &Store,
    view: &RootfsView,
    root: &Path,
    marks: DirMarks,
    skip: &[String],
    clamp: Option<u64>,
    ids: &Option<super::idmap::IdMap>,
) -> Result<(Digest, u64), ExecError> {
    let layer = LayerWriter::new(store, clamp)?;
    let mut walk = Walk { layer, first_of_inode: HashMap::new(), pending: Vec::new(), marks, ids: *ids };
    diff_dir(view, root, Path::new(""), skip, &mut walk)?;
    Ok(walk.layer.finish()?)
}

/// The diff in progress. Directories whose own attributes did not change are
/// written only once something below them is, as overlay copies them up.
struct Walk {
    layer: LayerWriter,
    /// Owners as the container sees them (rootless).
    ids: Option<super::idmap::IdMap>,
    marks: DirMarks,
    first_of_inode: HashMap<(u64, u64), std::path::PathBuf>,
    pending: Vec<(std::path::PathBuf, Attrs)>,
}

impl Walk {
    fn flush(&mut self) -> std::io::Result<()> {
        for (path, attrs) in self.pending.drain(..) {
            self.layer.dir(&path, attrs)?;
        }
        Ok(())
    }
}

fn diff_dir(view: &RootfsView, root: &Path, rel: &Path, skip: &[String], walk: &mut Walk) -> Result<(), ExecError> {
    let old: HashMap<_, _> = view.read_dir(rel).into_iter().collect();
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir).map_err(|e| ExecError::io("list", &dir, e))?.flatten().map(|e| e.file_name()).collect();
    for name in old.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let path = child.clone();
        if skip.iter().any(|s| Path::new(s) == path) {
            continue;
        }
        let wrap = |e: std::io::Error| ExecError::WriteLayer { path: path.to_path_buf(), source: e };
        let new_path = root.join(&child);
        let Ok(new) = fs::symlink_metadata(&new_path) else {
            walk.flush().map_err(wrap)?;
            walk.layer.whiteout(&path, Attrs { mode: 0o644, uid: 0, gid: 0, mtime: 0 }).map_err(wrap)?;
            continue;
        };
        let old_meta = old.get(&name).and_then(|p| fs::symlink_metadata(p).ok().map(|m| (p.clone(), m)));
        let is_new_or_changed = match &old_meta {
            Some((old_path, old)) => changed(old, &new, old_path, &new_path),
            None => true,
        };
        let a = attrs(&new).mapped(&walk.ids);
        let ft = new.file_type();
        if ft.is_dir() {
            let depth = walk.pending.len();
            walk.pending.push((path.clone(), a));
            let remade = walk.marks == DirMarks::Marked
                && old_meta.as_ref().is_some_and(|(_, m)| m.is_dir())
                && xattr_get(&new_path, COPIED_MARK).is_none();
            if is_new_or_changed || remade {
                walk.pending.pop();
                walk.flush().map_err(wrap)?;
                walk.layer.xattrs(&list_xattrs(&new_path)).map_err(wrap)?;
                walk.layer.dir(&path, a).map_err(wrap)?;
            }
            if remade {
                let marker = path.join(".wh..wh..opq");
                walk.layer.file(&marker, Attrs { mode: 0o644, ..a }, 0, std::io::empty()).map_err(wrap)?;
                // Below an opaque directory nothing of the image shows: every entry is new.
                diff_dir(&RootfsView::default(), root, &child, skip, walk)?;
                walk.pending.truncate(depth);
                continue;
            }
            diff_dir(view, root, &child, skip, walk)?;
            walk.pending.truncate(depth);
            continue;
        }
        if !is_new_or_changed {
            continue;
        }
        walk.flush().map_err(wrap)?;
        walk.layer.xattrs(&list_xattrs(&new_path)).map_err(wrap)?;
        walk.layer.object(&path, &new_path, &new, a, &mut walk.first_of_inode).map_err(wrap)?;
    }
    Ok(())
}
