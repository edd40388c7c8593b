//! RUN and `strata run` are confined as a Docker container is by default
//! (capabilities, no_new_privs, seccomp, masked /proc, read-only /sys, nodev),
//! as root and rootless; `--security=insecure` and `--privileged` opt out.

use std::process::Command;

use crate::{TestStore, context, require_root};

/// The host root file system's block device (`major minor`), from mountinfo; 8 0 if it has none.
fn host_root_device() -> (u32, u32) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f.get(2).and_then(|d| d.split_once(':')).and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))))
        .filter(|(major, _)| *major != 0)
        .unwrap_or((8, 0))
}

/// A script that tries what a confined step must not do; each line is `refused:NAME` or `ALLOWED:NAME`.
fn probe_script(host_pid: u32) -> String {
    let (major, minor) = host_root_device();
    format!(
        r#"try() {{ n=$1; shift; if "$@" >/dev/null 2>&1; then echo "ALLOWED:$n"; else echo "refused:$n"; fi; }}
mkdir -p /mnt
try mount mount -t tmpfs none /mnt
rm -f /hostdisk; mknod /hostdisk b {major} {minor} 2>/dev/null && echo made:node
try open-node dd if=/hostdisk of=/dev/null bs=512 count=1
dd if=/hostdisk of=/dev/null bs=512 count=1 2>&1 | grep -q 'Permission denied' && echo node:EACCES
rm -f /hostdisk
insmod /bin/busybox 2>&1 | grep -q 'not permitted' && echo insmod:EPERM
try insmod insmod /bin/busybox
try hostname hostname strata-was-here
try kill-host kill -9 {host_pid}
test -e /proc/{host_pid} && echo ALLOWED:see-host-pid || echo refused:see-host-pid
try proc-sys sh -c 'echo strata-was-here > /proc/sys/kernel/hostname'
try sysrq sh -c 'echo h > /proc/sysrq-trigger'
try sys-write sh -c 'echo 1 > /sys/kernel/uevent_helper || touch /sys/strata'
try unshare unshare -U true
try nsenter nsenter -t 1 -m true
echo kcore-bytes:$(cat /proc/kcore 2>/dev/null | wc -c)
echo keys-bytes:$(cat /proc/keys 2>/dev/null | wc -c)
try fork sh -c 'true & wait'
echo /dev/null works > /dev/null && echo devnull:ok
grep -E '^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t '
"#
    )
}

/// Asserts what a confined root step reports.
fn assert_confined(out: &str, rootless: bool) {
    for name in
        ["mount", "open-node", "insmod", "hostname", "kill-host", "see-host-pid", "proc-sys", "sysrq", "sys-write", "unshare", "nsenter"]
    {
        assert!(out.contains(&format!("refused:{name}\n")), "{name} was not refused:\n{out}");
    }
    for line in ["ALLOWED:fork\n", "devnull:ok\n", "kcore-bytes:0\n", "keys-bytes:0\n", "NoNewPrivs:1\n", "Seccomp:2\n"] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    for line in ["CapEff:00000000a80425fb\n", "CapBnd:00000000a80425fb\n", "CapInh:0000000000000000\n", "CapAmb:0000000000000000\n"] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    if !rootless {
        // MKNOD stays (as in Docker): the node is made, but nodev keeps it from opening.
        assert!(out.contains("made:node\n") && out.contains("node:EACCES\n"), "{out}");
        assert!(out.contains("insmod:EPERM\n"), "{out}");
    }
}

fn hostname() -> String {
    String::from_utf8_lossy(&Command::new("hostname").output().expect("hostname").stdout).into_owned()
}

/// A host process for the step to try to reach; killed when dropped.
struct HostSleeper(std::process::Child);

impl HostSleeper {
    fn start() -> HostSleeper {
        HostSleeper(Command::new("sleep").arg("600").spawn().expect("start sleep"))
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for HostSleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_step_is_confined_like_a_docker_container() {
    if !require_root("run_step_is_confined_like_a_docker_container") {
        return;
    }
    let store = TestStore::with_busybox();
    let mut sleeper = HostSleeper::start();
    let host_name = hostname();
    let ctx =
        context(&[("probe.sh", &probe_script(sleeper.0.id())), ("Dockerfile", "FROM busybox:latest\nCOPY probe.sh /\nRUN sh /probe.sh\n")]);
    let (_, stderr) = store.build(ctx.path(), &["-t", "probed"]);
    assert_confined(&stderr, false);
    assert!(sleeper.alive(), "the host process was killed");
    assert_eq!(hostname(), host_name, "the host's hostname changed");
    assert!(!stderr.contains("runs unconfined"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn strata_run_is_confined_and_privileged_opts_out() {
    if !require_root("strata_run_is_confined_and_privileged_opts_out") {
        return;
    }
    let store = TestStore::with_busybox();
    let mut sleeper = HostSleeper::start();
    let script = probe_script(sleeper.0.id());
    let out = store.ok(&["run", "--rm", "busybox:latest", "sh", "-c", &script]);
    assert_confined(&out, false);
    assert!(sleeper.alive(), "the host process was killed");

    let out = store.strata().args(["run", "--rm", "--privileged", "busybox:latest", "sh", "-c", &script]).output().expect("run");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("unconfined"), "--privileged says so: {stderr}");
    assert!(stdout.contains("ALLOWED:mount\n") && stdout.contains("Seccomp:0\n") && stdout.contains("NoNewPrivs:0\n"), "{stdout}");
    assert!(!stdout.contains("CapBnd:00000000a80425fb"), "{stdout}");
    // The PID namespace still hides the host.
    assert!(stdout.contains("refused:see-host-pid\n") && sleeper.alive(), "{stdout}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn security_insecure_needs_the_allow_entitlement() {
    if !require_root("security_insecure_needs_the_allow_entitlement") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --security=insecure mkdir -p /mnt && mount -t tmpfs none /mnt\n")]);
    let out = store.strata().args(["build", "--progress", "plain"]).arg(ctx.path()).output().expect("build");
    // miette wraps the message: join its lines.
    let stderr: String = String::from_utf8_lossy(&out.stderr).replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:2 [0] RUN mkdir -p /mnt") && stderr.contains("allow it with --allow security.insecure"),
        "the error names the step and the flag:\n{stderr}"
    );
    let out = store.strata().args(["build", "--allow", "network.nothing"]).arg(ctx.path()).output().expect("build");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected security.insecure"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn security_insecure_with_allow_runs_unconfined() {
    if !require_root("security_insecure_with_allow_runs_unconfined") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nRUN --security=insecure mkdir -p /mnt && mount -t tmpfs none /mnt && echo mounted-ok && grep Seccomp: /proc/self/status\n",
    )]);
    let (_, stderr) = store.build(ctx.path(), &["--allow", "security.insecure", "-t", "insecure"]);
    assert!(stderr.contains("runs unconfined") && stderr.contains("mounted-ok"), "{stderr}");
    // The same command confined is another step: it must not come from this one's cache.
    let ctx2 = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nRUN mkdir -p /mnt && mount -t tmpfs none /mnt && echo mounted-ok && grep Seccomp: /proc/self/status\n",
    )]);
    let out = store.strata().args(["build", "--progress", "plain"]).arg(ctx2.path()).output().expect("build");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn rootless_run_step_is_confined_too() {
    if !require_root("rootless_run_step_is_confined_too") {
        return;
    }
    let Some(user) = crate::rootless_user("rootless_run_step_is_confined_too") else { return };
    let mut sleeper = HostSleeper::start();
    let work = tempfile::Builder::new().prefix("strata-rootless-").tempdir().expect("temp dir");
    let (bb, ctx) = (work.path().join("bb"), work.path().join("ctx"));
    for dir in [&bb, &ctx] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    for file in ["rootfs.tar", "Dockerfile"] {
        std::fs::copy(crate::busybox_context().join(file), bb.join(file)).expect("copy");
    }
    std::fs::write(ctx.join("probe.sh"), probe_script(sleeper.0.id())).expect("write");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:latest\nCOPY probe.sh /\nRUN sh /probe.sh\n").expect("write");
    Command::new("chown").args(["-R", user]).arg(work.path()).status().expect("chown");
    Command::new("chmod").arg("755").arg(work.path()).status().expect("chmod");
    let script = format!(
        "set -e; export STRATA_ROOT={root}/store; {s} build -q -t busybox {root}/bb >/dev/null; {s} build --progress plain -t probed {root}/ctx",
        root = work.path().display(),
        s = crate::strata_for_any_user().display()
    );
    let out = Command::new("runuser").args(["-u", user, "--", "sh", "-c", &script]).output().expect("runuser");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("user namespace") {
        eprintln!("skipping rootless_run_step_is_confined_too: this kernel refuses unprivileged user namespaces:\n{stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert_confined(&stderr, true);
    assert!(sleeper.alive(), "the host process was killed");
}
