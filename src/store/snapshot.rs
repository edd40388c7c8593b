//! Unpacked layer snapshots under `strata/snapshots/<diff_id hex>/`, made once
//! per layer on demand. Whiteouts are stored the way overlayfs reads them
//! (a 0/0 character device; `trusted.overlay.opaque=y` on opaque directories)
//! so a stack of snapshots can be an overlay mount's lowerdirs as it is.
//! Where that is not permitted (no root), a whiteout is an empty `.wh.NAME`
//! file and an opaque directory holds `.wh..wh..opq`; the rootfs view reads both.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::{Result, Store, StoreError, io_err};
use crate::oci::{Descriptor, Digest, DigestWriter};

pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Wraps a layer blob in the decompressor its first bytes call for.
pub fn decompress(mut file: impl Read + 'static) -> io::Result<Box<dyn Read>> {
    let mut magic = [0u8; 6];
    let mut filled = 0;
    while filled < magic.len() {
        let n = file.read(&mut magic[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = io::Cursor::new(magic[..filled].to_vec()).chain(file);
    Ok(match &magic[..filled] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(head)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::new(head)?),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::MultiBzDecoder::new(head)),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => Box::new(xz2::read::XzDecoder::new_multi_decoder(head)),
        _ => Box::new(head),
    })
}

/// Turns a path from a layer tar into a relative path, refusing `..` and absolute escapes.
pub fn clean_layer_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

impl Store {
    fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.strata_dir("snapshots").join(diff_id.hex())
    }

    /// The unpacked snapshot of a layer, unpacking it first if needed.
    pub fn snapshot(&self, layer: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
        let dir = self.snapshot_dir(diff_id);
        if dir.exists() {
            return Ok(dir);
        }
        self.ensure_blob(&layer.digest)?;
        let tmp_root = self.tmp_dir();
        let tmp = tempfile::Builder::new().prefix("snapshot-").tempdir_in(&tmp_root).map_err(io_err("create temp dir in", &tmp_root))?;
        let blob = BufReader::with_capacity(256 * 1024, self.open_blob(&layer.digest)?);
        let unpack_err = |message: String| StoreError::Unpack { digest: layer.digest.clone(), message };
        let reader = decompress(blob).map_err(|e| unpack_err(e.to_string()))?;
        if &layer.digest == diff_id {
            // An uncompressed layer: its blob is its diff_id, verified when it was stored.
            unpack_layer(reader, tmp.path()).map_err(|e| unpack_err(e.to_string()))?;
        } else {
            // A compressed one (pulled, loaded) is trusted only once its content hashes to the diff_id
            // the config claims; a lying layer is refused before its snapshot is in place.
            let mut hashing = HashingReader { inner: reader, hasher: DigestWriter::new(io::sink()) };
            unpack_layer(&mut hashing, tmp.path()).map_err(|e| unpack_err(e.to_string()))?;
            io::copy(&mut hashing, &mut io::sink()).map_err(|e| unpack_err(e.to_string()))?;
            let (actual, _, _) = hashing.hasher.finish();
            if &actual != diff_id {
                return Err(unpack_err(format!("uncompresses to {actual}, not its diff_id {diff_id}")));
            }
        }
        match fs::rename(tmp.path(), &dir) {
            Ok(()) => {
                // The directory now belongs to the store; keep the guard from removing it.
                let _ = tmp.keep();
                Ok(dir)
            }
            // Another build unpacked the same layer first.
            Err(_) if dir.exists() => Ok(dir),
            Err(e) => Err(StoreError::Io { action: "rename snapshot into place", path: dir, source: e }),
        }
    }

    /// Removes snapshots whose layer is not in `live`; returns the bytes freed.
    pub(crate) fn remove_snapshots_except(&self, live: &HashSet<Digest>) -> Result<u64> {
        let mut freed = 0;
        for (diff_id, dir, size) in self.snapshots()? {
            if !diff_id.is_some_and(|d| live.contains(&d)) {
                let retired = self.retire_snapshot(&dir)?;
                fs::remove_dir_all(&retired).map_err(io_err("remove snapshot", &retired))?;
                freed += size;
            }
        }
        Ok(freed)
    }

    /// Moves a snapshot out of `strata/snapshots/` into the temp folder, in one
    /// rename, before it is removed: a removal killed half way then leaves a
    /// temp folder, never a snapshot missing files that a build would trust.
    pub(crate) fn retire_snapshot(&self, dir: &Path) -> Result<PathBuf> {
        let tmp_root = self.tmp_dir();
        let retired =
            tempfile::Builder::new().prefix("retired-").tempdir_in(&tmp_root).map_err(io_err("create temp dir in", &tmp_root))?.keep();
        let target = retired.join("snapshot");
        fs::rename(dir, &target).map_err(io_err("move snapshot out of place", dir))?;
        Ok(retired)
    }

    /// Frees every snapshot but those of `keep` (they are remade from their
    /// layers when a build needs them again); returns the bytes freed.
    pub fn prune_snapshots(&self, keep: &HashSet<Digest>) -> Result<u64> {
        let _gc = self.lock_gc()?;
        self.remove_snapshots_except(keep)
    }

    /// Every snapshot: its layer's diff_id (None for a stray folder), its folder and the bytes of its files.
    pub fn snapshots(&self) -> Result<Vec<(Option<Digest>, PathBuf, u64)>> {
        let dir = self.strata_dir("snapshots");
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            let diff_id = Digest::from_hex(&entry.file_name().to_string_lossy()).ok();
            found.push((diff_id, entry.path(), dir_size(&entry.path())));
        }
        Ok(found)
    }
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: DigestWriter<io::Sink>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.hasher, &buf[..n])?;
        Ok(n)
    }
}

/// The bytes of the regular files under `path`.
pub fn dir_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path).into_iter().flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// Unpacks one layer tar into `dest`, turning OCI whiteouts into overlay ones.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let mut dirs = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let path = clean_layer_path(&raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("path {} leaves the layer root", raw.display())))?;
        let Some(name) = path.file_name().map(OsStr::to_owned) else { continue };
        if name == OsStr::new(OPAQUE_MARKER) {
            mark_opaque(&parent_inside(dest, &path)?)?;
            continue;
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            make_whiteout(&parent_inside(dest, &path)?.join(OsStr::from_bytes(hidden)))?;
            continue;
        }
        if entry.header().entry_type().is_dir() {
            dirs.push((dest.join(&path), entry.header().mtime()?));
        }
        if !entry.unpack_in(dest)? {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("path {} leaves the layer root", raw.display())));
        }
    }
    // Children were written after their directory; put the directory's own times back.
    for (dir, mtime) in dirs.into_iter().rev() {
        let time = nix::sys::time::TimeSpec::new(mtime as i64, 0);
        let _ = nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &dir, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink);
    }
    Ok(())
}

/// The directory in `dest` that holds `rel`, made if missing. A parent that is
/// a symlink is refused: through it, a whiteout could remove a file outside.
fn parent_inside(dest: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut dir = dest.to_path_buf();
    for component in rel.parent().unwrap_or(Path::new("")).components() {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() { "a symlink" } else { "not a directory" };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("path {} passes through {}, which is {what}", rel.display(), dir.strip_prefix(dest).unwrap_or(&dir).display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

fn mark_opaque(dir: &Path) -> io::Result<()> {
    if xattr_set(dir, OPAQUE_XATTR, b"y").is_err() {
        fs::write(dir.join(OPAQUE_MARKER), b"")?;
    }
    Ok(())
}

fn make_whiteout(path: &Path) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(path)?;
        } else {
            fs::remove_file(path)?;
        }
    }
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    if mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).is_err() {
        let marker = path.with_file_name(format!("{WHITEOUT_PREFIX}{}", path.file_name().unwrap_or_default().to_string_lossy()));
        fs::write(marker, b"")?;
    }
    Ok(())
}

/// Sets an extended attribute on `path` itself (not a symlink's target).
pub(crate) fn xattr_set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    xattr::set(path, name, value)
}

/// Reads an extended attribute of `path` itself, if set.
pub(crate) fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).ok().flatten()
}

/// Whether `meta` is an overlay whiteout (a 0/0 character device).
pub(crate) fn is_whiteout_device(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    }

    /// A layer tar: `link` -> `target` (a symlink), then an empty `path`.
    fn layer_through_symlink(target: &Path, path: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_link(&mut header(tar::EntryType::Symlink, 0o777), "link", target).expect("symlink entry");
        builder.append_data(&mut header(tar::EntryType::Regular, 0o644), path, io::empty()).expect("file entry");
        builder.into_inner().expect("tar")
    }

    #[test]
    fn a_compressed_layer_that_does_not_match_its_diff_id_leaves_no_snapshot() {
        use std::io::Write;
        let root = tempfile::tempdir().expect("temp dir");
        let store = Store::open(root.path()).expect("store");
        let tar = layer_through_symlink(Path::new("target"), "file");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let (digest, size) = store.write_blob(&gz.finish().expect("gzip")).expect("blob");
        let layer =
            Descriptor { media_type: crate::oci::MEDIA_LAYER_GZIP.into(), digest, size, annotations: Default::default(), platform: None };
        let lie = Digest::of(b"another layer");
        let error = store.snapshot(&layer, &lie).expect_err("a lying diff_id");
        assert!(error.to_string().contains("not its diff_id"), "{error}");
        assert!(!store.snapshot_dir(&lie).exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).expect("tmp").count(), 0);
        let dir = store.snapshot(&layer, &Digest::of(&tar)).expect("the true diff_id");
        assert!(dir.join("file").exists());
    }

    #[test]
    fn whiteouts_and_opaque_markers_never_reach_through_a_symlink() {
        let outside = tempfile::tempdir().expect("temp dir");
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep me").expect("victim");
        for path in ["link/.wh.victim", "link/.wh..wh..opq"] {
            let dest = tempfile::tempdir().expect("temp dir");
            let error = unpack_layer(layer_through_symlink(outside.path(), path).as_slice(), dest.path()).expect_err(path);
            assert!(error.to_string().contains("passes through link, which is a symlink"), "{path}: {error:?}");
            assert_eq!(fs::read_to_string(&victim).expect("victim is still there"), "keep me", "{path}");
            assert!(xattr_get(outside.path(), OPAQUE_XATTR).is_none() && !outside.path().join(OPAQUE_MARKER).exists(), "{path}");
        }
    }

    #[test]
    fn whiteouts_in_real_directories_still_apply() {
        let dest = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dest.path().join("dir/sub")).expect("dir");
        fs::write(dest.path().join("dir/sub/gone"), "x").expect("file");
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_data(&mut header(tar::EntryType::Regular, 0o644), "dir/sub/.wh.gone", io::empty()).expect("whiteout entry");
        builder.append_data(&mut header(tar::EntryType::Regular, 0o644), "new/deep/.wh..wh..opq", io::empty()).expect("opaque entry");
        unpack_layer(builder.into_inner().expect("tar").as_slice(), dest.path()).expect("unpack");
        let gone = fs::symlink_metadata(dest.path().join("dir/sub/gone"));
        let marker = dest.path().join("dir/sub/.wh.gone");
        assert!(gone.is_ok_and(|m| is_whiteout_device(&m)) || marker.exists(), "the whiteout was not applied");
        assert!(dest.path().join("new/deep").is_dir());
    }

    #[test]
    fn prune_killed_while_removing_a_snapshot_leaves_a_temp_folder_not_a_partial_snapshot() {
        let root = tempfile::tempdir().expect("temp dir");
        let store = Store::open(root.path()).expect("store");
        let (diff_id, _) = store.write_blob(b"a layer").expect("blob");
        let snapshot = store.snapshot_dir(&diff_id);
        fs::create_dir_all(snapshot.join("etc")).expect("snapshot");
        fs::write(snapshot.join("etc/passwd"), "root").expect("file");
        // The removal's first step, then the kill: nothing half-removed stays where builds look.
        let retired = store.retire_snapshot(&snapshot).expect("retire");
        assert!(!snapshot.exists());
        // The half-removed snapshot is in this process's temp folder, which the next open sweeps once the process is gone.
        assert!(retired.starts_with(store.tmp_dir()), "{}", retired.display());
        assert!(store.verify(false).expect("verify").problems.is_empty(), "a live writer's temp folder is not a problem");
    }
}
