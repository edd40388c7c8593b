//! Printing a graph for `strata graph`: JSON (also the golden-test dump) and Graphviz DOT.

use std::fmt::Write as _;

use super::{Base, BuildGraph, CommandLine, CopyFrom, CopySource, Op};

/// The graph as pretty JSON, stable for golden tests.
pub fn to_json(graph: &BuildGraph) -> String {
    serde_json::to_string_pretty(graph).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// The graph as a Graphviz digraph: one cluster per stage, one node per step.
pub fn to_dot(graph: &BuildGraph) -> String {
    let mut out = String::from("digraph build {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
    for (i, stage) in graph.stages.iter().enumerate() {
        let label = graph.stage_label(super::StageId(i));
        let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label={};", quote(&format!("stage {label}")));
        let base = match &stage.base {
            Base::Scratch => "FROM scratch".to_string(),
            Base::Image(image) => format!("FROM {image}"),
            Base::Stage(id) => format!("FROM {}", graph.stage_label(*id)),
        };
        let _ = writeln!(out, "    s{i}_0 [label={}];", quote(&base));
        for (j, step) in stage.steps.iter().enumerate() {
            let _ = writeln!(out, "    s{i}_{} [label={}];", j + 1, quote(&summary(graph, &step.op)));
            let _ = writeln!(out, "    s{i}_{j} -> s{i}_{};", j + 1);
        }
        out.push_str("  }\n");
    }
    for (i, stage) in graph.stages.iter().enumerate() {
        if let Base::Stage(id) = stage.base {
            let _ = writeln!(out, "  s{}_{} -> s{i}_0 [style=bold];", id.0, graph.stages[id.0].steps.len());
        }
        for (j, step) in stage.steps.iter().enumerate() {
            let mut from_stages = Vec::new();
            match &step.op {
                Op::Copy(copy) => from_stages.extend(stage_of(copy.from.as_ref())),
                Op::Run(run) => {
                    for mount in &run.mounts {
                        from_stages.extend(stage_of(mount.from()));
                    }
                }
                Op::LinkLayers { stage, .. } => from_stages.push(stage.0),
                _ => {}
            }
            for from in from_stages {
                let last = graph.stages[from].steps.len();
                let _ = writeln!(out, "  s{from}_{last} -> s{i}_{} [style=dashed];", j + 1);
            }
        }
    }
    out.push_str("}\n");
    out
}

fn stage_of(from: Option<&CopyFrom>) -> Option<usize> {
    match from {
        Some(CopyFrom::Stage(id)) => Some(id.0),
        _ => None,
    }
}

/// A one-line description of a step as written (variables unexpanded).
pub fn describe(graph: &BuildGraph, op: &Op) -> String {
    let detail = match op {
        Op::Run(run) => match (&run.command, &run.heredoc) {
            // As BuildKit names it: the instruction, then the body's first line.
            (CommandLine::Shell(body), Some(heredoc)) => {
                let mut lines = body.trim().lines();
                let first = lines.next().unwrap_or_default();
                format!("<<{} ({first}{})", heredoc.name, if lines.next().is_some() { "..." } else { "" })
            }
            (CommandLine::Shell(script), None) => script.lines().next().unwrap_or_default().to_string(),
            (CommandLine::Exec(args), _) => format!("{args:?}"),
        },
        Op::Copy(copy) => {
            let mut words: Vec<String> = copy
                .sources
                .iter()
                .map(|s| match s {
                    CopySource::Path(word) => word.to_string(),
                    CopySource::Inline { name, .. } => format!("<<{name}"),
                })
                .collect();
            words.push(copy.dest.to_string());
            // The flags as BuildKit's progress shows them, in the order BuildKit lists them.
            let mut flags = match &copy.from {
                Some(CopyFrom::Stage(id)) => format!("--from={} ", graph.stage_label(*id)),
                Some(CopyFrom::Image(name)) => format!("--from={name} "),
                None => String::new(),
            };
            for (flag, value) in [("chown", &copy.chown), ("chmod", &copy.chmod)] {
                if let Some(value) = value {
                    flags.push_str(&format!("--{flag}={value} "));
                }
            }
            if copy.link {
                flags.push_str("--link ");
            }
            if copy.parents {
                flags.push_str("--parents ");
            }
            for pattern in &copy.exclude {
                flags.push_str(&format!("--exclude={pattern} "));
            }
            if let Some(unpack) = copy.unpack {
                flags.push_str(&format!("--unpack={unpack} "));
            }
            format!("{flags}{}", words.join(" "))
        }
        Op::Env(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        Op::Arg(args) => args.iter().map(|a| a.name.clone()).collect::<Vec<_>>().join(" "),
        Op::Workdir(word) | Op::User(word) | Op::StopSignal(word) => word.to_string(),
        Op::Cmd(cmd) | Op::Entrypoint(cmd) => match cmd {
            CommandLine::Shell(text) => text.clone(),
            CommandLine::Exec(args) => format!("{args:?}"),
        },
        Op::LinkLayers { name, .. } => name.clone(),
        Op::Label(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        Op::Expose(words) | Op::Volume(words) => words.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(" "),
        Op::Shell(args) => format!("{args:?}"),
        Op::Onbuild(text) | Op::Maintainer(text) => text.clone(),
        Op::Healthcheck(check) => check.test.join(" "),
    };
    format!("{} {detail}", op.keyword()).trim_end().to_string()
}

/// `describe`, cut to fit a graph node.
fn summary(graph: &BuildGraph, op: &Op) -> String {
    let text = describe(graph, op);
    if text.chars().count() > 60 { text.chars().take(57).collect::<String>() + "..." } else { text }
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
