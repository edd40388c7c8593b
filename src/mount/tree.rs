//! The merged tree of an image: layers applied bottom to top, each layer's
//! whiteouts first (they speak of the layers below, in whatever order the
//! tar lists them), then its entries. Hard links share one inode.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use super::index::{EntryKind, IndexEntry, LayerIndex};

/// An inode of the merged tree.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    pub nlink: u32,
    /// Which layer's data file holds the content, and where.
    pub data: Option<(usize, u64)>,
    /// A sparse file's data segments (offset in the file, length), stored back to back at `data`.
    pub sparse: Vec<(u64, u64)>,
    pub link: Vec<u8>,
    pub rdev: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Sorted children of a directory, by name.
    pub children: BTreeMap<OsString, u64>,
    pub parent: u64,
}

/// Inodes by number; 1 is the root.
#[derive(Debug)]
pub struct Tree {
    pub nodes: HashMap<u64, Node>,
    next: u64,
}

pub const ROOT: u64 = 1;

fn dir_node(parent: u64) -> Node {
    Node {
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        nlink: 2,
        data: None,
        sparse: Vec::new(),
        link: Vec::new(),
        rdev: 0,
        xattrs: Vec::new(),
        children: BTreeMap::new(),
        parent,
    }
}

impl Tree {
    fn empty() -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, dir_node(ROOT));
        Tree { nodes, next: ROOT + 1 }
    }

    /// The union of `layers` (bottom first), with whiteouts applied.
    pub fn merged<'a>(layers: impl IntoIterator<Item = &'a LayerIndex>) -> Tree {
        let mut tree = Tree::empty();
        for (i, layer) in layers.into_iter().enumerate() {
            tree.apply(i, layer, true);
        }
        tree.count_dir_links();
        tree
    }

    /// One layer on its own, whiteouts shown as the files they are.
    pub fn single(layer: &LayerIndex, index: usize) -> Tree {
        let mut tree = Tree::empty();
        tree.apply(index, layer, false);
        tree.count_dir_links();
        tree
    }

    /// A directory's link count is 2 plus its subdirectories, counted once so `getattr` stays O(1).
    fn count_dir_links(&mut self) {
        let counts: Vec<(u64, u32)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.kind == EntryKind::Dir)
            .map(|(ino, n)| {
                let subdirs = n.children.values().filter(|c| self.nodes.get(c).is_some_and(|c| c.kind == EntryKind::Dir)).count();
                (*ino, 2 + subdirs as u32)
            })
            .collect();
        for (ino, nlink) in counts {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.nlink = nlink;
            }
        }
    }

    fn apply(&mut self, layer_no: usize, layer: &LayerIndex, whiteouts: bool) {
        if whiteouts {
            for entry in &layer.entries {
                let path = OsStr::from_bytes(&entry.path);
                let (parent, name) = split(path);
                if name.as_bytes() == b".wh..wh..opq" {
                    if let Some(dir) = self.find(parent) {
                        let children = std::mem::take(&mut self.nodes.get_mut(&dir).expect("found").children);
                        for (_, ino) in children {
                            self.drop_subtree(ino);
                        }
                    }
                } else if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.")
                    && let Some(dir) = self.find(parent)
                {
                    let removed = self.nodes.get_mut(&dir).and_then(|d| d.children.remove(OsStr::from_bytes(hidden)));
                    if let Some(ino) = removed {
                        self.drop_subtree(ino);
                    }
                }
            }
        }
        for entry in &layer.entries {
            let path = OsStr::from_bytes(&entry.path);
            let (_, name) = split(path);
            if whiteouts && name.as_bytes().starts_with(b".wh.") {
                continue;
            }
            self.add(layer_no, entry);
        }
    }

    /// Removes a subtree's inodes (a hard-linked inode stays while linked elsewhere).
    fn drop_subtree(&mut self, ino: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else { return };
        if node.kind != EntryKind::Dir && node.nlink > 1 {
            node.nlink -= 1;
            return;
        }
        let children: Vec<u64> = node.children.values().copied().collect();
        self.nodes.remove(&ino);
        for child in children {
            self.drop_subtree(child);
        }
    }

    /// The inode at `path`, following no symlinks.
    pub fn find(&self, path: &OsStr) -> Option<u64> {
        let mut ino = ROOT;
        for part in path.as_bytes().split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            ino = *self.nodes.get(&ino)?.children.get(OsStr::from_bytes(part))?;
        }
        Some(ino)
    }

    /// The directory at `path`, made (with default attributes) where missing.
    fn ensure_dir(&mut self, path: &OsStr) -> u64 {
        let mut ino = ROOT;
        for part in path.as_bytes().split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            let name = OsStr::from_bytes(part).to_owned();
            let existing = self.nodes.get(&ino).and_then(|n| n.children.get(&name)).copied();
            ino = match existing {
                Some(child) if self.nodes.get(&child).is_some_and(|n| n.kind == EntryKind::Dir) => child,
                other => {
                    if let Some(old) = other {
                        self.drop_subtree(old);
                    }
                    let new = self.next;
                    self.next += 1;
                    self.nodes.insert(new, dir_node(ino));
                    if let Some(parent) = self.nodes.get_mut(&ino) {
                        parent.children.insert(name, new);
                    }
                    new
                }
            };
        }
        ino
    }

    fn add(&mut self, layer_no: usize, entry: &IndexEntry) {
        let path = OsStr::from_bytes(&entry.path);
        let (parent_path, name) = split(path);
        let parent = self.ensure_dir(parent_path);
        if entry.kind == EntryKind::Hardlink {
            match self.find(OsStr::from_bytes(&entry.link)) {
                Some(target) if target != ROOT => {
                    if let Some(old) = self.nodes.get_mut(&parent).and_then(|p| p.children.insert(name.to_owned(), target))
                        && old != target
                    {
                        self.drop_subtree(old);
                    }
                    if let Some(node) = self.nodes.get_mut(&target) {
                        node.nlink += 1;
                    }
                }
                _ => {} // a link to nothing: tar readers skip it too
            }
            return;
        }
        let existing = self.nodes.get(&parent).and_then(|p| p.children.get(name)).copied();
        if entry.kind == EntryKind::Dir
            && let Some(ino) = existing
            && let Some(node) = self.nodes.get_mut(&ino)
            && node.kind == EntryKind::Dir
        {
            // An existing directory takes the new layer's attributes and keeps its children.
            (node.mode, node.uid, node.gid, node.mtime, node.xattrs) =
                (entry.mode, entry.uid, entry.gid, entry.mtime, entry.xattrs.clone());
            return;
        }
        if let Some(old) = existing {
            self.drop_subtree(old);
        }
        let ino = self.next;
        self.next += 1;
        let mut node = dir_node(parent);
        node.kind = entry.kind;
        (node.mode, node.uid, node.gid, node.mtime) = (entry.mode, entry.uid, entry.gid, entry.mtime);
        node.nlink = if entry.kind == EntryKind::Dir { 2 } else { 1 };
        node.size = match entry.kind {
            EntryKind::File => entry.size,
            EntryKind::Symlink => entry.link.len() as u64,
            _ => 0,
        };
        node.data = (entry.kind == EntryKind::File).then_some((layer_no, entry.offset));
        node.sparse = entry.sparse.clone();
        node.link = entry.link.clone();
        node.rdev = libc::makedev(entry.major, entry.minor) as u32;
        node.xattrs = entry.xattrs.clone();
        self.nodes.insert(ino, node);
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name.to_owned(), ino);
        }
    }

    /// Every path under `ino` with its inode, depth first, sorted.
    pub fn walk(&self, ino: u64, prefix: &mut Vec<u8>, out: &mut Vec<(Vec<u8>, u64)>) {
        let Some(node) = self.nodes.get(&ino) else { return };
        for (name, child) in &node.children {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name.as_bytes());
            out.push((prefix.clone(), *child));
            self.walk(*child, prefix, out);
            prefix.truncate(len);
        }
    }
}

fn split(path: &OsStr) -> (&OsStr, &OsStr) {
    let bytes = path.as_bytes();
    match bytes.iter().rposition(|b| *b == b'/') {
        Some(i) => (OsStr::from_bytes(&bytes[..i]), OsStr::from_bytes(&bytes[i + 1..])),
        None => (OsStr::new(""), path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> IndexEntry {
        IndexEntry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 1,
            offset: 0,
            link: Vec::new(),
            major: 0,
            minor: 0,
            xattrs: Vec::new(),
            sparse: Vec::new(),
        }
    }

    fn layer(entries: Vec<IndexEntry>) -> LayerIndex {
        LayerIndex { data: "/dev/null".into(), entries }
    }

    fn paths(tree: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        tree.walk(ROOT, &mut Vec::new(), &mut out);
        out.into_iter().map(|(p, _)| String::from_utf8_lossy(&p).into_owned()).collect()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers_in_any_order() {
        let low = layer(vec![
            entry("a", EntryKind::Dir),
            entry("a/old", EntryKind::File),
            entry("b", EntryKind::File),
            entry("c", EntryKind::Dir),
            entry("c/x", EntryKind::File),
        ]);
        let mut link = entry("c", EntryKind::File);
        link.kind = EntryKind::File;
        // The opaque marker comes after a sibling written in the same layer: that sibling stays.
        let high =
            layer(vec![entry("a/new", EntryKind::File), entry("a/.wh..wh..opq", EntryKind::File), entry(".wh.b", EntryKind::File), link]);
        let tree = Tree::merged([&low, &high]);
        assert_eq!(paths(&tree), ["a", "a/new", "c"]);
        assert_eq!(tree.nodes[&tree.find(OsStr::new("c")).unwrap()].kind, EntryKind::File, "a directory replaced by a file");
    }

    #[test]
    fn hard_links_share_an_inode() {
        let mut hard = entry("h2", EntryKind::Hardlink);
        hard.link = b"h1".to_vec();
        let tree = Tree::merged([&layer(vec![entry("h1", EntryKind::File), hard])]);
        let (a, b) = (tree.find(OsStr::new("h1")).unwrap(), tree.find(OsStr::new("h2")).unwrap());
        assert_eq!(a, b);
        assert_eq!(tree.nodes[&a].nlink, 2);
    }
}
