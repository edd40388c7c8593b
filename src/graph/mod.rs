//! The build graph: stages of steps and the edges between them. Front ends
//! lower into it; the scheduler and executor read it. It knows no syntax:
//! nothing here can tell a Dockerfile step from a KDL one.

pub mod args;
mod dump;
mod mode;
mod mount;
mod name;
mod word;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

pub use dump::{describe, to_dot, to_json};
pub use mode::{Mode, parse_mode};
pub use mount::{mount_fields, parse_mount};
pub use name::{ImageName, StageName, find_stage};
pub use word::{ExpandError, Part, Word};

/// Index of a stage in [`BuildGraph::stages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StageId(pub usize);

/// Everything one build file declares.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BuildGraph {
    /// Build arguments declared before the first stage (`ARG` before `FROM`).
    pub args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
    /// Named images to produce (KDL `image` nodes). Empty for a Dockerfile,
    /// whose default target is its last stage.
    pub images: Vec<ImageTarget>,
    /// Shared build caches the build file asks for (a KDL `cache` block).
    #[serde(skip_serializing_if = "CacheSettings::is_empty")]
    pub cache: CacheSettings,
}

/// Where a build reads and writes shared cache, in `--cache-from` / `--cache-to`
/// syntax (`type=registry,ref=…`); the flags, where given, come first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheSettings {
    /// Sources, tried in order.
    pub from: Vec<String>,
    pub to: Option<String>,
}

impl CacheSettings {
    pub fn is_empty(&self) -> bool {
        self.from.is_empty() && self.to.is_none()
    }
}

/// An image a spec asks for: the stage that makes it and its tags (expanded when the spec is lowered).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageTarget {
    pub stage: StageId,
    pub tags: Vec<String>,
}

/// One `FROM … AS name` and the steps under it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub name: Option<StageName>,
    pub base: Base,
    pub platform: Option<Word>,
    pub steps: Vec<Step>,
    /// Stages made by lowering rather than written by the user (KDL `layer` blocks).
    pub hidden: bool,
    #[serde(skip)]
    pub origin: Origin,
}

/// What a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    Scratch,
    /// An image, its reference already expanded with the global build args.
    Image(ImageName),
    Stage(StageId),
}

/// Where a step or stage was written, for messages during the build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One instruction of a stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub op: Op,
    #[serde(skip)]
    pub origin: Origin,
    /// Comment lines written just above the step, kept for `strata convert`.
    #[serde(skip)]
    pub comments: Vec<String>,
}

/// `ARG NAME[=default]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<Word>,
}

/// A command in exec form (`["a","b"]`, run as given) or shell form (run through SHELL).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// The operation of one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Run(RunOp),
    Copy(CopyOp),
    Env(Vec<(String, Word)>),
    Arg(Vec<ArgDecl>),
    Workdir(Word),
    User(Word),
    Label(Vec<(Word, Word)>),
    Expose(Vec<Word>),
    Volume(Vec<Word>),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    StopSignal(Word),
    Healthcheck(Healthcheck),
    /// The trigger instruction, kept as the text Docker stores in `OnBuild`.
    Onbuild(String),
    Maintainer(String),
    /// Stack the layers of a stage built independently of this one (KDL `layer … link=#true`).
    LinkLayers {
        stage: StageId,
        name: String,
    },
}

impl Op {
    /// The instruction keyword, as progress output and history show it.
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Run(_) => "RUN",
            Op::Copy(copy) if copy.add => "ADD",
            Op::Copy(_) => "COPY",
            Op::Env(_) => "ENV",
            Op::Arg(_) => "ARG",
            Op::Workdir(_) => "WORKDIR",
            Op::User(_) => "USER",
            Op::Label(_) => "LABEL",
            Op::Expose(_) => "EXPOSE",
            Op::Volume(_) => "VOLUME",
            Op::Cmd(_) => "CMD",
            Op::Entrypoint(_) => "ENTRYPOINT",
            Op::Shell(_) => "SHELL",
            Op::StopSignal(_) => "STOPSIGNAL",
            Op::Healthcheck(_) => "HEALTHCHECK",
            Op::Onbuild(_) => "ONBUILD",
            Op::Maintainer(_) => "MAINTAINER",
            Op::LinkLayers { .. } => "LAYER",
        }
    }
}

/// `RUN`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOp {
    /// Heredocs are already folded in: a lone `<<EOF` body is the script itself.
    pub command: CommandLine,
    pub mounts: Vec<RunMount>,
    pub network: Network,
    /// Left out of the JSON dump when it is the default, so older goldens stay as they are.
    #[serde(skip_serializing_if = "Security::is_sandbox")]
    pub security: Security,
    /// `RUN <<NAME` alone: the command is that heredoc's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heredoc: Option<RunHeredoc>,
}

/// A heredoc that is a RUN's whole command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RunHeredoc {
    pub name: String,
    /// The body starts with `#!`: as BuildKit does, it is written to
    /// `/dev/pipes/NAME` (mode 0755) and the shell runs that file, so the
    /// kernel hands it to the interpreter the first line names.
    pub executable: bool,
}

impl RunHeredoc {
    /// Where an executable body is mounted in the sandbox.
    pub fn path(&self) -> String {
        format!("/dev/pipes/{}", self.name)
    }
}

/// `RUN --security=…`: `insecure` (BuildKit's name) runs the step without the
/// sandbox's confinement, and only when the build allows `security.insecure`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

impl Security {
    /// The default: confined like a Docker container.
    pub fn is_sandbox(&self) -> bool {
        *self == Security::Sandbox
    }
}

/// `RUN --network=…`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    #[default]
    Default,
    Host,
    None,
}

/// `RUN --mount=…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMount {
    /// Persistent across builds, shared by `id` (default: the target path).
    Cache {
        id: String,
        target: String,
        readonly: bool,
        /// Left out of the JSON dump when shared (the default), so older goldens stay as they are.
        #[serde(skip_serializing_if = "Sharing::is_shared")]
        sharing: Sharing,
        #[serde(skip_serializing_if = "MountFile::is_unset")]
        file: MountFile,
    },
    /// A path from a stage, an image or the context (`from` = None), read-only unless `rw`.
    Bind { from: Option<CopyFrom>, source: String, target: String, rw: bool },
    /// A secret given with `--secret id=…,src=…`; never part of a layer or a cache key.
    Secret {
        id: String,
        /// None when the secret is only given as `env`.
        target: Option<String>,
        /// `env=NAME`: the secret's content is the command's variable NAME.
        #[serde(skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        required: bool,
        #[serde(skip_serializing_if = "MountFile::is_unset")]
        file: MountFile,
    },
    /// An SSH agent given with `--ssh id=…`, as a socket at `target` (by
    /// default `/run/buildkit/ssh_agent.N`, N counting the step's SSH
    /// mounts) named by `SSH_AUTH_SOCK`; never part of a layer or a cache key.
    Ssh {
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        required: bool,
        #[serde(skip_serializing_if = "MountFile::is_unset")]
        file: MountFile,
    },
    Tmpfs {
        target: String,
        /// `size=`: at most this many bytes (the kernel's default, half of RAM, when unset).
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// Options naming a variable (`target=$DIR`): as BuildKit, expanded with
    /// the stage's ENV and build args when the step runs, then read by
    /// [`parse_mount`]. `from=` is never expanded, so it is resolved already.
    Unexpanded { fields: Vec<(String, Option<Word>)>, from: Option<CopyFrom> },
}

impl RunMount {
    /// The stage or image a bind mount reads (`from=`).
    pub fn from(&self) -> Option<&CopyFrom> {
        match self {
            RunMount::Bind { from, .. } | RunMount::Unexpanded { from, .. } => from.as_ref(),
            _ => None,
        }
    }
}

/// A cache mount's `sharing=`, as BuildKit: steps running at once use one
/// folder (shared), take turns (locked), or each get a folder of their own (private).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

impl Sharing {
    /// The default.
    pub fn is_shared(&self) -> bool {
        *self == Sharing::Shared
    }
}

/// `mode=`, `uid=`, `gid=` of a cache mount's folder or a secret's file;
/// unset, BuildKit's defaults (0755 for a cache, 0400 for a secret; root).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct MountFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl MountFile {
    /// No option given.
    pub fn is_unset(&self) -> bool {
        *self == MountFile::default()
    }
}

/// Where `COPY --from` / `--mount from=` reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFrom {
    Stage(StageId),
    Image(ImageName),
}

/// `COPY` or `ADD`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CopyOp {
    /// ADD semantics: local tar archives are extracted.
    pub add: bool,
    pub from: Option<CopyFrom>,
    pub sources: Vec<CopySource>,
    pub dest: Word,
    pub chown: Option<Word>,
    pub chmod: Option<Word>,
    pub link: bool,
    /// ADD `--checksum=sha256:…`: the digest a downloaded file (or the commit a git source) must have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Word>,
    /// ADD `--keep-git-dir`: a git source keeps its `.git` folder.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_git_dir: bool,
    /// COPY `--parents`: each source keeps its path (after a `/./` in it) under the destination.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
    /// `--exclude` patterns (`.dockerignore` syntax), matched below each source.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Word>,
    /// ADD `--unpack`: extract (or, when false, keep whole) an archive; by
    /// default a local one is extracted and a downloaded one is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
}

/// An ADD `--checksum` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// `sha256:<64 hex>`: the digest a downloaded file must have.
    Sha256(crate::oci::Digest),
    /// Hex digits: the commit (or a prefix of it) a git source must resolve to.
    Commit(String),
}

/// Reads an ADD `--checksum`: `sha256:<64 hex digits>`, or a git commit's
/// hex digits. The error says what is wrong; the caller names the value.
pub fn parse_checksum(text: &str) -> Result<Checksum, String> {
    match text.split_once(':') {
        Some(("sha256", _)) => text.parse().map(Checksum::Sha256).map_err(|_| "expected sha256:<64 hex digits>".to_string()),
        Some((algorithm, _)) => Err(format!("unsupported digest algorithm {algorithm:?} (expected sha256)")),
        None if !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Checksum::Commit(text.to_ascii_lowercase()))
        }
        None => Err("expected sha256:<64 hex digits>, or a git commit".to_string()),
    }
}

/// One source of a COPY/ADD.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySource {
    /// A path or wildcard pattern in the context or the `--from` stage.
    Path(Word),
    /// A heredoc: a file named `name` holding `content`.
    Inline { name: String, content: Word },
}

/// `HEALTHCHECK`, as Docker stores it (durations in nanoseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u64>,
}

/// A graph that cannot be built as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("target stage {name:?} not found{}", suggestion(.did_you_mean))]
    UnknownTarget { name: String, did_you_mean: Option<String> },
    #[error("stages form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

fn suggestion(did_you_mean: &Option<String>) -> String {
    did_you_mean.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
}

/// The closest of `candidates` to `name`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

impl BuildGraph {
    /// The display name of a stage: its name, else its index.
    pub fn stage_label(&self, id: StageId) -> String {
        match &self.stages[id.0].name {
            Some(name) => name.to_string(),
            None => id.0.to_string(),
        }
    }

    /// Finds a stage by name or index, as `--target` and `COPY --from` accept.
    pub fn find_stage(&self, name: &str) -> Option<StageId> {
        find_stage(self.stages.iter().map(|s| s.name.as_ref()), name)
    }

    /// The stages the build must produce for `target` (a stage or image name),
    /// or every image (else the last stage) when no target is given.
    pub fn roots(&self, target: Option<&str>) -> Result<Vec<StageId>, GraphError> {
        match target {
            Some(name) => {
                let by_image = self.images.iter().find(|image| image.tags.iter().any(|t| t == name || t.split(':').next() == Some(name)));
                if let Some(image) = by_image {
                    return Ok(vec![image.stage]);
                }
                self.find_stage(name).map(|id| vec![id]).ok_or_else(|| {
                    let names = self.stages.iter().filter_map(|s| s.name.as_ref().map(StageName::as_str));
                    GraphError::UnknownTarget { name: name.to_string(), did_you_mean: did_you_mean(name, names) }
                })
            }
            None if !self.images.is_empty() => Ok(self.images.iter().map(|image| image.stage).collect()),
            None => Ok(self.stages.len().checked_sub(1).map(StageId).into_iter().collect()),
        }
    }

    /// The stages `id` needs finished before it can start.
    pub fn dependencies(&self, id: StageId) -> BTreeSet<StageId> {
        let stage = &self.stages[id.0];
        let mut deps = BTreeSet::new();
        if let Base::Stage(base) = stage.base {
            deps.insert(base);
        }
        for step in &stage.steps {
            match &step.op {
                Op::Copy(CopyOp { from: Some(CopyFrom::Stage(from)), .. }) => {
                    deps.insert(*from);
                }
                Op::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(CopyFrom::Stage(from)) = mount.from() {
                            deps.insert(*from);
                        }
                    }
                }
                Op::LinkLayers { stage, .. } => {
                    deps.insert(*stage);
                }
                _ => {}
            }
        }
        deps
    }

    /// Every stage reachable from `roots`, checked for cycles, in an order
    /// where each stage comes after what it depends on.
    pub fn plan(&self, roots: &[StageId]) -> Result<Vec<StageId>, GraphError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        fn visit(
            graph: &BuildGraph,
            id: StageId,
            marks: &mut [Mark],
            path: &mut Vec<StageId>,
            order: &mut Vec<StageId>,
        ) -> Result<(), GraphError> {
            match marks[id.0] {
                Mark::Done => return Ok(()),
                Mark::Active => {
                    let start = path.iter().position(|p| *p == id).unwrap_or(0);
                    let mut cycle: Vec<String> = path[start..].iter().map(|s| graph.stage_label(*s)).collect();
                    cycle.push(graph.stage_label(id));
                    return Err(GraphError::Cycle(cycle));
                }
                Mark::New => {}
            }
            marks[id.0] = Mark::Active;
            path.push(id);
            for dep in graph.dependencies(id) {
                visit(graph, dep, marks, path, order)?;
            }
            path.pop();
            marks[id.0] = Mark::Done;
            order.push(id);
            Ok(())
        }
        let mut marks = vec![Mark::New; self.stages.len()];
        let mut order = Vec::new();
        for root in roots {
            visit(self, *root, &mut marks, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    /// Checks the whole graph for cycles, whatever the target.
    pub fn check(&self) -> Result<(), GraphError> {
        let all: Vec<StageId> = (0..self.stages.len()).map(StageId).collect();
        self.plan(&all).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, base: Base, steps: Vec<Op>) -> Stage {
        Stage {
            name: Some(StageName::new(name)),
            base,
            platform: None,
            steps: steps.into_iter().map(|op| Step { op, origin: Origin::default(), comments: vec![] }).collect(),
            hidden: false,
            origin: Origin::default(),
        }
    }

    fn copy_from(id: usize) -> Op {
        Op::Copy(CopyOp {
            add: false,
            from: Some(CopyFrom::Stage(StageId(id))),
            sources: vec![CopySource::Path(Word::lit("/x"))],
            dest: Word::lit("/x"),
            chown: None,
            chmod: None,
            link: false,
            checksum: None,
            keep_git_dir: false,
            parents: false,
            exclude: Vec::new(),
            unpack: None,
        })
    }

    #[test]
    fn plan_keeps_only_reachable_stages_in_dependency_order() {
        let graph = BuildGraph {
            stages: vec![
                stage("a", Base::Scratch, vec![]),
                stage("unused", Base::Scratch, vec![]),
                stage("b", Base::Stage(StageId(0)), vec![]),
                stage("c", Base::Scratch, vec![copy_from(2)]),
            ],
            ..Default::default()
        };
        let roots = graph.roots(None).unwrap();
        assert_eq!(graph.plan(&roots).unwrap(), vec![StageId(0), StageId(2), StageId(3)]);
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let graph = BuildGraph {
            stages: vec![stage("a", Base::Scratch, vec![copy_from(1)]), stage("b", Base::Scratch, vec![copy_from(0)])],
            ..Default::default()
        };
        assert_eq!(graph.check(), Err(GraphError::Cycle(vec!["a".into(), "b".into(), "a".into()])));
    }

    #[test]
    fn unknown_target_suggests_the_closest_stage() {
        let graph = BuildGraph { stages: vec![stage("builder", Base::Scratch, vec![])], ..Default::default() };
        assert_eq!(
            graph.roots(Some("bulder")),
            Err(GraphError::UnknownTarget { name: "bulder".into(), did_you_mean: Some("builder".into()) })
        );
    }
}
