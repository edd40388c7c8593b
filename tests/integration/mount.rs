//! `strata mount`: the mounted tree equals `umoci unpack` of the same image,
//! is read-only, lists huge directories, serves concurrent readers, survives
//! the image's removal, unmounts cleanly (also busy and stale mounts), and
//! `--layer` and `strata diff` show what one step changed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{TestStore, context, require_root};

/// Whether FUSE mounts can work here; prints why not.
fn fuse_usable(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if !Path::new("/dev/fuse").exists() || std::process::Command::new("fusermount3").arg("-V").output().is_err() {
        eprintln!("skipping {test}: /dev/fuse or fusermount3 (apt-get install fuse3) is missing");
        return false;
    }
    true
}

/// A mount that is always unmounted, even when the test fails.
struct Mounted<'a> {
    store: &'a TestStore,
    dir: tempfile::TempDir,
}

impl<'a> Mounted<'a> {
    fn new(store: &'a TestStore, image: &str, extra: &[&str]) -> Mounted<'a> {
        let dir = tempfile::Builder::new().prefix("strata-mnt-").tempdir().expect("mount dir");
        let out = store.strata().arg("mount").args(extra).arg(image).arg(dir.path()).output().expect("strata mount");
        assert!(out.status.success(), "mount {image}: {}", String::from_utf8_lossy(&out.stderr));
        Mounted { store, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self.store.strata().arg("umount").arg(self.dir.path()).output();
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Option<i64>,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    rdev: u64,
    /// Link count of a non-directory.
    nlink: u64,
    /// Extended attributes, sorted by name.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Other paths sharing this entry's inode (hard links).
    links: Vec<OsString>,
}

/// A path's extended attributes, as `llistxattr`/`lgetxattr` report them.
fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: c_path is NUL-terminated and names is writable for its whole length.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(len >= 0, "llistxattr {}: {}", path.display(), std::io::Error::last_os_error());
    let mut out = Vec::new();
    for name in names[..len as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = std::ffi::CString::new(name).expect("no NUL in name");
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: both strings are NUL-terminated and value is writable for its whole length.
        let n = unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        assert!(n >= 0, "lgetxattr {} {:?}: {}", path.display(), String::from_utf8_lossy(name), std::io::Error::last_os_error());
        out.push((name.to_vec(), value[..n as usize].to_vec()));
    }
    out.sort();
    out
}

fn snapshot(root: &Path) -> BTreeMap<OsString, Entry> {
    let mut by_inode: BTreeMap<u64, Vec<OsString>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(root).expect("under root").as_os_str().to_owned();
        let meta = std::fs::symlink_metadata(entry.path()).expect("stat");
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "fifo"
        };
        if ft.is_file() && meta.nlink() > 1 {
            by_inode.entry(meta.ino()).or_default().push(rel.clone());
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: if ft.is_dir() { 0 } else { meta.len() },
                // Directory mtimes move as children are unpacked; files' and links' must match.
                mtime: (!ft.is_dir()).then_some(meta.mtime()),
                content: ft.is_file().then(|| std::fs::read(entry.path()).expect("read")),
                link: ft.is_symlink().then(|| std::fs::read_link(entry.path()).expect("readlink")),
                rdev: meta.rdev(),
                nlink: if ft.is_dir() { 0 } else { meta.nlink() },
                xattrs: if ft.is_symlink() { Vec::new() } else { xattrs(entry.path()) },
                links: Vec::new(),
            },
        );
    }
    for group in by_inode.values() {
        for path in group {
            if let Some(e) = out.get_mut(path) {
                e.links = group.clone();
            }
        }
    }
    out
}

const FIXTURE: &str = "FROM busybox:latest\n\
RUN mkdir -p /d/sub /todir && echo a > /d/sub/f && echo one > /x && ln /x /xlink && ln -s /x /sym \\\n\
 && mkfifo /fifo && mknod /cdev c 1 3 && touch /empty && touch \"/bad$(printf '\\377')name\" \\\n\
 && chown 1000:50 /d/sub/f && chmod 4750 /x && dd if=/dev/zero of=/big bs=1024 count=3000 2>/dev/null\n\
RUN rm -rf /d/sub && mkdir /d/sub && echo b > /d/sub/g && rm /x && rm -r /todir && echo now-a-file > /todir \\\n\
 && rm /empty && mkdir /empty && rm /etc/group\n";

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn mounted_tree_equals_umoci_unpack() {
    if !fuse_usable("mounted_tree_equals_umoci_unpack") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", FIXTURE)]);
    store.build(ctx.path(), &["-t", "tree"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let expected = snapshot(&store.unpack("tree:latest", unpacked.path()));
    let mounted = Mounted::new(&store, "tree", &[]);
    let actual = snapshot(mounted.path());
    assert!(expected.contains_key(std::ffi::OsStr::from_bytes(b"bad\xffname")), "the fixture has a non-UTF-8 name");
    assert!(!actual.contains_key(std::ffi::OsStr::new("x")) && actual.contains_key(std::ffi::OsStr::new("xlink")));
    let (missing, extra): (Vec<_>, Vec<_>) =
        (expected.keys().filter(|k| !actual.contains_key(*k)).collect(), actual.keys().filter(|k| !expected.contains_key(*k)).collect());
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    for (path, want) in &expected {
        assert_eq!(&actual[path], want, "{path:?} differs");
    }
    // Read-only, with statfs answering.
    let write = std::fs::write(mounted.path().join("new"), b"x").expect_err("a write must fail");
    assert_eq!(write.raw_os_error(), Some(libc::EROFS));
    let stat = nix::sys::statvfs::statvfs(mounted.path()).expect("statvfs");
    assert!(stat.blocks() > 0);
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn a_huge_directory_lists_completely_and_stably() {
    if !fuse_usable("a_huge_directory_lists_completely_and_stably") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN mkdir /many && cd /many && seq 1 100000 | xargs touch\n")]);
    store.build(ctx.path(), &["-t", "many"]);
    let mounted = Mounted::new(&store, "many", &[]);
    let list = || {
        let mut names: Vec<OsString> =
            std::fs::read_dir(mounted.path().join("many")).expect("list").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        names
    };
    let (first, second) = (list(), list());
    assert_eq!(first.len(), 100_000);
    assert_eq!(first, second);
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn readers_unmounts_removal_and_stale_mounts() {
    if !fuse_usable("readers_unmounts_removal_and_stale_mounts") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", FIXTURE)]);
    store.build(ctx.path(), &["-t", "tree"]);
    let mounted = Mounted::new(&store, "tree", &[]);
    // Concurrent readers all see the same bytes.
    let expected = std::fs::read(mounted.path().join("big")).expect("read big");
    assert_eq!(expected.len(), 3000 * 1024);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| assert_eq!(std::fs::read(mounted.path().join("big")).expect("read"), expected));
        }
    });
    // The image leaves the store; the mount keeps serving it.
    store.ok(&["rmi", "tree"]);
    store.ok(&["system", "prune"]);
    assert_eq!(std::fs::read(mounted.path().join("d/sub/g")).expect("read after removal"), b"b\n");
    // Unmount while a reader holds a file open: the tree goes, the reader finishes.
    let mut reader = std::fs::File::open(mounted.path().join("big")).expect("open");
    store.ok(&["umount", mounted.path().to_str().expect("utf-8")]);
    assert!(std::fs::read_dir(mounted.path()).expect("list").next().is_none(), "the mount point is empty again");
    let mut rest = Vec::new();
    use std::io::Read;
    reader.read_to_end(&mut rest).expect("the open reader still reads");
    assert_eq!(rest.len(), expected.len());
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn a_killed_server_leaves_a_stale_mount_that_is_cleared() {
    if !fuse_usable("a_killed_server_leaves_a_stale_mount_that_is_cleared") {
        return;
    }
    let store = TestStore::with_busybox();
    let mounted = Mounted::new(&store, "busybox", &[]);
    let server = std::fs::read_to_string("/proc/mounts")
        .ok()
        .filter(|m| m.contains(mounted.path().to_str().expect("utf-8")))
        .map(|_| ())
        .and_then(|_| {
            let out = std::process::Command::new("pgrep")
                .args(["-f", &format!("mount --foreground --notify busybox {}", mounted.path().display())])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
        })
        .expect("the server process");
    std::process::Command::new("kill").args(["-9", &server]).status().expect("kill");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stale = std::fs::metadata(mounted.path()).expect_err("a dead server's mount is not connected");
    assert_eq!(stale.raw_os_error(), Some(libc::ENOTCONN));
    // Mounting again on the stale mount point clears it first.
    let out = store.strata().arg("mount").arg("busybox").arg(mounted.path()).output().expect("mount");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(mounted.path().join("bin/busybox").exists());
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn layer_view_and_diff_show_what_a_step_changed() {
    if !fuse_usable("layer_view_and_diff_show_what_a_step_changed") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", FIXTURE)]);
    store.build(ctx.path(), &["-t", "tree"]);
    let base = context(&[("Dockerfile", &FIXTURE.lines().take(4).collect::<Vec<_>>().join("\n"))]);
    store.build(base.path(), &["-t", "before"]);
    let layer = Mounted::new(&store, "tree", &["--layer", "2"]);
    for whiteout in ["etc/.wh.group", ".wh.x", "d/sub/.wh..wh..opq"] {
        assert!(layer.path().join(whiteout).exists(), "{whiteout} is listed in the layer view");
    }
    assert!(!layer.path().join("bin").exists(), "the layer view holds that layer only");
    let diff = store.ok(&["diff", "before", "tree"]);
    for line in ["D /x", "D /etc/group", "A /d/sub/g", "D /d/sub/f", "C /todir", "C /empty"] {
        assert!(diff.lines().any(|l| l == line), "{line:?} missing from:\n{diff}");
    }
    assert!(!diff.lines().any(|l| l.ends_with("/bin/busybox")), "unchanged paths are not listed:\n{diff}");
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn a_truncated_layer_fails_at_mount_time() {
    if !fuse_usable("a_truncated_layer_fails_at_mount_time") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY f /f\n"), ("f", &"x".repeat(100_000))]);
    store.build(ctx.path(), &["-t", "cut"]);
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "cut"])).expect("json");
    let layer = inspect[0]["RootFS"]["Layers"][1].as_str().expect("layer").trim_start_matches("sha256:").to_string();
    let blob = store.root().join("blobs/sha256").join(&layer);
    let len = std::fs::metadata(&blob).expect("blob").len();
    std::fs::File::options().write(true).open(&blob).expect("open").set_len(len / 2).expect("truncate");
    let dir = tempfile::tempdir().expect("dir");
    let out = store.strata().arg("mount").arg("cut").arg(dir.path()).output().expect("mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a truncated layer mounted");
    assert!(stderr.contains(&layer[..12]) || stderr.contains("truncated"), "{stderr}");
}

/// Where /dev/fuse is 0600 (as on the project machine) only the error is checked. To run the
/// mount itself here: `mknod /tmp/fuse c 10 229 && chmod 0666 /tmp/fuse && unshare -m sh -c
/// 'mount --bind /tmp/fuse /dev/fuse && target/debug/deps/integration-* mount::an_ordinary'`.
#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn an_ordinary_user_gets_a_clear_fuse_error_or_a_mount() {
    if !fuse_usable("an_ordinary_user_gets_a_clear_fuse_error_or_a_mount") {
        return;
    }
    let mode = std::fs::metadata("/dev/fuse").map(|m| m.mode() & 0o777).unwrap_or(0);
    if mode & 0o006 != 0o006 {
        // /dev/fuse is not open to others (0600 here): an ordinary user cannot mount FUSE at all.
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(crate::strata_for_any_user())
            .args(["mount", "busybox", "/tmp"])
            .env("STRATA_ROOT", "/tmp/strata-nobody-store")
            .output();
        let Ok(out) = out else {
            eprintln!("skipping an_ordinary_user_gets_a_clear_fuse_error_or_a_mount: runuser is missing");
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("/dev/fuse") && stderr.contains("chmod 0666 /dev/fuse"), "{stderr}");
        eprintln!("rootless mount skipped: /dev/fuse is mode {mode:o} here, so only the error path is checked");
        return;
    }
    // /dev/fuse is usable by anyone: nobody loads an image into its own store, mounts it through
    // fusermount3, reads it and unmounts it.
    let work = tempfile::Builder::new().prefix("strata-nobody-").tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    layout_with_layers(&layout, "stacked:latest", &stacked_layers());
    let (store, mnt) = (work.path().join("store"), work.path().join("mnt"));
    std::fs::create_dir(&mnt).expect("mkdir");
    let status = std::process::Command::new("chown").args(["-R", "nobody"]).arg(work.path()).status().expect("chown");
    assert!(status.success());
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        work.path(),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .expect("chmod");
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(crate::strata_for_any_user())
            .args(args)
            .env("STRATA_ROOT", &store)
            .env("NO_COLOR", "1")
            .output()
            .expect("runuser");
        assert!(out.status.success(), "strata {args:?} as nobody: {}", String::from_utf8_lossy(&out.stderr));
    };
    as_nobody(&["load".as_ref(), "-i".as_ref(), layout.as_os_str()]);
    as_nobody(&["mount".as_ref(), "stacked".as_ref(), mnt.as_os_str()]);
    // Without allow_other only the mounting user (not even root) may look inside.
    let read = std::process::Command::new("runuser").args(["-u", "nobody", "--", "cat"]).arg(mnt.join("todir/again")).output();
    as_nobody(&["umount".as_ref(), mnt.as_os_str()]);
    assert_eq!(read.expect("read through nobody's mount").stdout, b"a directory again");
    assert!(!mnt.join("todir").exists(), "unmounted");
}

/// How a layer blob is stored in a hand-made layout.
#[derive(Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Writes an OCI layout holding one image `name` whose layers (bottom first) are these tars.
fn layout_with_layers(dir: &Path, name: &str, layers: &[(Vec<u8>, Compression)]) {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).expect("write blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    let (mut diff_ids, mut descriptors) = (Vec::new(), Vec::new());
    for (tar, compression) in layers {
        diff_ids.push(format!("sha256:{}", hex::encode(sha2::Sha256::digest(tar))));
        let (blob, media_type) = match compression {
            Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).expect("gzip");
                (gz.finish().expect("gzip"), "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            Compression::Zstd => (zstd::encode_all(&tar[..], 3).expect("zstd"), "application/vnd.oci.image.layer.v1.tar+zstd"),
        };
        let (digest, size) = put(&blob);
        descriptors.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let history: Vec<_> = layers.iter().map(|_| serde_json::json!({"created_by": "hand-made layer"})).collect();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history});
    let (config, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": descriptors});
    let (manifest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": name}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
}

/// Writes an OCI layout holding one image whose only layer is `layer_tar`.
fn layout_with_layer(dir: &Path, layer_tar: &Path) {
    layout_with_layers(dir, "sparse:latest", &[(std::fs::read(layer_tar).expect("layer"), Compression::None)]);
}

/// A layer tar written entry by entry, with raw names (not UTF-8, or unsafe on purpose).
struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerTar {
    fn new() -> LayerTar {
        LayerTar { builder: tar::Builder::new(Vec::new()) }
    }

    fn header(path: &[u8], kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_234_567_890);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header
    }

    fn add(mut self, mut header: tar::Header, data: &[u8], xattrs: &[(&str, &[u8])]) -> LayerTar {
        if !xattrs.is_empty() {
            let keys: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
            self.builder.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v))).expect("pax");
        }
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).expect("append");
        self
    }

    fn dir(self, path: &str) -> LayerTar {
        self.add(Self::header(path.as_bytes(), tar::EntryType::Directory, 0o755), b"", &[])
    }

    fn file(self, path: &[u8], data: &[u8]) -> LayerTar {
        self.add(Self::header(path, tar::EntryType::Regular, 0o644), data, &[])
    }

    fn link(self, kind: tar::EntryType, path: &str, target: &str) -> LayerTar {
        let mut header = Self::header(path.as_bytes(), kind, 0o777);
        header.set_link_name(target).expect("link name");
        self.add(header, b"", &[])
    }

    fn device(self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> LayerTar {
        let mut header = Self::header(path.as_bytes(), kind, 0o620);
        header.set_device_major(major).expect("major");
        header.set_device_minor(minor).expect("minor");
        self.add(header, b"", &[])
    }

    fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }
}

/// Three layers (plain, gzip, zstd) exercising every case the merged tree must get right.
fn stacked_layers() -> Vec<(Vec<u8>, Compression)> {
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let mut owned = LayerTar::header(b"owned", Regular, 0o4750);
    owned.set_uid(1000);
    owned.set_gid(50);
    owned.set_mtime(1_000_000_000);
    let base = LayerTar::new()
        .dir("a")
        .file(b"a/keep", b"kept?")
        .file(b"a/old", b"old")
        .dir("todir")
        .file(b"todir/child", b"child")
        .file(b"tofile", b"a file first")
        .file(b"h1", b"hard")
        .link(Link, "h2", "h1")
        .link(Link, "h3", "h1")
        .link(Symlink, "sym", "h1")
        .link(Symlink, "dangling", "/no/such/target")
        .add(LayerTar::header(b"fifo", Fifo, 0o600), b"", &[])
        .device("cdev", Char, 1, 3)
        .device("bdev", Block, 7, 300)
        .file(b"empty", b"")
        .file(b"bad\xffname", b"not utf-8")
        .add(owned, b"set-uid", &[])
        .add(LayerTar::header(b"xattr", Regular, 0o644), b"x", &[("user.note", b"hello"), ("user.bin", b"\x00\xff")])
        .add(LayerTar::header(b"xdir", Directory, 0o700), b"", &[("user.dir", b"1")])
        .file(b"xdir/inside", &vec![7u8; 300_000])
        .finish();
    let middle = LayerTar::new()
        .file(b".wh.h2", b"")
        .dir("a")
        .file(b"a/.wh..wh..opq", b"")
        .file(b"a/new", b"new")
        .file(b".wh.todir", b"")
        .file(b"todir", b"now a file")
        .dir("tofile")
        .file(b"tofile/inner", b"inside what was a file")
        .add(LayerTar::header(b"xdir", Directory, 0o750), b"", &[("user.dir", b"2")])
        .finish();
    let top = LayerTar::new()
        .file(b".wh.todir", b"")
        .dir("todir")
        .file(b"todir/again", b"a directory again")
        .link(Link, "h4", "h3")
        .file(b"xdir/.wh.inside", b"")
        .finish();
    vec![(base, Compression::None), (middle, Compression::Gzip), (top, Compression::Zstd)]
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn stacked_hand_made_layers_equal_umoci_unpack() {
    if !fuse_usable("stacked_hand_made_layers_equal_umoci_unpack") {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    layout_with_layers(&layout, "stacked:latest", &stacked_layers());
    // umoci 0.4.7 reads no zstd: it unpacks a twin whose zstd layer is gzipped (same diff_ids).
    let twin = work.path().join("twin");
    let gzipped: Vec<_> =
        stacked_layers().into_iter().map(|(tar, c)| (tar, if matches!(c, Compression::Zstd) { Compression::Gzip } else { c })).collect();
    layout_with_layers(&twin, "twin:latest", &gzipped);
    let store = TestStore::empty();
    store.ok(&["load", "-i", layout.to_str().expect("utf-8")]);
    store.ok(&["load", "-i", twin.to_str().expect("utf-8")]);
    let expected = snapshot(&store.unpack("twin:latest", work.path()));
    for _ in 0..2 {
        // The first mount makes the indexes (and the uncompressed copies), the second reads them back.
        let mounted = Mounted::new(&store, "stacked:latest", &[]);
        let actual = snapshot(mounted.path());
        assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (path, want) in &expected {
            assert_eq!(&actual[path], want, "{path:?} differs");
        }
        let h1 = &actual[std::ffi::OsStr::new("h1")];
        assert_eq!((h1.nlink, h1.links.len()), (3, 3), "h1, h3 and h4 share one inode");
        assert_eq!(actual[std::ffi::OsStr::new("xattr")].xattrs.len(), 2);
        assert!(actual.contains_key(std::ffi::OsStr::from_bytes(b"bad\xffname")));
    }
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn unsafe_paths_and_corrupt_layers_are_refused_at_mount_time() {
    if !fuse_usable("unsafe_paths_and_corrupt_layers_are_refused_at_mount_time") {
        return;
    }
    /// Case name, its layers (tar bytes and compression), and what the error must name.
    type Case<'a> = (&'a str, Vec<(Vec<u8>, Compression)>, &'a str);
    let cases: [Case; 3] = [
        ("dotdot", vec![(LayerTar::new().file(b"a/../../evil", b"x").finish(), Compression::None)], "a/../../evil"),
        ("absolute", vec![(LayerTar::new().file(b"/etc/evil", b"x").finish(), Compression::None)], "/etc/evil"),
        ("corrupt", vec![(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5], Compression::None)], "decompress"),
    ];
    for (name, layers, needle) in cases {
        let work = tempfile::tempdir().expect("temp dir");
        let layout = work.path().join("layout");
        layout_with_layers(&layout, &format!("{name}:latest"), &layers);
        let store = TestStore::empty();
        store.ok(&["load", "-i", layout.to_str().expect("utf-8")]);
        let dir = tempfile::tempdir().expect("dir");
        let out =
            store.strata().arg("mount").arg(name).arg(dir.path()).timeout(std::time::Duration::from_secs(60)).output().expect("mount");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let _ = store.strata().arg("umount").arg(dir.path()).output();
            panic!("{name}: a bad layer mounted");
        }
        let digest = format!("sha256:{}", {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&layers[0].0))
        });
        assert!(stderr.contains(needle) && stderr.contains(&digest), "{name}: the error names neither {needle:?} nor {digest}:\n{stderr}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn sparse_files_larger_than_4_gib_read_back_exactly() {
    if !fuse_usable("sparse_files_larger_than_4_gib_read_back_exactly") {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let big = tree.join("big.img");
    let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&big).expect("create");
    use std::os::unix::fs::FileExt;
    let far = 4_700_000_000u64;
    file.write_all_at(b"head", 0).expect("write head");
    // More than four data segments: GNU tar writes the rest of the map in extension headers.
    for i in 1..12u64 {
        file.write_all_at(format!("segment {i}").repeat(1000).as_bytes(), i * 300_000_000 + 123).expect("write segment");
    }
    file.write_all_at(b"tail beyond four gibibytes", far).expect("write tail");
    file.set_len(5 << 30).expect("extend");
    let layer = work.path().join("layer.tar");
    let status = std::process::Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cf"])
        .arg(&layer)
        .arg("-C")
        .arg(&tree)
        .arg("big.img")
        .status()
        .expect("run tar");
    assert!(status.success());
    let layout = work.path().join("layout");
    layout_with_layer(&layout, &layer);
    let store = TestStore::empty();
    store.ok(&["load", "-i", layout.to_str().expect("utf-8")]);
    let mounted = Mounted::new(&store, "sparse:latest", &[]);
    let served = std::fs::File::open(mounted.path().join("big.img")).expect("open");
    assert_eq!(served.metadata().expect("stat").len(), 5 << 30);
    let mut head = [0u8; 4];
    served.read_exact_at(&mut head, 0).expect("read head");
    assert_eq!(&head, b"head");
    let mut tail = [0u8; 26];
    served.read_exact_at(&mut tail, far).expect("read tail");
    assert_eq!(&tail, b"tail beyond four gibibytes");
    let mut hole = [1u8; 16];
    served.read_exact_at(&mut hole, 1 << 30).expect("read hole");
    assert_eq!(hole, [0u8; 16]);
    // A read across a hole and the start of a segment.
    let mut across = [1u8; 200];
    served.read_exact_at(&mut across, 300_000_000 + 23).expect("read across");
    assert_eq!((&across[..100], &across[100..109]), (&[0u8; 100][..], &b"segment 1"[..]));
    // All 5 GiB, compared with the original chunk by chunk.
    let (mut want, mut got) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0u64;
    while at < 5 << 30 {
        file.read_exact_at(&mut want, at).expect("read the original");
        served.read_exact_at(&mut got, at).expect("read the mount");
        assert!(want == got, "bytes differ in the 4 MiB from {at}");
        at += want.len() as u64;
    }
}

/// Regression: a server whose mount was unmounted from outside unmounted the
/// path again as it exited, taking down a new mount made there meanwhile.
#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn a_remount_survives_the_previous_server_exiting() {
    if !fuse_usable("a_remount_survives_the_previous_server_exiting") {
        return;
    }
    let store = TestStore::with_busybox();
    let mounted = Mounted::new(&store, "busybox", &[]);
    let dir = mounted.path().to_str().expect("utf-8").to_string();
    store.ok(&["umount", &dir]);
    store.ok(&["mount", "busybox", &dir]);
    // The first server notices its unmount within a fraction of a second; give it time to exit.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(mounted.path().join("bin/busybox").exists(), "the new mount was taken down");
}

#[test]
#[cfg_attr(not(strata_tests_fuse), ignore = "needs root, /dev/fuse and fusermount3")]
fn a_foreground_mount_unmounts_cleanly_on_sigterm_and_sigint() {
    if !fuse_usable("a_foreground_mount_unmounts_cleanly_on_sigterm_and_sigint") {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    layout_with_layers(&layout, "stacked:latest", &stacked_layers());
    let store = TestStore::empty();
    store.ok(&["load", "-i", layout.to_str().expect("utf-8")]);
    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        let dir = tempfile::tempdir().expect("mount dir");
        let mut server = std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"))
            .env("STRATA_ROOT", store.root())
            .arg("mount")
            .arg("--foreground")
            .arg("stacked")
            .arg(dir.path())
            .spawn()
            .expect("start strata mount --foreground");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !dir.path().join("h1").exists() {
            if std::time::Instant::now() > deadline || server.try_wait().expect("wait").is_some() {
                let _ = server.kill();
                let _ = store.strata().arg("umount").arg(dir.path()).output();
                panic!("the foreground mount never became ready");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), signal).expect("signal");
        let status = server.wait().expect("wait");
        let still_mounted =
            std::fs::read_to_string("/proc/self/mounts").expect("mounts").lines().any(|l| l.split(' ').nth(1) == dir.path().to_str());
        if still_mounted {
            let _ = store.strata().arg("umount").arg(dir.path()).output();
        }
        assert!(status.success() && !still_mounted, "{signal}: exit {status}, still mounted: {still_mounted}");
    }
}
