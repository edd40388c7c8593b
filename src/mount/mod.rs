//! `strata mount`: an image's layers as one read-only FUSE filesystem, built
//! from the layers' tar headers (`index`), merged with whiteouts applied
//! (`tree`) and served from memory with file data read at offsets in the
//! layers' uncompressed bytes (`fs`). Nothing is extracted.

mod fs;
mod index;
mod tree;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::oci::Digest;
use crate::store::{Store, StoreError};

use index::LayerIndex;
use tree::Tree;

/// Why a mount, unmount or diff failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("layer {digest}: {message}")]
    Layer { digest: Digest, message: String },
    #[error("{0}")]
    Fuse(String),
}

impl MountError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> MountError {
        MountError::Io { action, path: path.to_path_buf(), source }
    }
}

/// An image's layer indexes, bottom first, with each layer's diff_id.
fn indexes(store: &Store, image: &str) -> Result<Vec<(Digest, LayerIndex)>, MountError> {
    let image = store.resolve(image)?;
    let mut out = Vec::new();
    for (layer, diff_id) in image.manifest.layers.iter().zip(&image.config.rootfs.diff_ids) {
        out.push((diff_id.clone(), index::layer_index(store, layer, diff_id)?));
    }
    Ok(out)
}

/// What `strata mount` should show.
#[derive(Debug, Clone, Copy)]
pub enum View {
    /// The union of all layers.
    Merged,
    /// Layer N (0 = bottom) on its own, whiteouts as files.
    Layer(usize),
}

fn check_fuse() -> Result<(), MountError> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(MountError::Fuse(
            "cannot open /dev/fuse: permission denied. FUSE mounts need read-write access to /dev/fuse \
             (most distributions make it mode 0666; here it is not): ask an administrator to run \
             `chmod 0666 /dev/fuse` (or add a udev rule), or mount as root"
                .into(),
        )),
        Err(e) => Err(MountError::Fuse(format!("cannot open /dev/fuse ({e}): load the fuse module (`modprobe fuse`) and install fuse3"))),
    }
}

/// Whether `dir` is a mount point left by a FUSE server that died.
fn is_stale(dir: &Path) -> bool {
    matches!(std::fs::metadata(dir), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Unmounts `dir` (also a stale mount whose server was killed). While a
/// reader still has a file open, the mount is detached: it disappears from
/// the tree now and goes away when the last reader closes.
pub fn umount(dir: &Path) -> Result<(), MountError> {
    let target = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(target.to_string_lossy().as_ref())));
    if !mounted {
        return Err(MountError::Fuse(format!("{} is not mounted", dir.display())));
    }
    // Always lazily: a mount nobody uses goes at once, a busy one leaves the tree now and
    // goes when its last reader closes; a stale one (its server killed) goes too.
    if nix::unistd::geteuid().is_root() {
        return nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(|e| MountError::io("unmount", dir, e.into()));
    }
    let reason = match Command::new("fusermount3").arg("-uz").arg(dir).output() {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("fusermount3: {e} (install fuse3)"),
    };
    Err(MountError::Fuse(format!("unmount {}: {reason}", dir.display())))
}

/// Mounts and serves until SIGINT/SIGTERM or an unmount; with `notify`, prints `ready` once mounted.
pub fn serve(store: &Store, image: &str, dir: &Path, view: View, notify: bool) -> Result<(), MountError> {
    check_fuse()?;
    if is_stale(dir) {
        umount(dir)?;
    }
    if !dir.is_dir() {
        return Err(MountError::io("mount on", dir, std::io::Error::from(std::io::ErrorKind::NotADirectory)));
    }
    let layers = indexes(store, image)?;
    let tree = match view {
        View::Merged => Tree::merged(layers.iter().map(|(_, l)| l)),
        View::Layer(n) => {
            let (_, layer) = layers
                .get(n)
                .ok_or_else(|| MountError::Fuse(format!("image {image} has {} layers; --layer counts from 0", layers.len())))?;
            Tree::single(layer, n)
        }
    };
    let mut files = Vec::new();
    for (_, layer) in &layers {
        files.push(std::fs::File::open(&layer.data).map_err(|e| MountError::io("open layer data", &layer.data, e))?);
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("strata:{image}")),
        fuser::MountOption::Subtype("strata".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(2);
    // Block the stop signals before any thread starts, so only `sigtimedwait` below sees them.
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGHUP] {
        signals.add(s);
    }
    let _ = signals.thread_block();
    let image_fs = fs::ImageFs::new(tree, files);
    let session =
        fuser::spawn_mount(image_fs, dir, &config).map_err(|e| MountError::Fuse(format!("mount {} on {}: {e}", image, dir.display())))?;
    if notify {
        println!("ready");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let timeout = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
    loop {
        // SAFETY: the set is a valid, initialised sigset_t; info may be null.
        let got = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &timeout) };
        if got > 0 {
            // Asked to stop: unmount our own mount.
            drop(session);
            break;
        }
        if session.guard.is_finished() {
            // Unmounted from outside. Dropping the session would unmount the path
            // again, and by now the path may hold a new mount that is not ours.
            std::mem::forget(session);
            break;
        }
    }
    Ok(())
}

/// Starts a background server for `strata mount` and returns once the mount is ready.
pub fn mount_background(store: &Store, image: &str, dir: &Path, layer: Option<usize>) -> Result<(), MountError> {
    check_fuse()?;
    store.resolve(image)?;
    if !dir.is_dir() && !is_stale(dir) {
        return Err(MountError::io("mount on", dir, std::io::Error::from(std::io::ErrorKind::NotADirectory)));
    }
    let exe = std::env::current_exe().map_err(|e| MountError::io("find the strata binary", Path::new("/proc/self/exe"), e))?;
    let mut cmd = Command::new(exe);
    cmd.args(["mount", "--foreground", "--notify"]);
    if let Some(n) = layer {
        cmd.args(["--layer", &n.to_string()]);
    }
    cmd.arg(image).arg(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; it detaches the server from the terminal's session.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().map_err(|e| MountError::io("start mount server for", dir, e))?;
    let stdout = child.stdout.take().ok_or_else(|| MountError::Fuse("mount server has no stdout".into()))?;
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    // The server's report repeats what this process adds: keep only its cause.
    let cause = stderr.trim().trim_start_matches('×').trim();
    let cause = cause.strip_prefix(&format!("mount {image}: ")).unwrap_or(cause);
    Err(MountError::Fuse(cause.to_string()))
}

/// One difference between two images.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Added(Vec<u8>),
    Changed(Vec<u8>),
    Removed(Vec<u8>),
}

/// Lists added, changed and removed paths from `old` to `new`, in path order.
pub fn diff(store: &Store, old: &str, new: &str) -> Result<Vec<Change>, MountError> {
    let load = |image: &str| -> Result<(Tree, Vec<(Digest, LayerIndex)>), MountError> {
        let layers = indexes(store, image)?;
        let tree = Tree::merged(layers.iter().map(|(_, l)| l));
        Ok((tree, layers))
    };
    let ((old_tree, old_layers), (new_tree, new_layers)) = (load(old)?, load(new)?);
    let listing = |tree: &Tree| {
        let mut out = Vec::new();
        tree.walk(tree::ROOT, &mut Vec::new(), &mut out);
        out.into_iter().collect::<BTreeMap<Vec<u8>, u64>>()
    };
    let (old_paths, new_paths) = (listing(&old_tree), listing(&new_tree));
    let mut changes = Vec::new();
    for (path, ino) in &new_paths {
        match old_paths.get(path) {
            None => changes.push(Change::Added(path.clone())),
            Some(old_ino) => {
                let (a, b) = (&old_tree.nodes[old_ino], &new_tree.nodes[ino]);
                // Sparse files compare by their maps, then by the stored segments' bytes.
                let same_meta = (a.kind, a.mode, a.uid, a.gid, a.size, a.mtime, &a.link, a.rdev, &a.xattrs, &a.sparse)
                    == (b.kind, b.mode, b.uid, b.gid, b.size, b.mtime, &b.link, b.rdev, &b.xattrs, &b.sparse);
                let stored = if a.sparse.is_empty() { a.size } else { a.sparse.iter().map(|(_, len)| len).sum() };
                let same_data = match (a.data, b.data) {
                    (Some((la, oa)), Some((lb, ob))) => {
                        old_layers[la].0 == new_layers[lb].0 && oa == ob || same_bytes(&old_layers[la].1, oa, &new_layers[lb].1, ob, stored)
                    }
                    (None, None) => true,
                    _ => false,
                };
                if !(same_meta && same_data) {
                    changes.push(Change::Changed(path.clone()));
                }
            }
        }
    }
    for path in old_paths.keys() {
        if !new_paths.contains_key(path) {
            changes.push(Change::Removed(path.clone()));
        }
    }
    changes.sort_by(|a, b| key(a).cmp(key(b)));
    Ok(changes)
}

fn key(change: &Change) -> &[u8] {
    match change {
        Change::Added(p) | Change::Changed(p) | Change::Removed(p) => p,
    }
}

fn same_bytes(a: &LayerIndex, a_off: u64, b: &LayerIndex, b_off: u64, size: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(&a.data), std::fs::File::open(&b.data)) else { return false };
    let mut done = 0;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    while done < size {
        let n = (size - done).min(ba.len() as u64) as usize;
        if fa.read_exact_at(&mut ba[..n], a_off + done).is_err()
            || fb.read_exact_at(&mut bb[..n], b_off + done).is_err()
            || ba[..n] != bb[..n]
        {
            return false;
        }
        done += n as u64;
    }
    true
}

/// A path for printing (not UTF-8 bytes escaped).
pub fn display_path(path: &[u8]) -> String {
    format!("/{}", OsStr::from_bytes(path).to_string_lossy())
}
