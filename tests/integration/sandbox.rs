//! RUN and `strata run`: isolation, layers from the upperdir (whiteouts,
//! opaque directories, links), the step's environment, mounts, secrets,
//! failures, run/commit/ps/rm, and rootless builds.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::{TestStore, context, require_root};

fn build_ok(store: &TestStore, dockerfile: &str, tag: &str, extra: &[&str]) -> (tempfile::TempDir, String) {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let mut flags = vec!["-t", tag];
    flags.extend_from_slice(extra);
    let (_, stderr) = store.build(ctx.path(), &flags);
    (ctx, stderr)
}

fn run_out(store: &TestStore, args: &[&str]) -> (i32, String) {
    let out = store.strata().arg("run").arg("--rm").args(args).output().expect("strata run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn layers_record_changes_deletions_and_links() {
    if !require_root("layers_record_changes_deletions_and_links") {
        return;
    }
    let store = TestStore::with_busybox();
    build_ok(
        &store,
        "FROM busybox:latest\n\
         RUN mkdir -p /d/old /gone && echo 1 > /d/old/f && echo x > /gone/x && echo keep > /k\n\
         RUN rm -rf /gone /d/old && mkdir /d/old && echo new > /d/old/g && rm /etc/group \\\n\
          && echo h > /h1 && ln /h1 /h2 && ln -s /k /link && mkdir /empty && chmod 0750 /empty\n",
        "changes",
        &[],
    );
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("changes:latest", unpacked.path());
    assert!(!root.join("gone").exists(), "a deleted directory is gone");
    assert!(!root.join("etc/group").exists(), "a deleted file is gone");
    assert!(!root.join("d/old/f").exists(), "an opaque directory hides the lower one's files");
    assert_eq!(std::fs::read_to_string(root.join("d/old/g")).expect("g"), "new\n");
    let (h1, h2) = (std::fs::metadata(root.join("h1")).expect("h1"), std::fs::metadata(root.join("h2")).expect("h2"));
    assert_eq!(h1.ino(), h2.ino(), "hard links stay one inode");
    assert_eq!(std::fs::read_link(root.join("link")).expect("link").to_string_lossy(), "/k");
    let empty = std::fs::metadata(root.join("empty")).expect("empty dir");
    assert!(empty.is_dir() && empty.mode() & 0o777 == 0o750);
    // The whiteouts are in the layer itself, as OCI writes them.
    let layers = store.ok(&["image", "inspect", "changes"]);
    let inspect: serde_json::Value = serde_json::from_str(&layers).expect("json");
    let last = inspect[0]["RootFS"]["Layers"].as_array().and_then(|l| l.last()).and_then(|d| d.as_str()).expect("layer").to_string();
    let blob = store.root().join("blobs/sha256").join(last.trim_start_matches("sha256:"));
    let listing = Command::new("tar").arg("-tf").arg(&blob).output().expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for entry in [".wh.gone", "etc/.wh.group", "d/old/.wh..wh..opq"] {
        assert!(listing.lines().any(|l| l.ends_with(entry)), "{entry} missing from:\n{listing}");
    }
    assert!(!listing.lines().any(|l| l.contains("resolv.conf") || l.starts_with("proc")), "sandbox mounts leaked:\n{listing}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_is_isolated_from_the_host() {
    if !require_root("run_is_isolated_from_the_host") {
        return;
    }
    let store = TestStore::with_busybox();
    let host_dir = tempfile::tempdir().expect("temp dir");
    let probe = host_dir.path().display().to_string();
    let dockerfile = format!(
        "FROM busybox:latest\nRUN echo \"pid=$$ host=$(hostname)\" && test ! -e {probe} && echo hidden && cat /etc/hosts | grep -c localhost && ls /dev\n"
    );
    let (_, stderr) = build_ok(&store, &dockerfile, "iso", &[]);
    let host = String::from_utf8(Command::new("hostname").output().expect("hostname").stdout).unwrap_or_default();
    assert!(stderr.contains("pid=1 host=strata"), "{stderr}");
    assert!(!host.trim().is_empty() && !stderr.contains(&format!("host={}", host.trim())));
    assert!(stderr.contains("hidden"), "a host path is visible inside:\n{stderr}");
    for dev in ["null", "zero", "urandom", "pts", "shm"] {
        assert!(stderr.lines().any(|l| l.ends_with(&format!(" {dev}"))), "/dev/{dev} missing:\n{stderr}");
    }
    let (_, stderr) = build_ok(&store, "FROM busybox:latest\nRUN --network=none cat /proc/net/dev\n", "nonet", &[]);
    // Output lines read `#N SECONDS TEXT`; /proc/net/dev's interface lines start with `name:`.
    let is_interface = |l: &&str| l.split_whitespace().nth(2).is_some_and(|w| w.ends_with(':'));
    let interfaces: Vec<&str> = stderr.lines().filter(is_interface).collect();
    assert_eq!(interfaces.len(), 1, "only loopback inside --network=none:\n{stderr}");
    assert!(interfaces[0].contains("lo:"), "{stderr}");
    let (_, stderr) = build_ok(&store, "FROM busybox:latest\nRUN --network=host cat /proc/net/dev\n", "hostnet", &[]);
    assert!(stderr.lines().filter(is_interface).count() > 1, "--network=host sees the host's interfaces:\n{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_sees_user_workdir_env_and_args() {
    if !require_root("run_sees_user_workdir_env_and_args") {
        return;
    }
    let store = TestStore::with_busybox();
    let (_, stderr) = build_ok(
        &store,
        "FROM busybox:latest\nARG FLAVOUR=plain\nENV COLOUR=blue\nWORKDIR /work/here\nUSER app\nRUN echo \"id=$(id -u):$(id -g) pwd=$(pwd) colour=$COLOUR flavour=$FLAVOUR home=$HOME\"\n",
        "env",
        &["--build-arg", "FLAVOUR=spicy"],
    );
    assert!(stderr.contains("id=1000:1000 pwd=/work/here colour=blue flavour=spicy home=/home/app"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn cache_mounts_persist_and_secrets_stay_out_of_the_store() {
    if !require_root("cache_mounts_persist_and_secrets_stay_out_of_the_store") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\nRUN --mount=type=cache,target=/cache ls /cache && date +%N >> /cache/runs\n";
    build_ok(&store, dockerfile, "c1", &[]);
    // Another command (a cache miss) sees what the first build left in the cache mount.
    let rerun = dockerfile.replace("ls /cache", "ls /cache && true");
    let (_, stderr) = build_ok(&store, &rerun, "c2", &[]);
    assert!(stderr.contains(" runs"), "the second build sees the first one's file:\n{stderr}");
    // With --no-cache a cache mount starts empty, as in BuildKit.
    let (_, stderr) = build_ok(&store, dockerfile, "c3", &["--no-cache"]);
    assert!(!stderr.contains(" runs"), "a --no-cache build starts with an empty cache mount:\n{stderr}");
    let (_secret, spec) = crate::secret_file("s3cr3t-value-42");
    let (_, stderr) = build_ok(
        &store,
        "FROM busybox:latest\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null && wc -c < /run/secrets/tok\n",
        "secret",
        &["--secret", &spec],
    );
    assert!(stderr.contains(" 15"), "the command read the secret:\n{stderr}");
    for blob in std::fs::read_dir(store.root().join("blobs/sha256")).expect("blobs").flatten() {
        let bytes = std::fs::read(blob.path()).expect("blob");
        assert!(!bytes.windows(15).any(|w| w == b"s3cr3t-value-42"), "the secret is in blob {:?}", blob.file_name());
    }
    // A missing required secret is refused.
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=secret,id=nope,required cat /run/secrets/nope\n")]);
    let out = store.strata().args(["build"]).arg(ctx.path()).output().expect("build");
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret \"nope\" is required"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_secret_as_env_reaches_only_its_command() {
    if !require_root("a_secret_as_env_reaches_only_its_command") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\nENV TOKEN=before\nRUN --mount=type=secret,id=tok,env=TOKEN echo \"length=${#TOKEN}\" && [ ! -e /run/secrets/tok ]\nRUN echo \"after=$TOKEN\"\n";
    let (_secret, spec) = crate::secret_file("s3cr3t-env-77");
    let (_, stderr) = build_ok(&store, dockerfile, "secret-env", &["--secret", &spec]);
    assert!(stderr.contains("length=13") && stderr.contains("after=before"), "{stderr}");
    for blob in std::fs::read_dir(store.root().join("blobs/sha256")).expect("blobs").flatten() {
        let bytes = std::fs::read(blob.path()).expect("blob");
        assert!(!bytes.windows(13).any(|w| w == b"s3cr3t-env-77"), "the secret is in blob {:?}", blob.file_name());
    }
    // Another content, the same key: the step is taken from the cache.
    let (_other, spec) = crate::secret_file("changed");
    let (_, stderr) = build_ok(&store, dockerfile, "secret-env-2", &["--secret", &spec]);
    let outcomes = crate::step_outcomes(&stderr);
    assert!(outcomes.iter().any(|(step, cached)| step.contains("length=") && *cached), "{outcomes:?}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn bind_mounts_read_other_stages() {
    if !require_root("bind_mounts_read_other_stages") {
        return;
    }
    let store = TestStore::with_busybox();
    let (_, stderr) = build_ok(
        &store,
        "FROM busybox:latest AS build\nRUN echo artefact > /made\nFROM busybox:latest\nRUN --mount=type=bind,from=build,target=/b cat /b/made\n",
        "bind",
        &[],
    );
    assert!(stderr.contains(" artefact"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_failing_run_reports_step_code_and_output_and_tags_nothing() {
    if !require_root("a_failing_run_reports_step_code_and_output_and_tags_nothing") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN echo about to fail && exit 3\n")]);
    let out = store.strata().args(["build", "-t", "failing"]).arg(ctx.path()).output().expect("build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in ["Dockerfile:2", "exit code: 3", "about to fail"] {
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
    }
    assert!(!store.ok(&["images"]).contains("failing"));
    let leftovers: Vec<_> = std::fs::read_dir(store.root().join("strata/tmp")).expect("tmp").flatten().collect();
    assert!(leftovers.is_empty(), "the failed RUN left {leftovers:?}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_commit_ps_and_rm() {
    if !require_root("run_commit_ps_and_rm") {
        return;
    }
    let store = TestStore::with_busybox();
    build_ok(&store, "FROM busybox:latest\nENV TARGET=blog.sixeyed.com\nCMD [\"sh\", \"-c\", \"echo $TARGET\"]\n", "pinger", &[]);
    assert_eq!(run_out(&store, &["pinger"]), (0, "blog.sixeyed.com\n".into()));
    assert_eq!(run_out(&store, &["-e", "TARGET=google.com", "pinger"]), (0, "google.com\n".into()));
    let env_file = tempfile::NamedTempFile::new().expect("env file");
    std::fs::write(env_file.path(), "# comment\nTARGET=from-file\n").expect("write");
    assert_eq!(run_out(&store, &["--env-file", env_file.path().to_str().expect("utf-8"), "pinger"]).1, "from-file\n");
    assert_eq!(run_out(&store, &["-w", "/tmp", "-u", "app", "pinger", "sh", "-c", "pwd; id -u"]).1, "/tmp\n1000\n");
    assert_eq!(run_out(&store, &["pinger", "sh", "-c", "exit 7"]).0, 7);
    let out = store.strata().args(["run", "--name", "edit", "pinger", "sh", "-c", "echo committed > /greeting"]).output().expect("run");
    assert!(out.status.success());
    assert!(store.ok(&["ps", "-a"]).contains("edit"));
    store.ok(&["commit", "edit", "edited:1"]);
    assert_eq!(run_out(&store, &["edited:1", "cat", "/greeting"]).1, "committed\n");
    store.ok(&["rm", "edit"]);
    assert!(!store.ok(&["ps", "-a"]).contains("edit"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn rootless_build_runs_as_an_ordinary_user() {
    if !require_root("rootless_build_runs_as_an_ordinary_user") {
        return;
    }
    let Some(user) = crate::rootless_user("rootless_build_runs_as_an_ordinary_user") else { return };
    let work = tempfile::Builder::new().prefix("strata-rootless-").tempdir().expect("temp dir");
    let bb = crate::busybox_context();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    // With subordinate ids (useradd gives Debian users a range; newuidmap comes with uidmap), other owners work too.
    let ranged = std::fs::read_to_string("/etc/subuid").is_ok_and(|s| s.lines().any(|l| l.starts_with(&format!("{user}:"))))
        && std::process::Command::new("newuidmap").output().is_ok();
    let chown = if ranged { " && echo x > /owned && chown 1000:50 /owned" } else { "" };
    std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox:latest\nRUN id -u > /uid && echo rootless-ok{chown}\n")).expect("write");
    for file in ["rootfs.tar", "Dockerfile"] {
        std::fs::create_dir_all(work.path().join("bb")).expect("mkdir");
        std::fs::copy(bb.join(file), work.path().join("bb").join(file)).expect("copy");
    }
    Command::new("chown").args(["-R", user]).arg(work.path()).status().expect("chown");
    Command::new("chmod").arg("755").arg(work.path()).status().expect("chmod");
    let strata = crate::strata_for_any_user();
    let script = format!(
        "set -e; export STRATA_ROOT={root}/store; {s} build -q -t busybox {root}/bb >/dev/null; {s} build --progress plain -t rl {root}/ctx",
        root = work.path().display(),
        s = strata.display()
    );
    let out = Command::new("runuser").args(["-u", user, "--", "sh", "-c", &script]).output().expect("runuser");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("user namespace") {
        eprintln!("skipping rootless_build_runs_as_an_ordinary_user: this kernel refuses unprivileged user namespaces:\n{stderr}");
        return;
    }
    assert!(out.status.success() && stderr.contains("rootless-ok"), "{stderr}");
    // The runtime as the same user: run --rm leaves nothing, a kept run commits and is removed.
    let as_user = |args: &str| {
        let line = format!("STRATA_ROOT={}/store {} {args}", work.path().display(), strata.display());
        let out = Command::new("runuser").args(["-u", user, "--", "sh", "-c", &line]).output().expect("runuser");
        assert!(out.status.success(), "strata {args} as {user}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(as_user("run --rm rl cat /uid"), "0\n");
    as_user("run --name kept rl sh -c 'echo committed > /c'");
    as_user("commit kept rl:committed");
    as_user("rm kept");
    assert_eq!(as_user("run --rm rl:committed cat /c"), "committed\n");
    let runs = std::fs::read_dir(work.path().join("store/strata/runs")).expect("runs").count();
    assert_eq!(runs, 0, "run --rm and rm leave no run folder behind");
    if !ranged {
        eprintln!("rootless_build_runs_as_an_ordinary_user: no subordinate ids for {user}; checked the single-id mapping only");
        return;
    }
    let inspect = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", &format!("STRATA_ROOT={}/store {} image inspect rl", work.path().display(), strata.display())])
        .output()
        .expect("inspect");
    let image: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    let layer = image[0]["RootFS"]["Layers"].as_array().and_then(|l| l.last()).and_then(|d| d.as_str()).expect("layer").to_string();
    let blob = work.path().join("store/blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let listing = Command::new("tar").arg("-tvf").arg(&blob).output().expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l.contains("1000/50") && l.ends_with(" owned")), "the layer keeps container owners:\n{listing}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_it_gives_an_interactive_shell_on_a_terminal() {
    if !require_root("run_it_gives_an_interactive_shell_on_a_terminal") {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping run_it_gives_an_interactive_shell_on_a_terminal: script (bsdutils) is missing");
        return;
    }
    let store = TestStore::with_busybox();
    let strata = assert_cmd::cargo::cargo_bin("strata");
    // `script` gives the command a pseudo-terminal, as a user's terminal would.
    let mut child = Command::new("script")
        .args(["-qec", &format!("{} run -it --rm busybox sh", strata.display()), "/dev/null"])
        .env("STRATA_ROOT", store.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(b"echo answer-$((40+2))\nexit 5\n").expect("type");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("/ # "), "an interactive prompt:\n{text}");
    assert!(text.contains("answer-42"), "{text}");
    assert_eq!(out.status.code(), Some(5), "the shell's exit code passes through");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn interrupting_a_build_cleans_up_and_tags_nothing() {
    if !require_root("interrupting_a_build_cleans_up_and_tags_nothing") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN echo started && sleep 30\n")]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .args(["build", "--progress", "plain", "-t", "interrupted"])
        .arg(ctx.path())
        .env("STRATA_ROOT", store.root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start build");
    // Wait until the RUN step is running, then press Ctrl-C.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    use std::io::BufRead;
    while !seen.contains("started") {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("read progress") == 0 {
            break;
        }
        seen.push_str(&line);
    }
    let started = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let mut rest = String::new();
    use std::io::Read;
    stderr.read_to_string(&mut rest).expect("read the rest");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the RUN was not stopped");
    assert!(!store.ok(&["images"]).contains("interrupted"), "nothing is tagged");
    let leftovers: Vec<_> = std::fs::read_dir(store.root().join("strata/tmp")).expect("tmp").flatten().collect();
    assert!(leftovers.is_empty(), "the interrupted RUN left {leftovers:?}");
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(!mounts.contains(&store.root().display().to_string()), "a mount was left:\n{mounts}");
}
