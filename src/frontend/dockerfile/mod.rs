//! The Dockerfile front end: `parser` splits the text into instruction lines
//! (directives, comments, continuations, heredocs, flags), `lexer` applies
//! Docker's word rules, and `lower` turns each instruction into a graph op.
//! Every error in a file is reported at once, with its line and column.

mod lexer;
mod lower;
mod parser;

use crate::frontend::BuildArgs;
use crate::frontend::diagnostic::SourceErrors;
use crate::graph::{BuildGraph, Op};

/// Parses and lowers a Dockerfile into the build graph.
pub fn lower(file: &str, text: &str, build_args: &BuildArgs) -> miette::Result<BuildGraph> {
    let (parsed, mut errors) = parser::parse(text);
    let (graph, lower_errors) = lower::Lowerer::new(file, parsed.escape, build_args).lower(&parsed);
    errors.extend(lower_errors);
    if !errors.is_empty() {
        return Err(SourceErrors { errors }.into_report(file, text));
    }
    if let Err(e) = graph.check() {
        return Err(miette::miette!("{file}: {e}"));
    }
    Ok(graph)
}

/// Parses one ONBUILD trigger (`RUN echo hi`) into an op; stage names in it refer to images.
pub fn parse_trigger(text: &str) -> miette::Result<Op> {
    let (parsed, mut errors) = parser::parse(text);
    let wrapped = format!("FROM scratch\n{text}");
    let (wrapped_parsed, _) = parser::parse(&wrapped);
    let (graph, lower_errors) = lower::Lowerer::new("ONBUILD", parsed.escape, &BuildArgs::new()).lower(&wrapped_parsed);
    errors.extend(lower_errors);
    if !errors.is_empty() {
        return Err(SourceErrors { errors }.into_report("ONBUILD", &wrapped));
    }
    graph
        .stages
        .into_iter()
        .next()
        .and_then(|s| s.steps.into_iter().next())
        .map(|step| step.op)
        .ok_or_else(|| miette::miette!("empty ONBUILD trigger"))
}
