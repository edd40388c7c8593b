//! Writing one layer: a deterministic tar (sorted by the caller, normalised
//! headers, mtimes clamped) streamed into a store blob while it is hashed.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::oci::Digest;
use crate::store::{BlobWriter, Store, StoreError};

/// Ownership and permissions of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Attrs {
    /// With `ids` (rootless), the owners as the container sees them.
    pub fn mapped(self, ids: &Option<super::idmap::IdMap>) -> Attrs {
        match ids {
            Some(map) => {
                Attrs { uid: map.to_container(self.uid as u32, true).into(), gid: map.to_container(self.gid as u32, false).into(), ..self }
            }
            None => self,
        }
    }
}

/// A layer tar being written into the store.
pub struct LayerWriter {
    builder: tar::Builder<BlobWriter>,
    clamp: Option<u64>,
}

impl LayerWriter {
    /// Starts a layer; with `clamp` (SOURCE_DATE_EPOCH), no mtime is later than it.
    pub fn new(store: &Store, clamp: Option<u64>) -> Result<LayerWriter, StoreError> {
        let mut builder = tar::Builder::new(store.blob_writer()?);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        Ok(LayerWriter { builder, clamp })
    }

    fn header(&self, kind: tar::EntryType, attrs: Attrs, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(attrs.mode & 0o7777);
        header.set_uid(attrs.uid);
        header.set_gid(attrs.gid);
        header.set_mtime(self.clamp.map_or(attrs.mtime, |c| attrs.mtime.min(c)));
        header.set_size(size);
        header
    }

    pub fn dir(&mut self, path: impl AsRef<Path>, attrs: Attrs) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Directory, attrs, 0);
        let mut name = path.as_ref().as_os_str().to_owned();
        if !name.as_bytes().ends_with(b"/") {
            name.push("/");
        }
        self.builder.append_data(&mut header, name, io::empty())
    }

    pub fn file(&mut self, path: impl AsRef<Path>, attrs: Attrs, size: u64, data: impl Read) -> io::Result<()> {
        let path = path.as_ref();
        let mut header = self.header(tar::EntryType::Regular, attrs, size);
        // A short read (file shrank while copying) must fail, not write a bad tar.
        let mut data = data.take(size);
        let mut counted = CountingReader { inner: &mut data, count: 0 };
        self.builder.append_data(&mut header, path, &mut counted)?;
        if counted.count != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{}: file changed size while being copied", path.display())));
        }
        Ok(())
    }

    pub fn symlink(&mut self, path: impl AsRef<Path>, target: impl AsRef<Path>, attrs: Attrs) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Symlink, attrs, 0);
        self.builder.append_link(&mut header, path, target)
    }

    pub fn hardlink(&mut self, path: impl AsRef<Path>, target: impl AsRef<Path>, attrs: Attrs) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Link, attrs, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// A device node or fifo.
    pub fn special(&mut self, path: impl AsRef<Path>, kind: tar::EntryType, attrs: Attrs, major: u32, minor: u32) -> io::Result<()> {
        let mut header = self.header(kind, attrs, 0);
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
        self.builder.append_data(&mut header, path, io::empty())
    }

    /// Extended attributes for the next entry, as PAX `SCHILY.xattr.` records.
    pub fn xattrs(&mut self, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice())).collect();
        self.builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    /// Writes the object at `real` as `path` (no directories): a regular file, or a
    /// hard link to the first path written for its inode; a symlink; a device or
    /// fifo. Sockets have no place in a layer and are skipped.
    pub fn object(
        &mut self,
        path: &Path,
        real: &Path,
        meta: &std::fs::Metadata,
        attrs: Attrs,
        links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
    ) -> io::Result<()> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(real)?;
            return self.symlink(path, target, attrs);
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                let inode = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&inode) {
                    return self.hardlink(path, first.clone(), attrs);
                }
                links.insert(inode, path.to_path_buf());
            }
            let file = std::fs::File::open(real)?;
            return self.file(path, attrs, meta.len(), io::BufReader::with_capacity(256 * 1024, file));
        }
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            return Ok(());
        };
        let (major, minor) = (nix::sys::stat::major(meta.rdev()) as u32, nix::sys::stat::minor(meta.rdev()) as u32);
        self.special(path, kind, attrs, major, minor)
    }

    /// An OCI whiteout removing `path` from the layers below.
    pub fn whiteout(&mut self, path: impl AsRef<Path>, attrs: Attrs) -> io::Result<()> {
        let path = path.as_ref();
        let mut name = std::ffi::OsString::from(".wh.");
        name.push(path.file_name().unwrap_or_default());
        let marker = path.parent().map_or_else(|| PathBuf::from(&name), |dir| dir.join(&name));
        let mut header = self.header(tar::EntryType::Regular, Attrs { mode: 0o644, ..attrs }, 0);
        self.builder.append_data(&mut header, marker, io::empty())
    }

    /// Ends the tar and stores it; returns the diff_id (= blob digest, uncompressed) and size.
    pub fn finish(self) -> Result<(Digest, u64), StoreError> {
        let writer =
            self.builder.into_inner().map_err(|e| StoreError::Io { action: "finish layer tar", path: "<layer>".into(), source: e })?;
        let blob = writer.commit(None)?;
        Ok((blob.digest, blob.size))
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
