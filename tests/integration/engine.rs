//! The build engine end to end: web-ping, the cache, multi-stage, COPY/ADD,
//! metadata, reproducibility, errors, and what skopeo and umoci read.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::{TestStore, context, fixtures, require_root};

fn inspect(store: &TestStore, image: &str) -> serde_json::Value {
    let text = store.ok(&["image", "inspect", image]);
    serde_json::from_str::<serde_json::Value>(&text).expect("inspect prints JSON")[0].clone()
}

fn steps_cached(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.ends_with(" CACHED")).count()
}

#[test]
fn web_ping_builds_into_a_layout_skopeo_and_umoci_read() {
    let store = TestStore::with_busybox();
    store.build(&fixtures().join("web-ping"), &["-t", "web-ping"]);
    let out = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:web-ping:latest", store.root().display()))
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo prints JSON");
    let env: Vec<String> = serde_json::from_value(config["config"]["Env"].clone()).expect("Env");
    for expected in ["TARGET=blog.sixeyed.com", "METHOD=HEAD", "INTERVAL=3000"] {
        assert!(env.contains(&expected.to_string()), "{expected} missing from {env:?}");
    }
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["node", "/web-ping/app.js"]));
    assert_eq!(config["config"]["WorkingDir"], "/web-ping");
    let unpacked = tempfile::tempdir().expect("temp dir");
    let rootfs = store.unpack("web-ping:latest", unpacked.path());
    let app = std::fs::read(rootfs.join("web-ping/app.js")).expect("app.js in the image");
    assert_eq!(app, std::fs::read(fixtures().join("web-ping/app.js")).expect("fixture"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("index.json")).expect("index.json")).expect("json");
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(names.contains(&"web-ping:latest"), "{names:?}");
}

#[test]
fn cache_reuses_unchanged_steps_and_rebuilds_after_a_change() {
    let store = TestStore::with_busybox();
    let ctx = tempfile::tempdir().expect("temp dir");
    for file in ["Dockerfile", "app.js"] {
        std::fs::copy(fixtures().join("web-ping").join(file), ctx.path().join(file)).expect("copy fixture");
    }
    let (first_id, _) = store.build(ctx.path(), &["-q", "-t", "web-ping"]);
    let (second_id, stderr) = store.build(ctx.path(), &["-t", "web-ping"]);
    assert_eq!(steps_cached(&stderr), 4, "every step is cached:\n{stderr}");
    assert_eq!(first_id.trim(), second_id.trim(), "a cached rebuild gives the same image");
    // A new mtime alone changes nothing.
    let app = ctx.path().join("app.js");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
    std::fs::File::options().write(true).open(&app).expect("open").set_modified(later).expect("touch");
    let (_, stderr) = store.build(ctx.path(), &[]);
    assert_eq!(steps_cached(&stderr), 4, "mtime is not part of the key:\n{stderr}");
    // New content rebuilds COPY and what follows, not what precedes.
    std::fs::write(&app, "console.log('changed')\n").expect("write");
    let (_, stderr) = store.build(ctx.path(), &[]);
    assert_eq!(steps_cached(&stderr), 2, "ENV and WORKDIR stay cached:\n{stderr}");
    assert!(stderr.contains("COPY app.js .") && !stderr.lines().any(|l| l.contains("COPY") && l.ends_with("CACHED")));
    let (rebuilt_id, stderr) = store.build(ctx.path(), &["--no-cache"]);
    assert_eq!(steps_cached(&stderr), 0, "--no-cache rebuilds all:\n{stderr}");
    // What --no-cache built is keyed as a normal build keys it.
    let (cached_id, stderr) = store.build(ctx.path(), &[]);
    assert_eq!(steps_cached(&stderr), 4, "the --no-cache build fills the cache:\n{stderr}");
    assert_eq!(rebuilt_id.trim(), cached_id.trim());
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn multistage_builds_only_what_the_target_needs() {
    if !require_root("multistage_builds_only_what_the_target_needs") {
        return;
    }
    let store = TestStore::with_busybox();
    let ms = fixtures().join("multistage");
    let (_, stderr) = store.build(&ms, &["-t", "ms"]);
    assert!(!stderr.contains("RUN exit 1"), "the unused stage was built:\n{stderr}");
    let out = store.strata().args(["run", "--rm", "ms"]).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello from the builder stage");
    store.build(&ms, &["--target", "builder", "--build-arg", "GREETING=hi", "-t", "ms-builder"]);
    let out = store.strata().args(["run", "--rm", "ms-builder", "cat", "/out.txt"]).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi from the builder stage");
    let out = store.strata().args(["build", "--target", "bulder"]).arg(&ms).output().expect("build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did you mean \"builder\""), "{stderr}");
    assert!(!stderr.contains("#1 "), "work started before the target was checked:\n{stderr}");
}

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let store = TestStore::empty();
            let run = |args: &[&str], ctx: &Path| {
                let out = store.strata().env("SOURCE_DATE_EPOCH", "1700000000").args(args).arg(ctx).output().expect("build");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            run(&["build", "-q", "-t", "busybox"], &crate::busybox_context());
            run(&["build", "-q", "-t", "web-ping"], &fixtures().join("web-ping"))
        })
        .collect();
    assert_eq!(ids[0], ids[1], "two stores built different images from the same inputs");
}

#[test]
fn copy_follows_dockers_source_and_destination_rules() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("dir/a.txt", "a"),
        ("dir/sub/b.txt", "b"),
        ("one.log", "1"),
        ("two.log", "2"),
        ("keep.log", "k"),
        ("secret/key", "s"),
        (".dockerignore", "secret\n**/*.tmp\nkeep.log\n!keep.log\n"),
        ("dir/junk.tmp", "x"),
        (
            "Dockerfile",
            "FROM busybox:latest\n\
             COPY dir /contents/\n\
             COPY *.log /logs/\n\
             COPY one.log /renamed\n\
             COPY --chown=app:staff --chmod=0600 one.log two.log /owned/\n\
             COPY --link dir/a.txt /linked/a.txt\n\
             COPY <<EOF /inline.txt\nhello $NAME\nEOF\n",
        ),
    ]);
    store.build(ctx.path(), &["-t", "copies", "--build-arg", "NAME=x"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("copies:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("contents/a.txt")).expect("a"), "a");
    assert_eq!(std::fs::read_to_string(root.join("contents/sub/b.txt")).expect("b"), "b");
    assert!(!root.join("contents/dir").exists(), "a directory's contents are copied, not the directory");
    assert!(!root.join("contents/junk.tmp").exists(), ".dockerignore ** pattern");
    for log in ["one.log", "two.log", "keep.log"] {
        assert!(root.join("logs").join(log).exists(), "{log} (wildcards, ! exception)");
    }
    assert_eq!(std::fs::read_to_string(root.join("renamed")).expect("renamed"), "1");
    let owned = std::fs::metadata(root.join("owned/one.log")).expect("owned");
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o777), (1000, 50, 0o600));
    assert!(root.join("linked/a.txt").exists());
    assert_eq!(std::fs::read_to_string(root.join("inline.txt")).expect("inline"), "hello \n", "NAME is not declared, so empty");
    // Excluded and escaping sources are refused.
    for (dockerfile, expected) in [
        ("FROM busybox:latest\nCOPY secret/key /\n", "excluded by .dockerignore"),
        ("FROM busybox:latest\nCOPY ../outside /\n", "outside the build context"),
        ("FROM busybox:latest\nCOPY one.log two.log /file\n", "must be a directory"),
    ] {
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write");
        let out = store.strata().args(["build"]).arg(ctx.path()).output().expect("build");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{dockerfile}: {stderr}");
    }
    std::os::unix::fs::symlink("/etc", ctx.path().join("escape")).expect("symlink");
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox:latest\nCOPY escape/passwd /\n").expect("write");
    let out = store.strata().args(["build"]).arg(ctx.path()).output().expect("build");
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the build context"), "a symlink out of the context is refused");
}

#[test]
fn add_extracts_compressed_tar_archives() {
    let store = TestStore::with_busybox();
    let ctx = tempfile::tempdir().expect("temp dir");
    let tree = ctx.path().join("tree");
    std::fs::create_dir_all(tree.join("pkg")).expect("mkdir");
    std::fs::write(tree.join("pkg/file.txt"), "packed").expect("write");
    let mut dockerfile = String::from("FROM busybox:latest\n");
    for (ext, flag) in [("tar", ""), ("tar.gz", "-z"), ("tar.bz2", "-j"), ("tar.xz", "-J"), ("tar.zst", "--zstd")] {
        let archive = ctx.path().join(format!("a.{ext}"));
        let mut cmd = Command::new("tar");
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        let status = cmd.arg("-cf").arg(&archive).arg("-C").arg(&tree).arg("pkg").status().expect("run tar");
        assert!(status.success(), "tar {flag}");
        dockerfile.push_str(&format!("ADD a.{ext} /x/{}/\n", ext.replace('.', "-")));
    }
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write");
    store.build(ctx.path(), &["-t", "added"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("added:latest", unpacked.path());
    for dir in ["tar", "tar-gz", "tar-bz2", "tar-xz", "tar-zst"] {
        let path = root.join("x").join(dir).join("pkg/file.txt");
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "packed", "{}", path.display());
    }
}

#[test]
fn metadata_instructions_land_in_the_config_as_docker_writes_them() {
    let store = TestStore::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\n\
         LABEL org.example.name=meta version=\"1.0\"\n\
         ENV GREETING=hello\n\
         EXPOSE 8080 53/udp\n\
         VOLUME /data\n\
         USER app:staff\n\
         WORKDIR /srv/app\n\
         STOPSIGNAL SIGQUIT\n\
         HEALTHCHECK --interval=30s --retries=2 CMD wget -q localhost\n\
         ONBUILD RUN echo triggered > /onbuild\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         CMD echo $GREETING\n",
    )]);
    store.build(ctx.path(), &["-t", "meta"]);
    let image = inspect(&store, "meta");
    let config = &image["Config"];
    assert_eq!(config["Labels"]["org.example.name"], "meta");
    assert_eq!(config["Labels"]["version"], "1.0");
    assert!(config["Env"].as_array().expect("Env").contains(&serde_json::json!("GREETING=hello")));
    assert_eq!(config["ExposedPorts"], serde_json::json!({"53/udp": {}, "8080/tcp": {}}));
    assert_eq!(config["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(config["User"], "app:staff");
    assert_eq!(config["WorkingDir"], "/srv/app");
    assert_eq!(config["StopSignal"], "SIGQUIT");
    assert_eq!(config["Healthcheck"]["Test"], serde_json::json!(["CMD-SHELL", "wget -q localhost"]));
    assert_eq!(config["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(config["Healthcheck"]["Retries"], 2);
    assert_eq!(config["OnBuild"], serde_json::json!(["RUN echo triggered > /onbuild"]));
    assert_eq!(config["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(config["Cmd"], serde_json::json!(["/bin/sh", "-ec", "echo $GREETING"]));
    let history = image["History"].as_array().expect("History");
    let label = history.iter().find(|h| h["created_by"].as_str().is_some_and(|c| c.starts_with("LABEL"))).expect("LABEL entry");
    assert_eq!(label["empty_layer"], true, "metadata steps add no layer");
    let workdir = history.iter().find(|h| h["created_by"] == "WORKDIR /srv/app").expect("WORKDIR entry");
    assert!(workdir.get("empty_layer").is_none(), "WORKDIR made a missing directory: a layer");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn onbuild_triggers_run_when_the_image_is_a_base() {
    if !require_root("onbuild_triggers_run_when_the_image_is_a_base") {
        return;
    }
    let store = TestStore::with_busybox();
    let parent = context(&[("Dockerfile", "FROM busybox:latest\nONBUILD RUN echo triggered > /onbuild\n")]);
    store.build(parent.path(), &["-t", "parent"]);
    let child = context(&[("Dockerfile", "FROM parent\nRUN cat /onbuild\n")]);
    let (_, stderr) = store.build(child.path(), &["-t", "child"]);
    assert!(stderr.contains("triggered"), "{stderr}");
    assert!(inspect(&store, "child")["Config"].get("OnBuild").is_none(), "triggers are consumed, not inherited");
}

#[test]
fn a_failed_build_leaves_no_tag_and_no_broken_blob() {
    let store = TestStore::with_busybox();
    // Names and ids only: the CREATED column moves with the clock.
    let images = || store.ok(&["images"]).lines().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
    let before = images();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY missing.txt /\n")]);
    let out = store.strata().args(["build", "-t", "broken"]).arg(ctx.path()).output().expect("build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:2") && stderr.contains("missing.txt"), "{stderr}");
    assert_eq!(images(), before, "nothing was tagged");
    let missing_base = context(&[("Dockerfile", "FROM nosuch:1\n")]);
    let out = store.strata().args(["build", "--pull=never"]).arg(missing_base.path()).output().expect("build");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nosuch:1\""), "the missing base is named");
    for blob in std::fs::read_dir(store.root().join("blobs/sha256")).expect("blobs").flatten() {
        let bytes = std::fs::read(blob.path()).expect("read blob");
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(digest, blob.file_name().to_string_lossy(), "blob content matches its name");
    }
}
