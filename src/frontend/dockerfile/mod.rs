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

/// Parses one ONBUILD trigger (`RUN echo hi`) into an op; `--from` values in it name images.
pub fn parse_trigger(text: &str) -> miette::Result<Op> {
    const FILE: &str = "ONBUILD trigger";
    let (parsed, mut errors) = parser::parse(text);
    let (op, lower_errors) = lower::Lowerer::new(FILE, parsed.escape, &BuildArgs::new()).lower_trigger(&parsed);
    errors.extend(lower_errors);
    match op {
        Some(op) if errors.is_empty() => Ok(op),
        None if errors.is_empty() => Err(miette::miette!("ONBUILD trigger {text:?} is not an instruction")),
        _ => Err(SourceErrors { errors }.into_report(FILE, text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Base, CopyFrom, CopySource, ImageName, StageName};

    fn graph(text: &str) -> BuildGraph {
        lower("Dockerfile", text, &BuildArgs::new()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn error(text: &str) -> String {
        let report = lower("Dockerfile", text, &BuildArgs::new()).expect_err("an invalid Dockerfile");
        let mut out = report.to_string();
        if let Some(related) = report.related() {
            for e in related {
                out.push('\n');
                out.push_str(&e.to_string());
            }
        }
        out
    }

    #[test]
    fn triggers_name_images_even_by_index() {
        let Op::Copy(copy) = parse_trigger("COPY --from=0 /a /b").expect("a trigger") else { panic!("not a copy") };
        assert_eq!(copy.from, Some(CopyFrom::Image(ImageName::parse("0").unwrap())));
        let Op::Copy(copy) = parse_trigger("copy --from=build /a /b").expect("a trigger") else { panic!("not a copy") };
        assert_eq!(copy.from, Some(CopyFrom::Image(ImageName::parse("build").unwrap())));
        assert!(matches!(parse_trigger("RUN echo hi"), Ok(Op::Run(_))));
    }

    #[test]
    fn bad_triggers_are_refused() {
        for text in ["FROM busybox", "ONBUILD RUN x", "RUNN x", "RUN --mont=x x", "", "RUN a\nRUN b"] {
            assert!(parse_trigger(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn onbuild_triggers_are_checked_where_written() {
        let message = error("FROM a\nONBUILD COPY --form=x a b\n");
        assert!(message.contains("unknown flag --form for COPY"), "{message}");
        let Op::Onbuild(trigger) = &graph("FROM a\nONBUILD COPY --from=0 a b\n").stages[0].steps[0].op else { panic!() };
        assert_eq!(trigger, "COPY --from=0 a b");
    }

    #[test]
    fn an_onbuild_trigger_keeps_its_heredoc_as_buildkit_stores_it() {
        let g = graph("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN true\n");
        let Op::Onbuild(trigger) = &g.stages[0].steps[0].op else { panic!("not ONBUILD") };
        assert_eq!(trigger, "RUN <<EOF\necho hi\nEOF");
        assert_eq!(g.stages[0].steps.len(), 2);
        let Op::Run(run) = parse_trigger(trigger).expect("a trigger") else { panic!("not RUN") };
        assert_eq!(run.command, crate::graph::CommandLine::Shell("echo hi\n".into()));
    }

    #[test]
    fn progress_names_show_copy_flags_and_a_lone_heredoc_as_buildkit_does() {
        let g =
            graph("FROM a AS prep\nFROM scratch\nCOPY --from=prep --chmod=0640 --link /made /made\nRUN <<EOF\necho one\necho two\nEOF\n");
        let names: Vec<String> = g.stages[1].steps.iter().map(|s| crate::graph::describe(&g, &s.op)).collect();
        assert_eq!(names, ["COPY --from=prep --chmod=0640 --link /made /made", "RUN <<EOF (echo one...)"]);
    }

    #[test]
    fn unknown_directive_ends_the_directives() {
        // `# escape=` after an unknown directive is a comment: `\` still continues lines.
        let g = graph("# foo=bar\n# escape=`\nFROM a\nRUN echo \\\n  hi\n");
        let Op::Run(run) = &g.stages[0].steps[0].op else { panic!() };
        assert_eq!(run.command, crate::graph::CommandLine::Shell("echo   hi".into()));
    }

    #[test]
    fn from_resolves_earlier_stages_only() {
        let g = graph("FROM later\nFROM busybox AS Later\nFROM LATER\nFROM scratch\n");
        assert_eq!(g.stages[0].base, Base::Image(ImageName::parse("later").unwrap()));
        assert_eq!(g.stages[1].name.as_ref().map(StageName::as_str), Some("later"));
        assert_eq!(g.stages[2].base, Base::Stage(crate::graph::StageId(1)));
        assert_eq!(g.stages[3].base, Base::Scratch);
    }

    #[test]
    fn from_expanding_to_nothing_is_an_error() {
        assert!(error("ARG IMAGE\nFROM $IMAGE\n").contains("expands to an empty string"));
        let args = BuildArgs::from([("IMAGE".to_string(), "busybox".to_string())]);
        let g = lower("Dockerfile", "ARG IMAGE\nFROM $IMAGE\n", &args).expect("lowers");
        assert_eq!(g.stages[0].base, Base::Image(ImageName::parse("busybox").unwrap()));
    }

    #[test]
    fn healthcheck_cmd_is_case_insensitive_and_needs_a_command() {
        let g = graph("FROM a\nHEALTHCHECK --interval=1m30s --timeout=500ms cmd [\"true\"]\n");
        let Op::Healthcheck(check) = &g.stages[0].steps[0].op else { panic!() };
        assert_eq!(check.test, ["CMD", "true"]);
        assert_eq!(check.interval, Some(90_000_000_000));
        assert_eq!(check.timeout, Some(500_000_000));
        assert!(error("FROM a\nHEALTHCHECK CMD\n").contains("needs a command"));
        assert!(error("FROM a\nHEALTHCHECK CMDtrue\n").contains("NONE or CMD"));
    }

    #[test]
    fn every_error_in_a_file_is_reported() {
        let message = error("FROM a\nWROKDIR /x\nENV\nCOPY one\nFROM a AS Bad!\n");
        for expected in ["4 errors", "WROKDIR", "ENV needs arguments", "COPY needs a source", "invalid stage name"] {
            assert!(message.contains(expected), "{expected:?} missing from {message}");
        }
    }

    #[test]
    fn steps_keep_origin_and_comments() {
        let g = graph("FROM a\n\n# first\n#second\nRUN x\n");
        let step = &g.stages[0].steps[0];
        assert_eq!(step.origin.line, 5);
        assert_eq!(step.comments, ["first", "second"]);
        assert_eq!(g.stages[0].origin.line, 1);
    }

    #[test]
    fn a_lone_run_heredoc_starting_with_a_shebang_runs_as_a_file() {
        let g = graph("FROM a\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN <<EOF\necho hi\nEOF\nRUN cat <<EOF\n#!x\nEOF\n");
        let heredocs: Vec<_> = g.stages[0]
            .steps
            .iter()
            .map(|s| match &s.op {
                Op::Run(run) => run.heredoc.clone(),
                _ => panic!("not a RUN"),
            })
            .collect();
        let doc = |executable| Some(crate::graph::RunHeredoc { name: "EOF".into(), executable });
        assert_eq!(heredocs, [doc(true), doc(false), None]);
    }

    #[test]
    fn a_copy_heredoc_that_cannot_expand_is_an_error_at_its_instruction() {
        let message = error("FROM a\nCOPY <<EOF /f\n${ x}\nEOF\n");
        assert!(message.contains("heredoc <<EOF: bad substitution"), "{message}");
    }

    #[test]
    fn quoted_copy_heredoc_is_not_expanded() {
        let g = graph("FROM a\nCOPY <<'EOF' /f\n$X\nEOF\n");
        let Op::Copy(copy) = &g.stages[0].steps[0].op else { panic!() };
        assert_eq!(copy.sources, [CopySource::Inline { name: "EOF".into(), content: crate::graph::Word::lit("$X\n") }]);
    }

    #[test]
    fn a_mount_naming_a_variable_is_read_when_the_step_runs() {
        let g = graph("FROM a AS src\nFROM a\nRUN --mount=type=cache,target=/c --mount=type=bind,from=src,target=$AT,ro true\n");
        let Op::Run(run) = &g.stages[1].steps[0].op else { panic!("not a RUN") };
        assert!(matches!(&run.mounts[0], crate::graph::RunMount::Cache { target, .. } if target == "/c"));
        let crate::graph::RunMount::Unexpanded { fields, from } = &run.mounts[1] else { panic!("{:?}", run.mounts[1]) };
        assert_eq!(from, &Some(CopyFrom::Stage(crate::graph::StageId(0))));
        let shown: Vec<String> =
            fields.iter().map(|(k, v)| format!("{k}={}", v.as_ref().map(|v| v.to_string()).unwrap_or_default())).collect();
        assert_eq!(shown, ["type=bind", "from=src", "target=${AT}", "ro="]);
        assert!(g.dependencies(crate::graph::StageId(1)).contains(&crate::graph::StageId(0)));
    }
}
