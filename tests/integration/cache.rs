//! What a cached build may and may not reuse (issue 9): bases pinned by
//! digest, archives keyed without extracting, sizes and prune. The random
//! cached-versus-`--no-cache` comparison lives in `differential.rs`.

use std::path::Path;
use std::process::Command;

use crate::{TestStore, context};

fn manifest_digest(store: &TestStore, image: &str) -> String {
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", image])).expect("inspect prints JSON");
    inspect[0]["ManifestDigest"].as_str().expect("ManifestDigest").to_string()
}

fn build_output(store: &TestStore, ctx: &Path, extra: &[&str]) -> std::process::Output {
    store.strata().args(["build", "--progress", "plain"]).args(extra).arg(ctx).output().expect("run strata build")
}

#[test]
fn from_a_digest_builds_on_that_manifest_or_fails() {
    let store = TestStore::with_busybox();
    let busybox = manifest_digest(&store, "busybox");
    // A second image under another tag, so that a wrong pick would show.
    let other = context(&[("Dockerfile", "FROM busybox:latest\nLABEL other=yes\n")]);
    store.build(other.path(), &["-t", "busybox:other"]);
    for from in [format!("busybox@{busybox}"), format!("busybox:other@{busybox}")] {
        let ctx = context(&[("Dockerfile", &format!("FROM {from}\nLABEL pinned=yes\n"))]);
        store.build(ctx.path(), &["-t", "pinned"]);
        let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "pinned"])).expect("json");
        assert!(inspect[0]["Config"]["Labels"].get("other").is_none(), "FROM {from} took the tag, not the digest: {inspect}");
    }
    let missing = format!("busybox@sha256:{}", "1".repeat(64));
    let ctx = context(&[("Dockerfile", &format!("FROM {missing}\nRUN true\n"))]);
    // Nothing is pulled here: the store alone must answer for the digest.
    let out = build_output(&store, ctx.path(), &["--pull=never"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a digest no image has must fail, not fall back to the tag:\n{stderr}");
    assert!(stderr.contains("1111111111") && stderr.contains("manifest digest"), "the error names the digest:\n{stderr}");
}

#[test]
fn add_of_an_archive_is_keyed_by_its_bytes_and_extracted_under_the_store() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nADD files.tar.gz /opt/\n"), ("src/a.txt", "one\n")]);
    let tar = |ctx: &Path| {
        let status = Command::new("tar").arg("-czf").arg(ctx.join("files.tar.gz")).arg("-C").arg(ctx.join("src")).arg("a.txt").status();
        assert!(status.expect("run tar").success());
    };
    tar(ctx.path());
    // Temp files live under the store: a system temp folder that cannot be used changes nothing.
    let no_tmp = ctx.path().join("no-such-tmp");
    let build = |tag: &str| {
        let out = store.strata().env("TMPDIR", &no_tmp).args(["build", "--progress", "plain", "-t", tag]).arg(ctx.path()).output();
        let out = out.expect("run strata build");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed:\n{stderr}");
        stderr
    };
    let first = build("archive");
    assert!(!first.contains("CACHED\n#3") && first.contains("ADD files.tar.gz"), "{first}");
    let again = build("archive");
    assert!(again.lines().filter(|l| l.ends_with("CACHED")).count() == 1, "the unchanged ADD is cached:\n{again}");
    std::fs::write(ctx.path().join("src/a.txt"), "two\n").expect("edit");
    tar(ctx.path());
    let changed = build("archive");
    assert!(!changed.contains("CACHED"), "a changed archive is extracted again:\n{changed}");
    let (code, out) = {
        let out = store.strata().args(["run", "--rm", "archive", "cat", "/opt/a.txt"]).output().expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if crate::require_root("add_of_an_archive_is_keyed_by_its_bytes_and_extracted_under_the_store (run)") {
        assert_eq!((code, out.as_str()), (Some(0), "two\n"));
    }
    let leftovers: Vec<_> = crate::store_temp_files(store.root()).iter().map(|e| e.path()).collect();
    assert!(leftovers.is_empty(), "extracted data is removed after the build: {leftovers:?}");
}

#[test]
fn images_shows_uncompressed_sizes_for_loaded_images_too() {
    let store = TestStore::with_busybox();
    let layout = tempfile::tempdir().expect("temp dir");
    let dest = format!("oci:{}:bb", layout.path().join("gz").display());
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-compress", "--dest-compress-format", "gzip"])
        .arg(format!("oci:{}:busybox:latest", store.root().display()))
        .arg(&dest)
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    let other = TestStore::empty();
    other.ok(&["load", "-i", layout.path().join("gz").to_str().expect("utf-8"), "-t", "loaded:gz"]);
    let size = |store: &TestStore, image: &str| {
        let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", image])).expect("json");
        inspect[0]["Size"].as_u64().expect("Size")
    };
    let loaded = size(&other, "loaded:gz");
    assert_eq!(loaded, size(&store, "busybox"), "a gzip-loaded image has the size of the same image built here");
    let blobs: u64 =
        std::fs::read_dir(other.root().join("blobs/sha256")).expect("blobs").flatten().map(|e| e.metadata().expect("meta").len()).sum();
    assert!(blobs < loaded, "the store holds the compressed layer ({blobs} bytes), smaller than the size shown ({loaded})");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn after_prune_df_reports_no_reclaimable_snapshots() {
    if !crate::require_root("after_prune_df_reports_no_reclaimable_snapshots") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN echo a > /a\nRUN echo b > /b\n")]);
    store.build(ctx.path(), &["-t", "snap"]);
    let reclaimable = |df: &str| -> String {
        let row = df.lines().find(|l| l.starts_with("Snapshots")).unwrap_or_else(|| panic!("no Snapshots row:\n{df}"));
        row.split_whitespace().last().expect("cell").to_string()
    };
    let before = store.ok(&["system", "df"]);
    assert_ne!(reclaimable(&before), "0B", "a build leaves snapshots:\n{before}");
    store.ok(&["system", "prune"]);
    let after = store.ok(&["system", "df"]);
    assert_eq!(reclaimable(&after), "0B", "prune frees every snapshot it could:\n{after}");
    let rebuilt = store.build(ctx.path(), &["-t", "snap"]).1;
    assert!(rebuilt.contains("RUN echo b"), "the store still builds after prune:\n{rebuilt}");
}

#[test]
fn a_recorded_hash_of_a_large_file_is_not_reused_once_the_file_changes() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY big.bin /big.bin\n")]);
    let big = ctx.path().join("big.bin");
    std::fs::write(&big, vec![b'a'; 3 << 20]).expect("write");
    // A hash is recorded only for a file unchanged for two seconds: build until it is.
    let hashes = store.root().join("strata/file-hashes");
    let records = || std::fs::read_dir(&hashes).map_or(0, |d| d.count());
    let before = records();
    let started = std::time::Instant::now();
    store.build(ctx.path(), &["-t", "big"]);
    while records() == before {
        assert!(started.elapsed().as_secs() < 60, "no content hash was ever recorded under {}", hashes.display());
        store.build(ctx.path(), &["-t", "big"]);
    }
    let cached = store.build(ctx.path(), &["-t", "big"]).1;
    assert!(cached.contains("CACHED"), "an unchanged large file keeps COPY cached:\n{cached}");
    // Same size, same mtime: only the content and the ctime differ.
    let mtime = std::fs::metadata(&big).expect("stat").modified().expect("mtime");
    std::fs::write(&big, vec![b'b'; 3 << 20]).expect("rewrite");
    std::fs::File::options().write(true).open(&big).expect("open").set_modified(mtime).expect("set mtime");
    let rebuilt = store.build(ctx.path(), &["-t", "big"]).1;
    assert!(!rebuilt.contains("CACHED"), "a changed large file rebuilds COPY:\n{rebuilt}");
}

#[test]
fn run_bind_mount_of_a_folder_misses_when_the_folder_itself_changes_mode() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::require_root("run_bind_mount_of_a_folder_misses_when_the_folder_itself_changes_mode") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx =
        context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=bind,source=d,target=/d stat -c %a /d > /out\n"), ("d/f", "x")]);
    let dir = ctx.path().join("d");
    let mut seen = Vec::new();
    for mode in [0o755, 0o700] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        store.build(ctx.path(), &["-t", "mode"]);
        let out = store.strata().args(["run", "--rm", "mode", "cat", "/out"]).output().expect("run");
        seen.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(seen, ["755", "700"], "the mount's own mode is part of what RUN sees, so of its key");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_mounts_its_scratch_upper_layer_volatile() {
    if !crate::require_root("run_mounts_its_scratch_upper_layer_volatile") {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    if (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) < (5, 10) {
        eprintln!("skipping run_mounts_its_scratch_upper_layer_volatile: overlayfs volatile needs Linux 5.10, this is {release}");
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN grep ' / ' /proc/mounts > /mounts\n")]);
    store.build(ctx.path(), &["-t", "volatile"]);
    let out = store.strata().args(["run", "--rm", "volatile", "cat", "/mounts"]).output().expect("run");
    let mounts = String::from_utf8_lossy(&out.stdout);
    assert!(mounts.contains("overlay") && mounts.contains("volatile"), "the RUN root is a volatile overlay:\n{mounts}");
}

/// SOURCE_DATE_EPOCH reaches every step (clamped mtimes, `created`): a build
/// with another epoch, or none, must not be served the last one's image, and
/// each cached build equals its `--no-cache` build.
#[test]
fn another_source_date_epoch_is_a_cache_miss() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY Dockerfile .\nENV A=1\n")]);
    let store = TestStore::empty();
    let built = |extra: &[&str]| {
        store.build(ctx.path(), &[extra, &["-t", "epoch"]].concat());
        let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "epoch"])).expect("inspect prints JSON");
        (manifest_digest(&store, "epoch"), inspect[0]["Created"].as_str().expect("Created").to_string())
    };
    let first = built(&["--build-arg", "SOURCE_DATE_EPOCH=1700000502"]);
    let second = built(&["--build-arg", "SOURCE_DATE_EPOCH=1700000501"]);
    assert_eq!(second.1, "2023-11-14T22:21:41Z", "the second epoch, not the cached first");
    assert_ne!(first.0, second.0);
    assert_eq!(built(&["--build-arg", "SOURCE_DATE_EPOCH=1700000501", "--no-cache"]), second, "cached equals --no-cache");
    assert_eq!(built(&["--build-arg", "SOURCE_DATE_EPOCH=1700000502"]), first, "the first epoch's image again");
    let none = built(&[]);
    assert!(none.1 != first.1 && none.1 != second.1, "no epoch: the time of the build, not a cached epoch: {}", none.1);
}
