//! `strata exec`: a command in a running run's namespaces (user when
//! rootless, IPC, UTS, network with `--network=none`, PID, mount) and root,
//! confined as the run is (capabilities, ids, no_new_privs, seccomp). Entered
//! by `strata __nsenter SPEC`, a fresh single-threaded process, as the
//! kernel requires for setns into a mount or user namespace.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};
use serde::{Deserialize, Serialize};

use super::record::{self, ExecContext, ProcessId, RunState};
use super::{RuntimeError, find};
use crate::exec::sandbox::{self, DEFAULT_CAPABILITIES, Host, Syscalls};
use crate::exec::users;
use crate::store::Store;

/// The hidden verb `exec` starts.
pub const NSENTER_VERB: &str = "__nsenter";

/// What `exec` asks for.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub interactive: bool,
}

/// What `__nsenter` reads.
#[derive(Debug, Serialize, Deserialize)]
struct EnterSpec {
    name: String,
    pid: ProcessId,
    argv: Vec<String>,
    context: ExecContext,
}

/// Runs `req.argv` in the run's namespaces; returns its exit code.
pub fn exec(store: &Store, name: &str, req: &ExecRequest) -> Result<i32, RuntimeError> {
    let dir = find(store, name)?;
    let record = record::read(&dir)?;
    let (Some(pid), Some(mut context), RunState::Running) = (record.pid, record.exec.clone(), record.state()) else {
        return Err(RuntimeError::NotRunning(record.name));
    };
    for (k, v) in &req.env {
        let entry = format!("{k}={v}");
        match context.env.iter_mut().find(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str())) {
            Some(slot) => *slot = entry,
            None => context.env.push(entry),
        }
    }
    if let Some(dir) = &req.workdir {
        context.cwd = dir.clone();
    }
    if let Some(user) = &req.user {
        let image = store.resolve(&record.image_manifest.to_string()).or_else(|_| store.resolve(&record.image))?;
        let view = crate::exec::ImageState::from_image(&image).view(store)?;
        let ids = users::resolve_user_or_root(&view, user)?;
        (context.uid, context.gid) = (ids.uid, ids.gid);
    }
    let spec = EnterSpec { name: record.name.clone(), pid, argv: req.argv.clone(), context };
    let path = dir.join(format!("exec-{}.json", std::process::id()));
    let bytes = serde_json::to_vec(&spec).map_err(|source| RuntimeError::BadRecord { path: path.clone(), source })?;
    fs::write(&path, bytes).map_err(|e| RuntimeError::io("write", &path, e))?;
    let exe = std::env::current_exe().map_err(|e| RuntimeError::io("find the strata binary", Path::new("/proc/self/exe"), e))?;
    let mut command = std::process::Command::new(exe);
    command.arg(NSENTER_VERB).arg(&path);
    if !req.interactive {
        command.stdin(std::process::Stdio::null());
    }
    super::signal::install_forwarding();
    let child = command.spawn().map_err(|e| RuntimeError::io("start exec in", &dir, e));
    let status = child.and_then(|mut child| {
        super::signal::wait_forwarding(
            &mut child,
            std::time::Duration::from_secs(super::DEFAULT_STOP_TIMEOUT),
            &mut |_| {},
            &PathBuf::new(),
        )
        .map_err(|e| RuntimeError::io("wait for exec in", &dir, e))
    });
    let _ = fs::remove_file(&path);
    use std::os::unix::process::ExitStatusExt;
    let status = status?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> ! {
    eprintln!("strata exec: {what}: {e}");
    std::process::exit(sandbox::SETUP_FAILED)
}

/// Entry point of `strata __nsenter SPEC`; never returns.
pub fn main(spec_path: &Path) -> ! {
    let spec: EnterSpec = match fs::read(spec_path).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(spec)) => spec,
        Ok(Err(e)) => fail("parse exec spec", e),
        Err(e) => fail("read exec spec", e),
    };
    let context = &spec.context;
    let pid = spec.pid.pid;
    // Everything is opened before the first setns: /proc is the host's until then.
    let mut namespaces = Vec::new();
    if context.user_namespace {
        namespaces.push(("user", CloneFlags::CLONE_NEWUSER));
    }
    namespaces.extend([("ipc", CloneFlags::CLONE_NEWIPC), ("uts", CloneFlags::CLONE_NEWUTS)]);
    if context.own_network {
        namespaces.push(("net", CloneFlags::CLONE_NEWNET));
    }
    namespaces.extend([("pid", CloneFlags::CLONE_NEWPID), ("mnt", CloneFlags::CLONE_NEWNS)]);
    let opened: Vec<(fs::File, CloneFlags, &str)> = namespaces
        .into_iter()
        .map(|(ns, flag)| match fs::File::open(format!("/proc/{pid}/ns/{ns}")) {
            Ok(file) => (file, flag, ns),
            Err(e) => fail(format!("open the {ns} namespace of run {}", spec.name), e),
        })
        .collect();
    let root = fs::File::open(format!("/proc/{pid}/root")).unwrap_or_else(|e| fail(format!("open the root of run {}", spec.name), e));
    // The files were opened from the run's PID 1, not a process that took its pid since.
    if !spec.pid.alive() {
        fail(format!("enter run {}", spec.name), "it is not running");
    }
    for (file, flag, ns) in &opened {
        if let Err(e) = setns(file.as_fd(), *flag) {
            fail(format!("enter the {ns} namespace of run {}", spec.name), e);
        }
    }
    if let Err(e) = nix::unistd::fchdir(&root).and_then(|_| nix::unistd::chroot(".")) {
        fail("enter the run's root", e);
    }
    if nix::unistd::chdir(Path::new(&context.cwd)).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    drop(opened);
    drop(root);
    // Joining a PID namespace applies to children: the command is one.
    // SAFETY: this process is single-threaded (a fresh exec of strata), so fork is safe.
    match unsafe { fork() } {
        Err(e) => fail("fork", e),
        Ok(ForkResult::Child) => confine_and_exec(&spec),
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => std::process::exit(128 + signal as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => fail("wait for the command", e),
            }
        },
    }
}

fn confine_and_exec(spec: &EnterSpec) -> ! {
    let context = &spec.context;
    let mut sys = Host;
    if context.confined
        && let Err(e) = sys.limit_capabilities(DEFAULT_CAPABILITIES)
    {
        fail("drop capabilities", e);
    }
    if (!context.user_namespace || context.maps_from_outside)
        && let Err(e) = sys.setgroups(&[Gid::from_raw(context.gid)])
    {
        fail("set supplementary groups", e);
    }
    if let Err(e) = sys.setgid(Gid::from_raw(context.gid)).and_then(|_| sys.setuid(Uid::from_raw(context.uid))) {
        fail("set user and group ids", e);
    }
    if let Err(e) = sys.die_with_parent() {
        fail("ask to die with exec", e);
    }
    if context.confined {
        if let Err(e) = sys.set_no_new_privs() {
            fail("set no_new_privs", e);
        }
        if let Err(e) = sys.install_seccomp() {
            fail("install the seccomp filter", e);
        }
    }
    let cstr = |s: &str| CString::new(s).unwrap_or_else(|e| fail("command has a NUL byte", e));
    let program = spec.argv.first().cloned().unwrap_or_default();
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    let env: Vec<CString> = context.env.iter().map(|a| cstr(a)).collect();
    let path = sandbox::find_program(&program, &context.env);
    match nix::unistd::execve(&cstr(&path), &argv, &env) {
        Err(e) => {
            eprintln!("strata exec: exec {program}: {e}");
            std::process::exit(sandbox::NOT_FOUND)
        }
        Ok(never) => match never {},
    }
}
