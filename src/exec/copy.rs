//! COPY and ADD: resolve sources (context, stage, image, or ADD's URLs and git
//! repositories through `remote.rs`), plan the entries
//! of the new layer in path order, key them on content and metadata (never
//! mtime), and on a cache miss stream them into a layer tar.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::ExecError;
use super::context::{BuildContext, IgnoreRules, clean};
use super::layer::{Attrs, LayerWriter};
use crate::graph::Mode;
use crate::oci::Digest;
use crate::store::Store;
use crate::store::rootfs::RootfsView;
use crate::store::snapshot::{clean_layer_path, decompress};

/// Where sources are read from.
pub enum SourceRoot<'a> {
    Context(&'a BuildContext),
    Image(RootfsView),
}

/// What one entry of the planned layer is.
#[derive(Clone, Debug)]
enum Content {
    Dir,
    File { real: PathBuf, size: u64, inode: Option<(u64, u64)> },
    Inline(Vec<u8>),
    Symlink(OsString),
    Hardlink(OsString),
    Special { kind: tar::EntryType, major: u32, minor: u32 },
}

#[derive(Clone, Debug)]
struct Planned {
    kind: Content,
    attrs: Attrs,
}

/// The entries of a layer to write, sorted by path bytes (no leading `/`).
/// Paths are raw bytes, as the file system and tar have them: a name that is
/// not UTF-8 is copied as it is.
#[derive(Debug, Default)]
pub struct LayerPlan {
    entries: BTreeMap<OsString, Planned>,
    /// Local archives ADD will extract (path, destination), keyed by their
    /// bytes; listed only while `CopyRequest::extract_in` is unset.
    archives: Vec<(PathBuf, OsString)>,
    /// Temp directory holding extracted archive data; removed on drop.
    _scratch: Vec<tempfile::TempDir>,
}

/// The resolved options of one COPY/ADD, after expansion.
#[derive(Clone, Default)]
pub struct CopyRequest<'a> {
    pub add: bool,
    pub sources: Vec<CopyInput>,
    /// Absolute destination in the image.
    pub dest: String,
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<Mode>,
    /// The layers below (none for `--link`): decides whether parents exist and whether dest is a directory.
    pub below: Option<&'a RootfsView>,
    pub clamp: Option<u64>,
    /// Context sources keep their own owners (without `owner`) instead of
    /// 0:0; a stage's or an image's files always do, as in BuildKit.
    pub keep_owners: bool,
    /// Where ADD extracts archive data (the store's temp folder). Unset, the
    /// plan only names each archive, enough to key it by its bytes: a cached
    /// ADD never opens the archive's entries.
    pub extract_in: Option<&'a Path>,
    /// `COPY --parents`: a source keeps its path under the destination, from
    /// after the first `/./` in its pattern, else whole.
    pub parents: bool,
    /// `--exclude` rules, matched against paths below each source (a file source by its name).
    pub exclude: IgnoreRules,
    /// ADD `--unpack`: `Some(false)` keeps local archives whole, `Some(true)` extracts downloaded ones too.
    pub unpack: Option<bool>,
}

impl CopyRequest<'_> {
    /// The mode of a copied file that had (or would get) `mode`: `--chmod` applied to it.
    fn mode(&self, mode: u32, dir: bool) -> u32 {
        self.chmod.as_ref().map_or(mode, |chmod| chmod.apply(mode, dir))
    }
}

/// One expanded source.
#[derive(Clone)]
pub enum CopyInput {
    Path(String),
    Inline {
        name: String,
        content: String,
    },
    /// A file ADD downloaded (`remote.rs`): placed as `name` in a destination
    /// folder, mode 0600 unless `--chmod`, with the server's Last-Modified
    /// (if it sent one, else 0) as mtime.
    Download {
        url: String,
        name: String,
        file: PathBuf,
        mtime: Option<u64>,
    },
    /// A git checkout ADD copies the contents of. Unset while keying: a git
    /// source is keyed by its commit, and cloned only on a miss.
    Checkout {
        url: String,
        dir: Option<PathBuf>,
    },
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl SourceRoot<'_> {
    /// Real path of `rel`, following symlinks inside the root only.
    fn resolve(&self, rel: &Path, shown: &str) -> Result<PathBuf, ExecError> {
        match self {
            SourceRoot::Context(ctx) => {
                if !rel.as_os_str().is_empty() && ctx.ignore.excluded(rel) {
                    return Err(ExecError::NotFound(format!("{shown} (excluded by .dockerignore)")));
                }
                ctx.resolve(rel, shown)
            }
            SourceRoot::Image(view) => view.resolve(rel).map(|(_, real)| real).ok_or_else(|| ExecError::NotFound(shown.to_string())),
        }
    }

    /// The children of directory `rel` (stored at `real`), sorted, ignored ones left out.
    fn children(&self, rel: &Path, real: &Path) -> Result<Vec<(OsString, PathBuf)>, ExecError> {
        match self {
            SourceRoot::Context(ctx) => {
                let mut out = Vec::new();
                let read = fs::read_dir(real).map_err(|e| ExecError::io("list", real, e))?;
                for entry in read {
                    let entry = entry.map_err(|e| ExecError::io("list", real, e))?;
                    let child = rel.join(entry.file_name());
                    // An excluded directory is still walked when a `!` rule may re-include something below it.
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    if ctx.ignore.excluded(&child) && !(is_dir && ctx.ignore.has_exceptions()) {
                        continue;
                    }
                    out.push((entry.file_name(), entry.path()));
                }
                out.sort();
                Ok(out)
            }
            SourceRoot::Image(view) => Ok(view.read_dir(rel).into_iter().collect()),
        }
    }

    fn is_excluded(&self, rel: &Path) -> bool {
        matches!(self, SourceRoot::Context(ctx) if ctx.ignore.excluded(rel))
    }

    /// Expands a wildcard pattern one path component at a time, as filepath.Glob does.
    fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, ExecError> {
        let mut matches = vec![PathBuf::new()];
        for component in pattern.components() {
            let part = component.as_os_str().to_string_lossy();
            let mut next = Vec::new();
            for base in matches {
                // `**`: the path so far and everything under it, at any depth.
                if part == "**" {
                    let mut pending = vec![base];
                    while let Some(path) = pending.pop() {
                        if let Ok(real) = self.resolve(&path, "")
                            && real.is_dir()
                        {
                            pending.extend(self.children(&path, &real)?.into_iter().map(|(name, _)| path.join(name)));
                        }
                        next.push(path);
                    }
                    continue;
                }
                if !has_wildcard(&part) {
                    next.push(base.join(component));
                    continue;
                }
                let Ok(real) = self.resolve(&base, &base.display().to_string()) else { continue };
                if !real.is_dir() {
                    continue;
                }
                let matcher = globset::GlobBuilder::new(&part)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| ExecError::Pattern { pattern: pattern.display().to_string(), source })?
                    .compile_matcher();
                for (name, _) in self.children(&base, &real)? {
                    if matcher.is_match(&name) {
                        next.push(base.join(name));
                    }
                }
            }
            matches = next;
        }
        matches.sort();
        matches.dedup();
        Ok(matches.into_iter().filter(|m| self.resolve(m, "").is_ok() && !self.is_excluded(m)).collect())
    }
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut file) = File::open(path) else { return false };
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    let head = &head[..filled];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// How many leading components of a `COPY --parents` match stay out of the
/// destination: those before the first `/./` of the pattern.
fn parents_pivot(pattern: &str) -> usize {
    pattern.find("/./").and_then(|at| clean(Path::new(&pattern[..at]))).map_or(0, |prefix| prefix.components().count())
}

/// `dest/name` (dest is relative, from `clean`; it may be empty).
fn join_dest(dest: &OsStr, name: impl AsRef<OsStr>) -> OsString {
    Path::new(dest).join(name.as_ref()).into_os_string()
}

impl LayerPlan {
    fn insert(&mut self, path: OsString, kind: Content, attrs: Attrs) {
        self.entries.insert(path, Planned { kind, attrs });
    }

    /// Plans a COPY/ADD: every entry of the new layer, archives listed from their headers.
    pub fn for_copy(root: &SourceRoot, req: &CopyRequest) -> Result<LayerPlan, ExecError> {
        let mut plan = LayerPlan::default();
        let cleaned = clean(Path::new(&req.dest)).unwrap_or_default();
        // A destination through a symlink of the image lands in its target, as in Docker.
        let dest_rel = match req.below {
            Some(view) => resolve_in_image(view, &cleaned, &req.dest)?,
            None => cleaned,
        }
        .into_os_string();
        let dest_exists_as_dir = req.below.and_then(|v| v.lookup(Path::new(&dest_rel))).is_some_and(|real| real.is_dir());
        // A wildcard that matches one file copies it to the destination path, as Docker does;
        // one that matches several makes the destination a folder, as in BuildKit (one source path).
        let mut matched = 0;
        for source in &req.sources {
            matched += match source {
                CopyInput::Path(p) if has_wildcard(p) => {
                    let rel = clean(Path::new(p)).ok_or_else(|| ExecError::OutsideContext(p.clone()))?;
                    root.glob(&rel)?.len()
                }
                _ => 1,
            };
        }
        let dest_is_dir = req.dest.ends_with('/') || req.dest.ends_with("/.") || matched > 1 || dest_exists_as_dir || dest_rel.is_empty();
        if req.sources.len() > 1 && matched > 1 && !(req.dest.ends_with('/') || dest_exists_as_dir || dest_rel.is_empty()) {
            return Err(ExecError::DestinationNotDirectory(req.dest.clone()));
        }
        let owner = req.owner.unwrap_or((0, 0));
        for source in &req.sources {
            match source {
                CopyInput::Inline { name, content } => {
                    let path = if dest_is_dir { join_dest(&dest_rel, name) } else { dest_rel.clone() };
                    let attrs =
                        Attrs { mode: req.mode(0o644, false), uid: owner.0.into(), gid: owner.1.into(), mtime: req.clamp.unwrap_or(0) };
                    plan.insert(path, Content::Inline(content.clone().into_bytes()), attrs);
                }
                CopyInput::Download { file, .. } if req.unpack == Some(true) && is_archive(file) => match req.extract_in {
                    Some(dir) => plan.extract_archive(file, &dest_rel, req, dir)?,
                    None => plan.archives.push((file.clone(), dest_rel.clone())),
                },
                CopyInput::Download { name, file, mtime, .. } => {
                    let path = if dest_is_dir { join_dest(&dest_rel, name) } else { dest_rel.clone() };
                    let size = fs::metadata(file).map_err(|e| ExecError::io("stat", file, e))?.len();
                    let attrs = Attrs { mode: req.mode(0o600, false), uid: owner.0.into(), gid: owner.1.into(), mtime: mtime.unwrap_or(0) };
                    plan.insert(path, Content::File { real: file.clone(), size, inode: None }, attrs);
                }
                CopyInput::Checkout { dir: None, .. } => {}
                CopyInput::Checkout { dir: Some(dir), .. } => {
                    // The checkout is a root of its own: no .dockerignore, no symlink out of it.
                    let tree = BuildContext { root: dir.clone(), ignore: Default::default() };
                    if !dest_rel.is_empty() && !dest_exists_as_dir {
                        plan.insert(dest_rel.clone(), Content::Dir, created_dir_attrs(req));
                    }
                    plan.walk(&SourceRoot::Context(&tree), Path::new(""), dir, &dest_rel, req)?;
                }
                CopyInput::Path(pattern) => {
                    let rel = clean(Path::new(pattern)).ok_or_else(|| ExecError::OutsideContext(pattern.clone()))?;
                    // A wildcard that matches nothing copies nothing, as in BuildKit.
                    let matches = if has_wildcard(pattern) { root.glob(&rel)? } else { vec![rel] };
                    let pivot = parents_pivot(pattern);
                    for rel in matches {
                        let real = root.resolve(&rel, pattern)?;
                        let meta = fs::metadata(&real).map_err(|e| ExecError::io("stat", &real, e))?;
                        if !meta.is_dir() && rel.file_name().is_some_and(|name| req.exclude.excluded(Path::new(name))) {
                            continue;
                        }
                        // `--parents`: the source itself, under the path it keeps; missing parents are made.
                        let kept =
                            req.parents.then(|| rel.components().skip(pivot).collect::<PathBuf>()).filter(|k| !k.as_os_str().is_empty());
                        if let Some(kept) = kept {
                            let path = join_dest(&dest_rel, &kept);
                            plan.add_entry(root, path.clone(), &real, &meta, req);
                            if meta.is_dir() {
                                plan.walk(root, &rel, &real, &path, req)?;
                            }
                        } else if meta.is_dir() {
                            if dest_rel.is_empty() {
                                plan.walk(root, &rel, &real, OsStr::new(""), req)?;
                            } else {
                                // Made as its missing parents are; an existing one keeps its owner and mode.
                                if !dest_exists_as_dir {
                                    plan.insert(dest_rel.clone(), Content::Dir, created_dir_attrs(req));
                                }
                                plan.walk(root, &rel, &real, &dest_rel, req)?;
                            }
                        } else if req.add && req.unpack != Some(false) && is_archive(&real) {
                            match req.extract_in {
                                Some(dir) => plan.extract_archive(&real, &dest_rel, req, dir)?,
                                None => plan.archives.push((real, dest_rel.clone())),
                            }
                        } else {
                            let name = rel.file_name().unwrap_or_default();
                            let path = if dest_is_dir { join_dest(&dest_rel, name) } else { dest_rel.clone() };
                            plan.add_entry(root, path, &real, &meta, req);
                        }
                    }
                }
            }
        }
        // `--parents` copies a tree filtered by its patterns, as BuildKit does, so the
        // destination folder is made even when they match nothing (a plain wildcard makes none).
        if req.parents && !dest_rel.is_empty() && !dest_exists_as_dir && !plan.entries.contains_key(&dest_rel) {
            plan.insert(dest_rel, Content::Dir, created_dir_attrs(req));
        }
        plan.add_parents(req);
        Ok(plan)
    }

    fn add_entry(&mut self, root: &SourceRoot, path: OsString, real: &Path, meta: &fs::Metadata, req: &CopyRequest) {
        let ft = meta.file_type();
        let owner = entry_owner(root, meta, req);
        let mut attrs = Attrs { mode: meta.mode() & 0o7777, uid: owner.0.into(), gid: owner.1.into(), mtime: meta.mtime().max(0) as u64 };
        attrs.mode = req.mode(attrs.mode, ft.is_dir());
        let kind = if ft.is_dir() {
            Content::Dir
        } else if ft.is_symlink() {
            Content::Symlink(fs::read_link(real).map(PathBuf::into_os_string).unwrap_or_default())
        } else if ft.is_file() {
            let inode = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
            Content::File { real: real.to_path_buf(), size: meta.len(), inode }
        } else if ft.is_socket() {
            // BuildKit's context transfer turns a socket into an empty regular file.
            Content::Inline(Vec::new())
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let rdev = meta.rdev();
            Content::Special { kind, major: nix::sys::stat::major(rdev) as u32, minor: nix::sys::stat::minor(rdev) as u32 }
        };
        self.insert(path, kind, attrs);
    }

    fn walk(&mut self, root: &SourceRoot, rel: &Path, real: &Path, dest: &OsStr, req: &CopyRequest) -> Result<(), ExecError> {
        self.walk_below(root, rel, rel, real, dest, req)
    }

    /// [`walk`](Self::walk) of `rel`, part of the source `source` (what `--exclude` matches below).
    fn walk_below(
        &mut self,
        root: &SourceRoot,
        source: &Path,
        rel: &Path,
        real: &Path,
        dest: &OsStr,
        req: &CopyRequest,
    ) -> Result<(), ExecError> {
        for (name, child_real) in root.children(rel, real)? {
            let child_rel = rel.join(&name);
            // Excluded by the COPY, with everything below it (there are no exceptions).
            if req.exclude.excluded(child_rel.strip_prefix(source).unwrap_or(&child_rel)) {
                continue;
            }
            let path = join_dest(dest, &name);
            let meta = fs::symlink_metadata(&child_real).map_err(|e| ExecError::io("stat", &child_real, e))?;
            if root.is_excluded(&child_rel) && !meta.is_dir() {
                continue;
            }
            if meta.is_dir() {
                let excluded = root.is_excluded(&child_rel);
                if !excluded {
                    self.add_entry(root, path.clone(), &child_real, &meta, req);
                }
                self.walk_below(root, source, &child_rel, &child_real, &path, req)?;
            } else {
                self.add_entry(root, path, &child_real, &meta, req);
            }
        }
        Ok(())
    }

    fn extract_archive(&mut self, archive_path: &Path, dest: &OsStr, req: &CopyRequest, scratch_in: &Path) -> Result<(), ExecError> {
        let bad = |source: io::Error| ExecError::Extract { archive: archive_path.to_path_buf(), source };
        let escape =
            |what, entry: &Path| ExecError::ArchiveEscape { archive: archive_path.to_path_buf(), what, entry: entry.to_path_buf() };
        let file = File::open(archive_path).map_err(|e| ExecError::io("open", archive_path, e))?;
        let reader = decompress(BufReader::new(file)).map_err(bad)?;
        let scratch = tempfile::Builder::new()
            .prefix("add-")
            .tempdir_in(scratch_in)
            .map_err(|e| ExecError::io("create temp dir in", scratch_in, e))?;
        // An entry under a symlink of the image lands at the link's target, as BuildKit unpacks
        // onto the image's tree; the entry's own name is replaced, never followed.
        let place = |rel: &Path| -> Result<OsString, ExecError> {
            let path = PathBuf::from(join_dest(dest, rel));
            match (req.below, path.parent(), path.file_name()) {
                (Some(view), Some(parent), Some(name)) => {
                    Ok(resolve_in_image(view, parent, &path.to_string_lossy())?.join(name).into_os_string())
                }
                _ => Ok(path.into_os_string()),
            }
        };
        let mut archive = tar::Archive::new(reader);
        for (n, entry) in archive.entries().map_err(bad)?.enumerate() {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path().map_err(bad)?.into_owned();
            let rel = clean_layer_path(&raw).ok_or_else(|| escape("entry", &raw))?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let path = place(&rel)?;
            let h = entry.header();
            let mut attrs = Attrs {
                mode: h.mode().map_err(bad)? & 0o7777,
                uid: h.uid().map_err(bad)?,
                gid: h.gid().map_err(bad)?,
                mtime: h.mtime().map_err(bad)?,
            };
            if let Some((uid, gid)) = req.owner {
                (attrs.uid, attrs.gid) = (uid.into(), gid.into());
            }
            attrs.mode = req.mode(attrs.mode, h.entry_type().is_dir());
            let link = || -> Result<OsString, ExecError> {
                Ok(entry.link_name().map_err(bad)?.map(|l| l.into_owned().into_os_string()).unwrap_or_default())
            };
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Content::Dir,
                tar::EntryType::Symlink => Content::Symlink(link()?),
                tar::EntryType::Link => {
                    let target = clean_layer_path(Path::new(&link()?)).ok_or_else(|| escape("hard link", &raw))?;
                    Content::Hardlink(place(&target)?)
                }
                t @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => Content::Special {
                    kind: t,
                    major: h.device_major().ok().flatten().unwrap_or(0),
                    minor: h.device_minor().ok().flatten().unwrap_or(0),
                },
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let data = scratch.path().join(n.to_string());
                    let mut out = File::create(&data).map_err(|e| ExecError::io("create", &data, e))?;
                    let size = io::copy(&mut entry, &mut out).map_err(bad)?;
                    Content::File { real: data, size, inode: None }
                }
                _ => continue,
            };
            self.insert(path, kind, attrs);
        }
        self._scratch.push(scratch);
        Ok(())
    }

    /// Plans one directory (and its missing parents), as WORKDIR creates it.
    pub fn make_dir(&mut self, path: &str, owner: Option<(u32, u32)>, req: &CopyRequest) {
        let rel = clean(Path::new(path)).unwrap_or_default().into_os_string();
        let (uid, gid) = owner.unwrap_or((0, 0));
        let attrs = Attrs { mode: 0o755, uid: uid.into(), gid: gid.into(), mtime: req.clamp.unwrap_or(0) };
        self.insert(rel, Content::Dir, attrs);
        self.add_parents(req);
    }

    /// Adds every parent directory of the planned entries: one the layers
    /// below have with its owner, mode and mtime as they are (a layer that
    /// lacked it would show it as made anew), a missing one as BuildKit makes
    /// it: `--chmod`'s mode (else 0755) and `--chown`'s owner (else root).
    fn add_parents(&mut self, req: &CopyRequest) {
        let mut parents: BTreeMap<OsString, Attrs> = BTreeMap::new();
        for path in self.entries.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                let key = dir.as_os_str().to_owned();
                if self.entries.contains_key(&key) || parents.contains_key(&key) {
                    break;
                }
                let below = req.below.and_then(|v| v.lookup(dir)).and_then(|real| fs::symlink_metadata(real).ok());
                let attrs = match below {
                    // A path through a symlink of the image (a WORKDIR) leaves the link as it is.
                    Some(meta) if meta.is_symlink() => break,
                    Some(meta) if meta.is_dir() => image_attrs(&meta),
                    _ => created_dir_attrs(req),
                };
                parents.insert(key, attrs);
                parent = dir.parent();
            }
        }
        for (dir, attrs) in parents {
            self.insert(dir, Content::Dir, attrs);
        }
    }

    /// Hashes every entry's path, type, metadata (not mtime) and content (BLAKE3), in path order.
    pub fn content_key(&self, store: &Store) -> Result<Digest, ExecError> {
        let contents: Vec<Option<[u8; 32]>> = self
            .entries
            .par_iter()
            .map(|(_, planned)| match &planned.kind {
                Content::File { real, size, .. } => hash_file(store, real, *size).map(Some),
                Content::Inline(bytes) => Ok(Some(*blake3::hash(bytes).as_bytes())),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let mut hasher = Sha256::new();
        for ((path, planned), content) in self.entries.iter().zip(contents) {
            let a = planned.attrs;
            let kind = match &planned.kind {
                Content::Dir => b"dir".to_vec(),
                Content::File { size, .. } => format!("file {size}").into_bytes(),
                Content::Inline(bytes) => format!("file {}", bytes.len()).into_bytes(),
                Content::Symlink(target) => [b"symlink ", target.as_bytes()].concat(),
                Content::Hardlink(target) => [b"link ", target.as_bytes()].concat(),
                Content::Special { kind, major, minor } => format!("special {kind:?} {major} {minor}").into_bytes(),
            };
            hasher.update(path.as_bytes());
            hasher.update(b"\0");
            hasher.update(&kind);
            hasher.update(format!("\0{:o} {} {}\0", a.mode, a.uid, a.gid).as_bytes());
            if let Some(content) = content {
                hasher.update(content);
            }
        }
        for (archive, dest) in &self.archives {
            let size = fs::metadata(archive).map_err(|e| ExecError::io("stat", archive, e))?.len();
            hasher.update(b"\0archive ");
            hasher.update(dest.as_bytes());
            hasher.update(b"\0");
            hasher.update(hash_file(store, archive, size)?);
        }
        Ok(Digest::from_sha256(hasher.finalize().into()))
    }

    /// Whether archives are only named (planned without `extract_in`): such a plan keys, it cannot write.
    pub fn names_archives(&self) -> bool {
        !self.archives.is_empty()
    }

    /// Lays the planned entries out under `dir` (a bind mount's view of the
    /// context with `.dockerignore` applied): files are hard links where the
    /// file system allows, else copies; directories keep their modes.
    pub fn materialize(&self, dir: &Path) -> Result<(), ExecError> {
        use std::os::unix::fs::{PermissionsExt, symlink};
        fs::create_dir_all(dir).map_err(|e| ExecError::io("create", dir, e))?;
        for (path, planned) in &self.entries {
            let target = dir.join(Path::new(path));
            let made = match &planned.kind {
                Content::Dir => fs::create_dir_all(&target),
                Content::File { real, .. } => fs::hard_link(real, &target).or_else(|_| fs::copy(real, &target).map(drop)),
                Content::Inline(bytes) => fs::write(&target, bytes),
                Content::Symlink(link) => symlink(link, &target),
                Content::Hardlink(first) => fs::hard_link(dir.join(Path::new(first)), &target),
                // Device nodes and fifos of a context are not shown in a bind mount.
                Content::Special { .. } => continue,
            };
            made.map_err(|e| ExecError::io("lay out bind source", &target, e))?;
        }
        // Owners as planned (where we may set them), then directory modes
        // deepest first, so a read-only directory is filled before it closes.
        if nix::unistd::geteuid().is_root() {
            for (path, planned) in self.entries.iter().filter(|(_, p)| !matches!(p.kind, Content::Special { .. })) {
                let target = dir.join(Path::new(path));
                let (uid, gid) = (planned.attrs.uid as u32, planned.attrs.gid as u32);
                // A hard link to a context file already has its owner; chown would clear its set-id bits.
                let meta = fs::symlink_metadata(&target).map_err(|e| ExecError::io("stat", &target, e))?;
                if (meta.uid(), meta.gid()) != (uid, gid) {
                    std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(|e| ExecError::io("chown", &target, e))?;
                }
            }
        }
        for (path, planned) in self.entries.iter().rev().filter(|(_, p)| matches!(p.kind, Content::Dir)) {
            let target = dir.join(Path::new(path));
            fs::set_permissions(&target, fs::Permissions::from_mode(planned.attrs.mode))
                .map_err(|e| ExecError::io("set mode of", &target, e))?;
        }
        Ok(())
    }

    /// Streams the planned entries into a layer blob.
    pub fn write(&self, store: &Store, clamp: Option<u64>) -> Result<(Digest, u64), ExecError> {
        debug_assert!(self.archives.is_empty(), "a plan that names archives is for keying only");
        let mut layer = LayerWriter::new(store, clamp)?;
        let mut first_of_inode: HashMap<(u64, u64), &OsStr> = HashMap::new();
        let wrap = |path: &OsStr, source: io::Error| ExecError::WriteLayer { path: PathBuf::from(path), source };
        for (path, planned) in &self.entries {
            let attrs = planned.attrs;
            match &planned.kind {
                Content::Dir => layer.dir(path, attrs),
                Content::File { real, size, inode } => {
                    if let Some(inode) = inode {
                        if let Some(first) = first_of_inode.get(inode) {
                            layer.hardlink(path, first, attrs).map_err(|e| wrap(path, e))?;
                            continue;
                        }
                        first_of_inode.insert(*inode, path);
                    }
                    let file = File::open(real).map_err(|e| ExecError::io("open", real, e))?;
                    layer.file(path, attrs, *size, BufReader::with_capacity(256 * 1024, file))
                }
                Content::Inline(bytes) => layer.file(path, attrs, bytes.len() as u64, bytes.as_slice()),
                Content::Symlink(target) => layer.symlink(path, target, attrs),
                Content::Hardlink(target) => layer.hardlink(path, target, attrs),
                Content::Special { kind, major, minor } => layer.special(path, *kind, attrs, *major, *minor),
            }
            .map_err(|e| wrap(path, e))?;
        }
        Ok(layer.finish()?)
    }
}

/// `--chown`, else, from a stage or an image, the owner the file has there
/// (as BuildKit keeps it), else the context file's where kept, else root.
fn entry_owner(root: &SourceRoot, meta: &fs::Metadata, req: &CopyRequest) -> (u32, u32) {
    match (req.owner, root) {
        (Some(owner), _) => owner,
        (None, SourceRoot::Image(_)) => {
            let attrs = image_attrs(meta);
            (attrs.uid as u32, attrs.gid as u32)
        }
        (None, SourceRoot::Context(_)) if req.keep_owners => (meta.uid(), meta.gid()),
        (None, SourceRoot::Context(_)) => (0, 0),
    }
}

/// The attributes of an object stored in a snapshot, owners as the image's
/// containers see them (a rootless store unpacks every file as the caller).
fn image_attrs(meta: &fs::Metadata) -> Attrs {
    let attrs = Attrs { mode: meta.mode() & 0o7777, uid: meta.uid().into(), gid: meta.gid().into(), mtime: meta.mtime().max(0) as u64 };
    attrs.mapped(&super::launch::ids_on_disk())
}

/// A directory COPY makes (a missing destination or parent), as BuildKit
/// makes it: `--chmod`'s mode, else 0755; `--chown`'s owner, else root.
fn created_dir_attrs(req: &CopyRequest) -> Attrs {
    let (uid, gid) = req.owner.unwrap_or((0, 0));
    Attrs { mode: req.mode(0o755, true), uid: uid.into(), gid: gid.into(), mtime: req.clamp.unwrap_or(0) }
}

/// Image path `path` (relative, cleaned) with the symlinks of the part that
/// exists followed inside the image, as Docker resolves a destination: an
/// absolute target or `..` resolves against the image's root, never above
/// it; what does not exist yet is kept as written.
fn resolve_in_image(view: &RootfsView, path: &Path, shown: &str) -> Result<PathBuf, ExecError> {
    /// As many links as Linux follows in one path.
    const MAX_LINKS: usize = 40;
    let mut pending: Vec<OsString> = path.components().rev().map(|c| c.as_os_str().to_owned()).collect();
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&part);
        match view.lookup(&candidate) {
            Some(real) if real.is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ExecError::SymlinkLoop(shown.to_string()));
                }
                let target = fs::read_link(&real).map_err(|e| ExecError::io("read link", &real, e))?;
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        std::path::Component::Normal(p) => pending.push(p.to_owned()),
                        std::path::Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done = candidate,
        }
    }
    Ok(done)
}

/// Files at least this large have their content hash recorded by identity and change times.
const RECORDED_HASH_SIZE: u64 = 1 << 20;

/// BLAKE3 of a file's content, for the cache key: several times faster than
/// sha256, and a large file is hashed on every core. A large file's hash is
/// recorded under its device, inode, size, mtime and ctime (which no write
/// leaves unchanged), so a cached rebuild reads it again only when it changed.
/// A file changed in the last two seconds is not recorded: a write within the
/// same timestamp tick could otherwise go unseen.
fn hash_file(store: &Store, path: &Path, size: u64) -> Result<[u8; 32], ExecError> {
    if size < RECORDED_HASH_SIZE {
        return hash_content(path, size);
    }
    let meta = fs::metadata(path).map_err(|e| ExecError::io("stat", path, e))?;
    let identity =
        [meta.dev(), meta.ino(), meta.size(), meta.mtime() as u64, meta.mtime_nsec() as u64, meta.ctime() as u64, meta.ctime_nsec() as u64];
    let stat = Digest::of(identity.map(u64::to_le_bytes).as_flattened());
    if let Some(hash) = store.file_hash_get(&stat) {
        return Ok(hash);
    }
    let hash = hash_content(path, size)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if meta.mtime().max(meta.ctime()) + 2 < now {
        store.file_hash_put(&stat, &hash)?;
    }
    Ok(hash)
}

fn hash_content(path: &Path, size: u64) -> Result<[u8; 32], ExecError> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Reads of at least this size are hashed in parallel.
    const PARALLEL: usize = 256 * 1024;
    let mut file = File::open(path).map_err(|e| ExecError::io("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    BUF.with_borrow_mut(|buf| {
        // Room for a small file and its end in one read; large files in 4 MiB reads.
        let want = usize::try_from(size).unwrap_or(usize::MAX).saturating_add(1).clamp(64 * 1024, 4 << 20);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        loop {
            let n = file.read(buf).map_err(|e| ExecError::io("read", path, e))?;
            match n {
                0 => return Ok(*hasher.finalize().as_bytes()),
                n if n >= PARALLEL => hasher.update_rayon(&buf[..n]),
                n => hasher.update(&buf[..n]),
            };
        }
    })
}
