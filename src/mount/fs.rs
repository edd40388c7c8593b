//! The read-only FUSE filesystem over a merged tree: answers from memory,
//! reads file data with `pread` from the layers' open data files.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use super::index::EntryKind;
use super::tree::{Node, Tree};

/// Read-only: the kernel may cache everything for long.
const TTL: Duration = Duration::from_secs(3600);

pub struct ImageFs {
    tree: Tree,
    /// One open data file per layer: reads never reopen, and a removed image stays readable.
    layers: Vec<File>,
}

impl ImageFs {
    pub fn new(tree: Tree, layers: Vec<File>) -> ImageFs {
        ImageFs { tree, layers }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let time = if node.mtime >= 0 {
            UNIX_EPOCH + Duration::from_secs(node.mtime as u64)
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(node.mtime.unsigned_abs())).unwrap_or(UNIX_EPOCH)
        };
        FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: file_type(node.kind),
            perm: (node.mode & 0o7777) as u16,
            nlink: node.nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            blksize: 128 * 1024,
            flags: 0,
        }
    }

    fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(data.len() as u32);
        } else if data.len() <= size as usize {
            reply.data(data);
        } else {
            reply.error(Errno::ERANGE);
        }
    }
}

/// Fills `buf` with a sparse file's bytes from `offset`: segments from the layer, zeros between.
fn read_sparse(file: &File, start: u64, segments: &[(u64, u64)], offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let end = offset + buf.len() as u64;
    let mut stored = start;
    for &(seg_offset, seg_len) in segments {
        let seg_end = seg_offset + seg_len;
        if seg_offset >= end {
            break;
        }
        if seg_end > offset {
            let (from, to) = (seg_offset.max(offset), seg_end.min(end));
            let target = &mut buf[(from - offset) as usize..(to - offset) as usize];
            file.read_exact_at(target, stored + (from - seg_offset))?;
        }
        stored += seg_len;
    }
    Ok(())
}

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File | EntryKind::Hardlink => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Char => FileType::CharDevice,
        EntryKind::Block => FileType::BlockDevice,
        EntryKind::Fifo => FileType::NamedPipe,
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        // Listings carry attributes, so walking the tree needs no lookup per entry.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        // Symlink targets never change: let the kernel keep them.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        // `open`/`opendir` answer ENOSYS once (see there) and are never asked again.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_NO_OPEN_SUPPORT | fuser::InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let child = self.tree.nodes.get(&parent.0).and_then(|p| p.children.get(name)).copied();
        match child.and_then(|c| self.tree.nodes.get(&c).map(|n| (c, n))) {
            Some((ino, node)) => reply.entry(&TTL, &self.attr(ino, node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.nodes.get(&ino.0) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree.nodes.get(&ino.0) {
            Some(node) if node.kind == EntryKind::Symlink => reply.data(&node.link),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.tree.nodes.get(&ino.0) {
            // Reads need no per-open state: with ENOSYS the kernel stops sending opens
            // (a round trip saved per file) and keeps the page cache, as KEEP_CACHE would.
            // The mount itself is read-only, so writes are refused before they get here.
            Some(_) => reply.error(Errno::ENOSYS),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.nodes.get(&ino.0) {
            Some(_) => reply.error(Errno::ENOSYS),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(node) = self.tree.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
        if offset >= node.size {
            return reply.data(&[]);
        }
        let len = (size as u64).min(node.size - offset) as usize;
        let mut buf = vec![0u8; len];
        let Some((file, start)) = node.data.and_then(|(layer, start)| Some((self.layers.get(layer)?, start))) else {
            return reply.error(Errno::EIO);
        };
        let result = if node.sparse.is_empty() {
            file.read_exact_at(&mut buf, start + offset)
        } else {
            read_sparse(file, start, &node.sparse, offset, &mut buf)
        };
        match result {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(node) = self.tree.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
        // Offsets are positions in the sorted child list, so they stay valid across calls.
        let dots = [(ino.0, FileType::Directory, OsStr::new(".")), (node.parent, FileType::Directory, OsStr::new(".."))];
        let children = node.children.iter().map(|(name, child)| {
            let kind = self.tree.nodes.get(child).map_or(FileType::RegularFile, |c| file_type(c.kind));
            (*child, kind, name.as_os_str())
        });
        for (i, (child, kind, name)) in dots.into_iter().chain(children).enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: fuser::ReplyDirectoryPlus) {
        let Some(node) = self.tree.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
        let dots = [(ino.0, OsStr::new(".")), (node.parent, OsStr::new(".."))];
        let children = node.children.iter().map(|(name, child)| (*child, name.as_os_str()));
        for (i, (child, name)) in dots.into_iter().chain(children).enumerate().skip(offset as usize) {
            let Some(child_node) = self.tree.nodes.get(&child) else { continue };
            if reply.add(INodeNo(child), (i + 1) as u64, name, &TTL, &self.attr(child, child_node), Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks: u64 = self.tree.nodes.values().map(|n| n.size.div_ceil(4096)).sum();
        reply.statfs(blocks, 0, 0, self.tree.nodes.len() as u64, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.tree.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
        match node.xattrs.iter().find(|(k, _)| k.as_bytes() == name.as_bytes()) {
            Some((_, value)) => Self::xattr_reply(value, size, reply),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.tree.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
        let mut names = Vec::new();
        for (name, _) in &node.xattrs {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        Self::xattr_reply(&names, size, reply);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: fuser::ReplyEmpty) {
        if mask.bits() & libc::W_OK != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.tree.nodes.get(&ino.0) {
            Some(_) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }
}
