//! Instructions to graph: one parse function per instruction, each turning a
//! `Line` into an `Op` (or a stage), collecting every error with its span.
//! Passes: collect stages, then lower each instruction with stage names known.

use std::sync::Arc;

use miette::SourceSpan;

use super::lexer::{self, LexError};
use super::parser::{Flag, Line, Parsed};
use crate::frontend::BuildArgs;
use crate::frontend::diagnostic::SourceError;
use crate::graph::args::GlobalArgs;
use crate::graph::{
    ArgDecl, Base, BuildGraph, CommandLine, CopyFrom, CopyOp, CopySource, Healthcheck, ImageName, Network, Op, Origin, RunHeredoc,
    RunMount, RunOp, Security, Stage, StageId, StageName, Step, Word, did_you_mean, find_stage, mount_fields, parse_mount,
};

/// Every instruction Docker knows.
pub const KEYWORDS: [&str; 18] = [
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

pub struct Lowerer<'a> {
    file: Arc<str>,
    escape: char,
    build_args: &'a BuildArgs,
    pub errors: Vec<SourceError>,
    /// Stage names in order (None for unnamed), known before any step is lowered.
    stage_names: Vec<Option<StageName>>,
    /// The global ARGs declared so far, valued.
    globals: GlobalArgs<'a>,
    /// The index of the stage being lowered.
    stage_index: usize,
    /// Lowering an ONBUILD trigger: it runs in another build, so `--from`
    /// names an image there, never a stage of this file.
    trigger: bool,
}

/// Flags that may be given without a value (`--link` is `--link=true`).
const SWITCHES: [&str; 4] = ["link", "keep-git-dir", "parents", "unpack"];

/// Whether a flag has the value it needs; one that has not is reported once, by `check_flags`.
fn has_value(flag: &Flag) -> bool {
    match flag.value.as_deref() {
        None => SWITCHES.contains(&flag.name.as_str()),
        Some(value) => !value.is_empty(),
    }
}

fn span(offset: usize, len: usize) -> Option<SourceSpan> {
    Some((offset, len.max(1)).into())
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// A JSON array of strings (exec form), if `args` is one.
pub fn json_args(args: &str) -> Option<Vec<String>> {
    let trimmed = args.trim();
    if !trimmed.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(trimmed).ok()
}

impl<'a> Lowerer<'a> {
    pub fn new(file: &str, escape: char, build_args: &'a BuildArgs) -> Self {
        Lowerer {
            file: file.into(),
            escape,
            build_args,
            errors: Vec::new(),
            stage_names: Vec::new(),
            globals: GlobalArgs::empty(build_args),
            stage_index: 0,
            trigger: false,
        }
    }

    /// Lowers the one instruction of an ONBUILD trigger; `--from` values are images.
    pub fn lower_trigger(mut self, parsed: &Parsed) -> (Option<Op>, Vec<SourceError>) {
        self.trigger = true;
        let op = match parsed.lines.as_slice() {
            [line] => self.trigger_keyword(line).and_then(|keyword| self.instruction(line, &keyword)),
            [] => {
                self.errors.push(SourceError::new("the ONBUILD trigger is empty", span(0, 0), "no instruction"));
                None
            }
            [_, second, ..] => {
                self.error(second, "an ONBUILD trigger is one instruction", "a second instruction");
                None
            }
        };
        (op, self.errors)
    }

    /// The upper-case keyword of `line` if it is an instruction, else an error with a suggestion.
    fn keyword(&mut self, line: &Line) -> Option<String> {
        let keyword = line.keyword.to_ascii_uppercase();
        if KEYWORDS.contains(&keyword.as_str()) {
            return Some(keyword);
        }
        let help = did_you_mean(&keyword, KEYWORDS).map(|s| format!("did you mean {s}?"));
        let e =
            SourceError::new(format!("unknown instruction: {}", line.keyword), span(line.offset, line.keyword.len()), "not an instruction");
        self.errors.push(SourceError { help, ..e });
        None
    }

    /// The keyword of a trigger, refusing those Docker refuses after ONBUILD.
    fn trigger_keyword(&mut self, line: &Line) -> Option<String> {
        let keyword = self.keyword(line)?;
        if matches!(keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
            self.error(line, format!("ONBUILD cannot trigger {keyword}"), "not allowed");
            return None;
        }
        Some(keyword)
    }

    /// An error at the instruction's keyword.
    fn error(&mut self, line: &Line, message: impl Into<String>, label: &str) {
        self.errors.push(SourceError::new(message, span(line.offset, line.keyword.len()), label));
    }

    fn args_error(&mut self, line: &Line, message: impl Into<String>, label: &str, help: Option<String>) {
        let len = line.args.len();
        let mut e = SourceError::new(message, span(line.args_offset(0), len), label);
        e.help = help;
        self.errors.push(e);
    }

    fn lex_error(&mut self, line: &Line, e: LexError) {
        let offset = line.args_offset(e.offset.min(line.args.len()));
        self.errors.push(SourceError::new(e.message, span(offset, 1), "here"));
    }

    fn words(&mut self, line: &Line, text: &str) -> Vec<Word> {
        match lexer::words(text, self.escape) {
            Ok(w) => w,
            Err(e) => {
                self.lex_error(line, e);
                Vec::new()
            }
        }
    }

    /// The arguments split on blanks only, each then read as one word, as
    /// BuildKit reads EXPOSE and VOLUME: `"/a b"` is two words, both unterminated.
    fn blank_separated_words(&mut self, line: &Line) -> Vec<Word> {
        line.args.split_whitespace().map(|raw| self.word(line, raw)).collect()
    }

    fn word(&mut self, line: &Line, text: &str) -> Word {
        match lexer::single_word(text, self.escape) {
            Ok(w) => w,
            Err(e) => {
                self.lex_error(line, e);
                Word::default()
            }
        }
    }

    /// The value of a global build arg for expansion at lowering (FROM, --from).
    fn global(&self, name: &str) -> Option<String> {
        self.globals.get(name)
    }

    fn expand_global(&mut self, line: &Line, text: &str) -> String {
        let word = self.word(line, text);
        self.expand_word(line, &word)
    }

    /// Expands `word` now with the global args; a failure is an error at the arguments.
    fn expand_word(&mut self, line: &Line, word: &Word) -> String {
        match word.expand(&|n| self.global(n)) {
            Ok(text) => text,
            Err(e) => {
                self.args_error(line, format!("failed to expand {word}: {e}"), "here", None);
                String::new()
            }
        }
    }

    fn check_flags(&mut self, line: &Line, allowed: &[&str]) {
        for flag in &line.flags {
            if !allowed.contains(&flag.name.as_str()) {
                let help = match did_you_mean(&flag.name, allowed.iter().copied()) {
                    Some(s) => Some(format!("did you mean --{s}?")),
                    None if allowed.is_empty() => Some(format!("{} takes no flags", line.keyword.to_uppercase())),
                    None => Some(format!(
                        "{} takes {}",
                        line.keyword.to_uppercase(),
                        allowed.iter().map(|a| format!("--{a}")).collect::<Vec<_>>().join(", ")
                    )),
                };
                let mut e = SourceError::new(
                    format!("unknown flag --{} for {}", flag.name, line.keyword.to_uppercase()),
                    span(flag.offset, flag.name.len() + 2),
                    "unknown flag",
                );
                e.help = help;
                self.errors.push(e);
            } else if !has_value(flag) {
                let e = SourceError::new(format!("--{} needs a value", flag.name), span(flag.offset, flag.name.len() + 2), "no value");
                self.errors.push(e.help(format!("write --{}=<value>", flag.name)));
            }
        }
    }

    fn flag<'l>(line: &'l Line, name: &str) -> Option<&'l Flag> {
        line.flags.iter().rev().find(|f| f.name == name && has_value(f))
    }

    fn bool_flag(&mut self, line: &Line, name: &str) -> bool {
        match Self::flag(line, name).map(|f| f.value.as_deref()) {
            None => false,
            Some(None | Some("true")) => true,
            Some(Some("false")) => false,
            Some(Some(other)) => {
                let offset = Self::flag(line, name).map_or(line.offset, |f| f.offset);
                self.errors.push(SourceError::new(
                    format!("--{name}={other}: expected true or false"),
                    span(offset, name.len() + 2),
                    "here",
                ));
                false
            }
        }
    }

    /// A `--from=` of COPY (`flag` is `from`) or of a RUN mount (`mount`): a
    /// stage defined before this one, by name or index, else an image; none
    /// when it is neither (the error is recorded).
    fn stage_ref(&mut self, line: &Line, flag: &Flag, value: &str) -> Option<CopyFrom> {
        let flag_span = span(flag.offset, flag.name.len() + 2 + flag.value.as_deref().map_or(0, |v| v.len() + 1));
        // As BuildKit: a stage reference is taken as written, never expanded.
        let Some(value) = self.word(line, value).as_literal() else {
            let e = SourceError::new(format!("variables are not expanded in from={value}"), flag_span, "a variable");
            self.errors.push(e.help("define a stage with FROM (a global ARG may name its image) and name that stage"));
            return None;
        };
        if !self.trigger {
            if let Some(StageId(i)) = find_stage(self.stage_names.iter().map(Option::as_ref), &value) {
                if i > self.stage_index {
                    let verb = if flag.name == "from" { "copy from" } else { "mount" };
                    let e = SourceError::new(
                        format!("cannot {verb} stage {value:?}: it is defined after the current stage"),
                        flag_span,
                        "a later stage",
                    );
                    self.errors.push(e.help("a stage can only use the stages written before it"));
                }
                return Some(CopyFrom::Stage(StageId(i)));
            }
            if let Ok(i) = value.parse::<usize>() {
                self.errors.push(SourceError::new(
                    format!("stage index {i} does not exist (the file has {} stages)", self.stage_names.len()),
                    span(flag.offset, flag.name.len() + 2),
                    "here",
                ));
                return None;
            }
            let names: Vec<&str> = self.stage_names.iter().flatten().map(StageName::as_str).collect();
            if !value.contains([':', '/', '.', '@'])
                && let Some(s) = did_you_mean(&value, names)
            {
                let mut e = SourceError::new(
                    format!("unknown stage {value:?}"),
                    span(flag.offset, flag.name.len() + 3 + value.len()),
                    "no stage has this name",
                );
                e.help = Some(format!("did you mean {s:?}?"));
                self.errors.push(e);
                return None;
            }
        }
        match ImageName::parse(&value) {
            Ok(image) => Some(CopyFrom::Image(image)),
            Err(e) => {
                self.errors.push(SourceError::new(e.to_string(), flag_span, "neither a stage nor an image"));
                None
            }
        }
    }

    /// Lowers the whole file.
    pub fn lower(mut self, parsed: &Parsed) -> (BuildGraph, Vec<SourceError>) {
        let mut graph = BuildGraph::default();
        // Pass 1: stage names, so that naming a later stage is an error, not an image.
        for line in &parsed.lines {
            if line.keyword.eq_ignore_ascii_case("FROM") {
                let words = lexer::raw_words(&line.args, self.escape);
                let name = match words.as_slice() {
                    [_, (_, as_kw), (_, name)] if as_kw.eq_ignore_ascii_case("as") => Some(StageName::new(name.to_lowercase())),
                    _ => None,
                };
                self.stage_names.push(name);
            }
        }
        if parsed.lines.is_empty() {
            self.errors
                .push(SourceError::new("the Dockerfile has no instructions", span(0, 0), "empty").help("a Dockerfile starts with FROM"));
        }
        let mut current: Option<Stage> = None;
        for line in &parsed.lines {
            let Some(keyword) = self.keyword(line) else { continue };
            let origin = Origin { file: self.file.clone(), line: line.line };
            if keyword == "FROM" {
                if let Some(stage) = current.take() {
                    graph.stages.push(stage);
                }
                self.stage_index = graph.stages.len();
                current = Some(self.from(line, self.stage_index, origin));
                continue;
            }
            if keyword == "ARG" && current.is_none() {
                let decls = self.arg(line);
                // As BuildKit: a default is expanded where it is declared, unless a build arg replaces it.
                for decl in &decls {
                    if let Err(e) = self.globals.declare(decl) {
                        let default = decl.default.as_ref().map(Word::to_string).unwrap_or_default();
                        self.args_error(line, format!("failed to expand {default}: {e}"), "here", None);
                    }
                }
                graph.args.extend(decls);
                continue;
            }
            let Some(stage) = current.as_mut() else {
                let e =
                    SourceError::new(format!("{keyword} before the first FROM"), span(line.offset, line.keyword.len()), "needs a stage");
                self.errors.push(e.help("only ARG may come before FROM"));
                continue;
            };
            if let Some(op) = self.instruction(line, &keyword) {
                stage.steps.push(Step { op, origin, comments: line.comments.clone() });
            }
        }
        if let Some(stage) = current.take() {
            graph.stages.push(stage);
        } else if !parsed.lines.is_empty() && self.errors.is_empty() {
            self.errors.push(
                SourceError::new("the Dockerfile has no FROM instruction", span(0, 0), "no stage")
                    .help("a build starts with FROM an image, a stage or scratch"),
            );
        }
        (graph, self.errors)
    }

    fn from(&mut self, line: &Line, index: usize, origin: Origin) -> Stage {
        self.check_flags(line, &["platform"]);
        let platform = Self::flag(line, "platform").and_then(|f| f.value.clone()).map(|v| Word::lit(self.expand_global(line, &v)));
        let words = lexer::raw_words(&line.args, self.escape);
        let (image, name) = match words.as_slice() {
            [(_, image)] => (image.clone(), None),
            [(_, image), (_, as_kw), (offset, name)] if as_kw.eq_ignore_ascii_case("as") => {
                if !valid_stage_name(&name.to_lowercase()) {
                    let mut e =
                        SourceError::new(format!("invalid stage name {name:?}"), span(line.args_offset(*offset), name.len()), "here");
                    e.help = Some("stage names start with a letter and hold lowercase letters, digits, '-', '_' and '.'".into());
                    self.errors.push(e);
                }
                let lower = name.to_lowercase();
                if self.stage_names[..index].iter().flatten().any(|n| n.is(&lower)) {
                    self.errors.push(SourceError::new(
                        format!("duplicate stage name {name:?}"),
                        span(line.args_offset(*offset), name.len()),
                        "already used",
                    ));
                }
                (image.clone(), Some(StageName::new(lower)))
            }
            [] => {
                self.error(line, "FROM needs an image: FROM <image> [AS <name>]", "missing image");
                (String::new(), None)
            }
            _ => {
                self.args_error(
                    line,
                    "FROM takes an image and optionally AS <name>",
                    "unexpected words",
                    Some("FROM <image> [AS <name>]".into()),
                );
                (words[0].1.clone(), None)
            }
        };
        let written = image;
        let image = self.expand_global(line, &written);
        if image.is_empty() && !written.is_empty() {
            self.args_error(
                line,
                format!("FROM {written} names no image: it expands to an empty string"),
                "empty after expansion",
                Some("give the ARG a default before FROM, or pass --build-arg".into()),
            );
        }
        let base = if image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else if let Some(i) = self.stage_names[..index].iter().position(|n| n.as_ref().is_some_and(|n| n.is(&image))) {
            Base::Stage(StageId(i))
        } else {
            match ImageName::parse(&image) {
                Ok(image) => Base::Image(image),
                // An empty name was reported above; either way the graph is refused.
                Err(e) => {
                    if !image.is_empty() {
                        self.args_error(line, e.to_string(), "not an image reference", None);
                    }
                    Base::Scratch
                }
            }
        };
        Stage { name, base, platform, steps: Vec::new(), hidden: false, origin }
    }

    fn arg(&mut self, line: &Line) -> Vec<ArgDecl> {
        self.check_flags(line, &[]);
        let words = lexer::raw_words(&line.args, self.escape);
        if words.is_empty() {
            self.error(line, "ARG needs a name: ARG <name>[=<default>]", "missing name");
        }
        words
            .into_iter()
            .map(|(_, raw)| match lexer::split_assignment(&raw) {
                Some((name, value)) => ArgDecl { name: name.to_string(), default: Some(self.word(line, value)) },
                None => ArgDecl { name: raw, default: None },
            })
            .collect()
    }

    /// `K=V …` pairs, or the legacy `K V` form; (key, value) words.
    fn pairs(&mut self, line: &Line, what: &str) -> Vec<(Word, Word)> {
        let words = lexer::raw_words(&line.args, self.escape);
        if words.is_empty() {
            self.error(line, format!("{what} needs at least one key and value"), "missing arguments");
            return Vec::new();
        }
        if lexer::split_assignment(&words[0].1).is_none() && !words[0].1.starts_with('"') {
            // Legacy form: the first word is the key, the rest of the line the value.
            let key = words[0].1.clone();
            let rest = line.args[words[0].0 + key.len()..].trim();
            if rest.is_empty() {
                self.args_error(line, format!("{what} {key} has no value"), "missing value", Some(format!("write {what} {key}=<value>")));
                return Vec::new();
            }
            return vec![(Word::lit(key), self.word(line, rest))];
        }
        let mut out = Vec::new();
        for (offset, raw) in words {
            let split = split_unquoted_eq(&raw);
            match split {
                Some((key, value)) if !key.is_empty() => {
                    let key = self.word(line, key);
                    out.push((key, self.word(line, value)));
                }
                _ => {
                    let mut e = SourceError::new(
                        format!("{what}: {raw:?} is not KEY=VALUE"),
                        span(line.args_offset(offset), raw.len()),
                        "expected KEY=VALUE",
                    );
                    e.help = Some(format!("write {what} KEY=VALUE [KEY=VALUE…]"));
                    self.errors.push(e);
                }
            }
        }
        out
    }

    fn command(&mut self, line: &Line) -> CommandLine {
        match json_args(&line.args) {
            Some(args) => CommandLine::Exec(args),
            None => CommandLine::Shell(line.args.clone()),
        }
    }

    fn instruction(&mut self, line: &Line, keyword: &str) -> Option<Op> {
        let json_form = matches!(keyword, "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" | "COPY" | "ADD" | "VOLUME");
        if json_form && json_non_strings(&line.args) {
            self.args_error(line, "when using JSON array syntax, arrays must be comprised of strings only", "not all strings", None);
            return None;
        }
        let no_flags = !matches!(keyword, "RUN" | "COPY" | "ADD" | "HEALTHCHECK");
        if no_flags {
            self.check_flags(line, &[]);
        }
        let needs_args = !matches!(keyword, "CMD" | "ENTRYPOINT");
        if needs_args && line.args.trim().is_empty() && line.heredocs.is_empty() {
            self.error(line, format!("{keyword} needs arguments"), "missing arguments");
            return None;
        }
        Some(match keyword {
            "RUN" => Op::Run(self.run(line)),
            "COPY" | "ADD" => Op::Copy(self.copy(line, keyword == "ADD")?),
            "ENV" => {
                let pairs = self.pairs(line, "ENV");
                let mut out = Vec::new();
                for (k, v) in pairs {
                    match k.as_literal() {
                        Some(k) if !k.is_empty() => out.push((k, v)),
                        _ => self.args_error(line, "ENV names must be plain, non-empty names", "here", None),
                    }
                }
                Op::Env(out)
            }
            "ARG" => Op::Arg(self.arg(line)),
            "LABEL" => Op::Label(self.pairs(line, "LABEL")),
            "MAINTAINER" => Op::Maintainer(line.args.clone()),
            "EXPOSE" => Op::Expose(self.blank_separated_words(line)),
            "VOLUME" => Op::Volume(match json_args(&line.args) {
                Some(paths) => paths.into_iter().map(Word::lit).collect(),
                None => self.blank_separated_words(line),
            }),
            "USER" => {
                let words = self.words(line, &line.args);
                if words.len() != 1 {
                    self.args_error(line, "USER takes one user[:group]", "here", None);
                }
                Op::User(words.into_iter().next().unwrap_or_default())
            }
            "WORKDIR" => Op::Workdir(self.word(line, &line.args)),
            "CMD" => Op::Cmd(self.command(line)),
            "ENTRYPOINT" => Op::Entrypoint(self.command(line)),
            "SHELL" => match json_args(&line.args) {
                Some(shell) if !shell.is_empty() => Op::Shell(shell),
                _ => {
                    self.args_error(
                        line,
                        "SHELL must be a JSON array of strings",
                        "not a JSON array",
                        Some("SHELL [\"/bin/bash\", \"-c\"]".into()),
                    );
                    return None;
                }
            },
            "STOPSIGNAL" => Op::StopSignal(self.word(line, &line.args)),
            "HEALTHCHECK" => Op::Healthcheck(self.healthcheck(line)?),
            "ONBUILD" => {
                // As BuildKit stores it: the instruction, then each heredoc's body and terminator.
                let mut trigger = line.args.trim().to_string();
                for doc in &line.heredocs {
                    trigger.push('\n');
                    trigger.push_str(&doc.body);
                    trigger.push_str(&doc.name);
                }
                // Checked now, as Docker does, though it runs in another build.
                let (parsed, mut errors) = super::parser::parse(&trigger);
                let (_, lower_errors) = Lowerer::new(&self.file, self.escape, self.build_args).lower_trigger(&parsed);
                errors.extend(lower_errors);
                let failed = !errors.is_empty();
                for mut e in errors {
                    // A problem inside a heredoc body is shown at the end of the arguments.
                    e.span = e.span.map(|s| (line.args_offset(s.offset().min(line.args.len())), s.len().min(line.args.len())).into());
                    self.errors.push(e);
                }
                if failed {
                    return None;
                }
                Op::Onbuild(trigger)
            }
            _ => return None,
        })
    }

    fn run(&mut self, line: &Line) -> RunOp {
        self.check_flags(line, &["mount", "network", "security"]);
        let mut mounts = Vec::new();
        for flag in line.flags.iter().filter(|f| f.name == "mount" && has_value(f)) {
            let fields = mount_fields(flag.value.as_deref().unwrap_or_default());
            // As BuildKit: every value but from= may name a variable of the stage, read when the step runs.
            let words: Vec<(String, Option<Word>)> = fields
                .iter()
                .map(|(key, value)| (key.clone(), value.as_ref().filter(|_| key != "from").map(|v| self.word(line, v))))
                .collect();
            if words.iter().any(|(_, word)| word.as_ref().is_some_and(|w| w.as_literal().is_none())) {
                let from = fields.iter().rev().find(|(key, _)| key == "from").and_then(|(_, v)| v.as_ref());
                let from = from.and_then(|from| self.stage_ref(line, flag, from));
                let fields = words
                    .into_iter()
                    .zip(&fields)
                    .map(|((key, word), (_, raw))| (key, word.or_else(|| raw.as_deref().map(Word::lit))))
                    .collect();
                mounts.push(RunMount::Unexpanded { fields, from });
                continue;
            }
            match parse_mount(&fields) {
                Ok((mount, from)) => {
                    let mount = match (mount, from) {
                        (RunMount::Bind { source, target, rw, .. }, Some(from)) => {
                            let from = self.stage_ref(line, flag, &from);
                            RunMount::Bind { from, source, target, rw }
                        }
                        // Checked as BuildKit checks every from=, though only a bind mount reads it here.
                        (m, Some(from)) => {
                            self.stage_ref(line, flag, &from);
                            m
                        }
                        (m, None) => m,
                    };
                    mounts.push(mount);
                }
                Err(message) => self.errors.push(SourceError::new(
                    format!("--mount: {message}"),
                    span(flag.offset, 8 + flag.value.as_deref().map_or(0, str::len)),
                    "bad mount",
                )),
            }
        }
        let network = match Self::flag(line, "network").map(|f| f.value.clone().unwrap_or_default()) {
            None => Network::Default,
            Some(v) if v == "default" => Network::Default,
            Some(v) if v == "host" => Network::Host,
            Some(v) if v == "none" => Network::None,
            Some(v) => {
                let offset = Self::flag(line, "network").map_or(line.offset, |f| f.offset);
                self.errors.push(SourceError::new(
                    format!("--network={v}: expected default, none or host"),
                    span(offset, 10 + v.len()),
                    "here",
                ));
                Network::Default
            }
        };
        let security = match Self::flag(line, "security").map(|f| (f.offset, f.value.clone().unwrap_or_default())) {
            None => Security::Sandbox,
            Some((_, v)) if v == "sandbox" => Security::Sandbox,
            Some((_, v)) if v == "insecure" => Security::Insecure,
            Some((offset, v)) => {
                self.errors.push(SourceError::new(
                    format!("--security={v}: expected sandbox or insecure"),
                    span(offset, 11 + v.len()),
                    "here",
                ));
                Security::Sandbox
            }
        };
        let (command, heredoc) = match json_args(&line.args) {
            Some(args) if line.heredocs.is_empty() => (CommandLine::Exec(args), None),
            _ => {
                let (script, heredoc) = fold_heredocs(&line.args, &line.heredocs);
                (CommandLine::Shell(script), heredoc)
            }
        };
        RunOp { command, mounts, network, security, heredoc }
    }

    fn copy(&mut self, line: &Line, add: bool) -> Option<CopyOp> {
        let allowed: &[&str] = if add {
            &["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude", "unpack"]
        } else {
            &["from", "chown", "chmod", "link", "parents", "exclude"]
        };
        self.check_flags(line, allowed);
        let keyword = if add { "ADD" } else { "COPY" };
        let raw: Vec<String> = match json_args(&line.args) {
            Some(args) => args.into_iter().map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))).collect(),
            // As BuildKit: split on blanks only (see `blank_separated_words`).
            None => line.args.split_whitespace().map(str::to_string).collect(),
        };
        if raw.len() < 2 {
            self.args_error(
                line,
                format!("{keyword} needs a source and a destination"),
                "missing arguments",
                Some(format!("{keyword} <src>… <dest>")),
            );
            return None;
        }
        let mut sources = Vec::new();
        let mut heredocs = line.heredocs.iter();
        for word in &raw[..raw.len() - 1] {
            if word.starts_with("<<")
                && let Some(doc) = heredocs.next()
            {
                let content = match doc.quoted {
                    true => Word::lit(doc.body.clone()),
                    false => lexer::heredoc_word(&doc.body).unwrap_or_else(|e| {
                        self.error(line, format!("heredoc <<{}: {}", doc.name, e.message), "in this instruction's heredoc");
                        Word::default()
                    }),
                };
                sources.push(CopySource::Inline { name: doc.name.clone(), content });
                continue;
            }
            if !add && (word.starts_with("http://") || word.starts_with("https://") || word.starts_with("git@")) {
                self.args_error(
                    line,
                    format!("COPY from a URL ({word}) is not supported"),
                    "a URL",
                    Some("ADD fetches URLs and git repositories".into()),
                );
                continue;
            }
            sources.push(CopySource::Path(self.word(line, word)));
        }
        let dest = self.word(line, &raw[raw.len() - 1]);
        let from = match Self::flag(line, "from") {
            Some(f) => {
                let value = f.value.clone().unwrap_or_default();
                let f = f.clone();
                self.stage_ref(line, &f, &value)
            }
            None => None,
        };
        let chown = Self::flag(line, "chown").and_then(|f| f.value.clone()).map(|v| self.word(line, &v));
        let chmod = Self::flag(line, "chmod").and_then(|f| f.value.clone().map(|v| (f.offset, v))).map(|(offset, v)| {
            let word = self.word(line, &v);
            if word.as_literal().is_some_and(|text| crate::graph::parse_mode(&text).is_none()) {
                self.errors.push(
                    SourceError::new(format!("--chmod={v}: not a mode"), span(offset, 8 + v.len()), "here")
                        .help("write an octal mode such as 0644, or a symbolic one such as u+x,go-w"),
                );
            }
            word
        });
        let link = self.bool_flag(line, "link");
        let checksum = Self::flag(line, "checksum").and_then(|f| f.value.clone().map(|v| (f.offset, v))).map(|(offset, v)| {
            let word = self.word(line, &v);
            if let Some(Err(message)) = word.as_literal().map(|text| crate::graph::parse_checksum(&text)) {
                self.errors.push(SourceError::new(format!("--checksum={v}: {message}"), span(offset, 11 + v.len()), "here"));
            }
            word
        });
        let keep_git_dir = add && self.bool_flag(line, "keep-git-dir");
        let parents = !add && self.bool_flag(line, "parents");
        let exclude =
            line.flags.iter().filter(|f| f.name == "exclude").filter_map(|f| f.value.clone()).map(|v| self.word(line, &v)).collect();
        let unpack = (add && Self::flag(line, "unpack").is_some()).then(|| self.bool_flag(line, "unpack"));
        Some(CopyOp { add, from, sources, dest, chown, chmod, link, checksum, keep_git_dir, parents, exclude, unpack })
    }

    fn healthcheck(&mut self, line: &Line) -> Option<Healthcheck> {
        self.check_flags(line, &["interval", "timeout", "start-period", "start-interval", "retries"]);
        let args = line.args.trim();
        if args.eq_ignore_ascii_case("none") {
            return Some(Healthcheck { test: vec!["NONE".into()], ..Default::default() });
        }
        let rest = match args.split_once(char::is_whitespace) {
            Some((cmd, rest)) if cmd.eq_ignore_ascii_case("CMD") && !rest.trim().is_empty() => rest,
            _ if args.eq_ignore_ascii_case("CMD") => {
                self.args_error(line, "HEALTHCHECK CMD needs a command", "missing command", Some("HEALTHCHECK CMD <command>".into()));
                return None;
            }
            _ => {
                self.args_error(line, "HEALTHCHECK takes NONE or CMD <command>", "expected CMD", None);
                return None;
            }
        };
        let test = match json_args(rest) {
            Some(args) => std::iter::once("CMD".to_string()).chain(args).collect(),
            None => vec!["CMD-SHELL".to_string(), rest.trim().to_string()],
        };
        let mut check = Healthcheck { test, ..Default::default() };
        for flag in line.flags.iter().filter(|f| has_value(f)) {
            let value = flag.value.clone().unwrap_or_default();
            if flag.name == "retries" {
                match value.parse() {
                    Ok(n) => check.retries = Some(n),
                    Err(_) => self.errors.push(SourceError::new(
                        format!("--retries={value}: not a number"),
                        span(flag.offset, 10 + value.len()),
                        "here",
                    )),
                }
                continue;
            }
            let Some(duration) = crate::frontend::duration::parse(&value) else {
                self.errors.push(SourceError::new(
                    format!("--{}={value}: not a duration like 30s or 1m30s", flag.name),
                    span(flag.offset, flag.name.len() + 3 + value.len()),
                    "here",
                ));
                continue;
            };
            let nanos = Some(duration.as_nanos() as u64);
            match flag.name.as_str() {
                "interval" => check.interval = nanos,
                "timeout" => check.timeout = nanos,
                "start-period" => check.start_period = nanos,
                "start-interval" => check.start_interval = nanos,
                _ => {}
            }
        }
        Some(check)
    }
}

/// Whether `args` is a JSON array holding something other than strings, which
/// BuildKit refuses rather than reading it as a shell command.
fn json_non_strings(args: &str) -> bool {
    let trimmed = args.trim_start();
    trimmed.starts_with('[') && serde_json::from_str::<Vec<serde_json::Value>>(trimmed).is_ok_and(|v| v.iter().any(|x| !x.is_string()))
}

/// Splits `key=value` at the first `=` outside quotes.
fn split_unquoted_eq(raw: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    for (i, c) in raw.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '=') => return Some((&raw[..i], &raw[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A lone `<<EOF` runs its body as the script (and is returned, to run a
/// `#!` body as a file); otherwise bodies follow the command as a POSIX
/// shell reads heredocs.
fn fold_heredocs(args: &str, heredocs: &[super::parser::Heredoc]) -> (String, Option<RunHeredoc>) {
    if heredocs.is_empty() {
        return (args.to_string(), None);
    }
    // Lone as BuildKit reads it: the arguments are one marker and nothing else.
    let markers = super::parser::heredoc_markers(args.trim());
    let lone = heredocs.len() == 1 && matches!(markers.as_slice(), [marker] if marker.span == (0..args.trim().len()));
    if lone {
        let body = heredocs[0].body.clone();
        let executable = body.starts_with("#!");
        return (body, Some(RunHeredoc { name: heredocs[0].name.clone(), executable }));
    }
    let mut script = args.to_string();
    for doc in heredocs {
        script.push('\n');
        script.push_str(&doc.body);
        script.push_str(&doc.name);
    }
    (script, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_heredoc_is_the_script() {
        let doc = super::super::parser::Heredoc { name: "EOF".into(), body: "echo a\necho b\n".into(), quoted: false };
        let lone = Some(RunHeredoc { name: "EOF".into(), executable: false });
        for args in ["<<EOF", "<<-'EOF'", "<< EOF", "3<<\"EOF\""] {
            assert_eq!(fold_heredocs(args, std::slice::from_ref(&doc)), ("echo a\necho b\n".into(), lone.clone()), "{args}");
        }
        assert_eq!(fold_heredocs("cat <<EOF > /x", &[doc]), ("cat <<EOF > /x\necho a\necho b\nEOF".into(), None));
        let script = super::super::parser::Heredoc { name: "PY".into(), body: "#!/usr/bin/python3\nprint(1)\n".into(), quoted: true };
        let (body, heredoc) = fold_heredocs("<<'PY'", &[script]);
        assert_eq!((body.as_str(), heredoc), ("#!/usr/bin/python3\nprint(1)\n", Some(RunHeredoc { name: "PY".into(), executable: true })));
    }
}
