//! The executor: applies one step to an image state, producing at most one
//! layer (or only a config change with an `empty_layer` history entry), and
//! keeps the cache chain. It knows the graph's ops, never the front ends'
//! syntax, and writes only through the store.

pub mod context;
pub mod copy;
pub(crate) mod copydiff;
mod diff;
pub mod idmap;
pub mod key;
pub mod launch;
mod layer;
pub mod remote;
pub mod run;
pub mod sandbox;
pub mod ssh;
pub mod users;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::graph::args::{self, BuildArgs};
use crate::graph::{BuildGraph, CommandLine, CopyFrom, CopySource, Network, Op, StageId, Word};
use crate::oci::{self, Descriptor, Digest, HealthConfig, History, ImageConfig, RunConfig};
use crate::store::rootfs::RootfsView;
use crate::store::{CacheEntry, CacheKey, Store, StoreError, StoredImage};

pub use context::BuildContext;
use key::root_key;
pub use key::{KeyInputs, chain_key};

/// Why a step failed: lowercase, naming the path, input or step at fault;
/// an underlying error stays the source, which the CLI prints as the cause.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("{file}:{line}: bad pattern {pattern:?}")]
    IgnorePattern { file: PathBuf, line: usize, pattern: String, source: globset::Error },
    #[error("bad pattern {pattern}")]
    Pattern { pattern: String, source: globset::Error },
    #[error("file not found in build context or stage: {0}")]
    NotFound(String),
    #[error("forbidden path outside the build context: {0}")]
    OutsideContext(String),
    #[error("when copying several sources, the destination {0} must be a directory ending with /")]
    DestinationNotDirectory(String),
    #[error("extract {archive}")]
    Extract { archive: PathBuf, source: io::Error },
    #[error("extract {archive}: {what} {entry} leaves the archive root")]
    ArchiveEscape { archive: PathBuf, what: &'static str, entry: PathBuf },
    #[error("write {path} into the layer")]
    WriteLayer { path: PathBuf, source: io::Error },
    #[error("unknown user {0:?}: no such entry in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("unknown group {0:?}: no such entry in the image's /etc/group")]
    UnknownGroup(String),
    #[error("bad /etc/passwd entry for {0:?}")]
    BadPasswdEntry(String),
    #[error("EXPOSE {0}: not a port range")]
    BadPortRange(String),
    #[error("--chmod={0}: not a mode (octal as 0644, or symbolic as u+x,go-w)")]
    BadMode(String),
    #[error("BUILDKIT_SANDBOX_HOSTNAME={0:?}: not a host name (up to 64 letters, digits, '-' and '.')")]
    BadHostname(String),
    #[error(
        "a RUN on the default network runs in a network namespace of its own, which needs slirp4netns: install it (apt-get install slirp4netns) or build with --network=host"
    )]
    NoSlirp4netns,
    #[error("{0} was not built")]
    NotBuilt(String),
    #[error("RUN has no command")]
    NoCommand,
    #[error("--mount: {0}")]
    BadMount(String),
    #[error("secret {0:?} is required but was not given (--secret id={0},src=PATH)")]
    MissingSecret(String),
    #[error("ssh agent {0:?} is required but was not given (--ssh {0}[=SOCKET|KEY,…])")]
    MissingSsh(String),
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    #[error("encode {what}")]
    Encode { what: &'static str, source: serde_json::Error },
    #[error("process {command:?} did not complete successfully: exit code: {code}\n{tail}")]
    RunFailed { command: String, code: i32, tail: String },
    #[error("start the sandbox: {report}{hint}")]
    Sandbox { report: sandbox::SetupReport, hint: &'static str },
    #[error("{file}:{line}: illegal exclusion pattern \"!\"")]
    EmptyExclusion { file: PathBuf, line: usize },
    #[error("destination {0}: too many levels of symbolic links")]
    SymlinkLoop(String),
    #[error("RUN --security=insecure runs the step unconfined; allow it with --allow security.insecure")]
    InsecureNotAllowed,
    #[error("no reader of ONBUILD triggers was given")]
    NoTriggerReader,
    /// The reason a trigger does not parse; the enclosing step error names the trigger.
    #[error("bad ONBUILD trigger: {0}")]
    BadTrigger(String),
    #[error("expand {word}")]
    Expand { word: String, source: crate::graph::ExpandError },
    #[error("build interrupted")]
    Interrupted,
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
}

impl ExecError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> ExecError {
        ExecError::Io { action, path: path.to_path_buf(), source }
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Reused from the cache.
    Cached,
    /// Executed and stored.
    Built,
}

/// Everything a step may read besides the image it changes.
pub struct ExecCx<'a> {
    pub store: &'a Store,
    pub context: &'a BuildContext,
    pub graph: &'a BuildGraph,
    pub build_args: &'a BuildArgs,
    pub no_cache: bool,
    /// `SOURCE_DATE_EPOCH`: clamps mtimes and sets every `created`.
    pub epoch: Option<u64>,
    /// `--secret id=…,src=…`.
    pub secrets: &'a BTreeMap<String, PathBuf>,
    /// `--ssh ID[=socket|keys]`.
    pub ssh: &'a BTreeMap<String, ssh::SshSource>,
    /// `build --network`: the network of a RUN step that names none.
    pub network: Network,
    /// The finished state of another stage.
    pub stage: &'a (dyn Fn(StageId) -> Option<Arc<ImageState>> + Sync),
    /// Receives each line a RUN step prints.
    pub output: &'a (dyn Fn(&str) + Sync),
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// The image a stage has built so far.
#[derive(Clone, Debug)]
pub struct ImageState {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// The cache key of the last step.
    pub key: CacheKey,
    /// Build args in scope, with their values (not stored in the image).
    pub args: BTreeMap<String, String>,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

/// `SOURCE_DATE_EPOCH`, if set to a number.
pub fn source_date_epoch() -> Option<u64> {
    parse_epoch(&std::env::var("SOURCE_DATE_EPOCH").ok()?)
}

/// Seconds since 1970 as SOURCE_DATE_EPOCH gives them: a whole number that
/// a timestamp can hold (up to the year 9999).
pub fn parse_epoch(text: &str) -> Option<u64> {
    let secs: u64 = text.trim().parse().ok()?;
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok().map(|_| secs)
}

/// `created` timestamps: now, or SOURCE_DATE_EPOCH when set.
pub fn timestamp(epoch: Option<u64>) -> String {
    let time = match epoch {
        Some(secs) => time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        None => time::OffsetDateTime::now_utc(),
    };
    time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The program `name` on the host's PATH.
pub(crate) fn host_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// Text as JSON (history and key text of exec-form instructions); an error, never a stand-in.
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, ExecError> {
    serde_json::to_string(value).map_err(|source| ExecError::Encode { what: "instruction text", source })
}

impl ImageState {
    /// An empty image (`FROM scratch`).
    pub fn scratch() -> ImageState {
        ImageState {
            config: ImageConfig {
                architecture: oci::host_architecture().into(),
                os: "linux".into(),
                config: RunConfig {
                    env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
            layers: Vec::new(),
            key: root_key(b"FROM scratch"),
            args: BTreeMap::new(),
            cmd_set: false,
        }
    }

    /// Starts from an image in the store.
    pub fn from_image(image: &StoredImage) -> ImageState {
        let mut config = image.config.clone();
        config.created = None;
        ImageState {
            key: chain_key(&root_key(b""), "FROM", image.manifest_descriptor.digest.as_str().as_bytes()),
            layers: image.manifest.layers.clone(),
            config,
            args: BTreeMap::new(),
            cmd_set: false,
        }
    }

    /// Starts the stage's keys from `epoch` too: SOURCE_DATE_EPOCH reaches
    /// every step (clamped mtimes, `created`), so a build with another epoch
    /// (or none) must miss. No epoch leaves the key as it is.
    pub fn with_epoch(mut self, epoch: Option<u64>) -> ImageState {
        if let Some(epoch) = epoch {
            self.key = chain_key(&self.key, "SOURCE_DATE_EPOCH", epoch.to_string().as_bytes());
        }
        self
    }

    /// Continues from another stage: its image, but none of its build args.
    pub fn from_stage(stage: &ImageState) -> ImageState {
        ImageState { args: BTreeMap::new(), cmd_set: false, ..stage.clone() }
    }

    /// The merged filesystem of this image, unpacking snapshots as needed.
    pub fn view(&self, store: &Store) -> Result<RootfsView, ExecError> {
        let mut dirs = Vec::new();
        for (layer, diff_id) in self.layers.iter().zip(&self.config.rootfs.diff_ids) {
            dirs.push(store.snapshot(layer, diff_id)?);
        }
        Ok(RootfsView::new(dirs))
    }

    /// Looks a variable up as Docker's expansion does: ENV first, then build args.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.config.config.env_var(name).map(str::to_string).or_else(|| self.args.get(name).cloned())
    }

    fn expand(&self, word: &Word) -> Result<String, ExecError> {
        word.expand(&|name| self.lookup(name)).map_err(|source| ExecError::Expand { word: word.to_string(), source })
    }

    fn workdir(&self) -> String {
        self.config.config.working_dir.clone().unwrap_or_else(|| "/".into())
    }

    /// The shell for shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        self.config.config.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn command(&self, command: &CommandLine) -> Vec<String> {
        match command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => {
                let mut argv = self.shell();
                argv.push(text.clone());
                argv
            }
        }
    }

    pub(crate) fn push_history(&mut self, created_by: String, created: String, layer: Option<(Digest, u64)>) {
        let empty_layer = layer.is_none();
        if let Some((diff_id, size)) = layer {
            self.layers.push(Descriptor {
                media_type: oci::MEDIA_LAYER.into(),
                digest: diff_id.clone(),
                size,
                annotations: BTreeMap::new(),
                platform: None,
            });
            self.config.rootfs.diff_ids.push(diff_id);
        }
        self.config.history.push(History { created: Some(created), created_by: Some(created_by), empty_layer, ..Default::default() });
    }

    /// Looks `text` + `inputs` up in the cache, else runs `produce` and records its result.
    fn commit(
        &mut self,
        cx: &ExecCx,
        text: String,
        inputs: &[u8],
        produce: impl FnOnce(&mut Self) -> Result<Option<(Digest, u64)>, ExecError>,
    ) -> Result<StepOutcome, ExecError> {
        let key_text = text.clone();
        self.commit_keyed(cx, text, &key_text, inputs, produce)
    }

    /// `commit` with a cache key text other than the history text.
    fn commit_keyed(
        &mut self,
        cx: &ExecCx,
        text: String,
        key_text: &str,
        inputs: &[u8],
        produce: impl FnOnce(&mut Self) -> Result<Option<(Digest, u64)>, ExecError>,
    ) -> Result<StepOutcome, ExecError> {
        let key = chain_key(&self.key, key_text, inputs);
        // The local cache, else a shared one (`--cache-from`): a shared hit
        // brings only the entry; its layer comes when a blob is first read.
        if !cx.no_cache
            && let Some(entry) = cx.store.cache_get(&key).or_else(|| cx.store.shared_cache_get(&key))
        {
            cx.store.shared_cache_record(&self.key, &key, &entry);
            let layer = entry.diff_id.map(|d| (d, entry.size));
            self.push_history(text, entry.created, layer);
            self.key = key;
            return Ok(StepOutcome::Cached);
        }
        let layer = produce(self)?;
        let created = timestamp(cx.epoch);
        let entry = CacheEntry {
            diff_id: layer.as_ref().map(|(d, _)| d.clone()),
            size: layer.as_ref().map_or(0, |(_, s)| *s),
            created: created.clone(),
        };
        cx.store.cache_put(&key, &entry)?;
        cx.store.shared_cache_record(&self.key, &key, &entry);
        self.push_history(text, created, layer);
        self.key = key;
        Ok(StepOutcome::Built)
    }

    /// Applies one step.
    pub fn execute(&mut self, cx: &ExecCx, op: &Op) -> Result<StepOutcome, ExecError> {
        if (cx.interrupted)() {
            return Err(ExecError::Interrupted);
        }
        match op {
            Op::Env(pairs) => {
                // Every value sees the environment from before this instruction, as in Docker.
                let values = pairs.iter().map(|(_, value)| self.expand(value)).collect::<Result<Vec<_>, _>>()?;
                let mut text = String::from("ENV");
                for ((name, _), value) in pairs.iter().zip(values) {
                    text.push_str(&format!(" {name}={value}"));
                    self.config.config.set_env(name, &value);
                }
                self.commit(cx, text, b"", |_| Ok(None))
            }
            Op::Arg(decls) => {
                let mut text = String::from("ARG");
                let mut key_text = String::from("ARG");
                for decl in decls {
                    key_text.push_str(&format!(" {}", decl.name));
                    let value = cx
                        .build_args
                        .get(&decl.name)
                        .cloned()
                        .map(Ok)
                        .or_else(|| decl.default.as_ref().map(|d| self.expand(d)))
                        .transpose()?
                        .or_else(|| args::global_value(&decl.name, cx.build_args, &cx.graph.args));
                    match &value {
                        Some(v) => text.push_str(&format!(" {}={v}", decl.name)),
                        None => text.push_str(&format!(" {}", decl.name)),
                    }
                    if let Some(v) = value {
                        self.args.insert(decl.name.clone(), v);
                    }
                }
                // A value enters the cache key where it is used (RUN's environment, expanded
                // words), so a new --build-arg misses at its first use, as in Docker.
                self.commit_keyed(cx, text, &key_text, b"", |_| Ok(None))
            }
            Op::Label(pairs) => {
                let mut text = String::from("LABEL");
                for (key, value) in pairs {
                    let (key, value) = (self.expand(key)?, self.expand(value)?);
                    text.push_str(&format!(" {key}={value}"));
                    self.config.config.labels.insert(key, value);
                }
                self.commit(cx, text, b"", |_| Ok(None))
            }
            Op::Maintainer(name) => {
                self.config.author = Some(name.clone());
                self.commit(cx, format!("MAINTAINER {name}"), b"", |_| Ok(None))
            }
            Op::Expose(ports) => {
                let mut names = Vec::new();
                for port in ports {
                    for p in self.expand(port)?.split_whitespace() {
                        let (ports, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                        let proto = proto.to_lowercase();
                        // `8000-8002` is one entry per port, as Docker stores it.
                        let range = match ports.split_once('-').map(|(a, b)| (a.parse::<u16>(), b.parse::<u16>())) {
                            Some((Ok(first), Ok(last))) if first <= last => (first..=last).map(|n| n.to_string()).collect(),
                            Some(_) => return Err(ExecError::BadPortRange(p.to_string())),
                            None => vec![ports.to_string()],
                        };
                        for port in range {
                            let key = format!("{port}/{proto}");
                            self.config.config.exposed_ports.insert(key.clone(), oci::Empty {});
                            names.push(key);
                        }
                    }
                }
                self.commit(cx, format!("EXPOSE {}", names.join(" ")), b"", |_| Ok(None))
            }
            Op::Volume(paths) => {
                let paths = paths.iter().map(|p| self.expand(p)).collect::<Result<Vec<_>, _>>()?;
                for p in &paths {
                    self.config.config.volumes.insert(p.clone(), oci::Empty {});
                }
                self.commit(cx, format!("VOLUME {}", json_text(&paths)?), b"", |_| Ok(None))
            }
            Op::User(user) => {
                let user = self.expand(user)?;
                self.config.config.user = Some(user.clone());
                self.commit(cx, format!("USER {user}"), b"", |_| Ok(None))
            }
            Op::StopSignal(signal) => {
                let signal = self.expand(signal)?;
                self.config.config.stop_signal = Some(signal.clone());
                self.commit(cx, format!("STOPSIGNAL {signal}"), b"", |_| Ok(None))
            }
            Op::Cmd(command) => {
                let argv = self.command(command);
                self.config.config.cmd = Some(argv.clone());
                self.cmd_set = true;
                self.commit(cx, format!("CMD {}", json_text(&argv)?), b"", |_| Ok(None))
            }
            Op::Entrypoint(command) => {
                let argv = self.command(command);
                self.config.config.entrypoint = Some(argv.clone());
                if !self.cmd_set {
                    self.config.config.cmd = None;
                }
                self.commit(cx, format!("ENTRYPOINT {}", json_text(&argv)?), b"", |_| Ok(None))
            }
            Op::Shell(shell) => {
                self.config.config.shell = Some(shell.clone());
                self.commit(cx, format!("SHELL {}", json_text(shell)?), b"", |_| Ok(None))
            }
            Op::Healthcheck(check) => {
                let health = HealthConfig {
                    test: check.test.clone(),
                    interval: check.interval,
                    timeout: check.timeout,
                    start_period: check.start_period,
                    start_interval: check.start_interval,
                    retries: check.retries,
                };
                let text = format!("HEALTHCHECK {}", json_text(&health)?);
                self.config.config.healthcheck = Some(health);
                self.commit(cx, text, b"", |_| Ok(None))
            }
            Op::Onbuild(trigger) => {
                self.config.config.on_build.get_or_insert_with(Vec::new).push(trigger.clone());
                self.commit(cx, format!("ONBUILD {trigger}"), b"", |_| Ok(None))
            }
            Op::Workdir(path) => self.workdir_step(cx, path),
            Op::Copy(copy) => self.copy_step(cx, copy),
            Op::Run(run) => run::execute(self, cx, run),
            Op::LinkLayers { stage, name } => {
                let linked = (cx.stage)(*stage).ok_or_else(|| ExecError::NotBuilt(format!("layer {name:?}")))?;
                let text = format!("LAYER {name}");
                let key = chain_key(&self.key, &text, linked.key.as_str().as_bytes());
                let layered = linked.config.history.iter().filter(|h| !h.empty_layer);
                for ((history, layer), diff_id) in layered.zip(&linked.layers).zip(&linked.config.rootfs.diff_ids) {
                    let by = history.created_by.clone().unwrap_or_default();
                    self.push_history(by, history.created.clone().unwrap_or_default(), Some((diff_id.clone(), layer.size)));
                }
                self.key = key;
                Ok(StepOutcome::Cached)
            }
        }
    }

    fn workdir_step(&mut self, cx: &ExecCx, path: &Word) -> Result<StepOutcome, ExecError> {
        let path = self.expand(path)?;
        let joined = Path::new(&self.workdir()).join(&path);
        let cleaned = format!("/{}", context::clean(&joined).unwrap_or_default().display());
        self.config.config.working_dir = Some(cleaned.clone());
        let user = self.config.config.user.clone();
        self.commit(cx, format!("WORKDIR {cleaned}"), user.as_deref().unwrap_or("").as_bytes(), |state| {
            let view = state.view(cx.store)?;
            if view.resolve(Path::new(&cleaned)).is_some_and(|(_, real)| real.is_dir()) {
                return Ok(None);
            }
            let owner = match &user {
                Some(u) if !u.is_empty() => {
                    let ids = users::resolve_user(&view, u)?;
                    Some((ids.uid, ids.gid))
                }
                _ => None,
            };
            let req = copy::CopyRequest { dest: cleaned.clone(), below: Some(&view), clamp: cx.epoch, ..Default::default() };
            let mut plan = copy::LayerPlan::default();
            plan.make_dir(&cleaned, owner, &req);
            Ok(Some(plan.write(cx.store, cx.epoch)?))
        })
    }

    fn copy_step(&mut self, cx: &ExecCx, op: &crate::graph::CopyOp) -> Result<StepOutcome, ExecError> {
        let from_state = match &op.from {
            None => None,
            Some(CopyFrom::Stage(id)) => {
                Some((cx.stage)(*id).ok_or_else(|| ExecError::NotBuilt(format!("stage {}", cx.graph.stage_label(*id))))?)
            }
            Some(CopyFrom::Image(name)) => Some(Arc::new(ImageState::from_image(&cx.store.resolve(name.as_str())?))),
        };
        let dest = self.expand(&op.dest)?;
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            let base = self.workdir();
            let trailing = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
            let mut joined = Path::new(&base).join(&dest).display().to_string();
            if trailing && !joined.ends_with('/') {
                joined.push('/');
            }
            joined
        };
        let mut sources: Vec<copy::CopyInput> = op
            .sources
            .iter()
            .map(|s| {
                Ok(match s {
                    CopySource::Path(word) => copy::CopyInput::Path(self.expand(word)?),
                    CopySource::Inline { name, content } => copy::CopyInput::Inline { name: name.clone(), content: self.expand(content)? },
                })
            })
            .collect::<Result<_, ExecError>>()?;
        // ADD's URLs are fetched (or found unchanged) now, its git sources resolved to commits.
        let remote = if op.add {
            let checksum = op.checksum.as_ref().map(|w| self.expand(w)).transpose()?;
            remote::resolve(cx.store, &mut sources, checksum.as_deref(), op.keep_git_dir, cx.no_cache)?
        } else {
            remote::RemoteSources::default()
        };
        let chown = op.chown.as_ref().map(|w| self.expand(w)).transpose()?;
        let chmod = match op.chmod.as_ref().map(|w| self.expand(w)).transpose()? {
            Some(text) => Some(crate::graph::parse_mode(&text).ok_or_else(|| ExecError::BadMode(text.clone()))?),
            None => None,
        };
        let mut text = String::from(op_keyword(op.add));
        if let Some(from) = &op.from {
            let shown = match from {
                CopyFrom::Stage(id) => cx.graph.stage_label(*id),
                CopyFrom::Image(name) => name.to_string(),
            };
            text.push_str(&format!(" --from={shown}"));
        }
        if let Some(c) = &chown {
            text.push_str(&format!(" --chown={c}"));
        }
        if let Some(m) = &chmod {
            text.push_str(&format!(" --chmod={m}"));
        }
        if op.link {
            text.push_str(" --link");
        }
        if op.parents {
            text.push_str(" --parents");
        }
        let patterns: Vec<String> = op.exclude.iter().map(|w| self.expand(w)).collect::<Result<_, _>>()?;
        for pattern in &patterns {
            text.push_str(&format!(" --exclude={pattern}"));
        }
        let exclude = context::IgnoreRules::exclude(&patterns)?;
        if let Some(unpack) = op.unpack {
            text.push_str(&format!(" --unpack={unpack}"));
        }
        // History reads as BuildKit writes it: the sources and the destination as
        // written, no flags. The key text keeps the flags and the absolute destination.
        let mut history = String::from(op_keyword(op.add));
        for s in &sources {
            let source = match s {
                copy::CopyInput::Path(p) => format!(" {p}"),
                copy::CopyInput::Inline { name, .. } => format!(" <<{name}"),
                copy::CopyInput::Download { url, .. } | copy::CopyInput::Checkout { url, .. } => format!(" {url}"),
            };
            text.push_str(&source);
            history.push_str(&source);
        }
        text.push_str(&format!(" {dest_abs}"));
        history.push_str(&format!(" {dest}"));

        // The fast key: what decides the layer without reading any image's files (the
        // sources planned over nothing, or the source stage's key; what lies below is
        // decided by this image's key), so a hit, local or shared, needs no snapshot.
        let fast = match &from_state {
            _ if cx.no_cache || !remote.is_empty() => None,
            Some(state) => Some(chain_key(&self.key, &format!("FAST {text}"), state.key.as_str().as_bytes())),
            None => {
                let alone = copy::CopyRequest {
                    add: op.add,
                    sources: sources.clone(),
                    dest: dest_abs.clone(),
                    owner: None,
                    chmod: chmod.clone(),
                    below: None,
                    clamp: cx.epoch,
                    keep_owners: false,
                    extract_in: None,
                    parents: op.parents,
                    exclude: exclude.clone(),
                    unpack: op.unpack,
                };
                let content = copy::LayerPlan::for_copy(&copy::SourceRoot::Context(cx.context), &alone)?.content_key(cx.store)?;
                Some(chain_key(&self.key, &format!("FAST {text}"), content.as_str().as_bytes()))
            }
        };
        if let Some((key, entry)) = fast.as_ref().and_then(|fast| cx.store.cache_alias_get(fast)) {
            cx.store.shared_cache_record(&self.key, &key, &entry);
            self.push_history(history, entry.created, entry.diff_id.map(|d| (d, entry.size)));
            self.key = key;
            return Ok(StepOutcome::Cached);
        }
        // The layers below matter unless --link: they decide existing directories and owners.
        let below = if op.link { None } else { Some(self.view(cx.store)?) };
        let owner = match &chown {
            Some(spec) => {
                let view = match &below {
                    Some(view) => view.clone(),
                    None => self.view(cx.store)?,
                };
                let ids = users::resolve_user(&view, spec)?;
                Some((ids.uid, ids.gid))
            }
            None => None,
        };
        let req = copy::CopyRequest {
            add: op.add,
            sources,
            dest: dest_abs,
            owner,
            chmod,
            below: below.as_ref(),
            clamp: cx.epoch,
            keep_owners: false,
            extract_in: None,
            parents: op.parents,
            exclude,
            unpack: op.unpack,
        };
        let from_view = match &from_state {
            Some(state) => Some(state.view(cx.store)?),
            None => None,
        };
        let root = match from_view {
            Some(view) => copy::SourceRoot::Image(view),
            None => copy::SourceRoot::Context(cx.context),
        };
        let plan = copy::LayerPlan::for_copy(&root, &req)?;
        // ADD's archives are keyed by their bytes, its git sources by their commits; only a miss extracts or clones them.
        let tmp = cx.store.tmp_dir();
        let write = |plan: &copy::LayerPlan| -> Result<(Digest, u64), ExecError> {
            if plan.names_archives() || remote.has_checkouts() {
                let (sources, _checkouts) = remote.checkout(&req.sources, &tmp)?;
                let extracting = copy::CopyRequest { extract_in: Some(&tmp), sources, ..req.clone() };
                copy::LayerPlan::for_copy(&root, &extracting)?.write(cx.store, cx.epoch)
            } else {
                plan.write(cx.store, cx.epoch)
            }
        };
        if cx.no_cache {
            // The layer is rebuilt whatever its key: key it (for later builds) while writing it.
            let (content, layer) = rayon::join(|| plan.content_key(cx.store), || write(&plan));
            let inputs = remote.key_with(&content?);
            let layer = layer?;
            return self.commit_keyed(cx, history, &text, inputs.as_bytes(), |_| Ok(Some(layer)));
        }
        let inputs = remote.key_with(&plan.content_key(cx.store)?);
        let outcome = self.commit_keyed(cx, history, &text, inputs.as_bytes(), |_| Ok(Some(write(&plan)?)))?;
        if let Some(fast) = &fast {
            cx.store.cache_alias_put(fast, &self.key);
        }
        Ok(outcome)
    }

    /// Writes the finished image (config + manifest) into the store; returns the manifest descriptor.
    pub fn write_image(&self, store: &Store) -> Result<(Descriptor, Digest), StoreError> {
        // Layers of shared cache hits no step has read yet are fetched now.
        for layer in &self.layers {
            store.ensure_blob(&layer.digest)?;
        }
        let mut config = self.config.clone();
        config.created = config.history.iter().rev().find_map(|h| h.created.clone());
        let (config_digest, config_size) = store.write_blob(&oci::to_blob(&config))?;
        let platform = oci::Platform { architecture: config.architecture.clone(), os: config.os.clone(), variant: None };
        let (descriptor, _) = store.write_manifest((&config_digest, config_size), self.layers.clone(), Some(platform))?;
        Ok((descriptor, config_digest))
    }
}

fn op_keyword(add: bool) -> &'static str {
    if add { "ADD" } else { "COPY" }
}
