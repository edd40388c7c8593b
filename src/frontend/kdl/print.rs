//! Build graph → KDL spec text, for `strata convert --to kdl`. Hidden stages
//! are printed as `layer` blocks where they are linked; words print `{NAME}`
//! for variables and double literal braces. [`check`] says what cannot be
//! printed faithfully.

use std::fmt::Write as _;

use crate::graph::{
    Base, BuildGraph, CommandLine, CopyFrom, CopySource, Healthcheck, Network, Op, Part, RunMount, Security, Stage, StageId, StageName,
    Step, Word,
};

/// Why `graph` cannot be printed as a spec that lowers back to it, if so.
pub fn check(graph: &BuildGraph) -> Result<(), String> {
    let mut words: Vec<&Word> = graph.args.iter().filter_map(|a| a.default.as_ref()).collect();
    for stage in &graph.stages {
        words.extend(stage.platform.as_ref());
        for step in &stage.steps {
            match &step.op {
                Op::Run(run) if run.heredoc.as_ref().is_some_and(|h| h.executable) => {
                    return Err("a RUN heredoc starting with #! runs as a script file, which a spec cannot express".into());
                }
                Op::Run(run) if run.mounts.iter().any(|m| matches!(m, RunMount::Ssh { .. })) => {
                    return Err("a RUN --mount=type=ssh, which a spec cannot express yet".into());
                }
                Op::Run(run) if run.mounts.iter().any(has_buildkit_options) => {
                    return Err(
                        "a RUN --mount with sharing, mode, uid, gid, size or a secret's env, which a spec cannot express yet".into()
                    );
                }
                Op::Run(run) if run.mounts.iter().any(|m| matches!(m, RunMount::Unexpanded { .. })) => {
                    return Err(
                        "a RUN --mount option naming a variable, which a spec reads when it is lowered, not when the step runs".into()
                    );
                }
                Op::Copy(copy) => {
                    for source in &copy.sources {
                        match source {
                            CopySource::Path(w) | CopySource::Inline { content: w, .. } => words.push(w),
                        }
                    }
                    words.push(&copy.dest);
                    words.extend(copy.chown.iter().chain(copy.chmod.iter()));
                }
                Op::Env(pairs) => words.extend(pairs.iter().map(|(_, v)| v)),
                Op::Arg(args) => words.extend(args.iter().filter_map(|a| a.default.as_ref())),
                Op::Workdir(w) | Op::User(w) | Op::StopSignal(w) => words.push(w),
                Op::Label(pairs) => words.extend(pairs.iter().flat_map(|(k, v)| [k, v])),
                Op::Expose(ws) | Op::Volume(ws) => words.extend(ws),
                _ => {}
            }
        }
    }
    for word in words {
        for part in &word.0 {
            if !matches!(part, Part::Lit(_) | Part::Var(_))
                && let Some(name) = part.variable()
            {
                return Err(format!("the word `{word}` uses a ${{{name}…}} form with a modifier, which a spec cannot express"));
            }
        }
    }
    for (i, image) in graph.images.iter().enumerate() {
        if graph.images[..i].iter().any(|other| other.stage == image.stage) {
            return Err(format!("stage {} makes two images; merge their tags", graph.stage_label(image.stage)));
        }
        if image.tags.is_empty() {
            return Err(format!("the image of stage {} has no tag", graph.stage_label(image.stage)));
        }
    }
    Ok(())
}

/// Whether a mount carries options the spec has no property for.
fn has_buildkit_options(mount: &RunMount) -> bool {
    match mount {
        RunMount::Cache { sharing, file, .. } => !sharing.is_shared() || !file.is_unset(),
        RunMount::Secret { file, target, env, .. } => !file.is_unset() || target.is_none() || env.is_some(),
        RunMount::Tmpfs { size, .. } => size.is_some(),
        RunMount::Bind { .. } | RunMount::Ssh { .. } | RunMount::Unexpanded { .. } => false,
    }
}

/// The graph as a KDL spec (see [`check`] for what is lost when it fails).
pub fn to_kdl(graph: &BuildGraph) -> String {
    let mut out = String::new();
    for arg in &graph.args {
        out.push_str(&arg_node(&arg.name, arg.default.as_ref()));
        out.push('\n');
    }
    if !graph.cache.is_empty() {
        out.push_str("cache {\n");
        for from in &graph.cache.from {
            out.push_str(&format!("    from {}\n", string(from)));
        }
        if let Some(to) = &graph.cache.to {
            out.push_str(&format!("    to {}\n", string(to)));
        }
        out.push_str("}\n");
    }
    let linked: Vec<StageId> = graph
        .stages
        .iter()
        .flat_map(|s| &s.steps)
        .filter_map(|step| match &step.op {
            Op::LinkLayers { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect();
    for (i, stage) in graph.stages.iter().enumerate() {
        if stage.hidden && linked.contains(&StageId(i)) {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let image = graph.images.iter().find(|image| image.stage == StageId(i));
        let mut head = match image {
            Some(image) => {
                let tags: Vec<String> = image.tags.iter().map(|tag| string(&escape_braces(tag))).collect();
                let mut head = format!("image {}", tags.join(" "));
                if stage.name.is_some() && stage.name.as_ref().map(StageName::as_str) != image.tags.first().map(String::as_str) {
                    let _ = write!(head, " name={}", string(stage.name.as_ref().map_or("", StageName::as_str)));
                }
                head
            }
            None => match &stage.name {
                Some(name) => format!("stage {}", string(name.as_str())),
                None => "stage".to_string(),
            },
        };
        let from = match &stage.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(image) => escape_braces(image.as_str()),
            Base::Stage(id) => stage_ref(graph, *id),
        };
        let _ = write!(head, " from={}", string(&from));
        if let Some(platform) = &stage.platform {
            let _ = write!(head, " platform={}", word(platform));
        }
        out.push_str(&head);
        write_block(graph, &stage.steps, 0, &mut out);
    }
    out
}

fn write_block(graph: &BuildGraph, steps: &[Step], depth: usize, out: &mut String) {
    if steps.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" {\n");
    let indent = "    ".repeat(depth + 1);
    for step in steps {
        for comment in &step.comments {
            let _ = writeln!(out, "{indent}// {comment}");
        }
        match &step.op {
            Op::LinkLayers { stage, name } => {
                let _ = write!(out, "{indent}layer {} link=#true", string(name));
                write_block(graph, &graph.stages[stage.0].steps, depth + 1, out);
            }
            op => {
                out.push_str(&indent);
                write_op(graph, op, &indent, out);
                out.push('\n');
            }
        }
    }
    out.push_str(&"    ".repeat(depth));
    out.push_str("}\n");
}

fn write_op(graph: &BuildGraph, op: &Op, indent: &str, out: &mut String) {
    let text = match op {
        Op::Run(run) => {
            let mut text = format!("run{}", command(&run.command));
            match run.network {
                Network::Default => {}
                Network::Host => text.push_str(" network=\"host\""),
                Network::None => text.push_str(" network=\"none\""),
            }
            if run.security == Security::Insecure {
                text.push_str(" security=\"insecure\"");
            }
            if !run.mounts.is_empty() {
                text.push_str(" {\n");
                for mount in &run.mounts {
                    let _ = writeln!(text, "{indent}    {}", mount_node(graph, mount));
                }
                text.push_str(indent);
                text.push('}');
            }
            text
        }
        Op::Copy(copy) => {
            let mut text = if copy.add { "add".to_string() } else { "copy".to_string() };
            let inline: Vec<(&String, &Word)> = copy
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Inline { name, content } => Some((name, content)),
                    CopySource::Path(_) => None,
                })
                .collect();
            for source in &copy.sources {
                if let CopySource::Path(path) = source {
                    let _ = write!(text, " {}", word(path));
                }
            }
            let _ = write!(text, " {}", word(&copy.dest));
            match &copy.from {
                Some(CopyFrom::Stage(id)) => {
                    let _ = write!(text, " from={}", string(&stage_ref(graph, *id)));
                }
                Some(CopyFrom::Image(image)) => {
                    let _ = write!(text, " from={}", string(&escape_braces(image.as_str())));
                }
                None => {}
            }
            if let Some(chown) = &copy.chown {
                let _ = write!(text, " chown={}", word(chown));
            }
            if let Some(chmod) = &copy.chmod {
                let _ = write!(text, " chmod={}", word(chmod));
            }
            if copy.link {
                text.push_str(" link=#true");
            }
            if let Some(checksum) = &copy.checksum {
                let _ = write!(text, " checksum={}", word(checksum));
            }
            if copy.keep_git_dir {
                text.push_str(" keep-git-dir=#true");
            }
            if copy.parents {
                text.push_str(" parents=#true");
            }
            if let Some(unpack) = copy.unpack {
                let _ = write!(text, " unpack=#{unpack}");
            }
            if !inline.is_empty() || !copy.exclude.is_empty() {
                text.push_str(" {\n");
                if !copy.exclude.is_empty() {
                    let patterns: Vec<String> = copy.exclude.iter().map(word).collect();
                    let _ = writeln!(text, "{indent}    exclude {}", patterns.join(" "));
                }
                for (name, content) in inline {
                    let _ = writeln!(text, "{indent}    file {} {}", string(name), word(content));
                }
                text.push_str(indent);
                text.push('}');
            }
            text
        }
        Op::Env(pairs) => {
            let props: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", key(k), word(v))).collect();
            format!("env {}", props.join(" "))
        }
        Op::Arg(args) => {
            let nodes: Vec<String> = args.iter().map(|a| arg_node(&a.name, a.default.as_ref())).collect();
            nodes.join(&format!("\n{indent}"))
        }
        Op::Workdir(w) => format!("workdir {}", word(w)),
        Op::User(w) => format!("user {}", word(w)),
        Op::Label(pairs) => {
            let props: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", word(k), word(v))).collect();
            format!("label {}", props.join(" "))
        }
        Op::Expose(ports) => format!("expose {}", words(ports)),
        Op::Volume(paths) => format!("volume {}", words(paths)),
        Op::Cmd(c) => format!("cmd{}", command(c)),
        Op::Entrypoint(c) => format!("entrypoint{}", command(c)),
        Op::Shell(args) => format!("shell{}", command(&CommandLine::Exec(args.clone())).replace(" exec=#true", "")),
        Op::StopSignal(w) => format!("stopsignal {}", word(w)),
        Op::Healthcheck(check) => healthcheck(check),
        Op::Onbuild(text) => format!("onbuild {}", string(text)),
        Op::Maintainer(text) => format!("maintainer {}", string(text)),
        Op::LinkLayers { name, .. } => format!("// layer {name} is linked here"),
    };
    out.push_str(&text);
}

fn arg_node(name: &str, default: Option<&Word>) -> String {
    match default {
        Some(default) => format!("arg {} default={}", string(name), word(default)),
        None => format!("arg {}", string(name)),
    }
}

/// How `from=` names a stage: its name, else its index.
fn stage_ref(graph: &BuildGraph, id: StageId) -> String {
    let stage: &Stage = &graph.stages[id.0];
    match &stage.name {
        Some(name) => escape_braces(name.as_str()),
        None => id.0.to_string(),
    }
}

/// Positional arguments of a command: one string is shell form, so a
/// one-element exec form needs `exec=#true`.
fn command(command: &CommandLine) -> String {
    match command {
        CommandLine::Shell(script) => format!(" {}", string(script)),
        CommandLine::Exec(args) => {
            let mut text: String = args.iter().map(|a| format!(" {}", string(a))).collect();
            if args.len() == 1 {
                text.push_str(" exec=#true");
            }
            text
        }
    }
}

fn mount_node(graph: &BuildGraph, mount: &RunMount) -> String {
    match mount {
        RunMount::Cache { id, target, readonly, .. } => {
            let mut text = format!("mount type=\"cache\" target={}", string(&escape_braces(target)));
            if id != target {
                let _ = write!(text, " id={}", string(&escape_braces(id)));
            }
            if *readonly {
                text.push_str(" readonly=#true");
            }
            text
        }
        RunMount::Bind { from, source, target, rw } => {
            let mut text = format!("mount type=\"bind\" target={}", string(&escape_braces(target)));
            match from {
                Some(CopyFrom::Stage(id)) => {
                    let _ = write!(text, " from={}", string(&stage_ref(graph, *id)));
                }
                Some(CopyFrom::Image(image)) => {
                    let _ = write!(text, " from={}", string(&escape_braces(image.as_str())));
                }
                None => {}
            }
            let _ = write!(text, " source={}", string(&escape_braces(source)));
            if *rw {
                text.push_str(" rw=#true");
            }
            text
        }
        RunMount::Secret { id, target, required, .. } => {
            let mut text = format!("mount type=\"secret\" id={}", string(&escape_braces(id)));
            if let Some(target) = target {
                let _ = write!(text, " target={}", string(&escape_braces(target)));
            }
            if *required {
                text.push_str(" required=#true");
            }
            text
        }
        RunMount::Tmpfs { target, .. } => format!("mount type=\"tmpfs\" target={}", string(&escape_braces(target))),
        // `check` refuses these; the options as written.
        RunMount::Ssh { id, .. } => format!("mount type=\"ssh\" id={}", string(id)),
        RunMount::Unexpanded { fields, .. } => {
            let mut text = String::from("mount");
            for (key, value) in fields {
                let _ = write!(text, " {key}={}", value.as_ref().map_or_else(|| "#true".to_string(), |v| string(&v.to_string())));
            }
            text
        }
    }
}

fn healthcheck(check: &Healthcheck) -> String {
    let mut text = match check.test.split_first() {
        Some((kind, _)) if kind == "NONE" => return "healthcheck none=#true".to_string(),
        Some((kind, rest)) if kind == "CMD-SHELL" => format!("healthcheck{}", command(&CommandLine::Shell(rest.join(" ")))),
        Some((_, rest)) => format!("healthcheck{}", command(&CommandLine::Exec(rest.to_vec()))),
        None => "healthcheck none=#true".to_string(),
    };
    for (key, value) in [
        ("interval", check.interval),
        ("timeout", check.timeout),
        ("start-period", check.start_period),
        ("start-interval", check.start_interval),
    ] {
        if let Some(nanos) = value {
            let _ = write!(text, " {key}={}", string(&crate::frontend::duration::format(nanos)));
        }
    }
    if let Some(retries) = check.retries {
        let _ = write!(text, " retries={retries}");
    }
    text
}

fn words(list: &[Word]) -> String {
    list.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// A word as a KDL string: `{NAME}` for variables, literal braces doubled.
fn word(word: &Word) -> String {
    let mut text = String::new();
    for part in &word.0 {
        match part {
            Part::Lit(lit) => text.push_str(&escape_braces(lit)),
            other => {
                let _ = write!(text, "{{{}}}", other.variable().unwrap_or_default());
            }
        }
    }
    string(&text)
}

fn escape_braces(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// A property key: bare when it is a plain identifier, else quoted.
fn key(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(name, "true" | "false" | "null" | "inf" | "nan");
    if plain { name.to_string() } else { string(name) }
}

/// A quoted KDL string.
pub(crate) fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if c.is_control()
                || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
