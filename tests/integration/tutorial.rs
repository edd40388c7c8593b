//! The Docker verbs of the tutorials: management-command spellings, detached
//! runs (logs, stop, kill, exec, rm -f), `--format`/`--filter`, `system info`,
//! and the seed tutorial end to end. Nothing here sleeps a fixed time: each
//! wait polls for its condition with a deadline.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestStore, context, fixtures, require_root};

/// Polls `condition` until it holds, failing with `what` after 60 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids of live processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<String> {
    let wanted = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn status_of(store: &TestStore, name: &str) -> String {
    store.ok(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name]).trim().to_string()
}

/// Regression: `timeout 2 strata run --rm -u 10001 busybox sleep 78` left `sleep`
/// running (setuid cleared the parent-death signal), and a run whose `strata run`
/// was killed showed as Running in `ps -a` until `rm`.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_killed_or_interrupted_run_leaves_nothing_running() {
    if !require_root("a_killed_or_interrupted_run_leaves_nothing_running") {
        return;
    }
    let store = TestStore::with_busybox();
    // Interrupted: SIGTERM goes on to PID 1 (which ignores it, as PID 1 without a
    // handler does), and one stop timeout later the run is killed and removed.
    let out = Command::new("timeout")
        .args(["2"])
        .arg(assert_cmd::cargo::cargo_bin("strata"))
        .args(["run", "--rm", "--stop-timeout", "1", "-u", "10001", "busybox", "sleep", "7801"])
        .env("STRATA_ROOT", store.root())
        .output()
        .expect("run timeout");
    assert_eq!(out.status.code(), Some(124), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("sleep 7801 is gone", || processes(&["sleep", "7801"]).is_empty());
    assert!(store.ok(&["ps", "-a", "-q"]).trim().is_empty(), "the --rm run was removed");

    // Killed outright: the sandbox and PID 1 die with it; ps -a says the run is dead, not running.
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .args(["run", "--name", "killed", "-u", "10001", "busybox", "sleep", "7802"])
        .env("STRATA_ROOT", store.root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata run");
    wait_until("sleep 7802 runs", || !processes(&["sleep", "7802"]).is_empty());
    assert_eq!(status_of(&store, "killed"), "running 0");
    child.kill().expect("kill strata run");
    child.wait().expect("reap strata run");
    wait_until("sleep 7802 is gone", || processes(&["sleep", "7802"]).is_empty());
    assert_eq!(status_of(&store, "killed"), "dead 0");
    let ps = store.ok(&["ps", "-a"]);
    assert!(ps.contains("Dead") && !ps.contains("Up "), "{ps}");
    assert!(store.ok(&["ps"]).lines().count() == 1, "a dead run is not listed as running");
    store.ok(&["rm", "killed"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn detached_runs_log_stop_kill_exec_and_report_their_exit_after_the_fact() {
    if !require_root("detached_runs_log_stop_kill_exec_and_report_their_exit_after_the_fact") {
        return;
    }
    let store = TestStore::with_busybox();
    let script = "i=0; while true; do i=$((i+1)); echo out $i; echo err $i >&2; sleep 0.2; done";
    let id = store.ok(&["container", "run", "--detach", "--name", "ticker", "busybox", "sh", "-c", script]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the run's id: {id:?}");
    // The CLI has exited; the run goes on.
    wait_until("the log has three lines", || store.ok(&["logs", "ticker"]).lines().count() >= 3);
    let ps = store.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID") && ps.contains(&id[..12]) && ps.contains("Up ") && ps.contains("ticker"), "{ps}");
    assert_eq!(store.ok(&["ps", "--filter", "status=running", "--format", "{{.Names}}"]).trim(), "ticker");
    assert_eq!(store.ok(&["ps", "-q", "--filter", "name=tick"]).trim(), &id[..12]);
    // The last two lines: one of each stream, whichever came last.
    let out = store.strata().args(["logs", "--tail", "2", "-t", "ticker"]).output().expect("logs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().count() == 1 && stdout.contains("Z out "), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Z err "), "stderr lines go to stderr");
    // exec enters the run's namespaces: its PID 1 is the run's shell.
    let exec = store.ok(&["exec", "ticker", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; hostname"]);
    assert!(exec.starts_with("sh -c i=0") && exec.trim_end().ends_with("strata"), "{exec}");
    let exec = store.strata().args(["container", "exec", "ticker", "sh", "-c", "exit 7"]).output().expect("exec");
    assert_eq!(exec.status.code(), Some(7));
    // rm refuses a running run; stop sends SIGTERM (ignored by PID 1 here), then SIGKILL.
    assert!(!store.strata().args(["rm", "ticker"]).output().expect("rm").status.success());
    store.ok(&["stop", "-t", "1", "ticker"]);
    assert_eq!(status_of(&store, "ticker"), "exited 137");
    assert!(store.ok(&["ps", "-a"]).contains("Exited (137)"));
    assert!(!store.ok(&["ps"]).contains("ticker"));
    let printed = store.ok(&["logs", "ticker"]).lines().count();
    assert!(printed >= 3);

    // A run that exits by itself: its exit code is recorded by its supervisor.
    store.ok(&["run", "-d", "--name", "quick", "busybox", "sh", "-c", "echo done; exit 3"]);
    wait_until("quick has exited", || status_of(&store, "quick") == "exited 3");
    assert_eq!(store.ok(&["logs", "quick"]), "done\n");
    assert_eq!(store.ok(&["logs", "-f", "quick"]), "done\n", "-f ends with the run");

    // A handler for SIGTERM: stop ends it with the handler's code; kill -s sends any signal.
    let trap = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    store.ok(&["run", "-d", "--name", "polite", "busybox", "sh", "-c", trap]);
    // PID 1 gets only the signals it handles: wait until the trap is set.
    wait_until("polite is ready", || store.ok(&["logs", "polite"]).contains("ready"));
    store.ok(&["container", "stop", "polite"]);
    assert_eq!(status_of(&store, "polite"), "exited 0");
    let usr = "trap 'exit 42' USR1; echo ready; while true; do sleep 0.1; done";
    store.ok(&["run", "-d", "--name", "usr", "busybox", "sh", "-c", usr]);
    wait_until("usr is ready", || store.ok(&["logs", "usr"]).contains("ready"));
    store.ok(&["kill", "-s", "USR1", "usr"]);
    wait_until("usr has exited", || status_of(&store, "usr") == "exited 42");

    // rm -f kills a running run and leaves nothing behind.
    store.ok(&["run", "-d", "--name", "doomed", "busybox", "sleep", "7803"]);
    wait_until("sleep 7803 runs", || !processes(&["sleep", "7803"]).is_empty());
    store.ok(&["rm", "-f", "doomed", "ticker", "quick", "polite", "usr"]);
    assert!(processes(&["sleep", "7803"]).is_empty());
    assert!(store.ok(&["ps", "-a", "-q"]).trim().is_empty());
    let runs = std::fs::read_dir(store.root().join("strata/runs")).expect("runs").count();
    assert_eq!(runs, 0, "rm leaves no run folder");
    // --restart needs a daemon, and says so.
    let out = store.strata().args(["run", "-d", "--restart", "always", "busybox", "true"]).output().expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no daemon"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn entrypoint_attach_and_the_management_spellings() {
    if !require_root("entrypoint_attach_and_the_management_spellings") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nENTRYPOINT [\"echo\", \"from-entrypoint\"]\nCMD [\"cmd\"]\n")]);
    store.ok(&["image", "build", "-q", "--tag", "ep", ctx.path().to_str().expect("utf-8")]);
    assert_eq!(store.ok(&["run", "--rm", "ep"]), "from-entrypoint cmd\n");
    assert_eq!(store.ok(&["run", "--rm", "--entrypoint", "echo", "ep"]), "\n", "--entrypoint drops the image's CMD");
    assert_eq!(store.ok(&["run", "--rm", "--entrypoint", "echo", "ep", "given"]), "given\n");
    let out = store.strata().args(["run", "--rm", "-a", "stderr", "busybox", "sh", "-c", "echo o; echo e >&2"]).output().expect("run");
    assert_eq!((String::from_utf8_lossy(&out.stdout).as_ref(), String::from_utf8_lossy(&out.stderr).as_ref()), ("", "e\n"));
    store.ok(&["container", "run", "--name", "kept", "busybox", "sh", "-c", "echo x > /added; rm /bin/ls"]);
    let diff = store.ok(&["container", "diff", "kept"]);
    assert!(diff.contains("A /added") && diff.contains("D /bin/ls"), "{diff}");
    store.ok(&["container", "commit", "kept", "kept:1"]);
    assert!(store.ok(&["container", "ls", "-a"]).contains("kept"));
    assert!(store.ok(&["container", "inspect", "--format", "{{.Name}}", "kept"]).contains("/kept"));
    store.ok(&["container", "rm", "kept"]);
    store.ok(&["image", "tag", "kept:1", "kept:2"]);
    store.ok(&["image", "rm", "kept:2"]);
    let info = store.ok(&["system", "info"]);
    for line in ["Version: ", "Store: ", "Store Size: ", "Storage Driver: overlay", "Rootless: false"] {
        assert!(info.contains(line), "{line} missing:\n{info}");
    }
}

/// The seed tutorial, as its reader types it with `alias docker=strata`.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn the_seed_tutorial_end_to_end() {
    if !require_root("the_seed_tutorial_end_to_end") {
        return;
    }
    let store = TestStore::with_busybox();
    let root = store.root();
    // web-ping's CMD is node, which busybox lacks: the same image with a CMD that pings by echoing.
    let ctx = tempfile::tempdir().expect("temp dir");
    std::fs::copy(fixtures().join("web-ping/app.js"), ctx.path().join("app.js")).expect("copy fixture");
    let dockerfile = std::fs::read_to_string(fixtures().join("web-ping/Dockerfile")).expect("fixture Dockerfile").replace(
        "CMD [\"node\", \"/web-ping/app.js\"]",
        "CMD [\"sh\", \"-c\", \"while true; do echo \\\"Pinging $TARGET by $METHOD\\\"; sleep 0.2; done\"]",
    );
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    store.ok(&["image", "build", "--tag", "web-ping", ctx.path().to_str().expect("utf-8")]);
    let id = store.ok(&["container", "run", "-d", "--name", "web-ping", "web-ping"]);
    assert_eq!(id.trim().len(), 64);
    wait_until("web-ping logs", || store.ok(&["container", "logs", "web-ping"]).contains("Pinging blog.sixeyed.com by HEAD"));
    let out = store.ok(&["container", "run", "--rm", "--env", "TARGET=google.com", "web-ping", "sh", "-c", "echo $TARGET"]);
    assert_eq!(out, "google.com\n");
    store.ok(&["container", "run", "-d", "--name", "web-ping-2", "--env", "TARGET=google.com", "web-ping"]);
    wait_until("web-ping-2 logs", || store.ok(&["logs", "web-ping-2"]).contains("Pinging google.com"));
    store.ok(&["rm", "-f", "web-ping", "web-ping-2"]);
    assert!(store.ok(&["container", "ls", "--all", "--quiet"]).trim().is_empty());
    let history = store.ok(&["image", "history", "web-ping"]);
    assert!(history.starts_with("IMAGE") && history.contains("COPY app.js ."), "{history}");
    let layers: serde_json::Value =
        serde_json::from_str(&store.ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", "web-ping"])).expect("json");
    assert_eq!(layers.as_array().map(Vec::len), Some(3), "busybox + WORKDIR + COPY: {layers}");
    let image_id = store.ok(&["image", "inspect", "--format", "{{.Id}}", "web-ping"]);
    assert!(image_id.starts_with("sha256:"));
    assert_eq!(store.ok(&["inspect", "-f", "{{.Id}}", "web-ping"]), image_id, "top-level inspect finds images");
    assert!(store.ok(&["system", "df"]).contains("Images"));
    store.ok(&["rmi", "web-ping"]);
    assert!(!store.ok(&["image", "ls"]).contains("web-ping"));
    assert!(std::fs::read_dir(root.join("strata/runs")).expect("runs").next().is_none(), "nothing left behind");
}

#[test]
fn images_and_history_take_formats_and_filters() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nLABEL tier=web\nCOPY f /f\n"), ("f", "x")]);
    store.build(ctx.path(), &["-t", "labelled:1"]);
    let names = store.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["busybox:latest", "labelled:1"]);
    assert_eq!(store.ok(&["images", "--filter", "label=tier=web", "--format", "{{.Repository}}"]), "labelled\n");
    assert_eq!(store.ok(&["image", "ls", "-f", "reference=busy*", "--format", "{{.Repository}}"]), "busybox\n");
    assert_eq!(store.ok(&["images", "--filter", "dangling=true", "-q"]), "");
    assert_eq!(store.ok(&["images", "--filter", "since=busybox", "--format", "{{.Repository}}"]), "labelled\n");
    let table = store.ok(&["images", "--format", "table {{.ID}}\\t{{.Repository}}"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["IMAGE ID", "REPOSITORY"], "{table}");
    let history = store.ok(&["history", "--format", "{{.CreatedBy}}", "labelled:1"]);
    assert!(history.lines().next().is_some_and(|l| l.starts_with("COPY f /f")), "{history}");
    let json_lines = store.ok(&["images", "--format", "json"]);
    for line in json_lines.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        assert!(row["ID"].is_string());
    }
    let env = store.ok(&["image", "inspect", "-f", "{{range .Config.Env}}{{.}};{{end}}", "labelled:1"]);
    assert!(env.contains("PATH="), "{env}");
    let bad = store.strata().args(["images", "--format", "{{nosuch .ID}}"]).output().expect("images");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("nosuch"));
}
