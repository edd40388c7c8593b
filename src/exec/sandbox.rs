//! The sandbox of RUN and `strata run`, run as `strata __sandbox SPEC` so that
//! namespaces are entered by a fresh single-threaded process: new mount, PID,
//! UTS and IPC namespaces (and network unless the host's is asked for, user
//! when rootless), an overlay of the parent layers' snapshots or a copied root
//! bound in place, a fresh /proc, a minimal /dev with devpts and /dev/shm,
//! supplied /etc/hosts, /etc/resolv.conf and /etc/hostname, pivot_root, then
//! the command.
//! Everything mounted lives in the private mount namespace and disappears
//! with it, so an interrupted RUN leaves no mount behind.
//!
//! The command is confined as Docker confines a container by default: its
//! capabilities, no_new_privs, a seccomp filter (`seccomp.rs`), masked and
//! read-only parts of /proc and /sys, and nodev on every mount but the bound
//! device nodes. `--unconfined` skips all of that. The system calls go through
//! `Syscalls` (`syscalls.rs`), so the plan is tested without root.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, execve, fork};
use serde::{Deserialize, Serialize};

mod seccomp;
mod syscalls;

pub use syscalls::{Host, Syscalls};

/// A mount inside the sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMount {
    /// A host path bound at `target`.
    Bind { source: PathBuf, target: String, readonly: bool },
    /// An overlay of directories (top first) at `target`: another stage's filesystem or a
    /// bound directory. Read-only, unless `scratch` holds a throw-away upper layer for writes.
    Layers { lowerdirs: Vec<PathBuf>, target: String, scratch: Option<PathBuf> },
    Tmpfs {
        target: String,
        /// At most this many bytes (`size=`); unset, the kernel's default.
        #[serde(default)]
        size: Option<u64>,
    },
}

/// Everything the sandbox process needs, written as JSON by the launcher (`launch.rs`) for RUN and `strata run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Snapshot directories, top layer first (overlay's lowerdir order).
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    /// The mount point of the root filesystem; with `copied_root`, the root itself.
    pub rootfs: PathBuf,
    /// The root is a plain copy of the image (no overlayfs): bind it instead.
    pub copied_root: bool,
    /// The upper layer is scratch until the step's layer is written (a RUN,
    /// not a kept run): mount it `volatile`, so the command's fsyncs cost nothing.
    #[serde(default)]
    pub volatile_upper: bool,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one first); none given means `gid` alone.
    #[serde(default)]
    pub groups: Vec<u32>,
    pub hostname: String,
    pub network: SandboxNetwork,
    /// Enter a user namespace mapping the caller to root (rootless builds).
    pub user_namespace: bool,
    /// With subordinate id ranges, the starter writes the maps (newuidmap): the
    /// sandbox signals on fd 3 once in its namespace and waits for a byte on fd 4.
    pub maps_from_outside: bool,
    /// Host files bound over /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub etc_files: Vec<(PathBuf, String)>,
    pub mounts: Vec<SandboxMount>,
}

/// The network a sandbox has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxNetwork {
    /// The host's network namespace.
    Host,
    /// A network namespace of its own with its loopback alone (brought up).
    None,
    /// A network namespace of its own whose `eth0` reaches out through
    /// slirp4netns (the program at this path), as Docker's bridge does: the
    /// host's loopback stays out of reach, DNS is 10.0.2.3.
    Slirp(PathBuf),
}

/// The address of slirp4netns's DNS forwarder inside the namespace.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// Exit code the sandbox uses when it could not start the command at all.
pub const SETUP_FAILED: i32 = 125;
/// Exit code when the command was not found or not executable.
pub const NOT_FOUND: i32 = 127;

/// Where a failed setup is reported: opened at start (close-on-exec), so it
/// stays writable after pivot_root and never reaches the command.
static REPORT: std::sync::OnceLock<fs::File> = std::sync::OnceLock::new();

/// The setup report beside a spec file.
fn report_path(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("setup-error.json")
}

/// What stopped the sandbox before the command started, as the launcher reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetupReport {
    /// The step that failed, e.g. [`OVERLAY_ROOT`].
    pub what: String,
    pub cause: String,
}

impl std::fmt::Display for SetupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

/// The setup step whose failure sends the launcher to a copied root.
pub const OVERLAY_ROOT: &str = "mount overlay root";

/// The report of a sandbox that exited with [`SETUP_FAILED`], if it wrote one.
pub fn setup_report(spec_path: &Path) -> Option<SetupReport> {
    serde_json::from_slice(&fs::read(report_path(spec_path)).ok()?).ok()
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    let report = SetupReport { what: what.to_string(), cause: e.to_string() };
    eprintln!("strata sandbox: {report}");
    if let Some(file) = REPORT.get() {
        let _ = serde_json::to_writer(file, &report);
    }
    std::process::exit(SETUP_FAILED)
}

/// The argument of `strata __sandbox SPEC` that skips the confinement (`RUN --security=insecure`, `strata run --privileged`).
pub const UNCONFINED_ARG: &str = "--unconfined";

/// The argument of `strata __sandbox SPEC` that passes SIGTERM, SIGINT and the like on to
/// PID 1 (`strata run`). Without it (a RUN) such a signal ends the sandbox, and PID 1 with it.
pub const FORWARD_SIGNALS_ARG: &str = "--forward-signals";

/// Entry point of `strata __sandbox SPEC [--unconfined] [--forward-signals]`; never returns.
pub fn main(spec_path: &Path, confined: bool, forward_signals: bool) -> ! {
    if let Ok(file) = fs::File::create(report_path(spec_path)) {
        let _ = REPORT.set(file);
    }
    // The starter (`strata run`, its supervisor, a build) waits on this process: when it dies
    // this process dies, and PID 1 with it (its own parent-death signal).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        fail("ask to die with the starter", e);
    }
    let spec: SandboxSpec = match fs::read(spec_path).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(spec)) => spec,
        Ok(Err(e)) => fail("parse sandbox spec", e),
        Err(e) => fail("read sandbox spec", e),
    };
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network != SandboxNetwork::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // Forked while this process is still in the host's namespaces; it connects the new one once made.
    let slirp = match &spec.network {
        SandboxNetwork::Slirp(program) => Some(SlirpHelper::fork(program, &spec_path.with_extension("slirp.log"))),
        _ => None,
    };
    if spec.user_namespace {
        let (uid, gid) = (Uid::current(), Gid::current());
        if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
            fail("create user namespace (is kernel.unprivileged_userns_clone enabled?)", e);
        }
        if spec.maps_from_outside {
            use std::io::{Read, Write};
            use std::os::fd::FromRawFd;
            // SAFETY: the starter placed the two pipe ends on fds 3 and 4 for this process only.
            let (mut ready, mut go) = unsafe { (fs::File::from_raw_fd(3), fs::File::from_raw_fd(4)) };
            let mut byte = [0u8; 1];
            if ready.write_all(b"u").and_then(|_| go.read_exact(&mut byte)).is_err() {
                fail("wait for id maps", "the starter went away");
            }
        } else {
            let write = |file: &str, text: String| {
                if let Err(e) = fs::write(file, text) {
                    fail(&format!("write {file}"), e);
                }
            };
            write("/proc/self/setgroups", "deny".into());
            write("/proc/self/uid_map", format!("0 {uid} 1"));
            write("/proc/self/gid_map", format!("0 {gid} 1"));
        }
    }
    if let Err(e) = unshare(flags) {
        fail("create namespaces", e);
    }
    let mut slirp = slirp.map(SlirpHelper::start);
    // Opened before the fork: PID 1's pivot_root changes this process's root as well.
    let pid_file = fs::File::create(pid_path(spec_path));
    // SAFETY: this process is single-threaded (a fresh exec of strata), so fork is safe.
    match unsafe { fork() } {
        Err(e) => fail("fork", e),
        Ok(ForkResult::Child) => {
            if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
                fail("ask to die with the sandbox", e);
            }
            setup_and_exec(&spec, confined, slirp.as_mut())
        }
        Ok(ForkResult::Parent { child }) => {
            if forward_signals {
                forward_signals_to(child);
            }
            if let Ok(mut file) = pid_file {
                use std::io::Write;
                let _ = file.write_all(child.as_raw().to_string().as_bytes());
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => fail("wait for command", e),
                }
            };
            if let Some(slirp) = slirp {
                let _ = nix::sys::signal::kill(slirp.pid, nix::sys::signal::Signal::SIGKILL);
            }
            std::process::exit(code)
        }
    }
}

/// slirp4netns for a sandbox's own network namespace: forked before the
/// namespace exists (so it stays in the host's), it waits for a byte on `go`,
/// then attaches `eth0` to the sandbox process's namespace and writes a byte
/// on its ready pipe. It dies with the sandbox (parent-death signal). What it
/// says goes to a log beside the spec, read back when it fails.
struct SlirpHelper {
    pid: nix::unistd::Pid,
    go: std::io::PipeWriter,
    ready: std::io::PipeReader,
    log: fs::File,
}

impl SlirpHelper {
    fn fork(program: &Path, log_path: &Path) -> SlirpHelper {
        let pipes = std::io::pipe().and_then(|go| Ok((go, std::io::pipe()?)));
        let ((go_read, go_write), (ready_read, ready_write)) = pipes.unwrap_or_else(|e| fail("create pipes for slirp4netns", e));
        let logs = fs::File::create(log_path).and_then(|write| Ok((write, fs::File::open(log_path)?)));
        let (log_write, log_read) = logs.unwrap_or_else(|e| fail("create the slirp4netns log", e));
        let sandbox = nix::unistd::getpid();
        // SAFETY: this process is single-threaded (a fresh exec of strata), so fork is safe.
        match unsafe { fork() } {
            Err(e) => fail("fork for slirp4netns", e),
            Ok(ForkResult::Child) => {
                drop((go_write, ready_read, log_read));
                Self::exec(program, sandbox, go_read, ready_write, log_write)
            }
            Ok(ForkResult::Parent { child }) => SlirpHelper { pid: child, go: go_write, ready: ready_read, log: log_read },
        }
    }

    /// In the helper: waits for the namespace, then becomes slirp4netns.
    fn exec(program: &Path, sandbox: nix::unistd::Pid, mut go: std::io::PipeReader, ready: std::io::PipeWriter, log: fs::File) -> ! {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        let mut byte = [0u8; 1];
        if go.read_exact(&mut byte).is_err() {
            std::process::exit(0);
        }
        // The ready pipe passes to slirp4netns: off close-on-exec.
        let error = match (nix::fcntl::fcntl(&ready, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())), log.try_clone()) {
            (Ok(_), Ok(stderr)) => std::process::Command::new(program)
                .args(["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp"])
                .arg(format!("--ready-fd={}", ready.as_raw_fd()))
                .arg(sandbox.to_string())
                .arg("eth0")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(stderr)
                .exec()
                .to_string(),
            (Err(e), _) => e.to_string(),
            (_, Err(e)) => e.to_string(),
        };
        let _ = writeln!(&log, "exec {}: {error}", program.display());
        std::process::exit(NOT_FOUND)
    }

    /// In the sandbox, its namespaces made: lets slirp4netns attach `eth0`,
    /// while PID 1 sets the root up ([`SlirpStarted::wait`] before the command).
    fn start(self) -> SlirpStarted {
        use std::io::Write;
        let SlirpHelper { pid, mut go, ready, log } = self;
        // A helper already gone shows as the ready pipe's end.
        let _ = go.write_all(b"g");
        SlirpStarted { pid, ready, log }
    }
}

/// slirp4netns attaching the sandbox's `eth0`.
struct SlirpStarted {
    pid: nix::unistd::Pid,
    ready: std::io::PipeReader,
    /// Its log, opened before the root moved.
    log: fs::File,
}

impl SlirpStarted {
    /// How long slirp4netns may take to bring `eth0` up (it takes milliseconds).
    const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

    /// In PID 1: waits until `eth0` is up, or fails with what slirp4netns said.
    fn wait(&mut self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::io::Read;
        use std::os::fd::AsFd;
        let within = PollTimeout::try_from(Self::READY_WITHIN).unwrap_or(PollTimeout::MAX);
        let waited = poll(&mut [PollFd::new(self.ready.as_fd(), PollFlags::POLLIN)], within);
        let mut byte = [0u8; 1];
        let why = match waited {
            Ok(0) => format!("no network after {} s", Self::READY_WITHIN.as_secs()),
            Err(e) => e.to_string(),
            Ok(_) if self.ready.read_exact(&mut byte).is_ok() => return,
            Ok(_) => "it exited".to_string(),
        };
        let mut said = String::new();
        let _ = self.log.read_to_string(&mut said);
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        let tail = if tail.is_empty() { "(no output)".to_string() } else { tail.into_iter().rev().collect::<Vec<_>>().join("; ") };
        fail("start slirp4netns for the network namespace", format!("{why}: {tail}"));
    }
}

/// Where the sandbox records the host pid of its PID 1 (for `strata exec`, `stop`, `kill`).
pub fn pid_path(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("pid")
}

/// The command's PID 1, for the forwarding handler.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(std::sync::atomic::Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe; the pid is the child this process waits for.
        unsafe {
            libc::kill(child, signal);
        }
    }
}

/// The signals a waiting sandbox passes on to PID 1, as Docker's sig-proxy does. PID 1 of a
/// PID namespace gets only those it handles: a command without a handler ignores them (as
/// in Docker without `--init`), and `stop` follows with SIGKILL.
const FORWARDED: &[nix::sys::signal::Signal] = {
    use nix::sys::signal::Signal::*;
    &[SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH]
};

/// Installs the forwarding handler (in the parent only, after the fork: the child must not
/// inherit it before its exec).
fn forward_signals_to(child: nix::unistd::Pid) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    CHILD.store(child.as_raw(), std::sync::atomic::Ordering::SeqCst);
    let action = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    for signal in FORWARDED {
        // SAFETY: the handler only reads an atomic and calls kill, both async-signal-safe.
        let _ = unsafe { sigaction(*signal, &action) };
    }
}

/// Why the sandbox could not start the command: "verb object: cause".
#[derive(Debug)]
pub struct SetupError {
    what: String,
    cause: String,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

trait OrFail<T> {
    fn or_fail(self, what: impl Into<String>) -> Result<T, SetupError>;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: impl Into<String>) -> Result<T, SetupError> {
        self.map_err(|e| SetupError { what: what.into(), cause: e.to_string() })
    }
}

/// Docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE and SETFCAP.
pub const DEFAULT_CAPABILITIES: u64 = 0xa804_25fb;

/// What Docker hides: a file gets /dev/null bound over it, a directory an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// What Docker leaves visible but read-only.
pub const READONLY_PATHS: &[&str] = &["proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger"];

/// Device nodes bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn overlay_options(lowerdirs: &[PathBuf], upper: Option<(&Path, &Path)>, rootless: bool) -> String {
    let lower: Vec<String> = lowerdirs.iter().map(|p| p.display().to_string().replace(',', "\\,").replace(':', "\\:")).collect();
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let Some((upper, work)) = upper {
        options.push_str(&format!(",upperdir={},workdir={}", upper.display(), work.display()));
    }
    if rootless {
        options.push_str(",userxattr");
    }
    options
}

/// `target` under `root`, made to exist as a directory or a file.
fn mount_point(sys: &mut dyn Syscalls, root: &Path, target: &str, dir: bool) -> Result<PathBuf, SetupError> {
    let path = root.join(target.trim_start_matches('/'));
    sys.make_path(&path, dir).or_fail(format!("create mount point {target}"))?;
    Ok(path)
}

/// Everything between entering the namespaces and exec, in order: the mounts,
/// pivot_root, the hostname, the working directory, then (when `confined`)
/// Docker's capabilities, the ids, no_new_privs and the seccomp filter last.
/// Every mount either succeeds or fails the step.
pub fn setup(sys: &mut dyn Syscalls, spec: &SandboxSpec, confined: bool) -> Result<(), SetupError> {
    let root = spec.rootfs.as_path();
    // A node a step makes (MKNOD stays allowed, as in Docker) cannot be opened on a nodev mount;
    // the bound host nodes in /dev are mounts of their own and keep working.
    let nodev = if confined { MsFlags::MS_NODEV } else { MsFlags::empty() };
    let none = None::<&Path>;
    sys.mount(none, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None).or_fail("make mounts private")?;
    // Lowerdirs are relative to their common folder, to fit more layers in one page of options.
    let common = spec.lowerdirs.first().and_then(|p| p.parent()).map(Path::to_path_buf);
    let lowerdirs: Vec<PathBuf> = match &common {
        Some(dir) if spec.lowerdirs.iter().all(|p| p.parent() == Some(dir)) => {
            sys.chdir(dir).or_fail("enter snapshot folder")?;
            spec.lowerdirs.iter().map(|p| PathBuf::from(p.file_name().unwrap_or_default())).collect()
        }
        _ => spec.lowerdirs.clone(),
    };
    if spec.copied_root {
        sys.mount(Some(root), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).or_fail("bind copied root")?;
        if confined {
            sys.bind_remount(root, nodev).or_fail("make copied root nodev")?;
        }
    } else {
        // The launcher falls back to a copied root when this step fails (OVERLAY_ROOT).
        let options = overlay_options(&lowerdirs, Some((&spec.upperdir, &spec.workdir)), spec.user_namespace);
        let overlay = Some(Path::new("overlay"));
        // `volatile` needs Linux 5.10; where it is refused, the same mount without it.
        let volatile =
            spec.volatile_upper && sys.mount(overlay, root, Some("overlay"), nodev, Some(&format!("{options},volatile"))).is_ok();
        if !volatile {
            sys.mount(overlay, root, Some("overlay"), nodev, Some(&options)).or_fail(OVERLAY_ROOT)?;
        }
    }

    let proc_dir = mount_point(sys, root, "proc", true)?;
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(Some(Path::new("proc")), &proc_dir, Some("proc"), hidden, None).or_fail("mount /proc")?;

    let dev = mount_point(sys, root, "dev", true)?;
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | nodev;
    sys.mount(Some(Path::new("tmpfs")), &dev, Some("tmpfs"), dev_flags, Some("mode=755,size=65536k")).or_fail("mount /dev")?;
    for name in DEVICES {
        let target = mount_point(sys, &dev, name, false)?;
        sys.mount(Some(&Path::new("/dev").join(name)), &target, None, MsFlags::MS_BIND, None).or_fail(format!("bind /dev/{name}"))?;
    }
    let pts = mount_point(sys, &dev, "pts", true)?;
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    sys.mount(Some(Path::new("devpts")), &pts, Some("devpts"), pts_flags, Some("newinstance,ptmxmode=0666,mode=620"))
        .or_fail("mount /dev/pts")?;
    sys.symlink("pts/ptmx", &dev.join("ptmx")).or_fail("link /dev/ptmx")?;
    let shm = mount_point(sys, &dev, "shm", true)?;
    let shm_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    sys.mount(Some(Path::new("shm")), &shm, Some("tmpfs"), shm_flags, Some("mode=1777,size=65536k")).or_fail("mount /dev/shm")?;
    for (link, target) in
        [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
    {
        sys.symlink(target, &dev.join(link)).or_fail(format!("link /dev/{link}"))?;
    }

    let sys_dir = mount_point(sys, root, "sys", true)?;
    let sys_flags = hidden | if confined { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    match sys.mount(Some(Path::new("sysfs")), &sys_dir, Some("sysfs"), sys_flags, None) {
        Ok(()) => {}
        // The kernel refuses sysfs to a user namespace that does not own the network namespace:
        // rootless RUN without --network=none gets an empty read-only /sys instead.
        Err(nix::errno::Errno::EPERM) if spec.user_namespace => {
            sys.mount(Some(Path::new("tmpfs")), &sys_dir, Some("tmpfs"), hidden | MsFlags::MS_RDONLY, None)
                .or_fail("mount an empty /sys (sysfs is refused in this user namespace)")?;
        }
        Err(e) => return Err(e).or_fail("mount /sys"),
    }

    if confined {
        for path in READONLY_PATHS {
            let target = root.join(path);
            if !sys.exists(&target) {
                continue;
            }
            sys.mount(Some(&target), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).or_fail(format!("bind /{path}"))?;
            sys.bind_remount(&target, MsFlags::MS_RDONLY | hidden).or_fail(format!("make /{path} read-only"))?;
        }
        for path in MASKED_PATHS {
            let target = root.join(path);
            if !sys.exists(&target) {
                continue;
            }
            if sys.is_dir(&target) {
                sys.mount(Some(Path::new("tmpfs")), &target, Some("tmpfs"), MsFlags::MS_RDONLY | hidden, None)
                    .or_fail(format!("mask /{path}"))?;
            } else {
                sys.mount(Some(Path::new("/dev/null")), &target, None, MsFlags::MS_BIND, None).or_fail(format!("mask /{path}"))?;
            }
        }
    }

    for (source, target) in &spec.etc_files {
        let path = mount_point(sys, root, target, false)?;
        sys.mount(Some(source), &path, None, MsFlags::MS_BIND, None).or_fail(format!("bind {target}"))?;
        if confined {
            sys.bind_remount(&path, nodev).or_fail(format!("make {target} nodev"))?;
        }
    }
    for m in &spec.mounts {
        match m {
            SandboxMount::Bind { source, target, readonly } => {
                let dir = sys.is_dir(source);
                let path = mount_point(sys, root, target, dir)?;
                sys.mount(Some(source), &path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).or_fail(format!("bind {target}"))?;
                let flags = nodev | if *readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
                if !flags.is_empty() {
                    sys.bind_remount(&path, flags).or_fail(format!("set the flags of {target}"))?;
                }
            }
            SandboxMount::Layers { lowerdirs, target, scratch: Some(scratch) } => {
                let path = mount_point(sys, root, target, true)?;
                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                for d in [&upper, &work] {
                    sys.make_path(d, true).or_fail("create scratch layer")?;
                }
                let options = overlay_options(lowerdirs, Some((&upper, &work)), spec.user_namespace);
                sys.mount(Some(Path::new("overlay")), &path, Some("overlay"), nodev, Some(&options)).or_fail(format!("mount {target}"))?;
            }
            SandboxMount::Layers { lowerdirs, target, scratch: None } => {
                let path = mount_point(sys, root, target, true)?;
                if lowerdirs.len() == 1 {
                    sys.mount(Some(&lowerdirs[0]), &path, None, MsFlags::MS_BIND, None).or_fail(format!("bind {target}"))?;
                    sys.bind_remount(&path, MsFlags::MS_RDONLY | nodev).or_fail(format!("make {target} read-only"))?;
                } else if !lowerdirs.is_empty() {
                    let options = overlay_options(lowerdirs, None, spec.user_namespace);
                    sys.mount(Some(Path::new("overlay")), &path, Some("overlay"), MsFlags::MS_RDONLY | nodev, Some(&options))
                        .or_fail(format!("mount {target}"))?;
                }
            }
            SandboxMount::Tmpfs { target, size } => {
                let path = mount_point(sys, root, target, true)?;
                let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                let options = size.map(|bytes| format!("size={bytes}"));
                sys.mount(Some(Path::new("tmpfs")), &path, Some("tmpfs"), flags, options.as_deref())
                    .or_fail(format!("mount tmpfs {target}"))?;
            }
        }
    }

    sys.chdir(root).or_fail("enter rootfs")?;
    sys.pivot_root(Path::new("."), Path::new(".")).or_fail("pivot_root")?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH).or_fail("detach old root")?;
    sys.chdir(Path::new("/")).or_fail("enter /")?;
    sys.sethostname(&spec.hostname).or_fail("set hostname")?;
    // slirp4netns raises it in a namespace it connects; `none` has it up too, as Docker and runc do.
    if spec.network == SandboxNetwork::None {
        sys.loopback_up().or_fail("bring the loopback up")?;
    }
    let cwd = Path::new(&spec.cwd);
    if sys.chdir(cwd).is_err() {
        sys.make_path(cwd, true).or_fail(format!("create working directory {}", spec.cwd))?;
        sys.chdir(cwd).or_fail(format!("enter working directory {}", spec.cwd))?;
    }
    if confined {
        // Before the ids: dropping from the bounding set needs CAP_SETPCAP. A user other than
        // root loses the rest at setuid, and exec gives it none, as in Docker.
        sys.limit_capabilities(DEFAULT_CAPABILITIES).or_fail("drop capabilities")?;
    }
    // With one mapped id, setgroups is denied in the namespace: the groups stay as they are.
    if !spec.user_namespace || spec.maps_from_outside {
        let groups: Vec<Gid> =
            if spec.groups.is_empty() { vec![spec.gid] } else { spec.groups.clone() }.into_iter().map(Gid::from_raw).collect();
        sys.setgroups(&groups).or_fail("set supplementary groups")?;
    }
    sys.setgid(Gid::from_raw(spec.gid)).or_fail("set group id")?;
    sys.setuid(Uid::from_raw(spec.uid)).or_fail("set user id")?;
    // setuid/setgid clear the parent-death signal: without it again, a command run as another
    // user would outlive its sandbox (and a killed `strata run`).
    sys.die_with_parent().or_fail("ask to die with the sandbox")?;
    if confined {
        sys.set_no_new_privs().or_fail("set no_new_privs")?;
        sys.install_seccomp().or_fail("install the seccomp filter")?;
    }
    Ok(())
}

fn setup_and_exec(spec: &SandboxSpec, confined: bool, network: Option<&mut SlirpStarted>) -> ! {
    let program = spec.argv.first().map(|name| name.as_str()).unwrap_or_default();
    let cstr = |s: &str| CString::new(s).unwrap_or_else(|e| fail("command has a NUL byte", e));
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = spec.env.iter().map(|a| cstr(a)).collect();
    if let Err(e) = setup(&mut Host, spec, confined) {
        fail(&e.what, e.cause)
    }
    if let Some(network) = network {
        network.wait();
    }
    match execve(&cstr(&find_program(program, &spec.env)), &argv, &env) {
        Err(e) => {
            eprintln!("strata sandbox: exec {program}: {e}");
            std::process::exit(NOT_FOUND)
        }
        Ok(never) => match never {},
    }
}

/// Looks a command up in the container's PATH, as a shell would.
pub fn find_program(name: &str, env: &[String]) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let candidate = Path::new(dir).join(name);
        if fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            return candidate.display().to_string();
        }
    }
    name.to_string()
}

/// Starts `strata __sandbox SPEC`; with `maps_from_outside`, writes the
/// namespace's id maps once the sandbox is in it. stdio is the caller's to set.
pub fn start(mut command: std::process::Command, spec: &SandboxSpec, idmap: &super::idmap::IdMap) -> std::io::Result<std::process::Child> {
    use std::io::{Read, Write};
    if !spec.maps_from_outside {
        return command.spawn();
    }
    let (mut ready_read, ready_write) = std::io::pipe()?;
    let (go_read, mut go_write) = std::io::pipe()?;
    use std::os::fd::AsRawFd;
    let (ready_fd, go_fd) = (ready_write.as_raw_fd(), go_read.as_raw_fd());
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2 is async-signal-safe; it only places the pipe ends at fds 3 and 4 (without CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(ready_fd, 3) < 0 || libc::dup2(go_fd, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(ready_write);
    drop(go_read);
    let mut byte = [0u8; 1];
    if ready_read.read_exact(&mut byte).is_ok() {
        if let Err(e) = idmap.apply(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("map ids for the sandbox: {e}")));
        }
        go_write.write_all(b"g")?;
    }
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::syscalls::{Call, Recorder};
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            lowerdirs: vec![PathBuf::from("/s/snapshots/a"), PathBuf::from("/s/snapshots/b")],
            upperdir: PathBuf::from("/s/run/upper"),
            workdir: PathBuf::from("/s/run/work"),
            rootfs: PathBuf::from("/r"),
            copied_root: false,
            volatile_upper: false,
            argv: vec!["sh".into()],
            env: Vec::new(),
            cwd: "/app".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            hostname: "strata".into(),
            network: SandboxNetwork::Host,
            user_namespace: false,
            maps_from_outside: false,
            etc_files: vec![(PathBuf::from("/s/run/hosts"), "/etc/hosts".into())],
            mounts: vec![
                SandboxMount::Bind { source: PathBuf::from("/s/cache"), target: "/cache".into(), readonly: false },
                SandboxMount::Layers { lowerdirs: vec![PathBuf::from("/s/snapshots/c")], target: "/from".into(), scratch: None },
                SandboxMount::Tmpfs { target: "/tmp".into(), size: Some(1 << 20) },
            ],
        }
    }

    /// The proc files Docker masks with /dev/null; the rest of MASKED_PATHS are directories.
    const MASKED_FILES: &[&str] =
        &["proc/kcore", "proc/keys", "proc/latency_stats", "proc/timer_list", "proc/timer_stats", "proc/sched_debug"];

    fn recorder() -> Recorder {
        Recorder {
            files: MASKED_FILES.iter().map(|f| Path::new("/r").join(f)).chain([PathBuf::from("/r/proc/sysrq-trigger")]).collect(),
            ..Recorder::default()
        }
    }

    fn plan(spec: &SandboxSpec, confined: bool, mut sys: Recorder) -> Vec<Call> {
        setup(&mut sys, spec, confined).expect("setup");
        sys.calls
    }

    fn mount_at<'a>(calls: &'a [Call], at: &str) -> Vec<&'a Call> {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { target, .. } | Call::BindRemount { target, .. } if target == Path::new(at)))
            .collect()
    }

    fn position(calls: &[Call], call: &Call) -> usize {
        calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("{call:?} not in the plan:\n{calls:#?}"))
    }

    #[test]
    fn confined_plan_masks_proc_and_sys_and_puts_nodev_on_every_mount() {
        let calls = plan(&spec(), true, recorder());
        let root = mount_at(&calls, "/r");
        assert!(
            matches!(root[..], [Call::Mount { fstype: Some(t), flags, .. }] if t == "overlay" && flags.contains(MsFlags::MS_NODEV)),
            "{root:?}"
        );
        let dev = mount_at(&calls, "/r/dev");
        assert!(matches!(dev[..], [Call::Mount { flags, .. }] if flags.contains(MsFlags::MS_NODEV)), "{dev:?}");
        // The bound device nodes keep their own (host) flags.
        let null = mount_at(&calls, "/r/dev/null");
        assert!(matches!(null[..], [Call::Mount { flags, .. }] if *flags == MsFlags::MS_BIND), "{null:?}");
        let sys = mount_at(&calls, "/r/sys");
        assert!(matches!(sys[..], [Call::Mount { flags, .. }] if flags.contains(MsFlags::MS_RDONLY)), "{sys:?}");
        for path in READONLY_PATHS {
            let at = format!("/r/{path}");
            let mounts = mount_at(&calls, &at);
            assert!(
                matches!(mounts[..], [Call::Mount { .. }, Call::BindRemount { flags, .. }] if flags.contains(MsFlags::MS_RDONLY)),
                "{at}: {mounts:?}"
            );
        }
        for path in MASKED_PATHS {
            let at = format!("/r/{path}");
            let mounts = mount_at(&calls, &at);
            let file = MASKED_FILES.contains(path);
            assert!(
                matches!(mounts[..], [Call::Mount { source: Some(s), fstype: None, .. }] if file && s == Path::new("/dev/null"))
                    || matches!(mounts[..], [Call::Mount { fstype: Some(t), flags, .. }]
                        if !file && t == "tmpfs" && flags.contains(MsFlags::MS_RDONLY)),
                "{at}: {mounts:?}"
            );
        }
        for at in ["/r/etc/hosts", "/r/cache", "/r/from", "/r/tmp"] {
            let last = mount_at(&calls, at).last().copied().cloned();
            let flags = match last {
                Some(Call::Mount { flags, .. } | Call::BindRemount { flags, .. }) => flags,
                other => panic!("{at}: {other:?}"),
            };
            assert!(flags.contains(MsFlags::MS_NODEV), "{at} is not nodev: {flags:?}");
        }
        let from = mount_at(&calls, "/r/from");
        assert!(matches!(from[..], [_, Call::BindRemount { flags, .. }] if flags.contains(MsFlags::MS_RDONLY)), "{from:?}");
    }

    #[test]
    fn confinement_comes_after_the_mounts_and_the_filter_last() {
        let calls = plan(&spec(), true, recorder());
        let pivot = position(&calls, &Call::PivotRoot { new_root: PathBuf::from(".") });
        let caps = position(&calls, &Call::LimitCapabilities(DEFAULT_CAPABILITIES));
        let setuid = position(&calls, &Call::SetUid(0));
        assert!(calls[..pivot].iter().all(|c| !matches!(c, Call::LimitCapabilities(_) | Call::NoNewPrivs | Call::Seccomp)));
        assert!(pivot < caps && caps < setuid, "{calls:#?}");
        assert_eq!(calls[calls.len() - 2..], [Call::NoNewPrivs, Call::Seccomp]);
    }

    /// Regression: `timeout 2 strata run -u 10001 busybox sleep 78` left `sleep` running,
    /// because setuid cleared the parent-death signal asked for before it.
    #[test]
    fn the_parent_death_signal_is_asked_again_after_the_ids_change() {
        for confined in [true, false] {
            let calls = plan(&SandboxSpec { uid: 10001, gid: 10001, ..spec() }, confined, recorder());
            let setuid = position(&calls, &Call::SetUid(10001));
            let setgid = position(&calls, &Call::SetGid(10001));
            let rearm = position(&calls, &Call::DieWithParent);
            assert!(setgid < rearm && setuid < rearm, "{calls:#?}");
        }
    }

    /// A namespace with no network of its own to speak of still has its loopback up, before
    /// the capabilities go; the host's and slirp4netns's are left alone.
    #[test]
    fn a_network_of_none_brings_the_loopback_up() {
        let calls = plan(&SandboxSpec { network: SandboxNetwork::None, ..spec() }, true, recorder());
        assert!(position(&calls, &Call::LoopbackUp) < position(&calls, &Call::LimitCapabilities(DEFAULT_CAPABILITIES)), "{calls:#?}");
        for network in [SandboxNetwork::Host, SandboxNetwork::Slirp("/usr/bin/slirp4netns".into())] {
            let calls = plan(&SandboxSpec { network, ..spec() }, true, recorder());
            assert!(!calls.contains(&Call::LoopbackUp), "{calls:#?}");
        }
    }

    #[test]
    fn a_tmpfs_mount_is_limited_to_its_size() {
        let calls = plan(&spec(), true, recorder());
        let mounts = mount_at(&calls, "/r/tmp");
        assert!(matches!(mounts[..], [Call::Mount { data: Some(d), .. }] if d == "size=1048576"), "{mounts:?}");
    }

    #[test]
    fn the_process_gets_the_users_supplementary_groups() {
        let calls = plan(&SandboxSpec { uid: 1000, gid: 1000, groups: vec![1000, 50, 10], ..spec() }, true, recorder());
        let groups = position(&calls, &Call::SetGroups(vec![1000, 50, 10]));
        assert!(groups < position(&calls, &Call::SetGid(1000)), "{calls:#?}");
        let calls = plan(&SandboxSpec { uid: 1000, gid: 1000, ..spec() }, true, recorder());
        position(&calls, &Call::SetGroups(vec![1000]));
    }

    #[test]
    fn unconfined_plan_skips_masks_caps_seccomp_and_nodev() {
        let calls = plan(&spec(), false, recorder());
        assert!(calls.iter().all(|c| !matches!(c, Call::LimitCapabilities(_) | Call::NoNewPrivs | Call::Seccomp)));
        assert!(mount_at(&calls, "/r/proc/kcore").is_empty() && mount_at(&calls, "/r/proc/sys").is_empty());
        for call in &calls {
            if let Call::Mount { target, flags, .. } | Call::BindRemount { target, flags } = call
                && flags.contains(MsFlags::MS_NODEV)
            {
                // Only what is nodev anyway: /proc, /dev/shm and tmpfs mounts.
                assert!(["/r/proc", "/r/dev/shm", "/r/tmp", "/r/sys"].iter().any(|p| target == Path::new(p)), "{target:?} is nodev");
            }
        }
    }

    #[test]
    fn absent_paths_are_skipped_and_a_refused_mount_fails_the_step() {
        let mut sys = recorder();
        sys.missing = vec![PathBuf::from("/r/proc/kcore"), PathBuf::from("/r/sys/devices/virtual/powercap")];
        let calls = plan(&spec(), true, sys);
        assert!(mount_at(&calls, "/r/proc/kcore").is_empty());
        let mut sys = recorder();
        sys.refuse = vec!["devpts"];
        let err = setup(&mut sys, &spec(), true).expect_err("devpts refused");
        assert_eq!(err.to_string(), "mount /dev/pts: EPERM: Operation not permitted");
        let mut sys = recorder();
        sys.refuse = vec!["overlay"];
        assert!(setup(&mut sys, &spec(), true).expect_err("overlay refused").to_string().starts_with("mount overlay root: "));
    }

    #[test]
    fn rootless_sysfs_refusal_gives_an_empty_read_only_sys() {
        let spec = SandboxSpec { user_namespace: true, ..spec() };
        let mut sys = recorder();
        sys.refuse = vec!["sysfs"];
        let calls = plan(&spec, true, sys);
        let mounts = mount_at(&calls, "/r/sys");
        assert!(
            matches!(mounts[..], [Call::Mount { fstype: Some(t), flags, .. }] if t == "tmpfs" && flags.contains(MsFlags::MS_RDONLY)),
            "{mounts:?}"
        );
        // As root, a refused sysfs is an error.
        let mut sys = recorder();
        sys.refuse = vec!["sysfs"];
        assert!(setup(&mut sys, &super::tests::spec(), true).is_err());
        // One mapped id: setgroups is denied there, so it is not attempted.
        assert!(!calls.iter().any(|c| matches!(c, Call::SetGroups(_))));
    }
}
