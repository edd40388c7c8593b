//! Spec types → build graph. Passes, in order: resolve the global args,
//! name every stage (hidden `layer` stages just before their parent), resolve
//! `from=` references, lower the steps, then reject cycles. Strings become
//! [`Word`]s here: `{NAME}` is a variable, `{{`/`}}` literal braces, and a
//! name no `arg` or `env` in scope declares is an error (see `check_names`).

use std::collections::HashMap;
use std::sync::Arc;

use miette::SourceSpan;

use super::schema::{
    ArgSpec, ArgValue, CopySpec, HealthcheckSpec, MountSpec, RunSpec, SourceSpec, Spec, SpecStep, StageKind, StepSpec, Text,
};
use crate::frontend::BuildArgs;
use crate::frontend::diagnostic::{SourceError, SourceErrors};
use crate::graph::args::GlobalArgs;
use crate::graph::{
    ArgDecl, Base, BuildGraph, CacheSettings, CopyFrom, CopyOp, CopySource, GraphError, Healthcheck, ImageName, ImageTarget, Op, Origin,
    Part, RunMount, RunOp, Stage, StageId, StageName, Word, did_you_mean, find_stage,
};

impl Spec {
    /// Lowers the spec into a build graph; `build_args` override arg defaults.
    pub fn lower(&self, build_args: &BuildArgs) -> Result<BuildGraph, SourceErrors> {
        lower_spec(self, build_args, None)
    }
}

/// The file a spec came from, to stamp origins on stages and steps.
pub(crate) struct SourceFile {
    pub name: Arc<str>,
    pub lines: crate::frontend::LineIndex,
}

pub(crate) fn lower_spec(spec: &Spec, build_args: &BuildArgs, source: Option<SourceFile>) -> Result<BuildGraph, SourceErrors> {
    let mut lowerer = Lowerer {
        source,
        errors: Vec::new(),
        globals: GlobalArgs::empty(build_args),
        names: Vec::new(),
        declared: Vec::new(),
        scope: None,
        uses: Vec::new(),
    };
    let graph = lowerer.lower(spec);
    lowerer.check_names(&graph);
    if lowerer.errors.is_empty() { Ok(graph) } else { Err(SourceErrors { errors: lowerer.errors }) }
}

/// Parses `{NAME}` interpolation: variables, `{{`/`}}` escapes, literal text.
pub fn parse_word(text: &str) -> Result<Word, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                chars.next();
                literal.push('}');
            }
            '{' if literal.ends_with('$') => {
                return Err(format!("`${{` in {text:?}: a spec writes variables as {{NAME}}, without `$`"));
            }
            '{' => {
                let rest = &text[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!("unclosed `{{` in {text:?}"));
                };
                let name = &rest[..end];
                if !is_var_name(name) {
                    return Err(format!("invalid variable name {name:?} in {text:?}"));
                }
                if !literal.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(name.to_string()));
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
            }
            '}' => return Err(format!("unmatched `}}` in {text:?}")),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Lit(literal));
    }
    Ok(Word(parts))
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn looks_like_image_ref(value: &str) -> bool {
    value.contains([':', '/', '@', '.'])
}

struct Lowerer<'a> {
    source: Option<SourceFile>,
    errors: Vec<SourceError>,
    /// Effective values of the global args (build arg, else default), as for a Dockerfile.
    globals: GlobalArgs<'a>,
    /// Every stage's name, by id, for resolving references.
    names: Vec<Option<StageName>>,
    /// The global args declared so far, in order.
    declared: Vec<String>,
    /// The stage whose steps are being lowered: their words expand at build time.
    scope: Option<StageId>,
    /// Variables read by build-time words: name, where, and the stage.
    uses: Vec<(String, Option<SourceSpan>, StageId)>,
}

/// Whether a build-time word may read `name` without declaring it: Docker's
/// proxy args and the image's `PATH` (every image and RUN has one).
fn undeclared_ok(name: &str) -> bool {
    name == "PATH" || crate::graph::args::PROXY_ARGS.contains(&name)
}

impl Lowerer<'_> {
    fn origin(&self, span: Option<SourceSpan>) -> Origin {
        match (&self.source, span) {
            (Some(source), Some(span)) => Origin { file: source.name.clone(), line: source.lines.line(span.offset()) },
            (Some(source), None) => Origin { file: source.name.clone(), line: 0 },
            (None, _) => Origin::default(),
        }
    }

    /// A word of the spec; a name it reads must be declared in its scope.
    fn word(&mut self, text: &Text) -> Word {
        let word = self.parse(text);
        match self.scope {
            Some(stage) => {
                let uses: Vec<_> = word.variables().into_iter().map(|name| (name.to_string(), text.span, stage)).collect();
                self.uses.extend(uses);
            }
            None => self.check_global_names(&word, text),
        }
        word
    }

    /// A word expanded when the spec is read reads the global args declared above it.
    fn check_global_names(&mut self, word: &Word, text: &Text) {
        for name in word.variables() {
            if !self.declared.iter().any(|d| d == name) {
                let help = format!("declare it with a global `arg {name:?}`; only global args are known here");
                let error = self.undefined(name, text.span, self.declared.iter().map(String::as_str), help);
                // A tag is read twice (as the image's name and as a tag): report it once.
                if !self.errors.contains(&error) {
                    self.errors.push(error);
                }
            }
        }
    }

    /// "undefined variable", with a did-you-mean from `known`, else `help`.
    fn undefined<'n>(&self, name: &str, span: Option<SourceSpan>, known: impl Iterator<Item = &'n str>, help: String) -> SourceError {
        let error = SourceError::new(format!("undefined variable `{name}`"), span, format!("reads {{{name}}}"));
        match did_you_mean(name, known) {
            Some(suggestion) => error.did_you_mean(Some(suggestion)),
            None => error.help(help),
        }
    }

    /// Every name a build-time word reads is an `arg` of its stage, an `env`
    /// of its stage or of a stage it is built on, or `undeclared_ok`. A
    /// global arg is not: as in a Dockerfile, a stage reads it once it
    /// declares it again.
    fn check_names(&mut self, graph: &BuildGraph) {
        let mut known_by_stage: HashMap<usize, Vec<String>> = HashMap::new();
        for (name, span, stage) in std::mem::take(&mut self.uses) {
            let known = known_by_stage.entry(stage.0).or_insert_with(|| known_in(graph, stage));
            if known.contains(&name) || undeclared_ok(&name) {
                continue;
            }
            let help = if self.declared.contains(&name) {
                format!("`{name}` is a global arg: declare `arg {name:?}` in this stage to read it here")
            } else {
                format!("declare it with `arg {name:?}` or `env` in this stage (a variable of the base image's environment, too)")
            };
            let error = self.undefined(&name, span, known.iter().map(String::as_str), help);
            self.errors.push(error);
        }
    }

    fn parse(&mut self, text: &Text) -> Word {
        match parse_word(&text.value) {
            Ok(word) => word,
            Err(message) => {
                self.errors.push(
                    SourceError::new(message, text.span, "invalid interpolation")
                        .help("write {NAME} for a variable and {{ or }} for a literal brace"),
                );
                Word::default()
            }
        }
    }

    /// A string with `{NAME}` expanded now, against the global args.
    fn expand(&mut self, text: &Text) -> String {
        let word = self.parse(text);
        self.check_global_names(&word, text);
        self.expand_word(&word)
    }

    /// A spec's words hold only literals and `{NAME}`s, which always expand.
    fn expand_word(&self, word: &Word) -> String {
        word.expand(&|name| self.globals.get(name)).unwrap_or_default()
    }

    fn lower(&mut self, spec: &Spec) -> BuildGraph {
        let mut graph = BuildGraph::default();
        for arg in &spec.args {
            let decl = self.arg_decl(arg);
            if let Err(e) = self.globals.declare(&decl) {
                self.errors.push(SourceError::new(format!("arg {}: {e}", decl.name), arg.name.span, "this default"));
            }
            self.declared.push(decl.name.clone());
            graph.args.push(decl);
        }

        // Name every stage first, so references may point forward; a stage's
        // linked layers come just before it, keeping the last stage the user's.
        let mut plan = Vec::new();
        for (index, stage) in spec.stages.iter().enumerate() {
            let name = match (&stage.name, &stage.kind) {
                (Some(name), _) => Some(self.expand(name)),
                (None, StageKind::Image { tags }) => tags.first().map(|tag| self.expand(tag)),
                (None, StageKind::Stage) => None,
            };
            let label = name.clone().unwrap_or_else(|| (self.names.len() + linked_layers(&stage.steps)).to_string());
            for (step, spec) in stage.steps.iter().enumerate() {
                if let StepSpec::Layer(layer) = &spec.spec
                    && layer.link
                {
                    let layer_name = self.expand(&layer.name);
                    plan.push(Planned::Layer { parent: index, step });
                    self.names.push(Some(StageName::new(format!("{label}/layer/{layer_name}"))));
                }
            }
            plan.push(Planned::Stage(index));
            if let Some(name) = &name
                && let Some(earlier) = self.names.iter().position(|n| n.as_ref().is_some_and(|n| n.is(name)))
            {
                self.errors.push(
                    SourceError::new(format!("duplicate stage name {name:?}"), stage.span, "declared again here")
                        .help(format!("stage {earlier} already has this name")),
                );
            }
            self.names.push(name.map(StageName::new));
        }

        let mut layer_ids: HashMap<(usize, usize), StageId> = HashMap::new();
        for (id, planned) in plan.iter().enumerate() {
            if let Planned::Layer { parent, step } = planned {
                layer_ids.insert((*parent, *step), StageId(id));
            }
        }
        for (id, planned) in plan.iter().enumerate() {
            let stage = match planned {
                Planned::Stage(index) => {
                    let spec_stage = &spec.stages[*index];
                    let base = self.base(&spec_stage.from, StageId(id));
                    self.scope = Some(StageId(id));
                    let platform = spec_stage.platform.as_ref().map(|p| self.word(p));
                    let steps = self.steps(&spec_stage.steps, &|step| layer_ids.get(&(*index, step)).copied());
                    self.scope = None;
                    if let StageKind::Image { tags } = &spec_stage.kind {
                        let tags = tags.iter().map(|t| self.expand(t)).collect();
                        graph.images.push(ImageTarget { stage: StageId(id), tags });
                    }
                    Stage { name: self.names[id].clone(), base, platform, steps, hidden: false, origin: self.origin(spec_stage.span) }
                }
                Planned::Layer { parent, step } => {
                    let step = &spec.stages[*parent].steps[*step];
                    let StepSpec::Layer(layer) = &step.spec else {
                        continue;
                    };
                    self.scope = Some(StageId(id));
                    let steps = self.steps(&layer.steps, &|_| None);
                    self.scope = None;
                    Stage {
                        name: self.names[id].clone(),
                        base: Base::Scratch,
                        platform: None,
                        steps,
                        hidden: true,
                        origin: self.origin(step.span),
                    }
                }
            };
            graph.stages.push(stage);
        }

        graph.cache = CacheSettings {
            from: spec.cache.from.iter().map(|text| self.expand(text)).collect(),
            to: spec.cache.to.as_ref().map(|text| self.expand(text)),
        };

        if let Err(GraphError::Cycle(path)) = graph.check() {
            let first = path.first().and_then(|name| graph.find_stage(name));
            let span = first.and_then(|id| match plan.get(id.0) {
                Some(Planned::Stage(index)) => spec.stages[*index].span,
                _ => None,
            });
            self.errors.push(
                SourceError::new(format!("stages form a cycle: {}", path.join(" -> ")), span, "part of the cycle")
                    .help("a stage cannot depend, through from= or copy/mount from=, on itself"),
            );
        }
        graph
    }

    fn arg_decl(&mut self, arg: &ArgSpec) -> ArgDecl {
        let default = arg.default.as_ref().map(|value| match value {
            ArgValue::String(text) => self.word(text),
            ArgValue::Integer(i) => Word::lit(i.to_string()),
            ArgValue::Bool(b) => Word::lit(b.to_string()),
        });
        ArgDecl { name: arg.name.value.clone(), default }
    }

    /// Resolves a reference to a stage (by name or index) for `from=`, if it is one.
    fn stage_ref(&mut self, text: &Text, value: &str) -> Result<Option<StageId>, ()> {
        if let Some(id) = find_stage(self.names.iter().map(Option::as_ref), value) {
            return Ok(Some(id));
        }
        if let Ok(i) = value.parse::<usize>() {
            self.errors.push(SourceError::new(format!("no stage with index {i}"), text.span, "unknown stage"));
            return Err(());
        }
        if !looks_like_image_ref(value) {
            let suggestion = did_you_mean(value, self.names.iter().flatten().map(StageName::as_str));
            if suggestion.is_some() {
                self.errors
                    .push(SourceError::new(format!("unknown stage {value:?} in from="), text.span, "not a stage").did_you_mean(suggestion));
                return Err(());
            }
        }
        Ok(None)
    }

    fn base(&mut self, from: &Text, _this: StageId) -> Base {
        let value = self.expand(from);
        if value.eq_ignore_ascii_case("scratch") {
            return Base::Scratch;
        }
        match self.stage_ref(from, &value) {
            Ok(Some(id)) => Base::Stage(id),
            Ok(None) => self.image(from, &value).map_or(Base::Scratch, Base::Image),
            Err(()) => Base::Scratch,
        }
    }

    fn copy_from(&mut self, from: &Text) -> Option<CopyFrom> {
        let value = self.expand(from);
        match self.stage_ref(from, &value) {
            Ok(Some(id)) => Some(CopyFrom::Stage(id)),
            Ok(None) => self.image(from, &value).map(CopyFrom::Image),
            Err(()) => None,
        }
    }

    /// The image `value` (`from` expanded) names; none, and an error, when it is no image reference.
    fn image(&mut self, from: &Text, value: &str) -> Option<ImageName> {
        ImageName::parse(value)
            .map_err(|e| self.errors.push(SourceError::new(e.to_string(), from.span, "neither a stage nor an image")))
            .ok()
    }

    /// Lowers `steps`; `layer_id` gives the hidden stage of the linked layer at an index.
    fn steps(&mut self, steps: &[SpecStep], layer_id: &dyn Fn(usize) -> Option<StageId>) -> Vec<crate::graph::Step> {
        let mut out = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            let op = match &step.spec {
                StepSpec::Layer(layer) if layer.link => match layer_id(index) {
                    Some(id) => Op::LinkLayers { stage: id, name: self.expand(&layer.name) },
                    None => continue,
                },
                StepSpec::Layer(layer) => {
                    out.extend(self.steps(&layer.steps, &|_| None));
                    continue;
                }
                spec => self.op(spec),
            };
            out.push(crate::graph::Step { op, origin: self.origin(step.span), comments: step.comments.clone() });
        }
        out
    }

    fn op(&mut self, spec: &StepSpec) -> Op {
        match spec {
            StepSpec::Run(run) => Op::Run(self.run(run)),
            StepSpec::Copy(copy) => Op::Copy(self.copy(copy)),
            StepSpec::Env(pairs) => Op::Env(pairs.iter().map(|(k, v)| (k.clone(), self.word(v))).collect()),
            StepSpec::Arg(arg) => Op::Arg(vec![self.arg_decl(arg)]),
            StepSpec::Workdir(path) => Op::Workdir(self.word(path)),
            StepSpec::User(user) => Op::User(self.word(user)),
            StepSpec::Label(pairs) => Op::Label(pairs.iter().map(|(k, v)| (self.word(k), self.word(v))).collect()),
            StepSpec::Expose(ports) => Op::Expose(ports.iter().map(|p| self.word(p)).collect()),
            StepSpec::Volume(paths) => Op::Volume(paths.iter().map(|p| self.word(p)).collect()),
            StepSpec::Cmd(command) => Op::Cmd(command.clone()),
            StepSpec::Entrypoint(command) => Op::Entrypoint(command.clone()),
            StepSpec::Shell(args) => Op::Shell(args.clone()),
            StepSpec::StopSignal(signal) => Op::StopSignal(self.word(signal)),
            StepSpec::Healthcheck(check) => Op::Healthcheck(healthcheck(check)),
            StepSpec::Onbuild(text) => Op::Onbuild(text.clone()),
            StepSpec::Maintainer(text) => Op::Maintainer(text.clone()),
            StepSpec::Layer(_) => unreachable!("layers are lowered by steps()"),
        }
    }

    fn run(&mut self, run: &RunSpec) -> RunOp {
        let mounts = run
            .mounts
            .iter()
            .filter_map(|mount| {
                Some(match mount {
                    MountSpec::Cache { id, target, readonly } => {
                        let target = self.expand(target);
                        let id = match id {
                            Some(id) => self.expand(id),
                            None => target.clone(),
                        };
                        RunMount::Cache { id, target, readonly: *readonly, sharing: Default::default(), file: Default::default() }
                    }
                    MountSpec::Bind { from, source, target, rw } => {
                        let from = match from {
                            Some(from) => Some(self.copy_from(from)?),
                            None => None,
                        };
                        RunMount::Bind { from, source: self.expand(source), target: self.expand(target), rw: *rw }
                    }
                    MountSpec::Secret { id, target, required } => {
                        let target = target.as_ref().map(|t| self.expand(t));
                        let id = match (id, &target) {
                            (Some(id), _) => self.expand(id),
                            (None, Some(target)) => target.rsplit('/').next().unwrap_or_default().to_string(),
                            (None, None) => String::new(),
                        };
                        let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                        RunMount::Secret { id, target: Some(target), env: None, required: *required, file: Default::default() }
                    }
                    MountSpec::Tmpfs { target } => RunMount::Tmpfs { target: self.expand(target), size: None },
                })
            })
            .collect();
        RunOp { command: run.command.clone(), mounts, network: run.network, security: run.security, heredoc: None }
    }

    fn copy(&mut self, copy: &CopySpec) -> CopyOp {
        CopyOp {
            add: copy.add,
            from: copy.from.as_ref().and_then(|from| self.copy_from(from)),
            sources: copy
                .sources
                .iter()
                .map(|source| match source {
                    SourceSpec::Path(path) => CopySource::Path(self.word(path)),
                    SourceSpec::Inline { name, content } => CopySource::Inline { name: name.clone(), content: self.word(content) },
                })
                .collect(),
            dest: self.word(&copy.dest),
            chown: copy.chown.as_ref().map(|c| self.word(c)),
            chmod: copy.chmod.as_ref().map(|c| self.word(c)),
            link: copy.link,
            checksum: copy.checksum.as_ref().map(|c| self.word(c)),
            keep_git_dir: copy.keep_git_dir,
            parents: copy.parents,
            exclude: copy.exclude.iter().map(|pattern| self.word(pattern)).collect(),
            unpack: copy.unpack,
        }
    }
}

/// The args a stage declares, and the env keys it and the stages it is built on set.
fn known_in(graph: &BuildGraph, stage: StageId) -> Vec<String> {
    let mut known = Vec::new();
    let mut next = Some(stage);
    let mut seen = Vec::new();
    while let Some(id) = next.filter(|id| !seen.contains(id) && id.0 < graph.stages.len()) {
        for step in &graph.stages[id.0].steps {
            match &step.op {
                Op::Arg(args) if id == stage => known.extend(args.iter().map(|a| a.name.clone())),
                Op::Env(pairs) => known.extend(pairs.iter().map(|(k, _)| k.clone())),
                _ => {}
            }
        }
        seen.push(id);
        next = match graph.stages[id.0].base {
            Base::Stage(base) => Some(base),
            _ => None,
        };
    }
    known
}

/// A stage to emit, in final order.
enum Planned {
    Stage(usize),
    /// The linked `layer` at index `step` of stage `parent`.
    Layer {
        parent: usize,
        step: usize,
    },
}

fn linked_layers(steps: &[SpecStep]) -> usize {
    steps.iter().filter(|s| matches!(&s.spec, StepSpec::Layer(layer) if layer.link)).count()
}

fn healthcheck(check: &HealthcheckSpec) -> Healthcheck {
    let nanos = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
    let test = match &check.command {
        None => vec!["NONE".to_string()],
        Some(crate::graph::CommandLine::Shell(script)) => {
            vec!["CMD-SHELL".to_string(), script.clone()]
        }
        Some(crate::graph::CommandLine::Exec(args)) => std::iter::once("CMD".to_string()).chain(args.iter().cloned()).collect(),
    };
    Healthcheck {
        test,
        interval: nanos(check.interval),
        timeout: nanos(check.timeout),
        start_period: nanos(check.start_period),
        start_interval: nanos(check.start_interval),
        retries: check.retries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_variables_from_literals() {
        assert_eq!(parse_word("a{X}b$c").unwrap(), Word(vec![Part::Lit("a".into()), Part::Var("X".into()), Part::Lit("b$c".into())]));
        assert_eq!(parse_word("{{x}}").unwrap(), Word::lit("{x}"));
        assert_eq!(parse_word("").unwrap(), Word::default());
        assert!(parse_word("{x").is_err());
        assert!(parse_word("x}").is_err());
        assert!(parse_word("{a b}").is_err());
        assert!(parse_word("${HOME}").is_err());
        assert_eq!(parse_word("${{HOME}}").unwrap(), Word::lit("${HOME}"));
    }

    fn errors(text: &str) -> Vec<SourceError> {
        Spec::parse(text).unwrap().lower(&BuildArgs::new()).err().map_or_else(Vec::new, |e| e.errors)
    }

    #[test]
    fn a_variable_must_be_declared_where_it_is_read() {
        let ok = r#"arg "G" default="1"
            stage "base" from="busybox:{G}" { env HOME="/root"; }
            image "app:{G}" from="base" { arg "G"; arg "A"; env P="{PATH}:{HOME}" Q="{A}{G}{http_proxy}"; }"#;
        assert_eq!(errors(ok), vec![]);
        let typo = errors(r#"stage from="busybox:latest" { arg "VERSION"; workdir "/opt/{VERSOIN}"; }"#);
        assert_eq!(typo.len(), 1);
        assert_eq!(typo[0].message, "undefined variable `VERSOIN`");
        assert_eq!(typo[0].help.as_deref(), Some("did you mean \"VERSION\"?"));
        assert!(typo[0].span.is_some());
        let global = errors(r#"arg "G"; stage from="busybox:latest" { user "{G}"; }"#);
        assert!(global[0].help.as_deref().is_some_and(|h| h.contains("is a global arg")), "{global:?}");
        let unknown = errors(r#"arg "G"; image "app:{NOPE}" from="busybox:latest" {}"#);
        assert_eq!(unknown[0].message, "undefined variable `NOPE`");
    }
}
