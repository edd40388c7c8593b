//! The build driver: plans the stages a target needs, runs them through the
//! scheduler (independent stages at once), runs each stage's steps through
//! the executor, reports progress, and writes and tags the resulting images.
//! It reads the graph and knows no front end.

mod progress;
pub mod scheduler;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use progress::{Progress, ProgressMode, reporter};

use crate::exec::{BuildContext, ExecCx, ExecError, ImageState, StepOutcome};
use crate::graph::args::BuildArgs;
use crate::graph::{Base, BuildGraph, CopyFrom, GraphError, ImageName, Op, Origin, RunMount, Security, StageId, StageName, describe};
use crate::oci::{Descriptor, Digest, ImageRef};
use crate::store::{CacheKey, Store, StoreError, StoredImage};

/// What `strata build` was asked to do.
#[derive(Debug, Default)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// Rules to read instead of the context's `.dockerignore` (BuildKit's
    /// `NAME.dockerignore` beside the Dockerfile `NAME`).
    pub ignore_file: Option<PathBuf>,
    pub tags: Vec<ImageRef>,
    /// `--label K=V`: labels set on every image the build writes, over the spec's own.
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub build_args: BuildArgs,
    pub no_cache: bool,
    pub jobs: usize,
    pub secrets: BTreeMap<String, PathBuf>,
    /// `--ssh ID[=socket|keys]`: the agents `RUN --mount=type=ssh` reaches.
    pub ssh: BTreeMap<String, crate::exec::ssh::SshSource>,
    /// `--network`: the network of RUN steps that name none.
    pub network: crate::graph::Network,
    /// The time of a build context fetched from a URL (its commit's, or its
    /// download's), which `SOURCE_DATE_EPOCH=context` takes; a local folder has none.
    pub context_time: Option<u64>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run unconfined.
    pub allow_insecure: bool,
    /// Reads a base image's ONBUILD trigger (a Dockerfile instruction) into
    /// an op: given by the caller, since the build knows no front end.
    pub onbuild: Option<TriggerParser>,
    /// Finds the images `FROM`, `COPY --from` and `RUN --mount from=` name
    /// (the caller's may pull what the store lacks); the store alone if none.
    pub bases: Option<Arc<dyn BaseResolver>>,
}

/// Finds a base image by name, fetching it first if the caller's policy says
/// so: given by the caller, since the build knows no registry.
pub trait BaseResolver: Send + Sync + std::fmt::Debug {
    fn resolve(&self, store: &Store, name: &ImageName) -> Result<StoredImage, Box<dyn std::error::Error + Send + Sync>>;
}

/// Turns one ONBUILD trigger's text into an op, or says why it cannot.
pub type TriggerParser = fn(&str) -> Result<Op, String>;

/// An image the build wrote.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    /// The cache key of its last step (`--cache-to mode=min` exports its chain).
    pub key: CacheKey,
    /// The image id: the config digest.
    pub id: Digest,
    pub tags: Vec<String>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("step {origin} [{stage}] {instruction}")]
    Step { origin: Origin, stage: String, instruction: String, source: Box<ExecError> },
    #[error("base image {name:?} of stage {stage} is not in the store; load it with `strata load -i …` or build it first")]
    MissingBase { name: String, stage: String, source: StoreError },
    #[error("{origin}: base image {name:?} of stage {stage}")]
    Base { name: String, stage: String, origin: Origin, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: expected seconds since 1970-01-01, `context` or the name of a stage")]
    SourceDateEpoch { value: String },
    #[error("{origin}: SOURCE_DATE_EPOCH stage {stage} {why}")]
    SourceStage { origin: Origin, stage: String, why: String },
    #[error("tag {tag:?}: {reason}")]
    BadTag { tag: String, reason: String },
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT/SIGTERM stop the build at the next step boundary (RUN kills its process).
pub fn install_interrupt_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Whether the user asked the build to stop.
fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Builds what `opts.target` needs from `graph` into `store`.
pub fn build(store: &Store, graph: &BuildGraph, opts: &BuildOptions, progress: &dyn Progress) -> Result<Vec<BuiltImage>, BuildError> {
    graph.check()?;
    let roots = graph.roots(opts.target.as_deref())?;
    let mut plan = graph.plan(&roots)?;
    if !opts.allow_insecure {
        for id in &plan {
            let stage = &graph.stages[id.0];
            for step in &stage.steps {
                check_security(graph, &step.op, opts, &graph.stage_label(*id), &step.origin)?;
            }
        }
    }
    for tag in &opts.tags {
        if roots.len() > 1 {
            return Err(BuildError::BadTag {
                tag: tag.to_string(),
                reason: "the spec builds several images; choose one with --target".into(),
            });
        }
    }
    let epoch = source_date_epoch(store, graph, opts)?;
    let mut build_args = with_target_stage(graph, &roots, &opts.build_args);
    // As BuildKit: once resolved, SOURCE_DATE_EPOCH reads as its seconds (empty for none).
    if crate::graph::args::global_value("SOURCE_DATE_EPOCH", &opts.build_args, &graph.args).is_some() {
        build_args.insert("SOURCE_DATE_EPOCH".into(), epoch.map(|e| e.to_string()).unwrap_or_default());
    }
    let context = BuildContext::open(&opts.context, opts.ignore_file.as_deref())?;
    let _build_lock = store.lock_build()?;
    let mut bases = resolve_bases(store, graph, &plan, opts)?;
    // Stages a base's ONBUILD triggers name join the plan, built before the stage that runs them (BuildKit's new deps).
    let mut deps: HashMap<StageId, BTreeSet<StageId>> = HashMap::new();
    while let Some(id) = plan.iter().copied().find(|id| !deps.contains_key(id)) {
        let mut needs = graph.dependencies(id);
        let named = trigger_stages(store, graph, opts, &bases, id);
        if !named.is_subset(&plan.iter().copied().collect()) {
            let wanted: Vec<StageId> = plan.iter().chain(&named).copied().collect();
            plan = graph.plan(&wanted)?;
            bases.extend(resolve_bases(store, graph, &plan, opts)?);
            if !opts.allow_insecure {
                for id in &plan {
                    for step in &graph.stages[id.0].steps {
                        check_security(graph, &step.op, opts, &graph.stage_label(*id), &step.origin)?;
                    }
                }
            }
        }
        needs.extend(named);
        deps.insert(id, needs);
    }
    refuse_cycles(graph, &deps)?;
    let results: Mutex<HashMap<StageId, Arc<ImageState>>> = Mutex::new(HashMap::new());
    let finished = |id: StageId| results.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
    let cx_parts: CxParts = (&context, &finished, &build_args, epoch);
    scheduler::run(deps, opts.jobs.max(1), |id| {
        let state = build_stage(store, graph, opts, progress, cx_parts, &bases, id)?;
        results.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::new(state));
        Ok::<(), BuildError>(())
    })?;

    let mut built = Vec::new();
    for root in roots {
        let mut state = finished(root).ok_or_else(|| ExecError::NotBuilt(format!("stage {}", graph.stage_label(root))))?;
        if !opts.labels.is_empty() {
            Arc::make_mut(&mut state).config.config.labels.extend(opts.labels.clone());
        }
        let (manifest, id) = state.write_image(store)?;
        progress.note(&format!("writing image {id} done"));
        let mut tags: Vec<ImageRef> = opts.tags.clone();
        if let Some(image) = graph.images.iter().find(|image| image.stage == root) {
            for text in &image.tags {
                let tag = text.parse::<ImageRef>().map_err(|e| BuildError::BadTag { tag: text.clone(), reason: e.to_string() })?;
                tags.push(tag);
            }
        }
        if tags.is_empty() {
            store.add_untagged(&manifest)?;
        }
        for tag in &tags {
            store.set_tag(tag, &manifest)?;
            progress.note(&format!("naming to {tag} done"));
        }
        built.push(BuiltImage { manifest, id, key: state.key.clone(), tags: tags.iter().map(ToString::to_string).collect() });
    }
    Ok(built)
}

/// What every stage of one build shares: the context, the finished stages,
/// the build args (with TARGETSTAGE) and SOURCE_DATE_EPOCH.
type CxParts<'a> = (&'a BuildContext, &'a (dyn Fn(StageId) -> Option<Arc<ImageState>> + Sync), &'a BuildArgs, Option<u64>);

/// SOURCE_DATE_EPOCH as BuildKit reads it: a `--build-arg`, else a global
/// `ARG` default, else the environment. A number is seconds since 1970;
/// empty is none; `context` asks for the context's own time (a URL
/// context's; a local folder has none); a stage's name for the time of the
/// one remote source the stage ADDs (see [`stage_source_time`]). Anything
/// else fails the build.
fn source_date_epoch(store: &Store, graph: &BuildGraph, opts: &BuildOptions) -> Result<Option<u64>, BuildError> {
    let Some(value) = crate::graph::args::global_value("SOURCE_DATE_EPOCH", &opts.build_args, &graph.args) else {
        return Ok(crate::exec::source_date_epoch());
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    if value == "context" {
        return Ok(opts.context_time);
    }
    if let Some(seconds) = crate::exec::parse_epoch(&value) {
        return Ok(Some(seconds));
    }
    // A number was taken above, so a stage is found by its name.
    match graph.find_stage(&value) {
        Some(id) => stage_source_time(store, graph, opts, id),
        None => Err(BuildError::SourceDateEpoch { value }),
    }
}

/// The time a source stage names for SOURCE_DATE_EPOCH, as BuildKit reads
/// one: the stage is `FROM scratch` and holds ARGs and one ADD of one HTTP(S)
/// or git source, whose time it is ([`remote::source_time`]). The stage is
/// not built: its source is only asked for its time.
fn stage_source_time(store: &Store, graph: &BuildGraph, opts: &BuildOptions, id: StageId) -> Result<Option<u64>, BuildError> {
    let stage = &graph.stages[id.0];
    let label = graph.stage_label(id);
    let refuse =
        |origin: &Origin, why: &str| BuildError::SourceStage { origin: origin.clone(), stage: label.clone(), why: why.to_string() };
    if !matches!(stage.base, Base::Scratch) {
        return Err(refuse(&stage.origin, "must use FROM scratch"));
    }
    // As BuildKit: the global args but SOURCE_DATE_EPOCH itself, then the stage's ARGs.
    let globals = crate::graph::args::GlobalArgs::new(&opts.build_args, &graph.args);
    let mut scope: HashMap<String, String> = graph
        .args
        .iter()
        .filter(|decl| decl.name != "SOURCE_DATE_EPOCH")
        .filter_map(|decl| Some((decl.name.clone(), globals.get(&decl.name)?)))
        .collect();
    let mut add = None;
    for step in &stage.steps {
        match &step.op {
            Op::Arg(decls) => {
                for decl in decls {
                    let value = match (opts.build_args.get(&decl.name), &decl.default) {
                        (Some(given), _) => given.clone(),
                        (None, Some(default)) => {
                            default.expand(&|name| scope.get(name).cloned()).map_err(|e| refuse(&step.origin, &e.to_string()))?
                        }
                        (None, None) => continue,
                    };
                    scope.insert(decl.name.clone(), value);
                }
            }
            Op::Copy(copy) if copy.add && add.is_none() => add = Some((copy, &step.origin)),
            Op::Copy(copy) if copy.add => return Err(refuse(&step.origin, "must contain exactly one remote ADD")),
            op => {
                let why = format!("does not meet source-only requirements: unsupported {} instruction", op.keyword());
                return Err(refuse(&step.origin, &why));
            }
        }
    }
    let Some((copy, origin)) = add else { return Err(refuse(&stage.origin, "must contain exactly one remote ADD")) };
    let (None, [crate::graph::CopySource::Path(source)]) = (&copy.from, copy.sources.as_slice()) else {
        return Err(refuse(origin, "must contain exactly one remote ADD source"));
    };
    let expand = |word: &crate::graph::Word| word.expand(&|name| scope.get(name).cloned()).map_err(|e| refuse(origin, &e.to_string()));
    let url = expand(source)?;
    let checksum = copy.checksum.as_ref().map(expand).transpose()?;
    crate::exec::remote::source_time(store, &url, checksum.as_deref()).map_err(|e| BuildError::Step {
        origin: origin.clone(),
        stage: label.clone(),
        instruction: format!("ADD {url} (the SOURCE_DATE_EPOCH source)"),
        source: Box::new(e),
    })
}

/// The build args with BuildKit's TARGETSTAGE: the name of the stage being
/// built (`default` for an unnamed last stage), which a stage sees once it
/// declares `ARG TARGETSTAGE`. A `--build-arg TARGETSTAGE=…` is kept.
fn with_target_stage(graph: &BuildGraph, roots: &[StageId], build_args: &BuildArgs) -> BuildArgs {
    let mut args = build_args.clone();
    if let [root] = roots {
        let name = graph.stages[root.0].name.as_ref().map_or_else(|| "default".to_string(), StageName::to_string);
        args.entry("TARGETSTAGE".to_string()).or_insert(name);
    }
    args
}

fn build_stage(
    store: &Store,
    graph: &BuildGraph,
    opts: &BuildOptions,
    progress: &dyn Progress,
    (context, finished, build_args, epoch): CxParts,
    bases: &HashMap<ImageName, StoredImage>,
    id: StageId,
) -> Result<ImageState, BuildError> {
    let stage = &graph.stages[id.0];
    let label = graph.stage_label(id);
    // As BuildKit: FROM scratch is no step; `[name n/total]`, `[stage-N n/total]`
    // for an unnamed stage of several.
    let from_step = usize::from(!matches!(stage.base, Base::Scratch));
    let total = stage.steps.len() + from_step;
    let shown = stage.name.as_ref().map_or_else(|| format!("stage-{}", id.0), StageName::to_string);
    let prefix = |n: usize| {
        if stage.name.is_some() || graph.stages.len() > 1 { format!("[{shown} {n}/{total}]") } else { format!("[{n}/{total}]") }
    };
    let from_text = match &stage.base {
        Base::Scratch => "FROM scratch".to_string(),
        Base::Image(name) => format!("FROM {name}"),
        Base::Stage(base) => format!("FROM {}", graph.stage_label(*base)),
    };
    let step_id = (from_step == 1).then(|| progress.started(&format!("{} {from_text}", prefix(1))));
    let started = Instant::now();
    // Before the first step only a base's ONBUILD triggers print, and a scratch base has none.
    let output_id = std::sync::atomic::AtomicUsize::new(step_id.unwrap_or_default());
    let output = |line: &str| progress.output(output_id.load(Ordering::SeqCst), line);
    let cx = ExecCx {
        store,
        context,
        graph,
        build_args,
        no_cache: opts.no_cache,
        epoch,
        secrets: &opts.secrets,
        ssh: &opts.ssh,
        network: opts.network,
        stage: finished,
        output: &output,
        interrupted: &interrupted,
    };
    let mut state = match &stage.base {
        // A stage on another starts from its key, which has the epoch already.
        Base::Scratch => ImageState::scratch().with_epoch(epoch),
        Base::Stage(base) => {
            let mut state = ImageState::from_stage(
                finished(*base).ok_or_else(|| ExecError::NotBuilt(format!("stage {}", graph.stage_label(*base))))?.as_ref(),
            );
            // A stage built on another runs that stage's ONBUILD triggers, as on an image.
            run_onbuild_triggers(&mut state, &cx, opts, &label, stage.origin.clone())?;
            state
        }
        Base::Image(name) => {
            let image = match bases.get(name) {
                Some(image) => image.clone(),
                None => store.resolve(name.as_str()).map_err(|source| {
                    if let Some(step_id) = step_id {
                        progress.failed(step_id, "base image not found");
                    }
                    BuildError::MissingBase { name: name.to_string(), stage: label.clone(), source }
                })?,
            };
            let mut state = ImageState::from_image(&image).with_epoch(epoch);
            run_onbuild_triggers(&mut state, &cx, opts, &label, stage.origin.clone())?;
            state
        }
    };
    if let Some(step_id) = step_id {
        progress.done(step_id, started.elapsed());
    }

    for (n, step) in stage.steps.iter().enumerate() {
        let text = describe(graph, &step.op);
        let step_id = progress.started(&format!("{} {text}", prefix(n + 1 + from_step)));
        output_id.store(step_id, Ordering::SeqCst);
        note_unconfined(progress, step_id, &step.op);
        let started = Instant::now();
        match state.execute(&cx, &step.op) {
            Ok(StepOutcome::Cached) => progress.cached(step_id),
            Ok(StepOutcome::Built) => progress.done(step_id, started.elapsed()),
            Err(source) => {
                progress.failed(step_id, &source.to_string());
                return Err(BuildError::Step { origin: step.origin.clone(), stage: label, instruction: text, source: Box::new(source) });
            }
        }
    }
    Ok(state)
}

/// Resolves every image the planned stages name (`FROM`, `COPY --from`,
/// `RUN --mount from=`) once, through the caller's resolver, before any step
/// runs: a base is pulled at most once per build, and a failed pull stops the
/// build before work starts. Steps then find those images in the store.
fn resolve_bases(
    store: &Store,
    graph: &BuildGraph,
    plan: &[StageId],
    opts: &BuildOptions,
) -> Result<HashMap<ImageName, StoredImage>, BuildError> {
    let mut resolved = HashMap::new();
    let Some(resolver) = &opts.bases else { return Ok(resolved) };
    for id in plan {
        let stage = &graph.stages[id.0];
        let mut names = Vec::new();
        if let Base::Image(name) = &stage.base {
            names.push((name, &stage.origin));
        }
        for step in &stage.steps {
            match &step.op {
                Op::Copy(copy) => {
                    if let Some(CopyFrom::Image(name)) = &copy.from {
                        names.push((name, &step.origin));
                    }
                }
                Op::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(CopyFrom::Image(name)) = mount.from() {
                            names.push((name, &step.origin));
                        }
                    }
                }
                _ => {}
            }
        }
        for (name, origin) in names {
            if resolved.contains_key(name) {
                continue;
            }
            let image = resolver.resolve(store, name).map_err(|source| BuildError::Base {
                name: name.to_string(),
                stage: graph.stage_label(*id),
                origin: origin.clone(),
                source,
            })?;
            resolved.insert(name.clone(), image);
        }
    }
    Ok(resolved)
}

/// Refuses stages that wait on each other through ONBUILD triggers (a cycle
/// of the spec's own is refused by `plan`), naming the stages of one cycle.
fn refuse_cycles(graph: &BuildGraph, deps: &HashMap<StageId, BTreeSet<StageId>>) -> Result<(), GraphError> {
    let mut left: BTreeSet<StageId> = deps.keys().copied().collect();
    while let Some(free) = left.iter().copied().find(|id| deps[id].iter().all(|dep| !left.contains(dep))) {
        left.remove(&free);
    }
    let Some(&start) = left.first() else { return Ok(()) };
    // Every stage left waits on another one left: follow them until one repeats.
    let mut path = vec![start];
    loop {
        let last = path[path.len() - 1];
        let next = deps[&last].iter().copied().find(|dep| left.contains(dep)).unwrap_or(start);
        if let Some(at) = path.iter().position(|id| *id == next) {
            let mut cycle: Vec<String> = path[at..].iter().map(|id| graph.stage_label(*id)).collect();
            cycle.push(graph.stage_label(next));
            return Err(GraphError::Cycle(cycle));
        }
        path.push(next);
    }
}

/// Refuses `RUN --security=insecure` unless the build allows `security.insecure`, naming the step.
fn check_security(graph: &BuildGraph, op: &Op, opts: &BuildOptions, stage: &str, origin: &Origin) -> Result<(), BuildError> {
    match op {
        Op::Run(run) if run.security == Security::Insecure && !opts.allow_insecure => Err(BuildError::Step {
            origin: origin.clone(),
            stage: stage.to_string(),
            instruction: describe(graph, op),
            source: Box::new(ExecError::InsecureNotAllowed),
        }),
        _ => Ok(()),
    }
}

/// Says on the step's progress that it runs without the sandbox's confinement.
fn note_unconfined(progress: &dyn Progress, step_id: usize, op: &Op) {
    if let Op::Run(run) = op
        && run.security == Security::Insecure
    {
        progress.output(step_id, "strata: --security=insecure: this step runs unconfined (all capabilities, no seccomp filter)");
    }
}

/// Runs a base's ONBUILD triggers first, as Docker does, then clears them.
fn run_onbuild_triggers(state: &mut ImageState, cx: &ExecCx, opts: &BuildOptions, stage: &str, origin: Origin) -> Result<(), BuildError> {
    let Some(triggers) = state.config.config.on_build.take() else { return Ok(()) };
    for trigger in triggers {
        let step_error = |source: ExecError| BuildError::Step {
            origin: origin.clone(),
            stage: stage.to_string(),
            instruction: format!("ONBUILD {trigger}"),
            source: Box::new(source),
        };
        let parse = opts.onbuild.ok_or_else(|| step_error(ExecError::NoTriggerReader))?;
        let op = trigger_in_graph(cx.graph, parse(&trigger).map_err(|reason| step_error(ExecError::BadTrigger(reason)))?);
        check_security(cx.graph, &op, opts, stage, &origin)?;
        state.execute(cx, &op).map_err(step_error)?;
    }
    Ok(())
}

/// A trigger's `--from` (COPY, or a RUN bind mount) names a stage of the spec
/// that runs it when one has that name or index, as in BuildKit; else an image.
fn trigger_in_graph(graph: &BuildGraph, mut op: Op) -> Op {
    let to_stage = |from: &mut Option<CopyFrom>| {
        if let Some(CopyFrom::Image(name)) = from
            && let Some(id) = graph.find_stage(name.as_str())
        {
            *from = Some(CopyFrom::Stage(id));
        }
    };
    match &mut op {
        Op::Copy(copy) => to_stage(&mut copy.from),
        Op::Run(run) => {
            for mount in &mut run.mounts {
                if let RunMount::Bind { from, .. } | RunMount::Unexpanded { from, .. } = mount {
                    to_stage(from);
                }
            }
        }
        _ => {}
    }
    op
}

/// The stages named by the ONBUILD triggers stage `id` runs: those of its base
/// image, or the ONBUILD steps of its base stage. A trigger that does not
/// parse, or a base not found, names none here; running it reports the error.
fn trigger_stages(
    store: &Store,
    graph: &BuildGraph,
    opts: &BuildOptions,
    bases: &HashMap<ImageName, StoredImage>,
    id: StageId,
) -> BTreeSet<StageId> {
    let triggers: Vec<String> = match &graph.stages[id.0].base {
        Base::Scratch => Vec::new(),
        Base::Stage(base) => graph.stages[base.0]
            .steps
            .iter()
            .filter_map(|step| match &step.op {
                Op::Onbuild(trigger) => Some(trigger.clone()),
                _ => None,
            })
            .collect(),
        Base::Image(name) => {
            let image = bases.get(name).cloned().or_else(|| store.resolve(name.as_str()).ok());
            image.and_then(|image| ImageState::from_image(&image).config.config.on_build).unwrap_or_default()
        }
    };
    let mut named = BTreeSet::new();
    for trigger in triggers {
        let Some(Ok(op)) = opts.onbuild.map(|parse| parse(&trigger)) else { continue };
        match trigger_in_graph(graph, op) {
            Op::Copy(copy) => named.extend(match copy.from {
                Some(CopyFrom::Stage(stage)) => Some(stage),
                _ => None,
            }),
            Op::Run(run) => {
                for mount in &run.mounts {
                    if let Some(CopyFrom::Stage(stage)) = mount.from() {
                        named.insert(*stage);
                    }
                }
            }
            _ => {}
        }
    }
    named
}
