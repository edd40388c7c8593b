//! Command-line parsing and printing, and finding a build's input (its file,
//! a context on stdin): every verb calls into the library.

mod args;
mod cache;
mod containers;
mod format;
mod images;
mod mount;
mod registry;
mod system;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use miette::{IntoDiagnostic, WrapErr, miette};

pub use args::{Cli, Command};

use strata::build::{self, BuildOptions};
use strata::exec::remote;
use strata::oci::ImageRef;
use strata::store::Store;

/// Entry point of the `strata` binary.
pub fn main() -> ExitCode {
    restore_sigpipe();
    report_width_of_the_terminal_only();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}

/// A library error as the user sees it: what was being done, then the error
/// and each of its causes on a line of its own (miette renders the source chain).
pub(crate) fn failed<E>(error: E, doing: impl std::fmt::Display + Send + Sync + 'static) -> miette::Report
where
    E: std::error::Error + Send + Sync + 'static,
{
    miette::Report::from_err(error).wrap_err(doing)
}

/// Diagnostics wrap at the terminal's width on a terminal only: written to a
/// pipe or a file (CI logs, tests) a message stays on its lines whatever the
/// width of the terminal that started the process.
fn report_width_of_the_terminal_only() {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        let _ = miette::set_hook(Box::new(|_| Box::new(miette::MietteHandlerOpts::new().width(4096).build())));
    }
}

/// Lets a closed stdout or stderr (`strata images | head -1`) end the process
/// quietly, as it ends any Unix tool, instead of Rust's ignored SIGPIPE making
/// `println!` panic. Pipes strata itself reads from (a RUN's output) are
/// unaffected: only a writer gets SIGPIPE, and a RUN's command gets the
/// default disposition a container has.
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL
    // installs no handler, so nothing runs in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub(crate) fn open_store() -> miette::Result<Store> {
    let root = Store::default_root();
    Store::open(&root).map_err(|e| failed(e, format!("open store {}", root.display())))
}

fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Build(args) => build_cmd(args),
        Command::Graph(args) => graph(args),
        Command::Images(args) => images::list(&open_store()?, &args),
        Command::Image(args::ImageCommand::Ls(args)) => images::list(&open_store()?, &args),
        Command::Image(args::ImageCommand::History(args)) | Command::History(args) => images::history(&open_store()?, &args),
        Command::Image(args::ImageCommand::Inspect { images, format }) => images::inspect(&open_store()?, &images, format.as_deref()),
        Command::Image(args::ImageCommand::Build(args)) => build_cmd(*args),
        Command::Image(args::ImageCommand::Rm(args)) | Command::Rmi(args) => images::remove(&open_store()?, &args),
        Command::Tag { source, target } | Command::Image(args::ImageCommand::Tag { source, target }) => {
            images::tag(&open_store()?, &source, &target)
        }
        Command::System(args::SystemCommand::Df { verbose }) => images::df(&open_store()?, verbose),
        Command::System(args::SystemCommand::Prune { .. }) | Command::Image(args::ImageCommand::Prune { .. }) => {
            images::prune(&open_store()?)
        }
        Command::System(args::SystemCommand::Info) => system::info(&open_store()?),
        Command::System(args::SystemCommand::Verify { repair }) => verify(&open_store()?, repair),
        Command::Save(args) | Command::Image(args::ImageCommand::Save(args)) => images::save(&open_store()?, &args),
        Command::Load(args) | Command::Image(args::ImageCommand::Load(args)) => images::load(&open_store()?, &args),
        Command::Pull(args) | Command::Image(args::ImageCommand::Pull(args)) => registry::pull(&args),
        Command::Push(args) | Command::Image(args::ImageCommand::Push(args)) => registry::push(&args),
        Command::Login(args) => registry::login(&args),
        Command::Logout(args) => registry::logout(&args),
        Command::Convert { file, to, output } => convert(&file, to, output.as_deref()),
        Command::Run(args) | Command::Container(args::ContainerCommand::Run(args)) => containers::run(&open_store()?, args),
        Command::Commit { name, image } | Command::Container(args::ContainerCommand::Commit { name, image }) => {
            containers::commit(&open_store()?, &name, image.as_deref())
        }
        Command::Ps(args) | Command::Container(args::ContainerCommand::Ls(args)) => containers::ps(&open_store()?, &args),
        Command::Rm(args) | Command::Container(args::ContainerCommand::Rm(args)) => containers::remove(&open_store()?, &args),
        Command::Logs(args) | Command::Container(args::ContainerCommand::Logs(args)) => containers::logs(&open_store()?, &args),
        Command::Stop(args) | Command::Container(args::ContainerCommand::Stop(args)) => containers::stop(&open_store()?, &args),
        Command::Kill(args) | Command::Container(args::ContainerCommand::Kill(args)) => containers::kill(&open_store()?, &args),
        Command::Exec(args) | Command::Container(args::ContainerCommand::Exec(args)) => containers::exec(&open_store()?, args),
        Command::Container(args::ContainerCommand::Inspect { names, format }) => {
            containers::inspect_runs(&open_store()?, &names, format.as_deref())
        }
        Command::Container(args::ContainerCommand::Diff { name }) => containers::diff(&open_store()?, &name),
        Command::Inspect(args) => containers::inspect(&open_store()?, &args),
        Command::Supervise { dir } => containers::supervise(&dir),
        Command::Nsenter { spec } => strata::runtime::nsenter::main(&spec),
        Command::Mount(args) => mount::mount(&args),
        Command::Umount { dir } => mount::umount(&dir),
        Command::Diff { image1, image2 } => mount::diff(&open_store()?, &image1, &image2),
        Command::Cache(cache::CacheCommand::Prune(args)) => cache::prune(&args),
        Command::Sandbox { spec, unconfined, forward_signals } => strata::exec::sandbox::main(&spec, !unconfined, forward_signals),
    }
}

/// `system verify`: one line per problem; exit 1 if any, or with `--repair` if any remains.
fn verify(store: &Store, repair: bool) -> miette::Result<ExitCode> {
    let report = store.verify(repair).map_err(miette::Report::from_err)?;
    for problem in &report.problems {
        println!("{problem}");
    }
    let (found, repaired) = (report.problems.len(), report.problems.iter().filter(|p| p.repaired).count());
    eprintln!(
        "checked {} blobs, {} images, {} cache entries, {} snapshots: {}",
        report.blobs,
        report.images,
        report.cache_entries,
        report.snapshots,
        match (found, repair) {
            (0, _) => "no problems".to_string(),
            (n, false) => format!("{n} problems (strata system verify --repair removes what is broken)"),
            (n, true) => format!("{n} problems, {repaired} repaired"),
        }
    );
    Ok(if found > repaired { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The build file: `-f`, else `Dockerfile` (or `dockerfile`, as Docker
/// falls back to), else `strata.kdl` in the context.
fn build_file(context: &Path, file: Option<PathBuf>) -> miette::Result<PathBuf> {
    if let Some(file) = file {
        return Ok(file);
    }
    for name in ["Dockerfile", "dockerfile", "strata.kdl"] {
        let path = context.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(miette!("no Dockerfile or strata.kdl in {}; give one with -f", context.display()))
}

/// `-` as a path: stdin.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// What `strata build` builds: the context, the build file's name and its graph.
struct BuildInput {
    context: PathBuf,
    file: String,
    graph: strata::graph::BuildGraph,
    /// The temp folder a context fetched or read from stdin lies in, removed on drop.
    fetched: Option<tempfile::TempDir>,
    /// A URL context's time (`SOURCE_DATE_EPOCH=context`).
    time: Option<u64>,
}

/// The context and the build file, with `-` read from stdin as Docker reads
/// it: `-f -` is the Dockerfile; a context `-` is a tar (plain or compressed,
/// unpacked into a temp folder of the store, the Dockerfile at its root or
/// where `-f` names it inside) or a Dockerfile alone with an empty context.
fn build_input(args: &args::BuildArgsCli, store: &Store, build_args: &strata::frontend::BuildArgs) -> miette::Result<BuildInput> {
    let stdin_text = || std::io::read_to_string(std::io::stdin()).into_diagnostic().wrap_err("read the Dockerfile from stdin");
    let from_stdin = |text: &str| strata::frontend::dockerfile::lower("Dockerfile", text, build_args);
    // Where a fetched or piped context is unpacked: a temp folder of the store.
    let context_dir =
        || tempfile::Builder::new().prefix("context-").tempdir_in(store.tmp_dir()).into_diagnostic().wrap_err("create a temp folder");
    let url = args.context.to_str().filter(|c| remote::is_http(c) || remote::git_source(c).is_some());
    if let Some(url) = url {
        let dir = context_dir()?;
        let (fetched, time) =
            remote::fetch_context(store, url, dir.path()).map_err(|e| failed(e, format!("fetch the build context {url}")))?;
        let context = dir.path().to_path_buf();
        let (context, file, graph) = match fetched {
            // A Dockerfile alone is the build file, whatever -f says (as BuildKit).
            remote::UrlContext::Dockerfile(text) => (context, "Dockerfile".into(), from_stdin(&text)?),
            remote::UrlContext::Unpacked => {
                let (name, graph) = file_inside(&context, args.file.as_deref(), build_args)?;
                (context, name, graph)
            }
            // The checkout lies inside `dir`, which removes it.
            remote::UrlContext::Checkout { root, guard } => {
                let _ = guard.keep();
                let (name, graph) = file_inside(&root, args.file.as_deref(), build_args)?;
                (root, name, graph)
            }
        };
        return Ok(BuildInput { context, file, graph, fetched: Some(dir), time });
    }
    if is_stdin(&args.context) {
        if args.file.as_deref().is_some_and(is_stdin) {
            return Err(miette!("the build context and the Dockerfile cannot both come from stdin (context - with -f -)"));
        }
        let dir = context_dir()?;
        let read = strata::exec::context::read_stdin_context(std::io::stdin(), dir.path())
            .map_err(|e| failed(e, "read the build context from stdin"))?;
        let context = dir.path().to_path_buf();
        let (file, graph) = match read {
            strata::exec::context::StdinContext::Dockerfile(text) => ("Dockerfile".into(), from_stdin(&text)?),
            strata::exec::context::StdinContext::Unpacked { .. } => file_inside(&context, args.file.as_deref(), build_args)?,
        };
        return Ok(BuildInput { context, file, graph, fetched: Some(dir), time: None });
    }
    if args.file.as_deref().is_some_and(is_stdin) {
        let graph = from_stdin(&stdin_text()?)?;
        return Ok(BuildInput { context: args.context.clone(), file: "Dockerfile".into(), graph, fetched: None, time: None });
    }
    // `strata build spec.kdl` builds the spec with its folder as the context.
    let (context, file) = if args.context.is_file() {
        let dir = args.context.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        (dir, Some(args.file.clone().unwrap_or(args.context.clone())))
    } else {
        (args.context.clone(), args.file.clone())
    };
    let file = build_file(&context, file)?;
    let graph = strata::frontend::load(&file, build_args)?;
    Ok(BuildInput { context, file: file.display().to_string(), graph, fetched: None, time: None })
}

/// The build file of a fetched context (a tar or a checkout): where `-f`
/// names it inside, else found at its root; its name and graph.
fn file_inside(
    context: &Path,
    file: Option<&Path>,
    build_args: &strata::frontend::BuildArgs,
) -> miette::Result<(String, strata::graph::BuildGraph)> {
    let inside = match file {
        Some(file) => Some(
            context
                .join(strata::exec::context::clean(file).ok_or_else(|| miette!("-f {}: not a path inside the context", file.display()))?),
        ),
        None => None,
    };
    let file = build_file(context, inside)?;
    let name = file.strip_prefix(context).unwrap_or(&file).display().to_string();
    Ok((name, strata::frontend::load(&file, build_args)?))
}

fn build_cmd(args: args::BuildArgsCli) -> miette::Result<ExitCode> {
    let store = open_store()?;
    let build_args = args::parse_build_args(&args.build_args)?;
    let BuildInput { context, file, graph, fetched, time: context_time } = build_input(&args, &store, &build_args)?;
    // BuildKit reads NAME.dockerignore beside the Dockerfile NAME instead of the context's.
    let beside_dockerfile = match &fetched {
        Some(_) => context.join(format!("{file}.dockerignore")),
        None => PathBuf::from(format!("{file}.dockerignore")),
    };
    let ignore_file = Some(beside_dockerfile).filter(|p| !args.file.as_deref().is_some_and(is_stdin) && p.is_file());
    let shared = cache::Shared::from_flags(args.cache_to.as_deref(), &args.cache_from, &graph.cache, &file)?;
    let store = shared.attach(store);
    let tags =
        args.tags.iter().map(|t| t.parse::<ImageRef>().map_err(|e| failed(e, format!("-t {t}")))).collect::<miette::Result<Vec<_>>>()?;
    let mut secrets = std::collections::BTreeMap::new();
    for spec in &args.secrets {
        let mut id = None;
        let mut src = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                _ => return Err(miette!("--secret {spec}: expected id=NAME,src=PATH")),
            }
        }
        let id = id.ok_or_else(|| miette!("--secret {spec}: missing id="))?;
        let src = src.ok_or_else(|| miette!("--secret {spec}: missing src="))?;
        secrets.insert(id, src);
    }
    let mut ssh = std::collections::BTreeMap::new();
    for spec in &args.ssh {
        let (id, value) = spec.split_once('=').map_or((spec.as_str(), None), |(id, value)| (id, Some(value)));
        let source = strata::exec::ssh::SshSource::parse(value).map_err(|why| miette!("--ssh {spec}: {why}"))?;
        ssh.insert(id.to_string(), source);
    }
    let output = args.output.as_deref().map(parse_output).transpose()?;
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut allow_insecure = false;
    for entitlement in &args.allow {
        match entitlement.as_str() {
            "security.insecure" => allow_insecure = true,
            other => return Err(miette!("--allow {other}: expected security.insecure")),
        }
    }
    let mode = if args.quiet { build::ProgressMode::Quiet } else { args.progress };
    let registry_options =
        strata::registry::Options { tls_verify: args.tls.tls_verify, platform: None, verbose: mode != build::ProgressMode::Quiet };
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        if key.is_empty() {
            return Err(miette!("--label {label:?}: missing name before '='"));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    let opts = BuildOptions {
        context,
        ignore_file,
        labels,
        tags,
        target: args.target.clone(),
        build_args,
        no_cache: args.no_cache,
        jobs,
        secrets,
        ssh,
        network: match args.network.as_str() {
            "host" => strata::graph::Network::Host,
            "none" => strata::graph::Network::None,
            _ => strata::graph::Network::Default,
        },
        context_time,
        allow_insecure,
        onbuild: Some(onbuild_trigger),
        bases: Some(std::sync::Arc::new(registry::PullingResolver { policy: args.pull, options: registry_options.clone() })),
    };
    let progress = build::reporter(mode);
    build::install_interrupt_handler();
    let run_build = |store: &Store| build::build(store, &graph, &opts, progress.as_ref());
    let built = shared.build(&store, run_build).map_err(|e| failed(e, format!("build {file} failed")))?;
    let push_output = matches!(output, Some(BuildOutput::Registry));
    if let Some(BuildOutput::Archive(format, dest)) = output {
        let mut images = Vec::new();
        // One entry per name, as BuildKit's exporter writes them; an untagged image once.
        for image in &built {
            let names: Vec<Option<String>> =
                if image.tags.is_empty() { vec![None] } else { image.tags.iter().cloned().map(Some).collect() };
            for name in names {
                images.push(store.load_image(name, image.manifest.clone()).map_err(miette::Report::from_err)?);
            }
        }
        strata::store::archive::save(&store, &images, &dest, format).map_err(|e| failed(e, format!("export to {}", dest.display())))?;
    }
    if args.push || push_output {
        registry::push_built(&store, &built, &registry_options)?;
    }
    shared.export(&store, &built)?;
    for image in &built {
        println!("{}", image.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// ONBUILD triggers are Dockerfile instructions, whichever front end the build used.
fn onbuild_trigger(text: &str) -> Result<strata::graph::Op, String> {
    strata::frontend::dockerfile::parse_trigger(text).map_err(|report| format!("{report}"))
}

/// Where `--output` sends the built images.
enum BuildOutput {
    Archive(strata::store::archive::Format, PathBuf),
    /// Push every tagged image to its name (`type=registry`, as `--push`).
    Registry,
}

/// `--output type=oci|oci-tar|docker-tar|registry,dest=PATH`.
fn parse_output(spec: &str) -> miette::Result<BuildOutput> {
    use strata::store::archive::Format;
    let (mut kind, mut dest) = (None, None);
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => return Err(miette!("--output {spec}: expected type=oci|oci-tar|docker-tar,dest=PATH or type=registry")),
        }
    }
    if kind.as_deref() == Some("registry") {
        return match dest {
            Some(_) => Err(miette!("--output {spec}: type=registry pushes to the images' names (-t) and takes no dest=")),
            None => Ok(BuildOutput::Registry),
        };
    }
    let dest = dest.ok_or_else(|| miette!("--output {spec}: missing dest="))?;
    let is_tar = dest.extension().is_some_and(|e| e == "tar");
    match kind.as_deref() {
        // An OCI layout folder, or an OCI archive when the destination ends in .tar (as `save`).
        Some("oci") => Ok(BuildOutput::Archive(Format::Oci, dest)),
        Some("oci-tar") if is_tar => Ok(BuildOutput::Archive(Format::Oci, dest)),
        Some("oci-tar") => Err(miette!("--output {spec}: type=oci-tar needs a dest ending in .tar")),
        Some("docker-tar") => Ok(BuildOutput::Archive(Format::Docker, dest)),
        other => Err(miette!("--output {spec}: unknown type {other:?} (oci, oci-tar, docker-tar, registry)")),
    }
}

fn convert(file: &Path, to: args::ConvertTarget, output: Option<&Path>) -> miette::Result<ExitCode> {
    let graph = strata::frontend::load(file, &Default::default())?;
    let text = match to {
        args::ConvertTarget::Kdl => strata::frontend::convert::to_kdl(&graph),
        args::ConvertTarget::Dockerfile => strata::frontend::convert::to_dockerfile(&graph),
    }
    .map_err(|reason| miette!("convert {}: {reason}", file.display()))?;
    match output {
        Some(path) => std::fs::write(path, text).map_err(|e| failed(e, format!("write {}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn graph(args: args::GraphArgs) -> miette::Result<ExitCode> {
    let build_args = args::parse_build_args(&args.build_args)?;
    let graph = strata::frontend::load(&args.file, &build_args)?;
    graph.check().into_diagnostic().wrap_err(args.file.display().to_string())?;
    if let Some(target) = &args.target {
        graph.roots(Some(target)).into_diagnostic().wrap_err(args.file.display().to_string())?;
    }
    let text = match args.format {
        args::GraphFormat::Json => strata::graph::to_json(&graph) + "\n",
        args::GraphFormat::Dot => strata::graph::to_dot(&graph),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
