//! `strata convert`: a build graph printed back as a build file, KDL or
//! Dockerfile. Each printer refuses, with the reason, a graph it cannot
//! print so that it lowers back to the same graph.

use std::fmt::Write as _;

use crate::graph::{
    Base, BuildGraph, CommandLine, CopyFrom, CopySource, Healthcheck, MountFile, Network, Op, Part, RunMount, Security, Sharing, StageId,
    StageName, Word,
};

/// The graph as a KDL spec.
pub fn to_kdl(graph: &BuildGraph) -> Result<String, String> {
    super::kdl::check_printable(graph)?;
    Ok(super::kdl::to_kdl(graph))
}

/// The graph as a Dockerfile: one image at most, built by the last stage,
/// and no linked layers.
pub fn to_dockerfile(graph: &BuildGraph) -> Result<String, String> {
    if graph.images.len() > 1 {
        return Err(format!("a Dockerfile makes one image, this spec makes {}", graph.images.len()));
    }
    if let Some(image) = graph.images.first()
        && image.stage.0 + 1 != graph.stages.len()
    {
        return Err(format!("a Dockerfile builds its last stage, but the image is made by stage {}", graph.stage_label(image.stage)));
    }
    if let Some(stage) = graph.stages.iter().find(|s| s.hidden) {
        return Err(format!(
            "{} is a linked layer, which a Dockerfile cannot express",
            stage.name.as_ref().map_or("a stage", StageName::as_str)
        ));
    }
    let mut out = String::new();
    for arg in &graph.args {
        let _ = writeln!(out, "{}", arg_line(&arg.name, arg.default.as_ref()));
    }
    for (i, stage) in graph.stages.iter().enumerate() {
        if !out.is_empty() {
            out.push('\n');
        }
        if let Some(image) = graph.images.iter().find(|image| image.stage == StageId(i)) {
            let _ = writeln!(out, "# image: {}", image.tags.join(" "));
        }
        out.push_str("FROM ");
        if let Some(platform) = &stage.platform {
            let _ = write!(out, "--platform={platform} ");
        }
        match &stage.base {
            Base::Scratch => out.push_str("scratch"),
            Base::Image(image) => out.push_str(image.as_str()),
            Base::Stage(id) => out.push_str(&graph.stage_label(*id)),
        }
        if let Some(name) = &stage.name
            && graph.images.iter().all(|image| image.stage != StageId(i))
        {
            let _ = write!(out, " AS {name}");
        }
        out.push('\n');
        for step in &stage.steps {
            for comment in &step.comments {
                let _ = writeln!(out, "# {comment}");
            }
            out.push_str(&instruction(graph, &step.op)?);
            out.push('\n');
        }
    }
    Ok(out)
}

fn instruction(graph: &BuildGraph, op: &Op) -> Result<String, String> {
    Ok(match op {
        Op::Run(run) => {
            let mut text = String::from("RUN");
            for run_mount in &run.mounts {
                let _ = write!(text, " --mount={}", mount(graph, run_mount));
            }
            match run.network {
                Network::Default => {}
                Network::Host => text.push_str(" --network=host"),
                Network::None => text.push_str(" --network=none"),
            }
            if run.security == Security::Insecure {
                text.push_str(" --security=insecure");
            }
            match &run.command {
                CommandLine::Shell(script) if script.contains('\n') => {
                    let _ = write!(text, " <<EOF\n{script}\nEOF");
                }
                command => {
                    let _ = write!(text, " {}", command_line(command));
                }
            }
            text
        }
        Op::Copy(copy) => {
            let mut text = String::from(if copy.add { "ADD" } else { "COPY" });
            match &copy.from {
                Some(CopyFrom::Stage(id)) => {
                    let _ = write!(text, " --from={}", graph.stage_label(*id));
                }
                Some(CopyFrom::Image(image)) => {
                    let _ = write!(text, " --from={image}");
                }
                None => {}
            }
            if let Some(chown) = &copy.chown {
                let _ = write!(text, " --chown={chown}");
            }
            if let Some(chmod) = &copy.chmod {
                let _ = write!(text, " --chmod={chmod}");
            }
            if copy.link {
                text.push_str(" --link");
            }
            if copy.parents {
                text.push_str(" --parents");
            }
            for pattern in &copy.exclude {
                let _ = write!(text, " --exclude={pattern}");
            }
            if let Some(unpack) = copy.unpack {
                let _ = write!(text, " --unpack={unpack}");
            }
            if let Some(checksum) = &copy.checksum {
                let _ = write!(text, " --checksum={checksum}");
            }
            if copy.keep_git_dir {
                text.push_str(" --keep-git-dir");
            }
            let mut bodies = String::new();
            for source in &copy.sources {
                match source {
                    CopySource::Path(path) => {
                        let _ = write!(text, " {path}");
                    }
                    CopySource::Inline { name, content } => {
                        let _ = write!(text, " <<{name}");
                        let body = heredoc_body(content);
                        let _ = write!(bodies, "\n{body}{}{name}", if body.ends_with('\n') { "" } else { "\n" });
                    }
                }
            }
            let _ = write!(text, " {}{bodies}", copy.dest);
            text
        }
        Op::Env(pairs) => {
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", quoted(v))).collect();
            format!("ENV {}", pairs.join(" "))
        }
        Op::Arg(args) => {
            let lines: Vec<String> = args.iter().map(|a| arg_line(&a.name, a.default.as_ref())).collect();
            lines.join("\n")
        }
        Op::Workdir(w) => format!("WORKDIR {w}"),
        Op::User(w) => format!("USER {w}"),
        Op::Label(pairs) => {
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", quoted(k), quoted(v))).collect();
            format!("LABEL {}", pairs.join(" "))
        }
        Op::Expose(ports) => format!("EXPOSE {}", join(ports)),
        Op::Volume(paths) => format!("VOLUME {}", join(paths)),
        Op::Cmd(c) => format!("CMD {}", command_line(c)),
        Op::Entrypoint(c) => format!("ENTRYPOINT {}", command_line(c)),
        Op::Shell(args) => format!("SHELL {}", json(args)),
        Op::StopSignal(w) => format!("STOPSIGNAL {w}"),
        Op::Healthcheck(check) => healthcheck(check),
        Op::Onbuild(text) => format!("ONBUILD {text}"),
        Op::Maintainer(text) => format!("MAINTAINER {text}"),
        Op::LinkLayers { name, .. } => {
            return Err(format!("layer {name:?} is linked, which a Dockerfile cannot express"));
        }
    })
}

fn arg_line(name: &str, default: Option<&Word>) -> String {
    match default {
        Some(default) => format!("ARG {name}={}", quoted(default)),
        None => format!("ARG {name}"),
    }
}

fn mount(graph: &BuildGraph, mount: &RunMount) -> String {
    match mount {
        RunMount::Cache { id, target, readonly, sharing, file } => {
            let sharing = match sharing {
                Sharing::Shared => "",
                Sharing::Private => ",sharing=private",
                Sharing::Locked => ",sharing=locked",
            };
            format!("type=cache,id={id},target={target}{}{sharing}{}", if *readonly { ",readonly" } else { "" }, file_options(file))
        }
        RunMount::Bind { from, source, target, rw } => {
            let from = match from {
                Some(CopyFrom::Stage(id)) => format!(",from={}", graph.stage_label(*id)),
                Some(CopyFrom::Image(image)) => format!(",from={image}"),
                None => String::new(),
            };
            format!("type=bind{from},source={source},target={target}{}", if *rw { ",rw" } else { "" })
        }
        RunMount::Secret { id, target, env, required, file } => {
            let target = target.as_ref().map(|t| format!(",target={t}")).unwrap_or_default();
            let env = env.as_ref().map(|e| format!(",env={e}")).unwrap_or_default();
            format!("type=secret,id={id}{target}{env}{}{}", if *required { ",required" } else { "" }, file_options(file))
        }
        RunMount::Ssh { id, target, required, file } => {
            let target = target.as_ref().map(|t| format!(",target={t}")).unwrap_or_default();
            format!("type=ssh,id={id}{target}{}{}", if *required { ",required" } else { "" }, file_options(file))
        }
        RunMount::Tmpfs { target, size: None } => format!("type=tmpfs,target={target}"),
        RunMount::Tmpfs { target, size: Some(size) } => format!("type=tmpfs,target={target},size={size}"),
        RunMount::Unexpanded { fields, from } => {
            let mut options: Vec<String> = fields
                .iter()
                .filter(|(key, _)| key != "from")
                .map(|(key, value)| value.as_ref().map_or_else(|| key.clone(), |v| format!("{key}={v}")))
                .collect();
            match from {
                Some(CopyFrom::Stage(id)) => options.push(format!("from={}", graph.stage_label(*id))),
                Some(CopyFrom::Image(image)) => options.push(format!("from={image}")),
                None => {}
            }
            options.join(",")
        }
    }
}

/// `,mode=…,uid=…,gid=…` for the options given.
fn file_options(file: &MountFile) -> String {
    let mut text = String::new();
    if let Some(mode) = file.mode {
        text.push_str(&format!(",mode={mode:o}"));
    }
    for (key, value) in [("uid", file.uid), ("gid", file.gid)] {
        if let Some(value) = value {
            text.push_str(&format!(",{key}={value}"));
        }
    }
    text
}

fn healthcheck(check: &Healthcheck) -> String {
    if check.test.first().is_none_or(|t| t == "NONE") {
        return "HEALTHCHECK NONE".to_string();
    }
    let mut text = String::from("HEALTHCHECK");
    for (flag, value) in [
        ("interval", check.interval),
        ("timeout", check.timeout),
        ("start-period", check.start_period),
        ("start-interval", check.start_interval),
    ] {
        if let Some(nanos) = value {
            let _ = write!(text, " --{flag}={}", super::duration::format(nanos));
        }
    }
    if let Some(retries) = check.retries {
        let _ = write!(text, " --retries={retries}");
    }
    match check.test.split_first() {
        Some((kind, rest)) if kind == "CMD-SHELL" => {
            let _ = write!(text, " CMD {}", rest.join(" "));
        }
        Some((_, rest)) => {
            let _ = write!(text, " CMD {}", json(rest));
        }
        None => {}
    }
    text
}

fn command_line(command: &CommandLine) -> String {
    match command {
        CommandLine::Exec(args) => json(args),
        CommandLine::Shell(script) => script.clone(),
    }
}

fn json(args: &[String]) -> String {
    serde_json::to_string(args).unwrap_or_default()
}

fn join(words: &[Word]) -> String {
    words.iter().map(Word::to_string).collect::<Vec<_>>().join(" ")
}

/// A word in double quotes, for ENV/LABEL/ARG values that may hold spaces.
fn quoted(word: &Word) -> String {
    format!("\"{}\"", word.to_string().replace('"', "\\\""))
}

/// Heredoc bodies expand variables and drop a `\` before any character, so both are escaped.
fn heredoc_body(word: &Word) -> String {
    word.0
        .iter()
        .map(|part| match part {
            Part::Lit(text) => text.replace('\\', "\\\\").replace('$', "\\$"),
            other => Word(vec![other.clone()]).to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::BuildArgs;
    use crate::frontend::kdl::Spec;

    fn graph(text: &str) -> BuildGraph {
        Spec::parse(text).unwrap().lower(&BuildArgs::new()).unwrap()
    }

    #[test]
    fn single_image_specs_print_as_dockerfiles() {
        let graph = graph(
            r#"arg "V" default="1"
            stage "build" from="busybox:latest" {
                // build it
                run "make" { mount type="cache" target="/c"; }
            }
            image "app:{V}" from="busybox:latest" {
                arg "V"
                env A="x y" B="{V}"
                copy "/out" "/app/" from="build" link=#true
                cmd "/app/run" exec=#true
            }"#,
        );
        let text = to_dockerfile(&graph).unwrap();
        assert_eq!(
            text,
            "ARG V=\"1\"\n\nFROM busybox:latest AS build\n# build it\nRUN --mount=type=cache,id=/c,target=/c make\n\n\
             # image: app:1\nFROM busybox:latest\nARG V\nENV A=\"x y\" B=\"${V}\"\nCOPY --from=build --link /out /app/\nCMD [\"/app/run\"]\n"
        );
    }

    #[test]
    fn several_images_or_linked_layers_are_refused() {
        let two = graph(r#"image "a" from="scratch" {}; image "b" from="scratch" {}"#);
        assert!(to_dockerfile(&two).unwrap_err().contains("one image"));
        let layered = graph(r#"image "a" from="scratch" { layer "l" link=#true { copy "x" "/x"; }; }"#);
        assert!(to_dockerfile(&layered).is_err());
    }
}
