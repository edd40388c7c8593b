//! The RUN sandbox, run as `strata __sandbox SPEC` so that namespaces are
//! entered by a fresh single-threaded process: new mount, PID, UTS and IPC
//! namespaces (and network with `--network=none`, user when rootless), an
//! overlay of the parent layers' snapshots, a fresh /proc, a minimal /dev,
//! supplied /etc/hosts and /etc/resolv.conf, pivot_root, then the command.
//! Everything mounted lives in the private mount namespace and disappears
//! with it, so an interrupted RUN leaves no mount behind.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, execve, fork, pivot_root, setgid, setgroups, sethostname, setuid};
use serde::{Deserialize, Serialize};

/// A mount inside the sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMount {
    /// A host path bound at `target`.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// An overlay of directories (top first) at `target`: another stage's filesystem or a
    /// bound directory. Read-only, unless `scratch` holds a throw-away upper layer for writes.
    Layers {
        lowerdirs: Vec<PathBuf>,
        target: String,
        scratch: Option<PathBuf>,
    },
    Tmpfs {
        target: String,
    },
}

/// Everything the sandbox process needs, written by the build as JSON.
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
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub network_none: bool,
    /// Enter a user namespace mapping the caller to root (rootless builds).
    pub user_namespace: bool,
    /// With subordinate id ranges, the starter writes the maps (newuidmap): the
    /// sandbox signals on fd 3 once in its namespace and waits for a byte on fd 4.
    pub maps_from_outside: bool,
    /// Host files bound over /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub etc_files: Vec<(PathBuf, String)>,
    pub mounts: Vec<SandboxMount>,
}

/// Exit code the sandbox uses when it could not start the command at all.
pub const SETUP_FAILED: i32 = 125;
/// Exit code when the command was not found or not executable.
pub const NOT_FOUND: i32 = 127;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("strata sandbox: {what}: {e}");
    std::process::exit(SETUP_FAILED)
}

/// Entry point of `strata __sandbox SPEC`; never returns.
pub fn main(spec_path: &Path) -> ! {
    let spec: SandboxSpec = match fs::read(spec_path).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(spec)) => spec,
        Ok(Err(e)) => fail("parse sandbox spec", e),
        Err(e) => fail("read sandbox spec", e),
    };
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
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
    // SAFETY: this process is single-threaded (a fresh exec of strata), so fork is safe.
    match unsafe { fork() } {
        Err(e) => fail("fork", e),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            setup_and_exec(&spec)
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => std::process::exit(128 + signal as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => fail("wait for command", e),
            }
        },
    }
}

fn ensure_target(root: &Path, target: &str, dir: bool) -> std::io::Result<PathBuf> {
    let path = root.join(target.trim_start_matches('/'));
    if dir {
        fs::create_dir_all(&path)?;
    } else if path.symlink_metadata().is_err() {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, b"")?;
    }
    Ok(path)
}

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

fn setup_and_exec(spec: &SandboxSpec) -> ! {
    let root = &spec.rootfs;
    let step = |what: &str, r: nix::Result<()>| {
        if let Err(e) = r {
            fail(what, e);
        }
    };
    step("make mounts private", mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>));
    // Lowerdirs are relative to their common folder, to fit more layers in one page of options.
    let common = spec.lowerdirs.first().and_then(|p| p.parent()).map(Path::to_path_buf);
    let lowerdirs: Vec<PathBuf> = match &common {
        Some(dir) if spec.lowerdirs.iter().all(|p| p.parent() == Some(dir)) => {
            step("enter snapshot folder", chdir(dir));
            spec.lowerdirs.iter().map(|p| PathBuf::from(p.file_name().unwrap_or_default())).collect()
        }
        _ => spec.lowerdirs.clone(),
    };
    let options = overlay_options(&lowerdirs, Some((&spec.upperdir, &spec.workdir)), spec.user_namespace);
    if spec.copied_root {
        step("bind copied root", mount(Some(root.as_path()), root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>));
    } else {
        step("mount overlay root", mount(Some("overlay"), root, Some("overlay"), MsFlags::empty(), Some(options.as_str())));
    }
    let must = |what: &str, r: std::io::Result<PathBuf>| r.unwrap_or_else(|e| fail(what, e));
    let proc_dir = must("create /proc", ensure_target(root, "proc", true));
    step(
        "mount /proc",
        mount(Some("proc"), &proc_dir, Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>),
    );
    let dev = must("create /dev", ensure_target(root, "dev", true));
    step(
        "mount /dev",
        mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k")),
    );
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = must("create device", ensure_target(&dev, name, false));
        step(
            &format!("bind /dev/{name}"),
            mount(Some(Path::new("/dev").join(name).as_path()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>),
        );
    }
    let pts = must("create /dev/pts", ensure_target(&dev, "pts", true));
    let _ =
        mount(Some("devpts"), &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=620"));
    let _ = std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"));
    let shm = must("create /dev/shm", ensure_target(&dev, "shm", true));
    step("mount /dev/shm", mount(Some("shm"), &shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=65536k")));
    for (link, target) in
        [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
    {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    let sys = must("create /sys", ensure_target(root, "sys", true));
    let _ = mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    for (source, target) in &spec.etc_files {
        let path = must("create mount point", ensure_target(root, target, false));
        step(&format!("bind {target}"), mount(Some(source.as_path()), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>));
    }
    for m in &spec.mounts {
        match m {
            SandboxMount::Bind { source, target, readonly } => {
                let path = must("create mount point", ensure_target(root, target, source.is_dir()));
                step(
                    &format!("bind {target}"),
                    mount(Some(source.as_path()), &path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>),
                );
                if *readonly {
                    step(
                        &format!("make {target} read-only"),
                        mount(None::<&str>, &path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>),
                    );
                }
            }
            SandboxMount::Layers { lowerdirs, target, scratch: Some(scratch) } => {
                let path = must("create mount point", ensure_target(root, target, true));
                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                for d in [&upper, &work] {
                    must("create scratch layer", fs::create_dir_all(d).map(|_| d.clone()));
                }
                let options = overlay_options(lowerdirs, Some((&upper, &work)), spec.user_namespace);
                step(&format!("mount {target}"), mount(Some("overlay"), &path, Some("overlay"), MsFlags::empty(), Some(options.as_str())));
            }
            SandboxMount::Layers { lowerdirs, target, scratch: None } => {
                let path = must("create mount point", ensure_target(root, target, true));
                if lowerdirs.len() == 1 {
                    step(
                        &format!("bind {target}"),
                        mount(Some(lowerdirs[0].as_path()), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>),
                    );
                    let _ =
                        mount(None::<&str>, &path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>);
                } else if !lowerdirs.is_empty() {
                    let options = overlay_options(lowerdirs, None, spec.user_namespace);
                    step(
                        &format!("mount {target}"),
                        mount(Some("overlay"), &path, Some("overlay"), MsFlags::MS_RDONLY, Some(options.as_str())),
                    );
                }
            }
            SandboxMount::Tmpfs { target } => {
                let path = must("create mount point", ensure_target(root, target, true));
                step(
                    &format!("mount tmpfs {target}"),
                    mount(Some("tmpfs"), &path, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, None::<&str>),
                );
            }
        }
    }
    step("enter rootfs", chdir(root));
    step("pivot_root", pivot_root(".", "."));
    step("detach old root", umount2(".", MntFlags::MNT_DETACH));
    step("enter /", chdir("/"));
    let _ = sethostname(&spec.hostname);
    if chdir(spec.cwd.as_str()).is_err() {
        let _ = fs::create_dir_all(&spec.cwd);
        step(&format!("enter working directory {}", spec.cwd), chdir(spec.cwd.as_str()));
    }
    if !spec.user_namespace || spec.maps_from_outside || spec.gid == 0 {
        let _ = setgroups(&[Gid::from_raw(spec.gid)]);
    }
    step("set group id", setgid(Gid::from_raw(spec.gid)));
    step("set user id", setuid(Uid::from_raw(spec.uid)));
    let program = find_program(&spec.argv[0], &spec.env);
    let cstr = |s: &str| CString::new(s).unwrap_or_else(|e| fail("command has a NUL byte", e));
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = spec.env.iter().map(|a| cstr(a)).collect();
    match execve(&cstr(&program), &argv, &env) {
        Err(e) => {
            eprintln!("strata sandbox: exec {}: {e}", spec.argv[0]);
            std::process::exit(NOT_FOUND)
        }
        Ok(never) => match never {},
    }
}

/// Looks a command up in the container's PATH, as a shell would.
fn find_program(name: &str, env: &[String]) -> String {
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
