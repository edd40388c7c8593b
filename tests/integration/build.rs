//! The build engine against Docker's rules, one behaviour per test: COPY/ADD
//! sources and destinations, variable expansion, config metadata, the cache,
//! multi-stage builds, reproducibility and failed builds.
//!
//! `engine.rs` holds the broad end-to-end passes (web-ping, the rebuild cycle,
//! ADD of every compression); these pin the rules it does not reach.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::Digest as _;

use crate::{TestStore, context, fixtures, require_root, step_outcomes};

/// `strata image inspect IMAGE`, the first (only) element.
fn inspect(store: &TestStore, image: &str) -> serde_json::Value {
    let text = store.ok(&["image", "inspect", image]);
    serde_json::from_str::<serde_json::Value>(&text).expect("inspect prints JSON")[0].clone()
}

/// Builds `ctx` expecting failure; returns stderr.
fn build_fails(store: &TestStore, ctx: &Path, extra: &[&str]) -> String {
    let out = store.strata().args(["build", "--progress", "plain"]).args(extra).arg(ctx).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "build of {} succeeded but should fail\nstderr:\n{stderr}", ctx.display());
    stderr
}

/// Whether the step whose progress text contains `needle` was CACHED.
fn cached(stderr: &str, needle: &str) -> bool {
    let outcomes = step_outcomes(stderr);
    outcomes.iter().find(|(text, _)| text.contains(needle)).unwrap_or_else(|| panic!("no step {needle:?} in:\n{stderr}")).1
}

/// The files under `blobs/sha256`, each checked to hash to its own name.
fn whole_blobs(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for blob in std::fs::read_dir(root.join("blobs/sha256")).expect("blobs").flatten() {
        let name = blob.file_name().to_string_lossy().into_owned();
        let mut file = std::fs::File::open(blob.path()).expect("open blob");
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).expect("read blob");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        assert_eq!(hex::encode(hasher.finalize()), name, "blob content matches its name");
        names.push(name);
    }
    names.sort();
    names
}

/// The manifest digest `index.json` records for `reference`.
fn manifest_digest(root: &Path, reference: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("index.json")).expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("{reference} is not in index.json: {index}"))
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- COPY / ADD ----

#[test]
fn copy_from_a_stage_index_and_from_a_store_image() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("made.txt", "made in stage 0\n"),
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY made.txt /made.txt\nFROM busybox:latest\nCOPY --from=0 /made.txt /from-index.txt\nCOPY --from=busybox:latest /etc/group /from-image\n",
        ),
    ]);
    store.build(ctx.path(), &["-t", "from-index"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("from-index:latest", unpacked.path());
    assert_eq!(read(&root.join("from-index.txt")), "made in stage 0\n");
    assert!(!root.join("made.txt").exists(), "the final stage holds only what it copied");
    assert_eq!(read(&root.join("from-image")), read(&root.join("etc/group")));
}

#[test]
fn destination_rules_for_a_single_source() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("f.txt", "f"),
        ("tree/a.txt", "a"),
        ("tree/sub/b.txt", "b"),
        (
            "Dockerfile",
            "FROM busybox:latest\n\
             COPY f.txt /newdir/\n\
             COPY f.txt /newfile\n\
             COPY f.txt /tmp\n\
             COPY tree /nodest\n\
             WORKDIR /work\n\
             COPY f.txt relative\n\
             COPY f.txt ./\n",
        ),
    ]);
    store.build(ctx.path(), &["-t", "dests"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("dests:latest", unpacked.path());
    assert_eq!(read(&root.join("newdir/f.txt")), "f", "a trailing slash makes a directory");
    assert!(root.join("newfile").is_file(), "no trailing slash, not existing: the file itself");
    assert_eq!(read(&root.join("tmp/f.txt")), "f", "an existing directory receives the file");
    assert_eq!(read(&root.join("nodest/a.txt")), "a", "a directory's contents, not the directory");
    assert_eq!(read(&root.join("nodest/sub/b.txt")), "b");
    assert!(!root.join("nodest/tree").exists());
    assert_eq!(read(&root.join("work/relative")), "f", "a relative destination is under WORKDIR");
    assert_eq!(read(&root.join("work/f.txt")), "f");
}

#[test]
fn a_wildcard_matching_one_file_copies_to_the_destination_path() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("target/app-1.0.jar", "jar bytes"),
        ("target/notes.txt", "not a jar"),
        ("Dockerfile", "FROM busybox:latest\nCOPY target/*.jar /app.jar\n"),
    ]);
    store.build(ctx.path(), &["-t", "jar"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("jar:latest", unpacked.path());
    assert!(
        root.join("app.jar").is_file(),
        "/app.jar is a directory: {:?}",
        std::fs::read_dir(root.join("app.jar")).ok().map(|d| d.count())
    );
    assert_eq!(read(&root.join("app.jar")), "jar bytes");
}

/// BuildKit lets every wildcard source match nothing (buildah refuses a lone one): nothing is copied.
#[test]
fn a_lone_wildcard_that_matches_nothing_copies_nothing() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("a.log", "a"), ("Dockerfile", "FROM busybox:latest\nCOPY *.txt /x/\n")]);
    store.build(ctx.path(), &["-t", "nomatch"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("nomatch:latest", unpacked.path());
    assert!(root.join("bin/busybox").is_file());
    assert!(!root.join("x").exists(), "no file matched, so no destination was made");
}

#[test]
fn dockerignore_double_star_and_exceptions() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("notes.md", "n"),
        ("docs/README.md", "r"),
        ("docs/x.md", "x"),
        ("docs/sub/y.md", "y"),
        ("docs/keep.txt", "k"),
        (".dockerignore", "**/*.md\n!docs/README.md\n"),
        ("Dockerfile", "FROM busybox:latest\nCOPY . /ctx/\n"),
    ]);
    store.build(ctx.path(), &["-t", "ignored"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("ignored:latest", unpacked.path()).join("ctx");
    assert!(!root.join("notes.md").exists(), "** matches no directory at all");
    assert!(!root.join("docs/x.md").exists() && !root.join("docs/sub/y.md").exists(), "** matches any depth");
    assert_eq!(read(&root.join("docs/README.md")), "r", "! re-includes");
    assert_eq!(read(&root.join("docs/keep.txt")), "k");
}

#[test]
fn changing_an_ignored_file_keeps_copy_cached() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("app.txt", "app"),
        ("build.log", "one"),
        (".dockerignore", "*.log\n"),
        ("Dockerfile", "FROM busybox:latest\nCOPY . /app/\n"),
    ]);
    store.build(ctx.path(), &["-t", "ign"]);
    std::fs::write(ctx.path().join("build.log"), "two, longer").expect("write");
    let (_, stderr) = store.build(ctx.path(), &["-t", "ign"]);
    assert!(cached(&stderr, "COPY . /app/"), "an ignored file is no input:\n{stderr}");
}

#[test]
fn chown_by_name_by_number_and_user_only() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("f", "f"),
        (
            "Dockerfile",
            "FROM busybox:latest\n\
             COPY --chown=app:staff f /by-name\n\
             COPY --chown=1000:50 f /by-number\n\
             COPY --chown=app f /user-only\n\
             COPY --chmod=0600 f /private\n",
        ),
    ]);
    store.build(ctx.path(), &["-t", "owners"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("owners:latest", unpacked.path());
    let owner = |name: &str| {
        let meta = std::fs::metadata(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner("by-name"), (1000, 50));
    assert_eq!(owner("by-number"), (1000, 50));
    assert_eq!(owner("user-only"), (1000, 1000), "a user alone takes the user's group");
    assert_eq!(owner("private"), (0, 0));
    assert_eq!(std::fs::metadata(root.join("private")).expect("private").mode() & 0o7777, 0o600);
}

#[test]
fn chown_to_an_unknown_user_fails_naming_it() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("f", "f"), ("Dockerfile", "FROM busybox:latest\nCOPY --chown=nosuch f /f\n")]);
    let stderr = build_fails(&store, ctx.path(), &[]);
    assert!(stderr.contains("\"nosuch\"") && stderr.contains("/etc/passwd"), "{stderr}");
}

#[test]
fn add_copies_a_file_that_only_looks_like_an_archive() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("fake.tar.gz", "not an archive at all"), ("Dockerfile", "FROM busybox:latest\nADD fake.tar.gz /fake/\n")]);
    store.build(ctx.path(), &["-t", "fake"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("fake:latest", unpacked.path());
    assert_eq!(read(&root.join("fake/fake.tar.gz")), "not an archive at all");
}

#[test]
fn copy_heredoc_expands_variables_unless_the_delimiter_is_quoted() {
    let store = TestStore::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nARG WHO=world\nCOPY <<EOT /expanded\nhello $WHO\nEOT\nCOPY <<'EOT' /literal\nhello $WHO\nEOT\n",
    )]);
    store.build(ctx.path(), &["-t", "heredoc"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("heredoc:latest", unpacked.path());
    assert_eq!(read(&root.join("expanded")), "hello world\n");
    assert_eq!(read(&root.join("literal")), "hello $WHO\n");
}

#[test]
fn copy_link_gives_the_same_files_as_copy() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("tree/a.txt", "a"),
        ("tree/sub/b.txt", "b"),
        ("Dockerfile", "FROM busybox:latest\nCOPY --link tree /linked/\nCOPY tree /plain/\n"),
    ]);
    store.build(ctx.path(), &["-t", "linked"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("linked:latest", unpacked.path());
    for file in ["a.txt", "sub/b.txt"] {
        assert_eq!(read(&root.join("linked").join(file)), read(&root.join("plain").join(file)), "{file}");
    }
}

#[test]
fn names_and_link_targets_that_are_not_utf8_are_copied_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY tree /tree/\n")]);
    let name = OsStr::from_bytes(b"caf\xe9");
    let tree = ctx.path().join("tree");
    std::fs::create_dir_all(tree.join(name)).expect("mkdir");
    std::fs::write(tree.join(name).join(name), "latin-1").expect("write");
    std::os::unix::fs::symlink(Path::new(name).join(name), tree.join("link")).expect("symlink");
    store.build(ctx.path(), &["-t", "latin1"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("latin1:latest", unpacked.path());
    assert_eq!(read(&root.join("tree").join(name).join(name)), "latin-1");
    assert_eq!(std::fs::read_link(root.join("tree/link")).expect("readlink"), Path::new(name).join(name));
}

// ---- variables and metadata ----

#[test]
fn env_expands_with_the_values_from_before_the_instruction() {
    let store = TestStore::with_busybox();
    // The example of Docker's reference, "Environment replacement".
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")]);
    store.build(ctx.path(), &["-t", "envs"]);
    let env = inspect(&store, "envs")["Config"]["Env"].clone();
    let env: Vec<String> = serde_json::from_value(env).expect("Env");
    for expected in ["abc=bye", "def=hello", "ghi=bye"] {
        assert!(env.contains(&expected.to_string()), "{expected} missing from {env:?}");
    }
}

#[test]
fn expose_ranges_become_one_entry_per_port() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nEXPOSE 8000-8002 9000/udp\n")]);
    store.build(ctx.path(), &["-t", "ports"]);
    assert_eq!(
        inspect(&store, "ports")["Config"]["ExposedPorts"],
        serde_json::json!({"8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}, "9000/udp": {}})
    );
}

#[test]
fn entrypoint_resets_the_cmd_inherited_from_the_base() {
    let store = TestStore::with_busybox();
    let base = context(&[("Dockerfile", "FROM busybox:latest\nCMD [\"base-cmd\"]\n")]);
    store.build(base.path(), &["-t", "with-cmd"]);
    let child = context(&[("Dockerfile", "FROM with-cmd\nENTRYPOINT [\"/bin/echo\"]\n")]);
    store.build(child.path(), &["-t", "entry"]);
    let config = inspect(&store, "entry")["Config"].clone();
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert!(config.get("Cmd").is_none_or(|c| c.is_null()), "the base's CMD survived ENTRYPOINT: {config}");
    // The other order keeps both, and a shell-form ENTRYPOINT goes through /bin/sh -c.
    let both = context(&[("Dockerfile", "FROM busybox:latest\nENTRYPOINT echo hi\nCMD [\"ignored\"]\n")]);
    store.build(both.path(), &["-t", "both"]);
    let config = inspect(&store, "both")["Config"].clone();
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(config["Cmd"], serde_json::json!(["ignored"]));
}

#[test]
fn workdir_resolves_relative_paths_and_variables() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nENV BASE=/opt\nWORKDIR $BASE\nWORKDIR app\nWORKDIR ../lib\n")]);
    store.build(ctx.path(), &["-t", "wd"]);
    assert_eq!(inspect(&store, "wd")["Config"]["WorkingDir"], "/opt/lib");
}

#[test]
fn every_metadata_instruction_adds_an_empty_layer_history_entry() {
    let store = TestStore::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\n\
         ENV A=1\n\
         LABEL l=1\n\
         EXPOSE 80\n\
         VOLUME /v\n\
         USER app\n\
         CMD [\"x\"]\n\
         ENTRYPOINT [\"y\"]\n\
         SHELL [\"/bin/sh\", \"-c\"]\n\
         STOPSIGNAL SIGTERM\n\
         HEALTHCHECK CMD true\n\
         ONBUILD RUN true\n",
    )]);
    store.build(ctx.path(), &["-t", "metas"]);
    let image = inspect(&store, "metas");
    let history = image["History"].as_array().expect("History");
    for keyword in ["ENV", "LABEL", "EXPOSE", "VOLUME", "USER", "CMD", "ENTRYPOINT", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD"] {
        let entry = history
            .iter()
            .rev()
            .find(|h| h["created_by"].as_str().is_some_and(|c| c.split_whitespace().next() == Some(keyword)))
            .unwrap_or_else(|| panic!("no {keyword} history entry: {history:?}"));
        assert_eq!(entry["empty_layer"], true, "{keyword}: {entry}");
    }
    let layered = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layered, image["RootFS"]["Layers"].as_array().map_or(0, Vec::len), "one layer per non-empty history entry");
}

#[test]
fn onbuild_copy_reads_the_child_build_context() {
    let store = TestStore::with_busybox();
    let parent = context(&[("Dockerfile", "FROM busybox:latest\nONBUILD COPY trigger.txt /from-trigger.txt\n")]);
    store.build(parent.path(), &["-t", "onbuild-parent"]);
    let child = context(&[("trigger.txt", "the child's file\n"), ("Dockerfile", "FROM onbuild-parent\nLABEL child=1\n")]);
    store.build(child.path(), &["-t", "onbuild-child"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("onbuild-child:latest", unpacked.path());
    assert_eq!(read(&root.join("from-trigger.txt")), "the child's file\n");
    let config = inspect(&store, "onbuild-child")["Config"].clone();
    assert!(config.get("OnBuild").is_none_or(|o| o.is_null() || o == &serde_json::json!([])), "triggers are consumed: {config}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn onbuild_mount_from_a_stage_with_a_variable_target_builds_that_stage_first() {
    if !require_root("onbuild_mount_from_a_stage_with_a_variable_target_builds_that_stage_first") {
        return;
    }
    let store = TestStore::with_busybox();
    let parent =
        context(&[("Dockerfile", "FROM busybox:latest\nENV IN=/in\nONBUILD RUN --mount=from=input,target=$IN cp $IN/value /copied\n")]);
    store.build(parent.path(), &["-t", "onbuild-mount-var"]);
    // `input` is named only by the parent's trigger: the child's plan gains it.
    let child = context(&[("Dockerfile", "FROM busybox:latest AS input\nRUN echo -n stage-value > /value\nFROM onbuild-mount-var\n")]);
    store.build(child.path(), &["-t", "onbuild-mount-var-child"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("onbuild-mount-var-child:latest", unpacked.path());
    assert_eq!(read(&root.join("copied")), "stage-value");
}

#[test]
fn an_onbuild_trigger_naming_the_stage_that_runs_it_is_a_cycle() {
    let store = TestStore::with_busybox();
    let parent = context(&[("Dockerfile", "FROM busybox:latest\nONBUILD COPY --from=child /bin/sh /copied\n")]);
    store.build(parent.path(), &["-t", "onbuild-loop"]);
    let child = context(&[("Dockerfile", "FROM onbuild-loop AS child\n")]);
    let out = store.strata().arg("build").arg(child.path()).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cycle: child -> child"), "{stderr}");
}

// ---- the cache ----

#[test]
fn a_mode_change_rebuilds_copy() {
    use std::os::unix::fs::PermissionsExt;
    let store = TestStore::with_busybox();
    let ctx = context(&[("run.sh", "echo hi\n"), ("Dockerfile", "FROM busybox:latest\nCOPY run.sh /run.sh\n")]);
    store.build(ctx.path(), &["-t", "mode"]);
    std::fs::set_permissions(ctx.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_, stderr) = store.build(ctx.path(), &["-t", "mode"]);
    assert!(!cached(&stderr, "COPY run.sh"), "the mode is part of the key:\n{stderr}");
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("mode:latest", unpacked.path());
    assert_eq!(std::fs::metadata(root.join("run.sh")).expect("run.sh").mode() & 0o777, 0o755);
}

#[test]
fn a_change_in_one_stage_leaves_an_independent_stage_cached() {
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("a.txt", "a1"),
        ("b.txt", "b1"),
        (
            "Dockerfile",
            "FROM busybox:latest AS left\nCOPY a.txt /a.txt\n\
             FROM busybox:latest AS right\nCOPY b.txt /b.txt\n\
             FROM busybox:latest\nCOPY --from=left /a.txt /a\nCOPY --from=right /b.txt /b\n",
        ),
    ]);
    store.build(ctx.path(), &["-t", "stages"]);
    std::fs::write(ctx.path().join("a.txt"), "a2").expect("write");
    let (_, stderr) = store.build(ctx.path(), &["-t", "stages"]);
    assert!(!cached(&stderr, "COPY a.txt"), "{stderr}");
    assert!(cached(&stderr, "COPY b.txt"), "the right stage does not depend on a.txt:\n{stderr}");
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("stages:latest", unpacked.path());
    assert_eq!((read(&root.join("a")), read(&root.join("b"))), ("a2".to_string(), "b1".to_string()));
}

#[test]
fn a_build_arg_change_misses_at_its_first_use_not_its_definition() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("f", "f"), ("Dockerfile", "FROM busybox:latest\nARG VERSION=1\nCOPY f /f\nLABEL version=$VERSION\n")]);
    store.build(ctx.path(), &["-t", "argcache"]);
    let (_, stderr) = store.build(ctx.path(), &["-t", "argcache", "--build-arg", "VERSION=2"]);
    assert!(!cached(&stderr, "LABEL"), "the LABEL uses VERSION:\n{stderr}");
    assert!(cached(&stderr, "COPY f /f"), "COPY does not use VERSION:\n{stderr}");
}

// ---- multi-stage ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn multistage_final_image_holds_the_builders_output_for_a_build_arg() {
    if !require_root("multistage_final_image_holds_the_builders_output_for_a_build_arg") {
        return;
    }
    let store = TestStore::with_busybox();
    let ms = fixtures().join("multistage");
    store.build(&ms, &["-t", "ms"]);
    store.build(&ms, &["-t", "ms-hi", "--build-arg", "GREETING=hi"]);
    let (a, b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    assert_eq!(read(&store.unpack("ms:latest", a.path()).join("app/out.txt")), "hello from the builder stage\n");
    assert_eq!(read(&store.unpack("ms-hi:latest", b.path()).join("app/out.txt")), "hi from the builder stage\n");
}

#[test]
fn an_unknown_target_fails_before_any_work_and_names_the_stages() {
    let store = TestStore::with_busybox();
    let before = whole_blobs(store.root());
    let stderr = build_fails(&store, &fixtures().join("multistage"), &["--target", "bulder", "-t", "typo"]);
    assert!(stderr.contains("did you mean \"builder\""), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("#1 ")), "work started:\n{stderr}");
    assert_eq!(whole_blobs(store.root()), before, "no blob was written");
}

// ---- reproducibility ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn source_date_epoch_zero_gives_the_same_manifest_in_two_stores() {
    if !require_root("source_date_epoch_zero_gives_the_same_manifest_in_two_stores") {
        return;
    }
    let ctx = context(&[
        ("x.txt", "x"),
        (
            "Dockerfile",
            "FROM busybox:latest\nRUN mkdir -p /made && echo hi > /made/f && ln -s f /made/l && touch /made/t\nCOPY x.txt /x\nENV Z=1\n",
        ),
    ]);
    let digests: Vec<String> = (0..2)
        .map(|_| {
            let store = TestStore::empty();
            for (args, dir) in
                [(["build", "-q", "-t", "busybox"], crate::busybox_context()), (["build", "-q", "-t", "rep"], ctx.path().to_path_buf())]
            {
                let out = store.strata().env("SOURCE_DATE_EPOCH", "0").args(args).arg(&dir).output().expect("build");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            manifest_digest(store.root(), "rep:latest")
        })
        .collect();
    assert_eq!(digests[0], digests[1], "two stores built different manifests from the same inputs");
}

// ---- failed builds ----

#[test]
fn a_dockerfile_with_errors_builds_nothing_and_names_file_and_line() {
    let store = TestStore::with_busybox();
    let index_before = std::fs::read(store.root().join("index.json")).expect("index.json");
    let blobs_before = whole_blobs(store.root());
    let ctx = context(&[("f", "f"), ("Dockerfile", "FROM busybox:latest\nCOPY f /f\nCOPY onlyone\nFROMM x\n")]);
    let stderr = build_fails(&store, ctx.path(), &["-t", "syntax"]);
    assert!(stderr.contains("Dockerfile:3:") && stderr.contains("Dockerfile:4:"), "every error with its line:\n{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("#1 ")), "a step ran:\n{stderr}");
    assert_eq!(std::fs::read(store.root().join("index.json")).expect("index.json"), index_before);
    assert_eq!(whole_blobs(store.root()), blobs_before, "nothing was written");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_failed_run_leaves_the_index_unchanged_and_every_blob_whole() {
    if !require_root("a_failed_run_leaves_the_index_unchanged_and_every_blob_whole") {
        return;
    }
    let store = TestStore::with_busybox();
    let index_before = std::fs::read(store.root().join("index.json")).expect("index.json");
    let ctx = context(&[("f", "a new layer before the failure"), ("Dockerfile", "FROM busybox:latest\nCOPY f /f\nRUN exit 9\n")]);
    let stderr = build_fails(&store, ctx.path(), &["-t", "late-failure"]);
    assert!(stderr.contains("exit code: 9"), "{stderr}");
    assert_eq!(std::fs::read(store.root().join("index.json")).expect("index.json"), index_before, "nothing was tagged");
    whole_blobs(store.root());
}

#[test]
fn an_unknown_base_image_is_named_with_a_hint() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM nosuch:1\nLABEL x=1\n")]);
    // The store's answer, not a registry's (no registry is reachable in the tests).
    let stderr = build_fails(&store, ctx.path(), &["--pull=never"]);
    assert!(stderr.contains("\"nosuch:1\"") && stderr.contains("not found"), "{stderr}");
}

// ---- kill -9 and concurrent processes on one store ----

#[test]
fn a_build_killed_while_writing_a_layer_leaves_no_partial_blob_or_tag() {
    use std::os::unix::process::ExitStatusExt;
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY big /big\n")]);
    // Large enough that the layer takes a good part of a second to write.
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut big = std::fs::File::create(ctx.path().join("big")).expect("create big");
    for _ in 0..256 {
        std::io::Write::write_all(&mut big, &chunk).expect("write big");
    }
    drop(big);
    let index_before = std::fs::read(store.root().join("index.json")).expect("index.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .args(["build", "-q", "-t", "killed"])
        .arg(ctx.path())
        .env("STRATA_ROOT", store.root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start build");
    // Kill it as soon as the layer's temp file has data in it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !crate::store_temp_files(store.root()).iter().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)) {
        assert!(child.try_wait().expect("poll build").is_none(), "the build ended before it could be killed");
        assert!(std::time::Instant::now() < deadline, "the layer was never written");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL");
    assert_eq!(child.wait().expect("wait").signal(), Some(9), "the build was killed, not finished");

    assert_eq!(std::fs::read(store.root().join("index.json")).expect("index.json"), index_before, "nothing was tagged");
    whole_blobs(store.root());
    // The next build starts clean and lands; prune then clears the dead build's temp file.
    store.build(ctx.path(), &["-t", "killed"]);
    assert!(store.ok(&["images"]).contains("killed"));
    store.ok(&["system", "prune"]);
    assert!(crate::store_temp_files(store.root()).is_empty(), "prune left temp files");
    whole_blobs(store.root());
}

#[test]
fn concurrent_builds_and_prunes_on_one_store_all_land() {
    let store = TestStore::with_busybox();
    let contexts: Vec<_> = (0..4)
        .map(|i| {
            let content = format!("image {i}\n").repeat(10_000);
            context(&[
                ("shared", "the same layer in every image"),
                ("own", content.as_str()),
                ("Dockerfile", "FROM busybox:latest\nCOPY shared /shared\nCOPY own /own\nLABEL built=yes\n"),
            ])
        })
        .collect();
    let strata = assert_cmd::cargo::cargo_bin("strata");
    let spawn = |args: &[&str]| {
        std::process::Command::new(&strata)
            .args(args)
            .env("STRATA_ROOT", store.root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start strata")
    };
    let mut children = Vec::new();
    for (i, ctx) in contexts.iter().enumerate() {
        let tag = format!("parallel-{i}");
        children.push(spawn(&["build", "-q", "-t", &tag, ctx.path().to_str().expect("utf-8 path")]));
        children.push(spawn(&["system", "prune"]));
    }
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let images = store.ok(&["images"]);
    for i in 0..4 {
        assert!(images.contains(&format!("parallel-{i}")), "parallel-{i} is missing:\n{images}");
        let unpacked = tempfile::tempdir().expect("temp dir");
        let root = store.unpack(&format!("parallel-{i}:latest"), unpacked.path());
        assert_eq!(read(&root.join("own")), format!("image {i}\n").repeat(10_000));
    }
    whole_blobs(store.root());
}
