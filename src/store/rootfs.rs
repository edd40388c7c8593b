//! A read-only merged view of a stack of layer snapshots, resolving whiteouts
//! and opaque directories the way overlayfs does, without mounting anything.
//! COPY --from and name lookups (/etc/passwd) read images through it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::snapshot::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX, is_whiteout_device, xattr_get};

/// Snapshots from the bottom layer to the top one.
#[derive(Clone, Debug, Default)]
pub struct RootfsView {
    layers: Vec<PathBuf>,
}

/// What one layer says about a path.
enum LayerState {
    /// Present here (real path on disk); `opaque` if it is a directory that hides lower ones.
    Found {
        real: PathBuf,
        opaque: bool,
    },
    /// Deleted here, or an ancestor was replaced by a non-directory: lower layers are hidden.
    Hidden,
    /// An ancestor is an opaque directory of this layer: lower layers are hidden, this one lacks the path.
    Blocked,
    Absent,
}

/// Image paths as relative component lists (`/a/./b` → `a/b`); `..` goes up but never above the root.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn whiteout_marker(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let mut marker = OsString::from(WHITEOUT_PREFIX);
    marker.push(name);
    dir.join(marker)
}

fn is_opaque(dir: &Path) -> bool {
    xattr_get(dir, OPAQUE_XATTR).is_some_and(|v| v == b"y")
        || xattr_get(dir, "user.overlay.opaque").is_some_and(|v| v == b"y")
        || dir.join(OPAQUE_MARKER).exists()
}

impl RootfsView {
    pub fn new(layers: Vec<PathBuf>) -> RootfsView {
        RootfsView { layers }
    }

    /// The snapshots as overlay lowerdirs: top first, each once. Overlayfs
    /// refuses a directory given twice (ELOOP), and a layer repeated higher up
    /// (two identical RUN results) re-applies everything its lower twin did,
    /// so only the topmost occurrence matters.
    pub fn overlay_lowerdirs(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::HashSet::new();
        self.layers.iter().rev().filter(|dir| seen.insert(dir.as_path())).cloned().collect()
    }

    fn state(layer: &Path, rel: &Path) -> LayerState {
        let mut dir = layer.to_path_buf();
        let mut blocked = false;
        let parts: Vec<_> = rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            let name = part.as_os_str();
            if whiteout_marker(&dir, name).exists() {
                return LayerState::Hidden;
            }
            let next = dir.join(name);
            let Ok(meta) = next.symlink_metadata() else {
                return if blocked { LayerState::Blocked } else { LayerState::Absent };
            };
            if is_whiteout_device(&meta) {
                return LayerState::Hidden;
            }
            let last = i + 1 == parts.len();
            if last {
                let opaque = meta.is_dir() && is_opaque(&next);
                return LayerState::Found { real: next, opaque };
            }
            if !meta.is_dir() {
                return LayerState::Hidden;
            }
            if is_opaque(&next) {
                blocked = true;
            }
            dir = next;
        }
        LayerState::Found { real: layer.to_path_buf(), opaque: false }
    }

    /// The real path holding image path `path` (its last component not followed if a symlink).
    pub fn lookup(&self, path: &Path) -> Option<PathBuf> {
        let rel = normalize(path);
        for layer in self.layers.iter().rev() {
            match Self::state(layer, &rel) {
                LayerState::Found { real, .. } => return Some(real),
                LayerState::Hidden | LayerState::Blocked => return None,
                LayerState::Absent => {}
            }
        }
        if rel.as_os_str().is_empty() { self.layers.first().cloned() } else { None }
    }

    /// Resolves symlinks inside the image (absolute links are relative to its root).
    /// Returns the image path and the real path it is stored at.
    pub fn resolve(&self, path: &Path) -> Option<(PathBuf, PathBuf)> {
        let mut pending: Vec<OsString> = normalize(path).components().rev().map(|c| c.as_os_str().to_owned()).collect();
        let mut done = PathBuf::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            let candidate = done.join(&part);
            let real = self.lookup(&candidate)?;
            let meta = real.symlink_metadata().ok()?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = fs::read_link(&real).ok()?;
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push(p.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
                continue;
            }
            if part == ".." {
                done.pop();
                continue;
            }
            done = candidate;
        }
        let real = self.lookup(&done)?;
        Some((PathBuf::from("/").join(done), real))
    }

    /// The merged entries of a directory: name → real path, whiteouts applied.
    pub fn read_dir(&self, path: &Path) -> BTreeMap<OsString, PathBuf> {
        let rel = normalize(path);
        let mut seen: BTreeMap<OsString, Option<PathBuf>> = BTreeMap::new();
        for layer in self.layers.iter().rev() {
            let (real, opaque) = match Self::state(layer, &rel) {
                LayerState::Found { real, opaque } => (real, opaque),
                LayerState::Hidden | LayerState::Blocked => break,
                LayerState::Absent => continue,
            };
            if !real.is_dir() || real.is_symlink() {
                break;
            }
            if let Ok(entries) = fs::read_dir(&real) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.as_bytes() == OPAQUE_MARKER.as_bytes() {
                        continue;
                    }
                    if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                        seen.entry(std::ffi::OsStr::from_bytes(hidden).to_owned()).or_insert(None);
                        continue;
                    }
                    let whiteout = entry.metadata().is_ok_and(|m| is_whiteout_device(&m));
                    seen.entry(name).or_insert(if whiteout { None } else { Some(entry.path()) });
                }
            }
            if opaque {
                break;
            }
        }
        seen.into_iter().filter_map(|(name, real)| Some((name, real?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_layers_hide_and_replace_lower_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let (low, high) = (tmp.path().join("low"), tmp.path().join("high"));
        fs::create_dir_all(low.join("etc/sub")).unwrap();
        fs::write(low.join("etc/passwd"), "root").unwrap();
        fs::write(low.join("etc/gone"), "x").unwrap();
        fs::write(low.join("etc/sub/a"), "a").unwrap();
        fs::create_dir_all(high.join("etc/sub")).unwrap();
        fs::write(high.join("etc/.wh.gone"), "").unwrap();
        fs::write(high.join("etc/sub/.wh..wh..opq"), "").unwrap();
        fs::write(high.join("etc/sub/b"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", high.join("link")).unwrap();
        let view = RootfsView::new(vec![low.clone(), high.clone()]);
        assert_eq!(view.lookup(Path::new("/etc/passwd")), Some(low.join("etc/passwd")));
        assert_eq!(view.lookup(Path::new("/etc/gone")), None);
        assert_eq!(view.lookup(Path::new("/etc/sub/a")), None);
        let names: Vec<_> = view.read_dir(Path::new("/etc")).into_keys().collect();
        assert_eq!(names, vec![OsString::from("passwd"), OsString::from("sub")]);
        let names: Vec<_> = view.read_dir(Path::new("/etc/sub")).into_keys().collect();
        assert_eq!(names, vec![OsString::from("b")]);
        assert_eq!(view.resolve(Path::new("/link")).map(|r| r.1), Some(low.join("etc/passwd")));
    }
}
