//! The runtime of `strata run`, `ps`, `stop`, `logs`, `exec`, `commit` and
//! `rm`: an image's command in the sandbox RUN uses (the same launcher), with
//! its changes kept under `strata/runs/NAME/` so that `commit` can turn them
//! into a layer, as `docker commit` does. There is no daemon: a run's waiting
//! process (`strata run`, or for `run -d` a supervisor of its own) records
//! its exit and its log. It stands on `exec`; nothing below knows it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::exec::launch::{Changes, DEFAULT_HOSTNAME, Launch, attempt_dir, changes_to_layer};
use crate::exec::{ExecError, ImageState, sandbox, timestamp, users};
use crate::oci::{Descriptor, Digest, ImageRef};
use crate::store::{Store, StoreError};

pub mod log;
pub mod nsenter;
pub mod record;
pub mod signal;

use record::{ExecContext, runs_dir};
pub use record::{ProcessId, RunRecord, RunState};

/// What went wrong with a run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("read run record {path}")]
    BadRecord { path: PathBuf, source: serde_json::Error },
    #[error("invalid run name {0:?}: use letters, digits, '_', '.' and '-'")]
    BadName(String),
    #[error("a run named {0:?} already exists; remove it with `strata rm {0}`")]
    NameInUse(String),
    #[error("no run named {0:?} (see `strata ps -a`)")]
    NoSuchRun(String),
    #[error("image {0} has no ENTRYPOINT or CMD; give a command")]
    NoCommand(String),
    #[error("run {0:?} is running: stop it first, or remove it with `rm -f`")]
    Running(String),
    #[error("run {0:?} is not running")]
    NotRunning(String),
    #[error("unknown signal {0:?}")]
    BadSignal(String),
    #[error("signal run {name:?}")]
    Signal { name: String, source: nix::errno::Errno },
    #[error("run {name:?} did not start: {error}")]
    NotStarted { name: String, error: String },
    #[error("run {0:?} was not detached: its output went to the terminal that started it")]
    NoLog(String),
}

impl RuntimeError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> RuntimeError {
        RuntimeError::Io { action, path: path.to_path_buf(), source }
    }
}

/// What `strata run` was asked to do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRequest {
    pub image: String,
    pub command: Vec<String>,
    /// `-e`/`--env-file` values, applied over the image's ENV.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub name: Option<String>,
    pub remove: bool,
    pub interactive: bool,
    /// `--privileged`: no capability limits, seccomp filter, /proc masking or nodev.
    pub privileged: bool,
    /// `--entrypoint`: replaces the image's ENTRYPOINT (and drops its CMD, as Docker does); empty: none.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// `-d`: start, print the id and leave the run to a supervisor of its own.
    #[serde(default)]
    pub detach: bool,
    /// `-a`: the streams the terminal gets (stdin, stdout, stderr); empty: stdout and stderr.
    #[serde(default)]
    pub attach: Vec<String>,
    /// How long a SIGTERM or SIGINT to `strata run` waits for the command before SIGKILL.
    #[serde(default)]
    pub stop_timeout: Option<u64>,
}

/// How `run` ended.
pub enum RunOutcome {
    /// The command ran in the foreground and exited with this code.
    Exited(i32),
    /// `-d`: the run's id; its supervisor waits for it.
    Detached(String),
}

/// Docker's grace between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn new_id() -> String {
    Digest::of(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes()).hex().to_string()
}

/// Runs an image's command: in the foreground (its exit code), or with
/// `detach` under a supervisor (its id, once the command has started).
pub fn run(store: &Store, req: &RunRequest) -> Result<RunOutcome, RuntimeError> {
    let image = store.resolve(&req.image)?;
    let config = &image.config.config;
    let id = new_id();
    let name = match &req.name {
        Some(name) if !valid_name(name) => return Err(RuntimeError::BadName(name.clone())),
        Some(name) => name.clone(),
        None => format!("run-{}", &id[..12]),
    };
    let dir = runs_dir(store.root()).join(&name);
    if dir.exists() {
        return Err(RuntimeError::NameInUse(name));
    }
    let argv = command_line(req, config);
    if argv.is_empty() {
        return Err(RuntimeError::NoCommand(req.image.clone()));
    }
    fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
    let record = RunRecord {
        name: name.clone(),
        id,
        image: req.image.clone(),
        image_manifest: image.manifest_descriptor.digest.clone(),
        command: argv,
        created: timestamp(None),
        exit_code: None,
        mount_points: Vec::new(),
        copied_root: false,
        dir_marks: Default::default(),
        started: None,
        finished: None,
        owner: None,
        pid: None,
        detached: req.detach,
        auto_remove: req.remove,
        stop_signal: config.stop_signal.clone(),
        error: None,
        exec: None,
    };
    if req.detach {
        return start_detached(&dir, req, record);
    }
    let stdin = if req.interactive && attached(req, "stdin") { Stdio::inherit() } else { Stdio::null() };
    let out = |stream| if attached(req, stream) { Stdio::inherit() } else { Stdio::null() };
    let code = execute(store, req, &dir, record, Output::Terminal { stdin, stdout: out("stdout"), stderr: out("stderr") })?;
    Ok(RunOutcome::Exited(code))
}

/// ENTRYPOINT and CMD as Docker combines them with the run's own.
fn command_line(req: &RunRequest, config: &crate::oci::RunConfig) -> Vec<String> {
    let (mut argv, image_cmd) = match &req.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (config.entrypoint.clone().unwrap_or_default(), config.cmd.clone().unwrap_or_default()),
    };
    argv.extend(if req.command.is_empty() { image_cmd } else { req.command.clone() });
    argv
}

fn attached(req: &RunRequest, stream: &str) -> bool {
    if req.attach.is_empty() {
        return stream != "stdin" || req.interactive;
    }
    req.attach.iter().any(|a| a.eq_ignore_ascii_case(stream))
}

/// Where a run's output goes.
enum Output {
    Terminal {
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    },
    /// The run's log (`log::Log`), written by the supervisor.
    Log(PathBuf),
}

/// Starts the command in `dir` and waits for it, recording its start, PID 1 and exit.
fn execute(store: &Store, req: &RunRequest, dir: &Path, mut record: RunRecord, output: Output) -> Result<i32, RuntimeError> {
    let image = store.resolve(&req.image)?;
    let state = ImageState::from_image(&image);
    let config = &image.config.config;
    let mut env = config.env.clone();
    for (k, v) in &req.env {
        let entry = format!("{k}={v}");
        match env.iter_mut().find(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str())) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    let cwd = req.workdir.clone().or_else(|| config.working_dir.clone()).unwrap_or_else(|| "/".into());
    let view = state.view(store)?;
    let user = req.user.clone().or_else(|| config.user.clone()).unwrap_or_default();
    let ids = users::resolve_user_or_root(&view, &user)?;
    let launch = Launch {
        view: &view,
        argv: record.command.clone(),
        env,
        cwd,
        ids,
        network: crate::exec::sandbox::SandboxNetwork::Host,
        hostname: DEFAULT_HOSTNAME.to_string(),
        mounts: Vec::new(),
        volatile_upper: false,
        confined: !req.privileged,
    };
    record.owner = ProcessId::current();
    signal::install_forwarding();
    let stop_timeout = Duration::from_secs(req.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT));
    let mut output = Some(output);
    let mut failure = None;
    let launched = launch.run(dir, &mut |mut command, prepared| {
        // Recorded before the command starts, so `ps -a` shows it while it runs.
        record.mount_points.clone_from(&prepared.mount_points);
        record.copied_root = prepared.spec.copied_root;
        record.dir_marks = prepared.dir_marks;
        let spec = &prepared.spec;
        record.exec = Some(ExecContext {
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            uid: spec.uid,
            gid: spec.gid,
            confined: !req.privileged,
            user_namespace: spec.user_namespace,
            maps_from_outside: spec.maps_from_outside,
            own_network: spec.network != crate::exec::sandbox::SandboxNetwork::Host,
        });
        record.started = Some(timestamp(None));
        if let Err(e) = record::write(dir, &record) {
            let text = error_chain(failure.insert(e));
            return Err(ExecError::io("record the run in", dir, io::Error::other(text)));
        }
        command.arg(sandbox::FORWARD_SIGNALS_ARG);
        let mut log = None;
        match output.take() {
            Some(Output::Terminal { stdin, stdout, stderr }) => {
                command.stdin(stdin).stdout(stdout).stderr(stderr);
            }
            Some(Output::Log(path)) => {
                command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
                log = Some(path);
            }
            None => {
                // A second attempt (on a copied root) after a refused overlay: as the first.
                command.stdin(Stdio::null());
                if record.detached {
                    command.stdout(Stdio::piped()).stderr(Stdio::piped());
                    log = Some(dir.join(log::FILE));
                }
            }
        }
        let mut child = sandbox::start(command, &prepared.spec, &crate::exec::idmap::IdMap::for_caller())
            .map_err(|e| ExecError::io("start the sandbox in", dir, e))?;
        let copying = match &log {
            Some(path) => log::copy_output(&mut child, path).map_err(|e| ExecError::io("write", path, e))?,
            None => Vec::new(),
        };
        let pid_file = sandbox::pid_path(&attempt_dir(dir, prepared.spec.copied_root).join("spec.json"));
        let status = signal::wait_forwarding(
            &mut child,
            stop_timeout,
            &mut |pid| {
                record.pid = Some(pid);
                let _ = record::write(dir, &record);
            },
            &pid_file,
        )
        .map_err(|e| ExecError::io("wait for the sandbox in", dir, e))?;
        for thread in copying {
            let _ = thread.join();
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    });
    let code = match launched {
        Ok(launched) => launched.code,
        Err(e) => {
            let e = failure.take().unwrap_or(RuntimeError::Exec(e));
            if req.remove {
                let _ = remove_tree(dir);
            } else {
                record.error = Some(error_chain(&e));
                let _ = record::write(dir, &record);
            }
            return Err(e);
        }
    };
    if req.remove {
        remove_tree(dir).map_err(|e| RuntimeError::io("remove", dir, e))?;
    } else {
        record.exit_code = Some(code);
        record.finished = Some(timestamp(None));
        record::write(dir, &record)?;
    }
    Ok(code)
}

/// An error and its causes on one line, for a record.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The hidden verb the supervisor of a detached run is started as.
pub const SUPERVISE_VERB: &str = "__supervise";

/// Records the run, starts its supervisor (in a session of its own, so that
/// the terminal's signals and hang-up do not reach it) and waits until the
/// command has started.
fn start_detached(dir: &Path, req: &RunRequest, record: RunRecord) -> Result<RunOutcome, RuntimeError> {
    let request = dir.join("request.json");
    let bytes = serde_json::to_vec(req).map_err(|source| RuntimeError::BadRecord { path: request.clone(), source })?;
    fs::write(&request, bytes).map_err(|e| RuntimeError::io("write", &request, e))?;
    record::write(dir, &record)?;
    let exe = std::env::current_exe().map_err(|e| RuntimeError::io("find the strata binary", Path::new("/proc/self/exe"), e))?;
    let mut command = std::process::Command::new(exe);
    command.arg(SUPERVISE_VERB).arg(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    // The supervisor forks once more and this child exits at once: the run is nobody's child here.
    let status = command.status().map_err(|e| RuntimeError::io("start the supervisor of", dir, e))?;
    if !status.success() {
        return Err(RuntimeError::NotStarted { name: record.name, error: format!("its supervisor failed ({status})") });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = record::read(dir)?;
        if let Some(error) = now.error {
            return Err(RuntimeError::NotStarted { name: now.name, error });
        }
        if now.pid.is_some() || now.exit_code.is_some() {
            return Ok(RunOutcome::Detached(now.id()));
        }
        if now.state() == RunState::Dead || Instant::now() > deadline {
            return Err(RuntimeError::NotStarted { name: now.name, error: "its supervisor ended before the command started".into() });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The supervisor of a detached run (`strata __supervise DIR`): leaves its
/// parent at once (the double fork), then runs the command, its output into
/// the run's log, and records its exit.
pub fn supervise(store_root: &Path, dir: &Path) -> Result<(), RuntimeError> {
    // SAFETY: a fresh exec of strata, single-threaded: fork is safe here.
    match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(RuntimeError::io("fork the supervisor of", dir, io::Error::from(e))),
        Ok(nix::unistd::ForkResult::Parent { .. }) => return Ok(()),
        Ok(nix::unistd::ForkResult::Child) => {}
    }
    let result = (|| {
        let store = Store::open(store_root)?;
        let request = dir.join("request.json");
        let bytes = fs::read(&request).map_err(|e| RuntimeError::io("read", &request, e))?;
        let req: RunRequest = serde_json::from_slice(&bytes).map_err(|source| RuntimeError::BadRecord { path: request, source })?;
        let record = record::read(dir)?;
        execute(&store, &req, dir, record, Output::Log(dir.join(log::FILE)))
    })();
    if let Err(e) = &result
        && let Ok(mut record) = record::read(dir)
        && record.error.is_none()
    {
        record.error = Some(error_chain(e));
        let _ = record::write(dir, &record);
    }
    std::process::exit(if result.is_ok() { 0 } else { 1 })
}

/// Every kept run, oldest first.
pub fn list(store: &Store) -> Result<Vec<RunRecord>, RuntimeError> {
    let dir = runs_dir(store.root());
    let mut records = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(records),
        Err(e) => return Err(RuntimeError::io("list", &dir, e)),
    };
    for entry in entries.flatten() {
        if let Ok(record) = record::read(&entry.path()) {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(records)
}

/// The layers (diff_ids) of the images kept runs stand on: their snapshots may be mounted.
pub fn layers_in_use(store: &Store) -> Result<std::collections::HashSet<Digest>, RuntimeError> {
    let mut layers = std::collections::HashSet::new();
    for run in list(store)? {
        let manifest: crate::oci::Manifest = store.read_json(&run.image_manifest, "manifest")?;
        let config: crate::oci::ImageConfig = store.read_json(&manifest.config.digest, "image config")?;
        layers.extend(config.rootfs.diff_ids);
    }
    Ok(layers)
}

/// A run's folder, by name or by (a prefix of) its id.
pub fn find(store: &Store, name_or_id: &str) -> Result<PathBuf, RuntimeError> {
    let dir = runs_dir(store.root());
    if valid_name(name_or_id) && dir.join(name_or_id).join("run.json").exists() {
        return Ok(dir.join(name_or_id));
    }
    let by_id: Vec<RunRecord> = list(store)?.into_iter().filter(|r| !name_or_id.is_empty() && r.id().starts_with(name_or_id)).collect();
    match &by_id[..] {
        [one] => Ok(dir.join(&one.name)),
        _ => Err(RuntimeError::NoSuchRun(name_or_id.to_string())),
    }
}

/// A run's record, by name or id.
pub fn record(store: &Store, name_or_id: &str) -> Result<RunRecord, RuntimeError> {
    record::read(&find(store, name_or_id)?)
}

/// Removes a run; with `force` a running one is killed first.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<(), RuntimeError> {
    let dir = find(store, name)?;
    let record = record::read(&dir)?;
    if record.state() == RunState::Running {
        if !force {
            return Err(RuntimeError::Running(record.name));
        }
        signal::kill(store, name, nix::sys::signal::Signal::SIGKILL)?;
    }
    // Its waiting process records the exit (or removes a --rm run): let it finish first.
    signal::wait_for_owner(&record, Duration::from_secs(30));
    match remove_tree(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RuntimeError::io("remove", &dir, e)),
        _ => Ok(()),
    }
}

/// Removes a run's folder. Rootless, overlayfs leaves its work folder mode
/// 000 (owned by the caller), which `remove_dir_all` cannot enter: open such
/// folders up and try again.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Each folder is opened as it is reached, before the walk reads it.
            let opened = walkdir::WalkDir::new(dir).into_iter().filter_entry(|e| {
                if e.file_type().is_dir() && e.metadata().is_ok_and(|m| m.permissions().mode() & 0o700 != 0o700) {
                    let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
                }
                true
            });
            opened.for_each(drop);
            fs::remove_dir_all(dir)
        }
        other => other,
    }
}

/// Turns a run's changes into a new layer over its image and tags the result.
pub fn commit(store: &Store, name: &str, tag: Option<&ImageRef>) -> Result<(Descriptor, Digest), RuntimeError> {
    // As a build: a collection meanwhile would free the new layer before it is tagged.
    let _build = store.lock_build()?;
    let dir = find(store, name)?;
    let record = record::read(&dir)?;
    let descriptor = store.entries()?.into_iter().map(|(_, d)| d).find(|d| d.digest == record.image_manifest).unwrap_or(Descriptor {
        media_type: crate::oci::MEDIA_MANIFEST.into(),
        digest: record.image_manifest.clone(),
        size: store.read_blob(&record.image_manifest)?.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    });
    let image = store.load_image(None, descriptor)?;
    let mut state = ImageState::from_image(&image);
    let view = state.view(store)?;
    let attempt = attempt_dir(&dir, record.copied_root);
    let changes =
        Changes { dir: &attempt, copied_root: record.copied_root, mount_points: &record.mount_points, dir_marks: record.dir_marks };
    let layer = changes_to_layer(store, &view, &changes, crate::exec::source_date_epoch())?;
    state.push_history(record.command.join(" "), timestamp(None), Some(layer));
    if let Some(last) = state.config.history.last_mut() {
        last.comment = Some(format!("strata commit {}", record.name));
    }
    let (manifest, id) = state.write_image(store)?;
    match tag {
        Some(tag) => store.set_tag(tag, &manifest)?,
        None => store.add_untagged(&manifest)?,
    }
    Ok((manifest, id))
}

/// What a run changed, as `docker diff` lists it: `A`dded, `C`hanged or
/// `D`eleted paths, from its overlay's upper folder (mount points made only
/// for the sandbox left out).
pub fn changes(store: &Store, name: &str) -> Result<Vec<(char, String)>, RuntimeError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = find(store, name)?;
    let record = record::read(&dir)?;
    let image = store.resolve(&record.image)?;
    let view = ImageState::from_image(&image).view(store)?;
    let root = attempt_dir(&dir, record.copied_root).join(if record.copied_root { "root" } else { "upper" });
    let mut changes = Vec::new();
    for entry in walkdir::WalkDir::new(&root).min_depth(1).sort_by_file_name().into_iter().flatten() {
        let Ok(relative) = entry.path().strip_prefix(&root) else { continue };
        let path = relative.to_string_lossy().into_owned();
        if record.mount_points.contains(&path) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(_) => continue,
        };
        let below = view.lookup(relative).is_some();
        let kind = if meta.file_type().is_char_device() && meta.rdev() == 0 {
            'D'
        } else if below {
            if record.copied_root { continue } else { 'C' }
        } else {
            'A'
        };
        changes.push((kind, format!("/{path}")));
    }
    Ok(changes)
}
