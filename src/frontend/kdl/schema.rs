//! The spec types: a KDL spec as Rust values, before lowering. They are also
//! the library API for writing a spec in code; `parse` fills them from a KDL
//! document and `lower` turns them into a [`crate::graph::BuildGraph`].
//! Strings are kept as written (`{NAME}` not yet parsed), with the span they
//! came from when they came from a file.

use std::time::Duration;

use miette::SourceSpan;

pub use crate::graph::{CommandLine, Network, Security};

/// A string as the user wrote it, and where (`None` when built in code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    pub value: String,
    pub span: Option<SourceSpan>,
}

impl Text {
    /// A text written at `span` of the spec file.
    pub fn at(value: impl Into<String>, span: SourceSpan) -> Text {
        Text { value: value.into(), span: Some(span) }
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Text {
        Text { value: value.to_string(), span: None }
    }
}

impl From<String> for Text {
    fn from(value: String) -> Text {
        Text { value, span: None }
    }
}

/// A whole spec: global build arguments, then stages and images in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spec {
    pub args: Vec<ArgSpec>,
    pub stages: Vec<StageSpec>,
    pub cache: CacheSpec,
}

/// `cache { from "type=…"; to "type=…" }`: the build's shared caches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheSpec {
    pub from: Vec<Text>,
    pub to: Option<Text>,
}

/// `arg "NAME" default=…`, at the top level or inside a stage.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgSpec {
    pub name: Text,
    pub default: Option<ArgValue>,
}

/// A typed argument default; integers and booleans are rendered as text.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    String(Text),
    Integer(i128),
    Bool(bool),
}

impl From<&str> for ArgValue {
    fn from(value: &str) -> ArgValue {
        ArgValue::String(value.into())
    }
}

impl From<i64> for ArgValue {
    fn from(value: i64) -> ArgValue {
        ArgValue::Integer(value.into())
    }
}

impl From<bool> for ArgValue {
    fn from(value: bool) -> ArgValue {
        ArgValue::Bool(value)
    }
}

/// Whether a stage node is a plain `stage` or an `image` with tags.
#[derive(Clone, Debug, PartialEq)]
pub enum StageKind {
    Stage,
    /// The tags of the image; the first also names the stage unless `name` is set.
    Image {
        tags: Vec<Text>,
    },
}

/// A `stage` or `image` node.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub kind: StageKind,
    /// The stage name (`stage "build"`, or `name=` on an image).
    pub name: Option<Text>,
    /// `from=`: `scratch`, a stage name or index, or an image reference.
    pub from: Text,
    pub platform: Option<Text>,
    pub steps: Vec<SpecStep>,
    /// Where the node's name (`stage`/`image`) was written.
    pub span: Option<SourceSpan>,
}

/// One step and what came with it in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecStep {
    pub spec: StepSpec,
    /// `//` comment lines written just above the step.
    pub comments: Vec<String>,
    pub span: Option<SourceSpan>,
}

impl From<StepSpec> for SpecStep {
    fn from(spec: StepSpec) -> SpecStep {
        SpecStep { spec, comments: Vec::new(), span: None }
    }
}

/// The steps a stage can hold: every Dockerfile instruction, plus `layer`.
#[derive(Clone, Debug, PartialEq)]
pub enum StepSpec {
    Run(RunSpec),
    Copy(CopySpec),
    Env(Vec<(String, Text)>),
    Arg(ArgSpec),
    Workdir(Text),
    User(Text),
    Label(Vec<(Text, Text)>),
    Expose(Vec<Text>),
    Volume(Vec<Text>),
    /// Command strings are passed on verbatim: no `{NAME}` interpolation.
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    StopSignal(Text),
    Healthcheck(HealthcheckSpec),
    Onbuild(String),
    Maintainer(String),
    Layer(LayerSpec),
}

/// `run`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub command: CommandLine,
    pub mounts: Vec<MountSpec>,
    pub network: Network,
    /// `security="insecure"`: run unconfined (the build must allow `security.insecure`).
    pub security: Security,
}

/// A `mount` child of `run`; its strings may use `{NAME}` of global args.
#[derive(Clone, Debug, PartialEq)]
pub enum MountSpec {
    /// `id` defaults to the target path.
    Cache {
        id: Option<Text>,
        target: Text,
        readonly: bool,
    },
    /// `from` is a stage or an image; `None` mounts the build context.
    Bind {
        from: Option<Text>,
        source: Text,
        target: Text,
        rw: bool,
    },
    /// `id` defaults to the target's file name, `target` to `/run/secrets/<id>`.
    Secret {
        id: Option<Text>,
        target: Option<Text>,
        required: bool,
    },
    Tmpfs {
        target: Text,
    },
}

/// `copy` or `add`.
#[derive(Clone, Debug, PartialEq)]
pub struct CopySpec {
    pub add: bool,
    pub from: Option<Text>,
    pub sources: Vec<SourceSpec>,
    pub dest: Text,
    pub chown: Option<Text>,
    pub chmod: Option<Text>,
    pub link: bool,
    /// `add … checksum="sha256:…"`: the digest a download (or the commit a git source) must have.
    pub checksum: Option<Text>,
    /// `add … keep-git-dir=#true`: a git source keeps its `.git` folder.
    pub keep_git_dir: bool,
    /// `copy … parents=#true`: sources keep their paths under the destination.
    pub parents: bool,
    /// `exclude "pattern" …` children: what is left out below each source.
    pub exclude: Vec<Text>,
    /// `add … unpack=#true|#false`: whether an archive is extracted.
    pub unpack: Option<bool>,
}

/// One source of a copy: a path, or a `file "name" "content"` child.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    Path(Text),
    Inline { name: String, content: Text },
}

/// `healthcheck`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthcheckSpec {
    /// `None` for `healthcheck none=#true`.
    pub command: Option<CommandLine>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u64>,
}

/// `layer "name" link=#true { … }`: steps whose result does not depend on the
/// layers below, built as their own stage and stacked in place. Without
/// `link`, the block only groups steps and they run in place.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    pub name: Text,
    pub link: bool,
    pub steps: Vec<SpecStep>,
}

impl Spec {
    /// An empty spec.
    pub fn new() -> Spec {
        Spec::default()
    }

    /// Adds a global build argument with a default.
    pub fn arg(mut self, name: &str, default: impl Into<ArgValue>) -> Spec {
        self.args.push(ArgSpec { name: name.into(), default: Some(default.into()) });
        self
    }

    /// Adds a stage or image.
    pub fn stage(mut self, stage: StageSpec) -> Spec {
        self.stages.push(stage);
        self
    }
}

impl StageSpec {
    /// A named stage starting from `from`.
    pub fn stage(name: &str, from: &str) -> StageSpec {
        StageSpec { kind: StageKind::Stage, name: Some(name.into()), from: from.into(), platform: None, steps: Vec::new(), span: None }
    }

    /// An image tagged `tag`, starting from `from`.
    pub fn image(tag: &str, from: &str) -> StageSpec {
        StageSpec { kind: StageKind::Image { tags: vec![tag.into()] }, name: None, ..StageSpec::stage("", from) }
    }

    /// Adds any step.
    pub fn step(mut self, step: StepSpec) -> StageSpec {
        self.steps.push(step.into());
        self
    }

    /// `run "script"` (shell form).
    pub fn run(self, script: &str) -> StageSpec {
        self.step(StepSpec::Run(RunSpec {
            command: CommandLine::Shell(script.into()),
            mounts: Vec::new(),
            network: Network::Default,
            security: Security::Sandbox,
        }))
    }

    /// `copy "src"… "dest"` from the build context.
    pub fn copy<'a>(self, sources: impl IntoIterator<Item = &'a str>, dest: &str) -> StageSpec {
        self.step(StepSpec::Copy(CopySpec::new(sources, dest)))
    }

    /// `copy from="stage" "src"… "dest"`.
    pub fn copy_from<'a>(self, from: &str, sources: impl IntoIterator<Item = &'a str>, dest: &str) -> StageSpec {
        self.step(StepSpec::Copy(CopySpec { from: Some(from.into()), ..CopySpec::new(sources, dest) }))
    }

    /// `env KEY="value"`.
    pub fn env(self, key: &str, value: &str) -> StageSpec {
        self.step(StepSpec::Env(vec![(key.into(), value.into())]))
    }

    /// `workdir "/path"`.
    pub fn workdir(self, path: &str) -> StageSpec {
        self.step(StepSpec::Workdir(path.into()))
    }

    /// `cmd "a" "b"` (exec form).
    pub fn cmd<'a>(self, args: impl IntoIterator<Item = &'a str>) -> StageSpec {
        self.step(StepSpec::Cmd(CommandLine::Exec(args.into_iter().map(String::from).collect())))
    }

    /// `layer "name" link=#true { … }`.
    pub fn layer(self, name: &str, steps: impl IntoIterator<Item = StepSpec>) -> StageSpec {
        self.step(StepSpec::Layer(LayerSpec { name: name.into(), link: true, steps: steps.into_iter().map(SpecStep::from).collect() }))
    }
}

impl CopySpec {
    /// A plain `copy` of context paths.
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a str>, dest: &str) -> CopySpec {
        CopySpec {
            add: false,
            from: None,
            sources: sources.into_iter().map(|s| SourceSpec::Path(s.into())).collect(),
            dest: dest.into(),
            chown: None,
            chmod: None,
            link: false,
            checksum: None,
            keep_git_dir: false,
            parents: false,
            exclude: Vec::new(),
            unpack: None,
        }
    }
}
