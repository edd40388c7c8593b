//! KDL document → spec types. Checks the shape of every node (names,
//! properties, value types, arity) and collects every problem with its span;
//! it does not resolve stages or interpolation (that is lowering's job).

use std::time::Duration;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

use super::schema::{
    ArgSpec, ArgValue, CacheSpec, CommandLine, CopySpec, HealthcheckSpec, LayerSpec, MountSpec, Network, RunSpec, Security, SourceSpec,
    Spec, SpecStep, StageKind, StageSpec, StepSpec, Text,
};
use crate::frontend::diagnostic::SourceError;
use crate::graph::did_you_mean;

const TOP_LEVEL: &[&str] = &["arg", "stage", "image", "cache"];
const CACHE_EXAMPLE: &str = "cache { from \"type=registry,ref=HOST/REPO\"; to \"type=registry,ref=HOST/REPO,mode=max\" }";
const STEPS: &[&str] = &[
    "run",
    "copy",
    "add",
    "env",
    "arg",
    "workdir",
    "user",
    "label",
    "expose",
    "volume",
    "cmd",
    "entrypoint",
    "shell",
    "stopsignal",
    "healthcheck",
    "onbuild",
    "maintainer",
    "layer",
];

/// Parses KDL text into a spec and the problems found in it; a document
/// that is not valid KDL gives only its syntax errors.
pub fn parse(text: &str) -> Result<(Spec, Vec<SourceError>), Vec<SourceError>> {
    super::nesting::check(text).map_err(|error| vec![error])?;
    // The crate's parser recurses; give it a stack the checked bounds fit in.
    let parsed = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(super::nesting::PARSE_STACK)
            .spawn_scoped(scope, || KdlDocument::parse_v2(text))?
            .join()
            .map_err(|_| std::io::Error::other("the KDL parser panicked"))
    });
    let parsed = parsed.map_err(|e| vec![SourceError::new(format!("parse KDL: {e}"), None, "")])?;
    let document = parsed.map_err(|error| {
        error
            .diagnostics
            .into_iter()
            .map(|d| SourceError {
                message: d.message.unwrap_or_else(|| "invalid KDL".into()),
                span: Some(d.span),
                label: d.label.unwrap_or_else(|| "here".into()),
                help: d.help,
            })
            .collect::<Vec<_>>()
    })?;
    let mut parser = Parser { errors: Vec::new() };
    let spec = parser.parse_document(&document);
    Ok((spec, parser.errors))
}

struct Parser {
    errors: Vec<SourceError>,
}

/// `//` comment lines in the whitespace before a node.
fn leading_comments(node: &KdlNode) -> Vec<String> {
    let Some(format) = node.format() else {
        return Vec::new();
    };
    format
        .leading
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("//"))
        .map(|c| c.strip_prefix(' ').unwrap_or(c).trim_end().to_string())
        .collect()
}

fn type_name(value: &KdlValue) -> &'static str {
    match value {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "null",
    }
}

impl Parser {
    fn error(&mut self, error: SourceError) {
        self.errors.push(error);
    }

    fn parse_document(&mut self, document: &KdlDocument) -> Spec {
        let mut spec = Spec::default();
        for node in document.nodes() {
            match node.name().value() {
                "arg" => {
                    if let Some(arg) = self.parse_arg(node) {
                        spec.args.push(arg);
                    }
                }
                "stage" => spec.stages.push(self.parse_stage(node, false)),
                "image" => spec.stages.push(self.parse_stage(node, true)),
                "cache" => self.parse_cache(node, &mut spec.cache),
                name => {
                    let error = SourceError::new(format!("unknown node `{name}`"), Some(node.name().span()), "unknown node");
                    let error = if STEPS.contains(&name) {
                        error.help(format!("`{name}` is a step: put it inside a `stage` or `image` block"))
                    } else {
                        error.did_you_mean(did_you_mean(name, TOP_LEVEL.iter().copied()))
                    };
                    self.error(error);
                }
            }
        }
        spec
    }

    /// `cache { from "…"; to "…" }`: any number of sources, one destination.
    fn parse_cache(&mut self, node: &KdlNode, cache: &mut CacheSpec) {
        self.check_node(node, &[], true);
        if !self.args(node).is_empty() {
            self.error(SourceError::new("`cache` takes no arguments, only a block", Some(node.span()), "here").help(CACHE_EXAMPLE));
        }
        for child in node.children().map(|block| block.nodes()).unwrap_or_default() {
            match child.name().value() {
                "from" => cache.from.extend(self.plain(child, "from \"type=registry,ref=registry.example/app-cache\"")),
                "to" => {
                    let to = self.plain(child, "to \"type=registry,ref=registry.example/app-cache,mode=max\"");
                    if cache.to.is_some() {
                        self.error(
                            SourceError::new("a second `to` in `cache`", Some(child.span()), "second destination")
                                .help("a build exports its cache to one place"),
                        );
                    }
                    cache.to = cache.to.take().or(to);
                }
                name => {
                    let error = SourceError::new(format!("unknown node `{name}` in `cache`"), Some(child.name().span()), "unknown node");
                    let error = match did_you_mean(name, ["from", "to"]) {
                        Some(near) => error.did_you_mean(Some(near)),
                        None => error.help(CACHE_EXAMPLE),
                    };
                    self.error(error);
                }
            }
        }
    }

    /// Reports properties not in `allowed`, and a children block if `children` is false.
    fn check_node(&mut self, node: &KdlNode, allowed: &[&str], children: bool) {
        for entry in node.entries() {
            if let Some(name) = entry.name() {
                let key = name.value();
                if !allowed.contains(&key) {
                    let node_name = node.name().value();
                    let error =
                        SourceError::new(format!("unknown property `{key}` on `{node_name}`"), Some(name.span()), "unknown property");
                    let error = match did_you_mean(key, allowed.iter().copied()) {
                        Some(s) => error.did_you_mean(Some(s)),
                        None if allowed.is_empty() => error.help(format!("`{node_name}` takes no properties")),
                        None => error.help(format!("`{node_name}` accepts: {}", allowed.join(", "))),
                    };
                    self.error(error);
                }
            }
        }
        if !children && let Some(block) = node.children() {
            self.error(SourceError::new(
                format!("`{}` takes no children block", node.name().value()),
                Some(block.span()),
                "unexpected block",
            ));
        }
    }

    fn args<'n>(&self, node: &'n KdlNode) -> Vec<&'n KdlEntry> {
        node.entries().iter().filter(|e| e.name().is_none()).collect()
    }

    fn prop<'n>(&self, node: &'n KdlNode, key: &str) -> Option<&'n KdlEntry> {
        node.entries().iter().rev().find(|e| e.name().is_some_and(|n| n.value() == key))
    }

    fn expect_string(&mut self, entry: &KdlEntry, what: &str) -> Option<Text> {
        match entry.value() {
            KdlValue::String(s) => Some(Text::at(s.clone(), entry.span())),
            other => {
                self.error(SourceError::new(
                    format!("{what} must be a string, found {}", type_name(other)),
                    Some(entry.span()),
                    "expected a string",
                ));
                None
            }
        }
    }

    /// A string, integer or boolean, rendered as text (env values, labels, ports).
    fn expect_scalar(&mut self, entry: &KdlEntry, what: &str) -> Option<Text> {
        let text = match entry.value() {
            KdlValue::String(s) => s.clone(),
            KdlValue::Integer(i) => i.to_string(),
            KdlValue::Bool(b) => b.to_string(),
            other => {
                self.error(SourceError::new(
                    format!("{what} must be a string, integer or boolean, found {}", type_name(other)),
                    Some(entry.span()),
                    "expected a string",
                ));
                return None;
            }
        };
        Some(Text::at(text, entry.span()))
    }

    fn expect_bool(&mut self, entry: &KdlEntry, what: &str) -> bool {
        match entry.value() {
            KdlValue::Bool(b) => *b,
            other => {
                self.error(
                    SourceError::new(
                        format!("{what} must be a boolean, found {}", type_name(other)),
                        Some(entry.span()),
                        "expected #true or #false",
                    )
                    .help("KDL booleans are written #true and #false"),
                );
                false
            }
        }
    }

    fn string_prop(&mut self, node: &KdlNode, key: &str) -> Option<Text> {
        let entry = self.prop(node, key)?;
        self.expect_string(entry, &format!("`{key}`"))
    }

    fn bool_prop(&mut self, node: &KdlNode, key: &str) -> bool {
        match self.prop(node, key) {
            Some(entry) => self.expect_bool(entry, &format!("`{key}`")),
            None => false,
        }
    }

    fn missing(&mut self, node: &KdlNode, what: &str, example: &str) {
        self.error(
            SourceError::new(format!("`{}` needs {what}", node.name().value()), Some(node.span()), format!("missing {what}"))
                .help(format!("write it as: {example}")),
        );
    }

    /// All positional arguments as strings.
    fn string_args(&mut self, node: &KdlNode) -> Vec<Text> {
        let entries = self.args(node);
        let what = format!("an argument of `{}`", node.name().value());
        entries.into_iter().filter_map(|e| self.expect_string(e, &what)).collect()
    }

    /// Exactly one positional string.
    fn single_string(&mut self, node: &KdlNode, example: &str) -> Option<Text> {
        let entries = self.args(node);
        match entries.as_slice() {
            [one] => self.expect_string(one, &format!("the argument of `{}`", node.name().value())),
            [] => {
                self.missing(node, "a value", example);
                None
            }
            [_, extra, ..] => {
                self.error(
                    SourceError::new(
                        format!("`{}` takes one value, found {}", node.name().value(), entries.len()),
                        Some(extra.span()),
                        "unexpected value",
                    )
                    .help(format!("write it as: {example}")),
                );
                None
            }
        }
    }

    fn parse_arg(&mut self, node: &KdlNode) -> Option<ArgSpec> {
        self.check_node(node, &["default"], false);
        let name = self.single_string(node, "arg \"NAME\" default=\"value\"")?;
        let default = match self.prop(node, "default").map(|e| (e, e.value())) {
            None => None,
            Some((e, KdlValue::String(s))) => Some(ArgValue::String(Text::at(s.clone(), e.span()))),
            Some((_, KdlValue::Integer(i))) => Some(ArgValue::Integer(*i)),
            Some((_, KdlValue::Bool(b))) => Some(ArgValue::Bool(*b)),
            Some((e, other)) => {
                self.error(SourceError::new(
                    format!("`default` must be a string, integer or boolean, found {}", type_name(other)),
                    Some(e.span()),
                    "unsupported default",
                ));
                None
            }
        };
        Some(ArgSpec { name, default })
    }

    fn parse_stage(&mut self, node: &KdlNode, image: bool) -> StageSpec {
        let (kind, name) = if image {
            self.check_node(node, &["from", "name", "platform"], true);
            let tags = self.string_args(node);
            if tags.is_empty() && self.args(node).is_empty() {
                self.missing(node, "a tag", "image \"name:tag\" from=\"busybox:latest\" { … }");
            }
            (StageKind::Image { tags }, self.string_prop(node, "name"))
        } else {
            self.check_node(node, &["from", "platform"], true);
            let names = self.args(node);
            let name = match names.as_slice() {
                [] => None,
                [one] => self.expect_string(one, "the stage name"),
                [_, extra, ..] => {
                    self.error(SourceError::new("`stage` takes one name", Some(extra.span()), "unexpected value"));
                    None
                }
            };
            (StageKind::Stage, name)
        };
        let from = self.string_prop(node, "from").unwrap_or_else(|| {
            if self.prop(node, "from").is_none() {
                self.error(
                    SourceError::new(format!("`{}` needs `from=`", node.name().value()), Some(node.name().span()), "missing from=")
                        .help("name a base image, an earlier stage, or \"scratch\""),
                );
            }
            Text::from("scratch")
        });
        let platform = self.string_prop(node, "platform");
        let steps = match node.children() {
            Some(block) => self.parse_steps(block, true),
            None => Vec::new(),
        };
        StageSpec { kind, name, from, platform, steps, span: Some(node.name().span()) }
    }

    fn parse_steps(&mut self, block: &KdlDocument, layers: bool) -> Vec<SpecStep> {
        let mut steps = Vec::new();
        for node in block.nodes() {
            if let Some(spec) = self.parse_step(node, layers) {
                steps.push(SpecStep { spec, comments: leading_comments(node), span: Some(node.span()) });
            }
        }
        steps
    }

    fn parse_step(&mut self, node: &KdlNode, layers: bool) -> Option<StepSpec> {
        let name = node.name().value();
        Some(match name {
            "run" => StepSpec::Run(self.parse_run(node)?),
            "copy" | "add" => StepSpec::Copy(self.parse_copy(node, name == "add")?),
            "env" => {
                self.check_props_only(node, "env KEY=\"value\"");
                let pairs = self.pairs(node, "env KEY=\"value\"");
                StepSpec::Env(pairs.into_iter().map(|(k, v)| (k.value, v)).collect())
            }
            "label" => {
                self.check_props_only(node, "label key=\"value\"");
                StepSpec::Label(self.pairs(node, "label key=\"value\""))
            }
            "arg" => StepSpec::Arg(self.parse_arg(node)?),
            "workdir" => StepSpec::Workdir(self.plain(node, "workdir \"/app\"")?),
            "user" => StepSpec::User(self.plain(node, "user \"app\"")?),
            "stopsignal" => StepSpec::StopSignal(self.plain(node, "stopsignal \"SIGTERM\"")?),
            "onbuild" => StepSpec::Onbuild(self.plain(node, "onbuild \"RUN echo hi\"")?.value),
            "maintainer" => StepSpec::Maintainer(self.plain(node, "maintainer \"name\"")?.value),
            "expose" => {
                self.check_node(node, &[], false);
                let ports: Vec<Text> = self.args(node).into_iter().filter_map(|e| self.expect_scalar(e, "a port")).collect();
                if self.args(node).is_empty() {
                    self.missing(node, "a port", "expose \"80/tcp\" 443");
                }
                StepSpec::Expose(ports)
            }
            "volume" => {
                self.check_node(node, &[], false);
                let paths = self.string_args(node);
                if self.args(node).is_empty() {
                    self.missing(node, "a path", "volume \"/data\"");
                }
                StepSpec::Volume(paths)
            }
            "cmd" | "entrypoint" => {
                self.check_node(node, &["exec"], false);
                let command = self.command(node, true)?;
                if name == "cmd" { StepSpec::Cmd(command) } else { StepSpec::Entrypoint(command) }
            }
            "shell" => {
                self.check_node(node, &[], false);
                let args = self.string_args(node);
                if self.args(node).is_empty() {
                    self.missing(node, "a command", "shell \"/bin/bash\" \"-c\"");
                }
                StepSpec::Shell(args.into_iter().map(|t| t.value).collect())
            }
            "healthcheck" => StepSpec::Healthcheck(self.parse_healthcheck(node)?),
            "layer" if layers => {
                self.check_node(node, &["link"], true);
                let name = self.single_string(node, "layer \"name\" link=#true { … }")?;
                let link = self.bool_prop(node, "link");
                let steps = match node.children() {
                    Some(block) => self.parse_steps(block, false),
                    None => Vec::new(),
                };
                StepSpec::Layer(LayerSpec { name, link, steps })
            }
            "layer" => {
                self.error(SourceError::new("`layer` blocks cannot be nested", Some(node.name().span()), "nested layer"));
                return None;
            }
            _ => {
                let error = SourceError::new(format!("unknown step `{name}`"), Some(node.name().span()), "unknown step");
                let error = if matches!(name, "stage" | "image") {
                    error.help(format!("`{name}` belongs at the top level of the spec"))
                } else {
                    error.did_you_mean(did_you_mean(name, STEPS.iter().copied()))
                };
                self.error(error);
                return None;
            }
        })
    }

    /// One positional string, no properties or children.
    fn plain(&mut self, node: &KdlNode, example: &str) -> Option<Text> {
        self.check_node(node, &[], false);
        self.single_string(node, example)
    }

    fn check_props_only(&mut self, node: &KdlNode, example: &str) {
        if let Some(block) = node.children() {
            self.error(SourceError::new(
                format!("`{}` takes no children block", node.name().value()),
                Some(block.span()),
                "unexpected block",
            ));
        }
        for entry in self.args(node) {
            self.error(
                SourceError::new(
                    format!("`{}` takes KEY=value properties, not values", node.name().value()),
                    Some(entry.span()),
                    "expected KEY=value",
                )
                .help(format!("write it as: {example}")),
            );
        }
    }

    fn pairs(&mut self, node: &KdlNode, example: &str) -> Vec<(Text, Text)> {
        let mut pairs = Vec::new();
        for entry in node.entries() {
            if let Some(key) = entry.name()
                && let Some(value) = self.expect_scalar(entry, &format!("the value of `{}`", key.value()))
            {
                pairs.push((Text::at(key.value(), key.span()), value));
            }
        }
        if pairs.is_empty() && node.entries().is_empty() {
            self.missing(node, "a KEY=value property", example);
        }
        pairs
    }

    /// One string = shell form (unless `exec=#true`), several = exec form.
    fn command(&mut self, node: &KdlNode, empty_ok: bool) -> Option<CommandLine> {
        let exec = self.bool_prop(node, "exec");
        let count = self.args(node).len();
        let args: Vec<String> = self.string_args(node).into_iter().map(|t| t.value).collect();
        if args.len() != count {
            return None;
        }
        Some(match args.len() {
            0 if !empty_ok => {
                self.missing(node, "a command", &format!("{} \"command\"", node.name().value()));
                return None;
            }
            1 if !exec => CommandLine::Shell(args.into_iter().next().unwrap_or_default()),
            _ => CommandLine::Exec(args),
        })
    }

    fn parse_run(&mut self, node: &KdlNode) -> Option<RunSpec> {
        self.check_node(node, &["network", "security", "exec"], true);
        let network = match self.string_prop(node, "network") {
            None => Network::Default,
            Some(text) => match text.value.as_str() {
                "default" => Network::Default,
                "host" => Network::Host,
                "none" => Network::None,
                other => {
                    self.error(
                        SourceError::new(format!("unknown network mode {other:?}"), text.span, "unknown network")
                            .help("use \"default\", \"host\" or \"none\""),
                    );
                    Network::Default
                }
            },
        };
        let security = match self.string_prop(node, "security") {
            None => Security::Sandbox,
            Some(text) => match text.value.as_str() {
                "sandbox" => Security::Sandbox,
                "insecure" => Security::Insecure,
                other => {
                    self.error(
                        SourceError::new(format!("unknown security mode {other:?}"), text.span, "unknown security mode")
                            .help("use \"sandbox\" or \"insecure\""),
                    );
                    Security::Sandbox
                }
            },
        };
        let mut mounts = Vec::new();
        if let Some(block) = node.children() {
            for child in block.nodes() {
                if child.name().value() == "mount" {
                    if let Some(mount) = self.parse_mount(child) {
                        mounts.push(mount);
                    }
                } else {
                    let name = child.name().value();
                    self.error(
                        SourceError::new(format!("unknown child `{name}` of `run`"), Some(child.name().span()), "unknown child")
                            .help("`run` accepts only `mount` children")
                            .did_you_mean(did_you_mean(name, ["mount"])),
                    );
                }
            }
        }
        let command = self.command(node, false)?;
        Some(RunSpec { command, mounts, network, security })
    }

    fn parse_mount(&mut self, node: &KdlNode) -> Option<MountSpec> {
        let Some(kind) = self.string_prop(node, "type") else {
            self.check_node(node, &["type", "target", "id", "from", "source", "readonly", "rw", "required"], false);
            if self.prop(node, "type").is_none() {
                self.missing(node, "`type=`", "mount type=\"cache\" target=\"/root/.cache\"");
            }
            return None;
        };
        let allowed: &[&str] = match kind.value.as_str() {
            "cache" => &["type", "target", "id", "readonly"],
            "bind" => &["type", "target", "from", "source", "rw"],
            "secret" => &["type", "target", "id", "required"],
            "tmpfs" => &["type", "target"],
            other => {
                self.error(
                    SourceError::new(format!("unknown mount type {other:?}"), kind.span, "unknown mount type")
                        .help("mount types: cache, bind, secret, tmpfs")
                        .did_you_mean(did_you_mean(other, ["cache", "bind", "secret", "tmpfs"])),
                );
                return None;
            }
        };
        self.check_node(node, allowed, false);
        if !self.args(node).is_empty() {
            self.error(SourceError::new("`mount` takes only properties", Some(self.args(node)[0].span()), "unexpected value"));
        }
        let target = self.string_prop(node, "target");
        let mut need_target = || {
            if target.is_none() {
                self.missing(node, "`target=`", "mount type=\"cache\" target=\"/root/.cache\"");
            }
            target.clone()
        };
        Some(match kind.value.as_str() {
            "cache" => {
                let target = need_target()?;
                MountSpec::Cache { id: self.string_prop(node, "id"), target, readonly: self.bool_prop(node, "readonly") }
            }
            "bind" => {
                let target = need_target()?;
                MountSpec::Bind {
                    from: self.string_prop(node, "from"),
                    source: self.string_prop(node, "source").unwrap_or_else(|| Text::from("/")),
                    target,
                    rw: self.bool_prop(node, "rw"),
                }
            }
            "secret" => {
                let id = self.string_prop(node, "id");
                if id.is_none() && target.is_none() {
                    self.missing(node, "`id=` or `target=`", "mount type=\"secret\" id=\"token\"");
                    return None;
                }
                MountSpec::Secret { id, target, required: self.bool_prop(node, "required") }
            }
            _ => MountSpec::Tmpfs { target: need_target()? },
        })
    }

    fn parse_copy(&mut self, node: &KdlNode, add: bool) -> Option<CopySpec> {
        let props: &[&str] = if add {
            &["from", "chown", "chmod", "link", "checksum", "keep-git-dir", "unpack"]
        } else {
            &["from", "chown", "chmod", "link", "parents"]
        };
        self.check_node(node, props, true);
        let mut paths = self.string_args(node);
        let mut inline = Vec::new();
        let mut exclude = Vec::new();
        if let Some(block) = node.children() {
            for child in block.nodes() {
                if child.name().value() == "exclude" {
                    self.check_node(child, &[], false);
                    exclude.extend(self.string_args(child));
                    continue;
                }
                if child.name().value() != "file" {
                    let name = child.name().value();
                    self.error(
                        SourceError::new(
                            format!("unknown child `{name}` of `{}`", node.name().value()),
                            Some(child.name().span()),
                            "unknown child",
                        )
                        .help("the children are `file \"name\" \"content\"` and `exclude \"pattern\" …`"),
                    );
                    continue;
                }
                self.check_node(child, &[], false);
                let values = self.string_args(child);
                match <[Text; 2]>::try_from(values) {
                    Ok([name, content]) => inline.push(SourceSpec::Inline { name: name.value, content }),
                    Err(_) => self.error(
                        SourceError::new("`file` takes a name and a content", Some(child.span()), "expected two strings")
                            .help("write it as: file \"name\" \"content\""),
                    ),
                }
            }
        }
        let min = if inline.is_empty() { 2 } else { 1 };
        if paths.len() < min {
            if self.args(node).len() == paths.len() {
                self.missing(node, "a source and a destination", &format!("{} \"src\" \"/dest/\"", node.name().value()));
            }
            return None;
        }
        let dest = paths.pop()?;
        let mut sources: Vec<SourceSpec> = paths.into_iter().map(SourceSpec::Path).collect();
        sources.extend(inline);
        Some(CopySpec {
            add,
            from: self.string_prop(node, "from"),
            sources,
            dest,
            chown: self.string_prop(node, "chown"),
            chmod: self.string_prop(node, "chmod").inspect(|text| {
                if !text.value.contains('{') && crate::graph::parse_mode(&text.value).is_none() {
                    self.error(
                        SourceError::new(format!("invalid mode {:?} for `chmod`", text.value), text.span, "not a mode")
                            .help("write an octal mode such as \"0644\", or a symbolic one such as \"u+x,go-w\""),
                    );
                }
            }),
            link: self.bool_prop(node, "link"),
            checksum: self.string_prop(node, "checksum").inspect(|text| {
                if !text.value.contains('{')
                    && let Err(message) = crate::graph::parse_checksum(&text.value)
                {
                    self.error(SourceError::new(format!("invalid checksum {:?}: {message}", text.value), text.span, "not a checksum"));
                }
            }),
            keep_git_dir: self.bool_prop(node, "keep-git-dir"),
            parents: self.bool_prop(node, "parents"),
            exclude,
            unpack: self.prop(node, "unpack").is_some().then(|| self.bool_prop(node, "unpack")),
        })
    }

    fn parse_healthcheck(&mut self, node: &KdlNode) -> Option<HealthcheckSpec> {
        self.check_node(node, &["none", "exec", "interval", "timeout", "start-period", "start-interval", "retries"], false);
        if self.bool_prop(node, "none") {
            if let Some(extra) = node.entries().iter().find(|e| e.name().is_none_or(|n| n.value() != "none")) {
                self.error(SourceError::new("`healthcheck none=#true` takes nothing else", Some(extra.span()), "unexpected"));
            }
            return Some(HealthcheckSpec::default());
        }
        let command = self.command(node, false)?;
        let mut duration = |key: &str| -> Option<Duration> {
            let text = self.string_prop(node, key)?;
            match crate::frontend::duration::parse(&text.value) {
                Some(d) => Some(d),
                None => {
                    self.error(
                        SourceError::new(format!("invalid duration {:?} for `{key}`", text.value), text.span, "invalid duration")
                            .help("write a duration like \"30s\", \"1m30s\" or \"500ms\""),
                    );
                    None
                }
            }
        };
        let interval = duration("interval");
        let timeout = duration("timeout");
        let start_period = duration("start-period");
        let start_interval = duration("start-interval");
        let retries = match self.prop(node, "retries") {
            None => None,
            Some(entry) => match entry.value() {
                KdlValue::Integer(n) if *n >= 0 => u64::try_from(*n).ok(),
                _ => {
                    self.error(SourceError::new("`retries` must be a non-negative integer", Some(entry.span()), "expected an integer"));
                    None
                }
            },
        };
        Some(HealthcheckSpec { command: Some(command), interval, timeout, start_period, start_interval, retries })
    }
}
