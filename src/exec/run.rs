//! RUN: the command runs through `launch` over an overlay of the parent layers
//! (or a copied root where the kernel refuses one); what it changed becomes
//! the layer. The cache key covers the command
//! and everything it runs with (env, build args, workdir, user, shell,
//! mounts, network) but never a secret's content.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::copy::{CopyInput, CopyRequest, LayerPlan, SourceRoot};
use super::idmap::IdMap;
use super::launch::{DEFAULT_HOSTNAME, Launch, changes_to_layer};
use super::sandbox::{SandboxMount, SandboxNetwork, SandboxSpec};
use super::{ExecCx, ExecError, ImageState, KeyInputs, StepOutcome, users};
use crate::graph::args::{PROXY_ARGS, SANDBOX_HOSTNAME_ARG};
use crate::graph::{CommandLine, CopyFrom, MountFile, Network, RunHeredoc, RunMount, RunOp, Security, Sharing};

/// How many output lines a failure message repeats.
const TAIL_LINES: usize = 10;

/// Runs one RUN step (or takes it from the cache).
pub fn execute(state: &mut ImageState, cx: &ExecCx, run: &RunOp) -> Result<StepOutcome, ExecError> {
    let argv = match &run.command {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(script) => {
            let mut argv = state.shell();
            // A `#!` heredoc runs as the file it is mounted as (`run_in_sandbox`), as in BuildKit.
            argv.push(executable_heredoc(run).map_or_else(|| script.clone(), |(heredoc, _)| heredoc.path()));
            argv
        }
    };
    if argv.is_empty() {
        return Err(ExecError::NoCommand);
    }
    // Declared build args reach the command as environment; proxies do too, but stay out of history.
    let declared: Vec<(String, String)> =
        state.args.iter().filter(|(k, _)| state.config.config.env_var(k).is_none()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut text = String::from("RUN");
    if !declared.is_empty() {
        text.push_str(&format!(" |{}", declared.len()));
        for (k, v) in &declared {
            text.push_str(&format!(" {k}={v}"));
        }
    }
    match &run.command {
        CommandLine::Exec(args) => text.push_str(&format!(" {}", super::json_text(args)?)),
        CommandLine::Shell(_) => text.push_str(&format!(" {}", argv.join(" "))),
    }
    let mut env = state.config.config.env.clone();
    for (k, v) in &declared {
        env.push(format!("{k}={v}"));
    }
    for name in PROXY_ARGS {
        if let Some(value) = cx.build_args.get(name) {
            env.push(format!("{name}={value}"));
        }
    }
    let cwd = state.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
    let user = state.config.config.user.clone().unwrap_or_default();
    let mut inputs = KeyInputs::new();
    inputs.list("argv", &argv).list("env", &state.config.config.env).field("cwd", &cwd).field("user", &user);
    inputs.field("network", network_name(step_network(cx, run)));
    let hostname = sandbox_hostname(cx)?;
    if hostname != DEFAULT_HOSTNAME {
        inputs.field("hostname", hostname);
    }
    if run.security == Security::Insecure {
        inputs.field("security", "insecure");
    }
    if let Some((_, body)) = executable_heredoc(run) {
        inputs.field("script", body);
    }
    // Every mount enters the key; a bind mount by what it shows: the context's
    // files by content and metadata, another stage or image by its key. Cache
    // and secret mounts by their names only, by design (as in BuildKit).
    let mounts = expand_mounts(state, run)?;
    let mut binds = Vec::new();
    for mount in &mounts {
        match mount {
            RunMount::Cache { id, target, readonly, sharing, file } => {
                inputs.field("mount", "cache").field("id", id).field("target", target).field("readonly", flag(*readonly));
                if !sharing.is_shared() {
                    inputs.field("sharing", sharing_name(*sharing));
                }
                file_inputs(&mut inputs, file);
            }
            RunMount::Bind { from, source, target, rw } => {
                inputs.field("mount", "bind").field("source", source).field("target", target).field("rw", flag(*rw));
                let bind = BindSource::resolve(cx, from.as_ref(), source)?;
                match &bind {
                    BindSource::Context { plan, root, .. } => {
                        inputs.field("content", plan.content_key(cx.store)?.as_str()).field("root", root.to_string())
                    }
                    BindSource::Image(other) => inputs.field("image", other.key.as_str()),
                };
                binds.push(bind);
            }
            RunMount::Secret { id, target, env, required, file } => {
                inputs.field("mount", "secret").field("id", id).field("required", flag(*required));
                if let Some(target) = target {
                    inputs.field("target", target);
                }
                // The variable's name, never the secret's content.
                if let Some(env) = env {
                    inputs.field("env", env);
                }
                file_inputs(&mut inputs, file);
            }
            // The agent's id, never its keys.
            RunMount::Ssh { id, target, required, file } => {
                inputs.field("mount", "ssh").field("id", id).field("required", flag(*required));
                if let Some(target) = target {
                    inputs.field("target", target);
                }
                file_inputs(&mut inputs, file);
            }
            RunMount::Tmpfs { target, size } => {
                inputs.field("mount", "tmpfs").field("target", target);
                if let Some(size) = size {
                    inputs.field("size", size.to_string());
                }
            }
            RunMount::Unexpanded { .. } => unreachable!("expand_mounts reads every mount"),
        }
    }
    let command_shown = argv.join(" ");
    state.commit(cx, text, inputs.as_bytes(), |state| {
        run_in_sandbox(state, cx, run, &mounts, binds, &argv, env, &cwd, &user, &command_shown).map(Some)
    })
}

/// The step's mounts, each option naming a variable expanded as BuildKit
/// does: with the stage's ENV and build args (what the key and the step see).
fn expand_mounts(state: &ImageState, run: &RunOp) -> Result<Vec<RunMount>, ExecError> {
    let mut mounts = Vec::new();
    for mount in &run.mounts {
        let RunMount::Unexpanded { fields, from } = mount else {
            mounts.push(mount.clone());
            continue;
        };
        let mut expanded = Vec::new();
        for (key, value) in fields {
            expanded.push((key.clone(), value.as_ref().map(|word| state.expand(word)).transpose()?));
        }
        let (mount, _) = crate::graph::parse_mount(&expanded).map_err(ExecError::BadMount)?;
        mounts.push(match mount {
            RunMount::Bind { source, target, rw, .. } => RunMount::Bind { from: from.clone(), source, target, rw },
            mount => mount,
        });
    }
    Ok(mounts)
}

/// The heredoc of `run` and its body, if the body is to run as a file.
fn executable_heredoc(run: &RunOp) -> Option<(&RunHeredoc, &str)> {
    match (&run.heredoc, &run.command) {
        (Some(heredoc), CommandLine::Shell(body)) if heredoc.executable => Some((heredoc, body)),
        _ => None,
    }
}

/// Gives a laid-out bind source's root the mode and (as root) the owner of the real one.
fn set_attrs(path: &Path, attrs: RootAttrs) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid)).map_err(|e| ExecError::io("chown", path, e))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(attrs.mode)).map_err(|e| ExecError::io("set mode of", path, e))
}

fn flag(on: bool) -> &'static str {
    if on { "true" } else { "false" }
}

fn sharing_name(sharing: Sharing) -> &'static str {
    match sharing {
        Sharing::Shared => "shared",
        Sharing::Private => "private",
        Sharing::Locked => "locked",
    }
}

/// A mount's `mode`, `uid` and `gid`, those given (none given keeps older keys as they were).
fn file_inputs(inputs: &mut KeyInputs, file: &MountFile) {
    if let Some(mode) = file.mode {
        inputs.field("mode", format!("{mode:o}"));
    }
    for (key, value) in [("uid", file.uid), ("gid", file.gid)] {
        if let Some(value) = value {
            inputs.field(key, value.to_string());
        }
    }
}

/// Gives a mount's folder or file BuildKit's mode and owner: those given, else
/// `mode` and root. Rootless, the owner stays the caller (root inside).
fn set_file_attrs(path: &Path, file: &MountFile, mode: u32) -> Result<(), ExecError> {
    let uid = file.uid.unwrap_or(0);
    let gid = file.gid.unwrap_or(0);
    set_attrs(path, RootAttrs { mode: file.mode.unwrap_or(mode), uid, gid })
}

/// A cache mount's folder for one step, and the lock it holds until the step
/// ends. Shared users hold the lock shared; a locked one waits for the lock
/// alone; a private one takes the first of the id's folders no step holds
/// (`<id>`, `<id>-1`, …), so steps running at once never share it.
fn cache_folder(store: &crate::store::Store, id: &str, sharing: Sharing) -> Result<(PathBuf, fs::File), ExecError> {
    let base = store.root().join("strata/cache-mounts").join(crate::oci::Digest::of(id.as_bytes()).hex());
    let mut instance = 0;
    loop {
        let dir = if instance == 0 { base.clone() } else { PathBuf::from(format!("{}-{instance}", base.display())) };
        let lock_path = dir.with_extension("lock");
        fs::create_dir_all(&dir).map_err(|e| ExecError::io("create cache mount", &dir, e))?;
        let lock = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ExecError::io("open cache mount lock", &lock_path, e))?;
        let taken = match sharing {
            Sharing::Shared => lock.lock_shared().map(|()| true),
            Sharing::Locked => lock.lock().map(|()| true),
            Sharing::Private => match lock.try_lock() {
                Ok(()) => Ok(true),
                Err(fs::TryLockError::WouldBlock) => Ok(false),
                Err(fs::TryLockError::Error(e)) => Err(e),
            },
        };
        if taken.map_err(|e| ExecError::io("lock cache mount", &lock_path, e))? {
            return Ok((dir, lock));
        }
        instance += 1;
    }
}

/// With `--no-cache` a cache mount starts empty, as in BuildKit: the first step
/// of this build to use a cache folder empties it (one strata process runs one
/// build), later steps of the build see what earlier ones left.
fn start_empty_once(dir: &Path) -> Result<(), ExecError> {
    static EMPTIED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut emptied = EMPTIED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if emptied.insert(dir.to_path_buf()) {
        for entry in fs::read_dir(dir).map_err(|e| ExecError::io("list cache mount", dir, e))?.flatten() {
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.map_err(|e| ExecError::io("empty cache mount", &path, e))?;
        }
    }
    Ok(())
}

/// A step's network: the one it names, else the build's (`--network`, as BuildKit's force-network-mode).
fn step_network(cx: &ExecCx, run: &RunOp) -> Network {
    if run.network == Network::Default { cx.network } else { run.network }
}

/// The sandbox's network for a step's: `default` is a namespace of its own
/// that reaches out through slirp4netns but not the host's loopback, as
/// Docker's bridge; rootless, the host's, as BuildKit's rootless worker
/// (slirp4netns would have to join the sandbox's user namespace, and open a
/// /dev/net/tun that hosts often keep for root).
fn sandbox_network(network: Network) -> Result<SandboxNetwork, ExecError> {
    match network {
        Network::Host => Ok(SandboxNetwork::Host),
        Network::None => Ok(SandboxNetwork::None),
        Network::Default if !nix::unistd::geteuid().is_root() => Ok(SandboxNetwork::Host),
        Network::Default => super::host_program("slirp4netns").map(SandboxNetwork::Slirp).ok_or(ExecError::NoSlirp4netns),
    }
}

fn network_name(network: Network) -> &'static str {
    match network {
        Network::Default => "default",
        Network::Host => "host",
        Network::None => "none",
    }
}

/// The host name RUN steps get: `--build-arg BUILDKIT_SANDBOX_HOSTNAME`, as in BuildKit.
fn sandbox_hostname<'a>(cx: &'a ExecCx) -> Result<&'a str, ExecError> {
    match cx.build_args.get(SANDBOX_HOSTNAME_ARG).filter(|name| !name.is_empty()) {
        None => Ok(DEFAULT_HOSTNAME),
        Some(name) if name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => Ok(name),
        Some(name) => Err(ExecError::BadHostname(name.clone())),
    }
}

/// What a bind mount shows, resolved once for both the key and the sandbox.
enum BindSource {
    /// A path of the build context: its real path, the plan of what it
    /// holds with `.dockerignore` applied (owners and modes as they are), and
    /// the attributes of the mount's root (a folder's own, not in the plan).
    Context { real: PathBuf, plan: LayerPlan, root: RootAttrs },
    /// Another stage's or an image's filesystem.
    Image(Arc<ImageState>),
}

/// Mode and owner of a bind mount's root.
#[derive(Clone, Copy)]
struct RootAttrs {
    mode: u32,
    uid: u32,
    gid: u32,
}

impl std::fmt::Display for RootAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:o} {} {}", self.mode, self.uid, self.gid)
    }
}

impl BindSource {
    fn resolve(cx: &ExecCx, from: Option<&CopyFrom>, source: &str) -> Result<BindSource, ExecError> {
        Ok(match from {
            None => {
                let rel = super::context::clean(Path::new(source)).ok_or_else(|| ExecError::OutsideContext(source.to_string()))?;
                let root = SourceRoot::Context(cx.context);
                let request = CopyRequest {
                    sources: vec![CopyInput::Path(source.to_string())],
                    dest: "/".into(),
                    keep_owners: true,
                    ..Default::default()
                };
                let plan = LayerPlan::for_copy(&root, &request)?;
                let real = cx.context.resolve(&rel, source)?;
                let meta = fs::metadata(&real).map_err(|e| ExecError::io("stat", &real, e))?;
                let root = RootAttrs { mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid() };
                BindSource::Context { real, plan, root }
            }
            Some(CopyFrom::Stage(id)) => {
                BindSource::Image((cx.stage)(*id).ok_or_else(|| ExecError::NotBuilt(format!("stage {}", cx.graph.stage_label(*id))))?)
            }
            Some(CopyFrom::Image(name)) => BindSource::Image(Arc::new(ImageState::from_image(&cx.store.resolve(name.as_str())?))),
        })
    }
}

/// A scratch folder for one RUN, removed however the step ends.
pub(crate) struct RunDir(pub(crate) PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_in_sandbox(
    state: &ImageState,
    cx: &ExecCx,
    run: &RunOp,
    run_mounts: &[RunMount],
    binds: Vec<BindSource>,
    argv: &[String],
    mut env: Vec<String>,
    cwd: &str,
    user: &str,
    shown: &str,
) -> Result<(crate::oci::Digest, u64), ExecError> {
    let view = state.view(cx.store)?;
    let ids = users::resolve_user_or_root(&view, user)?;
    let tmp_root = cx.store.tmp_dir();
    let dir =
        tempfile::Builder::new().prefix("run-").tempdir_in(&tmp_root).map_err(|e| ExecError::io("create run folder in", &tmp_root, e))?;
    let dir = RunDir(dir.keep());
    let mut mounts = Vec::new();
    // Held until the step ends: the cache mounts' locks and the ssh agents' forwards.
    let mut cache_locks = Vec::new();
    let mut ssh_forwards = Vec::new();
    let mut binds = binds.into_iter();
    for mount in run_mounts {
        match mount {
            RunMount::Cache { id, target, readonly, sharing, file } => {
                let (cache_dir, lock) = cache_folder(cx.store, id, *sharing)?;
                cache_locks.push(lock);
                if cx.no_cache {
                    start_empty_once(&cache_dir)?;
                }
                if !file.is_unset() {
                    set_file_attrs(&cache_dir, file, 0o755)?;
                }
                mounts.push(SandboxMount::Bind { source: cache_dir, target: absolute(target, cwd), readonly: *readonly });
            }
            RunMount::Bind { source, target, rw, .. } => {
                let target = absolute(target, cwd);
                let rel = super::context::clean(Path::new(source)).ok_or_else(|| ExecError::OutsideContext(source.clone()))?;
                // What to show at the target: a stage's whole filesystem, or one real path.
                let (lowerdirs, real) = match binds.next() {
                    // Without ignore rules the context path is shown as it is; with them, a copy of what they let through.
                    Some(BindSource::Context { real, .. }) if cx.context.ignore.is_empty() => (Vec::new(), Some(real)),
                    Some(BindSource::Context { real, plan, root }) => {
                        let shown = dir.0.join(format!("mount-{}-context", mounts.len()));
                        plan.materialize(&shown)?;
                        if real.is_dir() {
                            set_attrs(&shown, root)?;
                        }
                        let name = if real.is_dir() { None } else { real.file_name() };
                        (Vec::new(), Some(name.map_or(shown.clone(), |n| shown.join(n))))
                    }
                    Some(BindSource::Image(other)) => {
                        let other_view = other.view(cx.store)?;
                        if rel.as_os_str().is_empty() {
                            (other_view.overlay_lowerdirs(), None)
                        } else {
                            let (_, real) = other_view
                                .resolve(&rel)
                                .ok_or_else(|| ExecError::NotFound(format!("{source} in the --mount from= source")))?;
                            (Vec::new(), Some(real))
                        }
                    }
                    None => return Err(ExecError::NotBuilt(format!("bind mount {source}"))),
                };
                // `rw` lets the command write; the writes go to a scratch layer and are discarded.
                let scratch = rw.then(|| dir.0.join(format!("mount-{}", mounts.len())));
                match real {
                    Some(path) if path.is_dir() => mounts.push(SandboxMount::Layers { lowerdirs: vec![path], target, scratch }),
                    Some(path) if *rw => {
                        let copy = dir.0.join(format!("mount-{}-file", mounts.len()));
                        fs::copy(&path, &copy).map_err(|e| ExecError::io("copy bind source", &path, e))?;
                        mounts.push(SandboxMount::Bind { source: copy, target, readonly: false });
                    }
                    Some(path) => mounts.push(SandboxMount::Bind { source: path, target, readonly: true }),
                    None => mounts.push(SandboxMount::Layers { lowerdirs, target, scratch }),
                }
            }
            RunMount::Secret { id, target, env: name, required, file } => match cx.secrets.get(id) {
                Some(src) => {
                    if let Some(name) = name {
                        // In the command's environment only: the image's config, its history and the key never see it.
                        let value = fs::read_to_string(src).map_err(|e| ExecError::io("read secret", src, e))?;
                        env.retain(|entry| entry.split_once('=').is_none_or(|(key, _)| key != name));
                        env.push(format!("{name}={value}"));
                    }
                    if let Some(target) = target {
                        // A copy in the step's own folder carries the mode and owner BuildKit gives (0400 root).
                        let source = dir.0.join(format!("secret-{}", mounts.len()));
                        fs::copy(src, &source).map_err(|e| ExecError::io("open secret", src, e))?;
                        set_file_attrs(&source, file, 0o400)?;
                        mounts.push(SandboxMount::Bind { source, target: absolute(target, cwd), readonly: true });
                    }
                }
                None if *required => {
                    return Err(ExecError::MissingSecret(id.clone()));
                }
                None => {}
            },
            RunMount::Ssh { id, target, required, file } => match cx.ssh.get(id) {
                Some(source) => {
                    let target = target.clone().unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{}", ssh_forwards.len()));
                    let forward = super::ssh::Forward::start(source, |socket| set_file_attrs(socket, file, 0o600))?;
                    // As BuildKit: the first agent is the command's SSH_AUTH_SOCK.
                    if ssh_forwards.is_empty() {
                        env.retain(|entry| !entry.starts_with("SSH_AUTH_SOCK="));
                        env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    mounts.push(SandboxMount::Bind {
                        source: forward.path().to_path_buf(),
                        target: absolute(&target, cwd),
                        readonly: false,
                    });
                    ssh_forwards.push(forward);
                }
                None if *required => return Err(ExecError::MissingSsh(id.clone())),
                None => {}
            },
            RunMount::Tmpfs { target, size } => mounts.push(SandboxMount::Tmpfs { target: absolute(target, cwd), size: *size }),
            RunMount::Unexpanded { .. } => unreachable!("expand_mounts reads every mount"),
        }
    }
    if let Some((heredoc, body)) = executable_heredoc(run) {
        let file = dir.0.join(format!("heredoc-{}", heredoc.name));
        fs::write(&file, body).map_err(|e| ExecError::io("write heredoc", &file, e))?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).map_err(|e| ExecError::io("make executable", &file, e))?;
        mounts.push(SandboxMount::Bind { source: file, target: heredoc.path(), readonly: true });
    }
    let launch = Launch {
        view: &view,
        argv: argv.to_vec(),
        env,
        cwd: cwd.to_string(),
        ids,
        network: sandbox_network(step_network(cx, run))?,
        hostname: sandbox_hostname(cx)?.to_string(),
        mounts,
        // Only the layer written from the upper directory must be durable, and it is, once.
        volatile_upper: true,
        confined: run.security != Security::Insecure,
    };
    let mut tail = VecDeque::new();
    let launched = launch.run(&dir.0, &mut |command, prepared| {
        let (lines, code) = spawn_and_wait(cx, command, &prepared.spec)?;
        tail = lines;
        Ok(code)
    })?;
    if launched.code != 0 {
        let tail = tail.into_iter().collect::<Vec<_>>().join("\n");
        return Err(ExecError::RunFailed { command: shown.to_string(), code: launched.code, tail });
    }
    changes_to_layer(cx.store, &view, &launched.changes(), cx.epoch)
}

/// `target` made absolute against the working directory.
fn absolute(target: &str, cwd: &str) -> String {
    if target.starts_with('/') { target.to_string() } else { format!("{}/{target}", cwd.trim_end_matches('/')) }
}

/// Runs the sandbox (`spec` is `sandbox` written out), streaming its output; returns the last lines and the exit code.
fn spawn_and_wait(cx: &ExecCx, mut command: Command, spec: &SandboxSpec) -> Result<(VecDeque<String>, i32), ExecError> {
    let shown = &spec.upperdir;
    let (reader, writer) = std::io::pipe().map_err(|e| ExecError::io("create pipe for the sandbox in", shown, e))?;
    let writer2 = writer.try_clone().map_err(|e| ExecError::io("create pipe for the sandbox in", shown, e))?;
    command.stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child =
        super::sandbox::start(command, spec, &IdMap::for_caller()).map_err(|e| ExecError::io("start the sandbox in", shown, e))?;
    let (lines_tx, lines_rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            match line {
                Ok(line) => {
                    if lines_tx.send(Some(line)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = lines_tx.send(None);
    });
    let mut tail = VecDeque::new();
    loop {
        match lines_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(line)) => {
                (cx.output)(&line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if (cx.interrupted)() {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ExecError::Interrupted);
                }
            }
        }
    }
    let status = child.wait().map_err(|e| ExecError::io("wait for the sandbox in", shown, e))?;
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if (cx.interrupted)() {
        return Err(ExecError::Interrupted);
    }
    Ok((tail, code))
}
