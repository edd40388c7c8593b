//! RUN and `strata run`, one behaviour per test: what a RUN layer leaves out
//! (sandbox files, mounts, short-lived files), what it keeps (special files,
//! set-id bits, owners), mounts' permissions, SHELL, USER groups, failures
//! with long output, and how `strata run` treats its arguments.
//!
//! `sandbox.rs` holds the broad passes (whiteouts, isolation, secrets,
//! commit); these pin the rules it does not reach. Every test needs root.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use std::process::Command;

use crate::{TestStore, context, require_root};

/// Builds a context holding `files` plus `dockerfile`, tagged `tag`; returns stderr.
fn build_with(store: &TestStore, files: &[(&str, &str)], dockerfile: &str, tag: &str, extra: &[&str]) -> String {
    let mut all = files.to_vec();
    all.push(("Dockerfile", dockerfile));
    let ctx = context(&all);
    let mut flags = vec!["-t", tag];
    flags.extend_from_slice(extra);
    store.build(ctx.path(), &flags).1
}

/// The entry names of the image's topmost layer, as `tar -t` lists them.
fn top_layer_entries(store: &TestStore, image: &str) -> Vec<String> {
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", image])).expect("inspect prints JSON");
    let layers = inspect[0]["RootFS"]["Layers"].as_array().expect("Layers").clone();
    let top = layers.last().and_then(|d| d.as_str()).expect("a layer");
    let blob = store.root().join("blobs/sha256").join(top.trim_start_matches("sha256:"));
    let out = Command::new("tar").arg("-tf").arg(&blob).output().expect("run tar");
    assert!(out.status.success(), "tar -tf {}: {}", blob.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_end_matches('/').to_string()).collect()
}

fn unpack(store: &TestStore, image: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = store.unpack(&format!("{image}:latest"), dir.path());
    (dir, root)
}

/// `strata run --rm ARGS`: (exit code, stdout, stderr).
fn run_rm(store: &TestStore, args: &[&str]) -> (i32, String, String) {
    let out = store.strata().args(["run", "--rm"]).args(args).output().expect("strata run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn proxy_build_args_reach_run_without_an_arg_and_stay_out_of_the_image_and_the_cache_key() {
    if !require_root("proxy_build_args_reach_run_without_an_arg_and_stay_out_of_the_image_and_the_cache_key") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\nRUN echo \"$http_proxy|$NO_PROXY\" > /proxy\n";
    let proxy = ["--build-arg", "http_proxy=http://proxy.example:3128", "--build-arg", "NO_PROXY=localhost"];
    build_with(&store, &[], dockerfile, "proxied", &proxy);
    let (_dir, root) = unpack(&store, "proxied");
    assert_eq!(std::fs::read_to_string(root.join("proxy")).expect("read /proxy"), "http://proxy.example:3128|localhost\n");
    let inspect = store.ok(&["image", "inspect", "proxied"]);
    let history = store.ok(&["image", "history", "--no-trunc", "proxied"]);
    for shown in [&inspect, &history] {
        assert!(!shown.contains("proxy.example"), "the proxy leaked into the image:\n{shown}");
    }
    // Another proxy does not change what the step builds, so it stays cached.
    let stderr = build_with(&store, &[], dockerfile, "proxied", &["--build-arg", "http_proxy=http://other:8080"]);
    assert!(stderr.contains("CACHED"), "a proxy change rebuilt the RUN:\n{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn changes_to_etc_hosts_and_resolv_conf_stay_out_of_the_layer() {
    if !require_root("changes_to_etc_hosts_and_resolv_conf_stay_out_of_the_layer") {
        return;
    }
    let store = TestStore::with_busybox();
    let stderr = build_with(
        &store,
        &[],
        "FROM busybox:latest\nRUN test -e /etc/hosts && test -e /etc/resolv.conf && echo 1.2.3.4 extra >> /etc/hosts \
         && echo nameserver 9.9.9.9 > /etc/resolv.conf && echo hostname-was-$(cat /etc/hostname) && echo edited\n",
        "hosts",
        &[],
    );
    assert!(stderr.contains(" edited"), "/etc/hosts or /etc/resolv.conf missing inside:\n{stderr}");
    let entries = top_layer_entries(&store, "hosts");
    for file in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(!entries.iter().any(|e| e == file), "{file} is in the layer: {entries:?}");
    }
    let (_dir, root) = unpack(&store, "hosts");
    assert!(!root.join("etc/hosts").exists(), "the sandbox's /etc/hosts reached the image");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn mount_targets_and_their_contents_stay_out_of_the_layer() {
    if !require_root("mount_targets_and_their_contents_stay_out_of_the_layer") {
        return;
    }
    let store = TestStore::with_busybox();
    let (_secret, spec) = crate::secret_file("token");
    build_with(
        &store,
        &[("input.txt", "from the context")],
        "FROM busybox:latest\n\
         RUN --mount=type=tmpfs,target=/scratch \
             --mount=type=cache,target=/cache \
             --mount=type=bind,target=/src \
             --mount=type=secret,id=tok,target=/tok \
             echo t > /scratch/t && echo c > /cache/c && cat /src/input.txt /tok && echo kept > /kept\n",
        "mounts",
        &["--secret", &spec],
    );
    let entries = top_layer_entries(&store, "mounts");
    assert!(entries.iter().any(|e| e == "kept"), "the RUN's own file is missing: {entries:?}");
    for leaked in ["scratch", "cache", "src", "tok"] {
        assert!(!entries.iter().any(|e| e == leaked || e.starts_with(&format!("{leaked}/"))), "{leaked} is in the layer: {entries:?}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn directories_made_for_nested_mount_targets_stay_out_of_the_layer() {
    if !require_root("directories_made_for_nested_mount_targets_stay_out_of_the_layer") {
        return;
    }
    let store = TestStore::with_busybox();
    let (_secret, spec) = crate::secret_file("token");
    build_with(
        &store,
        &[],
        "FROM busybox:latest\nRUN --mount=type=tmpfs,target=/a/b/c --mount=type=secret,id=tok cat /run/secrets/tok && echo kept > /kept\n",
        "nested-mounts",
        &["--secret", &spec],
    );
    let entries = top_layer_entries(&store, "nested-mounts");
    assert_eq!(entries, vec!["kept".to_string()], "only /kept is a change of this RUN");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_variable_in_a_mount_option_is_read_when_the_step_runs() {
    if !require_root("a_variable_in_a_mount_option_is_read_when_the_step_runs") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\nARG KIND=nfs\nRUN --mount=type=$KIND,target=/m touch /m/x && [ -f /m/x ]\n";
    // The default names no mount type: the step fails, naming its line and the expanded value.
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let out = store.strata().args(["build", "--progress", "plain"]).arg(ctx.path()).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("Dockerfile:3") && stderr.contains("\"nfs\""), "{stderr}");
    // A build arg gives a type that lets the command write at the target.
    build_with(&store, &[], dockerfile, "mount-kind", &["--build-arg", "KIND=tmpfs"]);
    // An unset variable leaves no target: refused, not mounted over the root.
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=cache,target=$UNSET true\n")]);
    let out = store.strata().args(["build", "--progress", "plain"]).arg(ctx.path()).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("Dockerfile:2") && stderr.contains("needs target="), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_bind_mount_is_read_only_by_default() {
    if !require_root("a_bind_mount_is_read_only_by_default") {
        return;
    }
    let store = TestStore::with_busybox();
    let stderr = build_with(
        &store,
        &[("input.txt", "ctx")],
        "FROM busybox:latest\nRUN --mount=type=bind,target=/src (touch /src/new 2>/dev/null && echo bind-writable) || echo bind-read-only\n",
        "bind-ro",
        &[],
    );
    assert!(stderr.lines().any(|l| l.ends_with(" bind-read-only")), "{stderr}");
    assert!(!stderr.lines().any(|l| l.ends_with(" bind-writable")), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_bind_mount_with_rw_is_writable_and_its_writes_are_discarded() {
    if !require_root("a_bind_mount_with_rw_is_writable_and_its_writes_are_discarded") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[
        ("input.txt", "ctx"),
        (
            "Dockerfile",
            "FROM busybox:latest\nRUN --mount=type=bind,target=/src,rw echo changed > /src/input.txt && touch /src/new && echo rw-ok\n",
        ),
    ]);
    let (_, stderr) = store.build(ctx.path(), &["-t", "bind-rw"]);
    assert!(stderr.contains("rw-ok"), "{stderr}");
    assert_eq!(std::fs::read_to_string(ctx.path().join("input.txt")).expect("input"), "ctx", "the write reached the build context");
    assert!(!ctx.path().join("new").exists(), "the write reached the build context");
    assert!(!top_layer_entries(&store, "bind-rw").iter().any(|e| e.starts_with("src")), "the bind mount's writes are in the layer");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_file_created_and_removed_in_one_run_leaves_no_trace() {
    if !require_root("a_file_created_and_removed_in_one_run_leaves_no_trace") {
        return;
    }
    let store = TestStore::with_busybox();
    build_with(
        &store,
        &[],
        "FROM busybox:latest\nRUN touch /short-lived && rm /short-lived && mkdir /d && touch /d/x && rm -r /d && echo y > /y\n",
        "brief",
        &[],
    );
    let entries = top_layer_entries(&store, "brief");
    assert_eq!(entries, vec!["y".to_string()], "only /y is a change");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn fifos_set_id_bits_owners_and_mode_changes_survive() {
    if !require_root("fifos_set_id_bits_owners_and_mode_changes_survive") {
        return;
    }
    let store = TestStore::with_busybox();
    build_with(
        &store,
        &[],
        "FROM busybox:latest\nRUN mkfifo /fifo && cp /bin/busybox /suid && chmod 4755 /suid && mkdir /sgid && chmod 2775 /sgid \
         && touch /owned && chown 1000:50 /owned && chmod 0600 /etc/passwd\n",
        "special",
        &[],
    );
    let (_dir, root) = unpack(&store, "special");
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert!(meta("fifo").file_type().is_fifo(), "a fifo stays a fifo");
    assert_eq!(meta("suid").mode() & 0o7777, 0o4755);
    assert_eq!(meta("sgid").mode() & 0o7777, 0o2775);
    assert_eq!((meta("owned").uid(), meta("owned").gid()), (1000, 50));
    assert_eq!(meta("etc/passwd").mode() & 0o777, 0o600, "a mode change of a lower file is a change");
    let entries = top_layer_entries(&store, "special");
    assert!(entries.iter().any(|e| e == "etc/passwd"), "{entries:?}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn shell_changes_shell_form_and_exec_form_bypasses_it() {
    if !require_root("shell_changes_shell_form_and_exec_form_bypasses_it") {
        return;
    }
    let store = TestStore::with_busybox();
    let stderr = build_with(
        &store,
        &[],
        "FROM busybox:latest\nSHELL [\"/bin/sh\", \"-c\", \"echo via-shell; sh -c \\\"$1\\\"\", \"x\"]\nRUN echo shell-form\nRUN [\"/bin/echo\", \"exec-form\"]\n",
        "shell",
        &[],
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let shell_step = lines.iter().position(|l| l.contains("RUN echo shell-form")).expect("shell-form step");
    let exec_step = lines.iter().position(|l| l.contains("RUN [\"/bin/echo\"")).expect("exec-form step");
    assert!(lines[shell_step..exec_step].iter().any(|l| l.ends_with(" via-shell")), "SHELL was not used:\n{stderr}");
    assert!(lines[shell_step..exec_step].iter().any(|l| l.ends_with(" shell-form")), "{stderr}");
    assert!(!lines[exec_step..].iter().any(|l| l.ends_with(" via-shell")), "exec form went through SHELL:\n{stderr}");
    assert!(lines[exec_step..].iter().any(|l| l.ends_with(" exec-form")), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn user_with_a_group_name_runs_with_that_gid() {
    if !require_root("user_with_a_group_name_runs_with_that_gid") {
        return;
    }
    let store = TestStore::with_busybox();
    let stderr = build_with(
        &store,
        &[],
        "FROM busybox:latest\nUSER app:staff\nRUN echo \"ids=$(id -u):$(id -g)\" && touch /tmp/mine && stat -c owner=%u:%g /tmp/mine\n",
        "ug",
        &[],
    );
    assert!(stderr.contains("ids=1000:50") && stderr.contains("owner=1000:50"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_failing_run_shows_the_last_lines_of_long_output() {
    if !require_root("a_failing_run_shows_the_last_lines_of_long_output") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN seq 1 500 && echo final-words && exit 4\n")]);
    let out = store.strata().args(["build", "-t", "noisy"]).arg(ctx.path()).output().expect("build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("exit code: 4") && stderr.contains("final-words"), "{stderr}");
    assert!(stderr.contains("RUN seq 1 500"), "the step is named:\n{stderr}");
    assert!(!store.ok(&["images"]).contains("noisy"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn strata_run_appends_arguments_to_the_entrypoint() {
    if !require_root("strata_run_appends_arguments_to_the_entrypoint") {
        return;
    }
    let store = TestStore::with_busybox();
    build_with(&store, &[], "FROM busybox:latest\nENTRYPOINT [\"/bin/echo\", \"pre\"]\nCMD [\"default\"]\n", "entry", &[]);
    assert_eq!(run_rm(&store, &["entry"]).1, "pre default\n", "CMD is the default argument list");
    assert_eq!(run_rm(&store, &["entry", "a", "b"]).1, "pre a b\n", "arguments replace CMD, not ENTRYPOINT");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn strata_run_rm_keeps_no_run_and_changes_no_image() {
    if !require_root("strata_run_rm_keeps_no_run_and_changes_no_image") {
        return;
    }
    let store = TestStore::with_busybox();
    let before = store.ok(&["images", "-q", "busybox"]);
    let (code, _, stderr) = run_rm(&store, &["busybox", "sh", "-c", "echo gone > /gone"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!store.ok(&["ps", "-a"]).lines().skip(1).any(|l| !l.trim().is_empty()), "a --rm run was kept");
    assert_eq!(store.ok(&["images", "-q", "busybox"]), before);
    assert_eq!(run_rm(&store, &["busybox", "sh", "-c", "test -e /gone; echo $?"]).1, "1\n", "a run's change reached the image");
    let runs = store.root().join("strata/runs");
    let left: Vec<_> = std::fs::read_dir(&runs).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{}: {left:?}", runs.display());
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_steps_start_after_the_strata_binary_file_is_replaced() {
    if !require_root("run_steps_start_after_the_strata_binary_file_is_replaced") {
        return;
    }
    use std::io::Write;
    let store = TestStore::with_busybox();
    let ctx = context(&[]);
    let bin = tempfile::tempdir().expect("temp dir");
    let copy = bin.path().join("strata");
    std::fs::copy(assert_cmd::cargo::cargo_bin("strata"), &copy).expect("copy strata");
    let mut child = Command::new(&copy)
        .env("STRATA_ROOT", store.root())
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "--progress", "plain", "-f", "-", "-t", "replaced"])
        .arg(ctx.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start strata build");
    // The build reads its Dockerfile to the end of stdin before any step: the
    // file it started from is gone (as an upgrade or a rebuild replaces it) first.
    std::fs::remove_file(&copy).expect("remove the binary file");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"FROM busybox\nRUN echo ran > /proof\n").expect("write Dockerfile");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for strata build");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_dir, root) = unpack(&store, "replaced");
    assert_eq!(std::fs::read_to_string(root.join("proof")).expect("read /proof"), "ran\n");
}
