//! The one integration-test binary: runs the real `strata` binary on real inputs.
//! Each module covers one area; helpers shared by all live here.

use std::path::{Path, PathBuf};

mod add_remote;
mod build;
mod cache;
mod chaos;
mod confinement;
mod conformance;
mod copy_semantics;
mod differential;
mod dockerfile;
mod engine;
mod hostile;
mod kdl;
mod layering;
mod mount;
mod registry;
mod run;
mod sandbox;
mod shared_cache;
mod snapshotter;
mod stdin_context;
mod tutorial;
mod verbs;
mod verify;

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A `strata` command with a private store under `root`.
pub fn strata(root: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("strata").expect("strata binary is built");
    cmd.env("STRATA_ROOT", root).env("NO_COLOR", "1").env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Whether golden files should be rewritten instead of compared (`STRATA_BLESS=1`).
pub fn bless() -> bool {
    std::env::var_os("STRATA_BLESS").is_some_and(|v| v == "1")
}

/// Compares `actual` with the golden file at `path`, or rewrites it when blessing.
pub fn assert_golden(path: &Path, actual: &str) {
    if bless() {
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read golden {}: {e} (run with STRATA_BLESS=1 to create it)", path.display()));
    if expected != actual {
        panic!(
            "golden mismatch for {}\n--- expected\n{expected}\n--- actual\n{actual}\n(run with STRATA_BLESS=1 to accept)",
            path.display()
        );
    }
}

/// Whether this process runs as root; tests that need it print why they skip.
pub fn require_root(test: &str) -> bool {
    let root = nix_is_root();
    if !root {
        eprintln!("skipping {test}: needs root (namespaces, overlayfs and mknod)");
    }
    root
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The busybox base context (rootfs.tar + Dockerfile), made once per test run
/// from Debian's busybox-static by `fixtures/busybox/make-rootfs.sh`.
pub fn busybox_context() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox");
        if !out.join("rootfs.tar").exists() {
            let status = std::process::Command::new("bash")
                .arg(fixtures().join("busybox/make-rootfs.sh"))
                .arg(&out)
                .status()
                .expect("run make-rootfs.sh");
            assert!(status.success(), "make-rootfs.sh failed: install busybox-static (apt-get install busybox-static)");
        }
        out
    })
    .clone()
}

/// A fresh store holding `busybox:latest`.
pub struct TestStore {
    pub dir: tempfile::TempDir,
}

impl TestStore {
    /// An empty store.
    pub fn empty() -> TestStore {
        TestStore { dir: tempfile::Builder::new().prefix("strata-test-").tempdir().expect("temp dir") }
    }

    /// A store with `busybox:latest` built from the fixture.
    pub fn with_busybox() -> TestStore {
        let store = TestStore::empty();
        let ctx = busybox_context();
        store.strata().args(["build", "-q", "-t", "busybox:latest"]).arg(&ctx).assert().success();
        store
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn strata(&self) -> assert_cmd::Command {
        strata(self.root())
    }

    /// Runs strata with `args`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.strata().args(args).output().expect("run strata");
        assert!(
            out.status.success(),
            "strata {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds `context` (with `extra` flags) and returns (stdout, stderr) of a successful build.
    pub fn build(&self, context: &Path, extra: &[&str]) -> (String, String) {
        let out = self.strata().args(["build", "--progress", "plain"]).args(extra).arg(context).output().expect("run strata build");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "build of {} failed\nstdout:\n{stdout}\nstderr:\n{stderr}", context.display());
        (stdout, stderr)
    }

    /// `umoci unpack` of `image`; returns the bundle's rootfs (inside `into`).
    pub fn unpack(&self, image: &str, into: &Path) -> PathBuf {
        let bundle = into.join("bundle");
        let out = std::process::Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{image}", self.root().display()))
            .arg(&bundle)
            .output()
            .expect("run umoci (apt-get install umoci)");
        assert!(out.status.success(), "umoci unpack {image}: {}", String::from_utf8_lossy(&out.stderr));
        bundle.join("rootfs")
    }
}

/// Progress lines `#N [..] STEP` paired with whether `#N CACHED` follows.
pub fn step_outcomes(stderr: &str) -> Vec<(String, bool)> {
    let mut steps: Vec<(String, String, bool)> = Vec::new();
    for line in stderr.lines() {
        let Some((id, rest)) = line.split_once(' ') else { continue };
        if rest.starts_with('[') {
            steps.push((id.to_string(), rest.to_string(), false));
        } else if rest == "CACHED"
            && let Some(step) = steps.iter_mut().find(|(i, _, _)| i == id)
        {
            step.2 = true;
        }
    }
    steps.into_iter().map(|(_, text, cached)| (text, cached)).collect()
}

/// Writes `files` (path, content) under a new temp dir and returns it.
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("strata-ctx-").tempdir().expect("temp dir");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
    dir
}

/// A secret file holding `content` and the `--secret id=tok,src=…` value naming it.
pub fn secret_file(content: &str) -> (tempfile::NamedTempFile, String) {
    let file = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(file.path(), content).expect("write secret");
    let spec = format!("id=tok,src={}", file.path().display());
    (file, spec)
}

/// The strata binary at a path every user can reach. A clone under a folder
/// of mode 0700 (root's home, a `mktemp -d` folder) keeps `target/` from other
/// users, so tests that switch users run this copy, one per build of the binary.
pub fn strata_for_any_user() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let built = assert_cmd::cargo::cargo_bin("strata");
        let meta = std::fs::metadata(&built).expect("strata binary is built");
        let dir =
            std::env::temp_dir().join(format!("strata-test-bin-{}-{}", meta.size(), meta.mtime_nsec() + meta.mtime() * 1_000_000_000));
        let copy = dir.join("strata");
        if !copy.exists() {
            std::fs::create_dir_all(&dir).expect("create binary folder");
            let partial = dir.join(format!("strata.{}", std::process::id()));
            std::fs::copy(&built, &partial).expect("copy strata binary");
            std::fs::rename(&partial, &copy).expect("place strata binary");
        }
        for path in [&dir, &copy] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("open up binary folder");
        }
        copy
    })
    .clone()
}

/// An ordinary user with (on Debian) subordinate ids, made once; `None` where it cannot be made.
pub fn rootless_user(test: &str) -> Option<&'static str> {
    let user = "strata-rootless";
    let exists = std::process::Command::new("id").arg(user).output().is_ok_and(|o| o.status.success());
    if !exists && !std::process::Command::new("useradd").args(["-m", user]).status().is_ok_and(|s| s.success()) {
        eprintln!("skipping {test}: cannot create user {user}");
        return None;
    }
    if std::process::Command::new("runuser").arg("--version").output().is_err() {
        eprintln!("skipping {test}: runuser is missing");
        return None;
    }
    Some(user)
}

/// What the store's temp folders hold: the entries in each process's
/// `strata/tmp/<pid>-<start>/`, and anything else left directly in `strata/tmp/`.
pub fn store_temp_files(root: &Path) -> Vec<std::fs::DirEntry> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root.join("strata/tmp")).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            found.extend(std::fs::read_dir(entry.path()).into_iter().flatten().flatten());
        } else {
            found.push(entry);
        }
    }
    found
}
