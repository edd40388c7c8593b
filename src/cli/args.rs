//! The clap definitions of every verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use strata::build::ProgressMode;
use strata::frontend::BuildArgs;

/// strata: a daemonless, declarative container-image builder.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build images from a Dockerfile or a KDL spec.
    Build(BuildArgsCli),
    /// Print the build graph of a Dockerfile or KDL spec without building.
    Graph(GraphArgs),
    /// List images (alias of `image ls`).
    Images(ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show the history of an image (alias of `image history`).
    History(HistoryArgs),
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove images (alias of `image rm`).
    Rmi(RmArgs),
    /// Store-wide information and cleanup.
    #[command(subcommand)]
    System(SystemCommand),
    /// Export an image as an OCI layout, OCI archive or `docker save` tarball.
    Save(SaveArgs),
    /// Import an OCI layout, OCI archive or `docker save` tarball.
    Load(LoadArgs),
    /// Fetch an image from a registry into the store (alias of `image pull`).
    Pull(super::registry::PullArgs),
    /// Send an image to a registry (alias of `image push`).
    Push(super::registry::PushArgs),
    /// Save credentials for a registry.
    Login(super::registry::LoginArgs),
    /// Forget the credentials of a registry.
    Logout(super::registry::LogoutArgs),
    /// Rewrite a Dockerfile as a KDL spec, or a spec as a Dockerfile.
    Convert {
        /// The Dockerfile or `.kdl` spec.
        file: PathBuf,
        #[arg(long, value_enum)]
        to: ConvertTarget,
        /// Write here instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Run an image's command in a sandbox.
    Run(RunArgs),
    /// Make a new image from the changes of a named run.
    Commit {
        /// The run (`strata ps -a`).
        name: String,
        /// The new image's name.
        image: Option<String>,
    },
    /// List runs.
    Ps(PsArgs),
    /// Remove runs.
    Rm(RmRunsArgs),
    /// Manage runs (containers), with Docker's spellings.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Print the details of images or runs as JSON.
    Inspect(InspectArgs),
    /// Print a detached run's output.
    Logs(LogsArgs),
    /// Stop runs: their STOPSIGNAL (default SIGTERM), then SIGKILL.
    Stop(StopArgs),
    /// Send a signal to runs.
    Kill(KillArgs),
    /// Run a command in a running run.
    Exec(ExecArgs),
    /// Internal: the supervisor of a detached run.
    #[command(name = "__supervise", hide = true)]
    Supervise { dir: PathBuf },
    /// Internal: enter a run's namespaces for `exec`.
    #[command(name = "__nsenter", hide = true)]
    Nsenter { spec: PathBuf },
    /// Mount an image read-only (FUSE) as the union of its layers.
    Mount(MountArgs),
    /// Unmount what `strata mount` mounted (also a stale mount).
    Umount { dir: PathBuf },
    /// List paths added (A), changed (C) and removed (D) from IMAGE1 to IMAGE2.
    Diff { image1: String, image2: String },
    /// Shared build caches (`build --cache-to`).
    #[command(subcommand)]
    Cache(super::cache::CacheCommand),
    /// Internal: the RUN sandbox process.
    #[command(name = "__sandbox", hide = true)]
    Sandbox {
        spec: PathBuf,
        /// Skip capabilities, seccomp, /proc masking and nodev (`RUN --security=insecure`, `run --privileged`).
        #[arg(long)]
        unconfined: bool,
        /// Pass SIGTERM, SIGINT and the like on to the command (`strata run`).
        #[arg(long)]
        forward_signals: bool,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgsCli {
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile or `.kdl` spec (default: CONTEXT/Dockerfile, else CONTEXT/strata.kdl).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Build this stage or image and only what it needs.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Set a label on the built image (repeatable; `K` alone sets an empty value).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Ignore the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Stages built at once (default: number of CPUs).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the image id.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Also export the result: `type=oci|oci-tar|docker-tar,dest=PATH`.
    #[arg(long, value_name = "type=…,dest=…")]
    pub output: Option<String>,
    /// A secret for `RUN --mount=type=secret`: `id=NAME,src=PATH`.
    #[arg(long = "secret", value_name = "id=…,src=…")]
    pub secrets: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: `default` (the agent of $SSH_AUTH_SOCK), or `ID=SOCKET` or `ID=KEY[,KEY…]`.
    #[arg(long = "ssh", value_name = "ID[=SOCKET|KEY,…]")]
    pub ssh: Vec<String>,
    /// The network of RUN steps that name none: `default` (a namespace of its own through slirp4netns), `host` or `none`.
    #[arg(long, value_name = "MODE", value_parser = ["default", "host", "none"], default_value = "default")]
    pub network: String,
    /// Allow an entitlement: `security.insecure` lets `RUN --security=insecure` steps run unconfined.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Export the build cache: `type=registry,ref=REG/REPO[,mode=min|max][,compression=gzip|zstd|none]` or `type=local,dest=DIR`.
    #[arg(long = "cache-to", value_name = "type=…")]
    pub cache_to: Option<String>,
    /// Use a shared build cache: `type=registry,ref=REG/REPO` or `type=local,src=DIR` (repeatable, tried in order).
    #[arg(long = "cache-from", value_name = "type=…")]
    pub cache_from: Vec<String>,
    /// When base images are pulled: `missing` (the default), `always` (also `--pull` alone) or `never`.
    #[arg(long, value_name = "POLICY", num_args = 0..=1, require_equals = true, default_value = "missing",
          default_missing_value = "always", value_parser = |s: &str| s.parse::<strata::registry::PullPolicy>())]
    pub pull: strata::registry::PullPolicy,
    /// Push every tagged image the build wrote (as `--output type=registry`).
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub tls: super::registry::TlsArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the run when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Start in the background, print the run's id and return.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Replace the image's ENTRYPOINT (and drop its CMD); `""` for none.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Attach to STDIN, STDOUT or STDERR (default: STDOUT and STDERR; STDIN too with -i).
    #[arg(short = 'a', long = "attach", value_name = "STREAM")]
    pub attach: Vec<String>,
    /// Seconds a SIGTERM or SIGINT to `strata run` waits for the command before SIGKILL.
    #[arg(long, value_name = "SECS")]
    pub stop_timeout: Option<u64>,
    /// Restart policy: not supported (strata has no daemon to restart runs).
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Publish a port: not needed (runs share the host's network).
    #[arg(short = 'p', long = "publish", value_name = "HOST:CONTAINER")]
    pub publish: Vec<String>,
    /// The network: only `host` (the default).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Keep the run under this name (for `strata commit`).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (`K=V`, or `K` to pass the host's value).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read `K=V` lines from a file.
    #[arg(long = "env-file")]
    pub env_files: Vec<PathBuf>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name or id, optionally `:group`).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Use the terminal (with -i: an interactive shell).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run unconfined: all capabilities, no seccomp filter, /proc and /sys unmasked, device nodes usable.
    #[arg(long)]
    pub privileged: bool,
    pub image: String,
    /// The command (default: the image's ENTRYPOINT and CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub image: String,
    pub dir: PathBuf,
    /// Serve in this process until Ctrl-C or SIGTERM (default: in the background).
    #[arg(long)]
    pub foreground: bool,
    /// Show only layer N (0 = the bottom one), its whiteouts as files.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Internal: print `ready` once mounted (used by the background server).
    #[arg(long, hide = true)]
    pub notify: bool,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The Dockerfile or `.kdl` spec.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
    /// Check that this stage or image exists.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConvertTarget {
    Kdl,
    Dockerfile,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only names matching this glob (`'w*'`, `web-ping:*`).
    pub pattern: Option<String>,
    /// Only image ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// A Go template (`{{.Repository}}:{{.Tag}}`, `table {{.ID}}\t{{.Size}}`, `json`).
    #[arg(long)]
    pub format: Option<String>,
    /// `dangling=true|false`, `reference=GLOB`, `before=IMAGE`, `since=IMAGE`, `label=K[=V]`.
    #[arg(short = 'f', long = "filter", value_name = "K=V")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub image: String,
    /// Do not cut CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// A Go template (`{{.CreatedBy}}`, `table {{.ID}}\t{{.Size}}`, `json`).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image id even when several tags name it.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Print an image's details as JSON.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
        /// A Go template (`{{.Id}}`, `{{json .RootFS.Layers}}`).
        #[arg(short = 'f', long)]
        format: Option<String>,
    },
    /// Build an image (as `strata build`).
    Build(Box<BuildArgsCli>),
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove untagged images and the build cache (as `system prune`).
    Prune {
        /// Accepted for Docker compatibility; strata never asks.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Export images (as `strata save`).
    Save(SaveArgs),
    /// Import images (as `strata load`).
    Load(LoadArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Fetch an image from a registry.
    Pull(super::registry::PullArgs),
    /// Send an image to a registry.
    Push(super::registry::PushArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show the store's path and size, the snapshotter, rootless or not, and the version.
    Info,
    /// Show disk usage.
    Df {
        /// One line per image.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Remove untagged images and the build cache, then free unreferenced data.
    Prune {
        /// Accepted for Docker compatibility; strata never asks.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Rehash every blob and check every tag, cache entry and snapshot; exit 1 on any problem.
    Verify {
        /// Remove what is broken (corrupt blobs, tags whose chain is broken, cache
        /// entries to missing layers, broken snapshots, stray temp files).
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SaveFormat {
    Oci,
    Docker,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    pub images: Vec<String>,
    /// Output: a directory (OCI layout) or a `.tar` file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "oci")]
    pub format: SaveFormat,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// An OCI layout directory, an OCI archive or a `docker save` tarball.
    #[arg(short = 'i', long)]
    pub input: PathBuf,
    /// Tag the loaded image (when the input names none, or to rename it).
    #[arg(short = 't', long)]
    pub tag: Option<String>,
}

/// Parses `K=V` pairs; a bare `K` takes its value from the environment, as Docker does.
pub fn parse_build_args(pairs: &[String]) -> miette::Result<BuildArgs> {
    let mut args = BuildArgs::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                args.insert(key.to_string(), value.to_string());
            }
            Some(_) => return Err(miette::miette!("--build-arg {pair:?}: missing name before '='")),
            None => {
                if let Ok(value) = std::env::var(pair) {
                    args.insert(pair.clone(), value);
                }
            }
        }
    }
    Ok(args)
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also runs that have exited.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only run ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not cut ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// A Go template (`{{.Names}}\t{{.Status}}`, `table …`, `json`).
    #[arg(long)]
    pub format: Option<String>,
    /// `status=created|running|exited|dead`, `name=TEXT`, `id=PREFIX`, `ancestor=IMAGE`, `exited=CODE`.
    #[arg(short = 'f', long = "filter", value_name = "K=V")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmRunsArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Kill a running run first.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// A Go template (`{{.Id}}`, `{{.State.Status}}`, `{{json .Config}}`).
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Only `image` or `container`.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing what the run prints until it exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (`all`: every line).
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<String>,
    /// Show when each line was printed.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Seconds to wait for the run to exit before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// The signal (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(short = 's', long)]
    pub signal: Option<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Accepted for Docker compatibility (no terminal is allocated).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the run.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name or id, optionally `:group`).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    pub name: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Run an image's command in a sandbox.
    Run(RunArgs),
    /// List runs.
    #[command(alias = "ps", alias = "list")]
    Ls(PsArgs),
    /// Remove runs.
    #[command(alias = "remove")]
    Rm(RmRunsArgs),
    /// Print a detached run's output.
    Logs(LogsArgs),
    /// Stop runs.
    Stop(StopArgs),
    /// Send a signal to runs.
    Kill(KillArgs),
    /// Print runs' details as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short = 'f', long)]
        format: Option<String>,
    },
    /// Make a new image from the changes of a run.
    Commit { name: String, image: Option<String> },
    /// List paths a run added (A), changed (C) and deleted (D).
    Diff { name: String },
    /// Run a command in a running run.
    Exec(ExecArgs),
}
