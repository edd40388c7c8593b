//! The KDL front end: a build spec in KDL v2 → [`Spec`] (`parse`) → the
//! build graph (`lower`), and back to text (`print`). It must not know how a
//! graph is built; a spec and its Dockerfile equivalent lower to the same graph.
//! The schema is documented in `specs/README.md`.
//!
//! The spec types are also the library API for writing a spec in code:
//!
//! ```
//! use strata::frontend::BuildArgs;
//! use strata::frontend::kdl::{Spec, StageSpec, StepSpec};
//!
//! let spec = Spec::new()
//!     .arg("VERSION", "1.0")
//!     .stage(
//!         StageSpec::stage("build", "busybox:latest")
//!             .workdir("/src")
//!             .copy(["hello.sh"], ".")
//!             .run("sh hello.sh > /out.txt"),
//!     )
//!     .stage(
//!         StageSpec::image("hello:{VERSION}", "busybox:latest")
//!             .env("TZ", "Asia/Seoul")
//!             .cmd(["cat", "/out.txt"])
//!             .copy_from("build", ["/out.txt"], "/out.txt"),
//!     );
//!
//! let mut build_args = BuildArgs::new();
//! build_args.insert("VERSION".into(), "2.0".into());
//! let graph = spec.lower(&build_args).expect("a valid spec");
//! assert_eq!(graph.stages.len(), 2);
//! assert_eq!(graph.images[0].tags[0], "hello:2.0");
//!
//! // The same spec, as text:
//! let text = strata::frontend::kdl::to_kdl(&graph);
//! assert!(text.contains(r#"image "hello:2.0" from="busybox:latest""#));
//! ```

mod lower;
mod nesting;
mod parse;
mod print;
mod schema;

use std::sync::Arc;

pub use crate::frontend::diagnostic::SourceErrors;
pub use print::{check as check_printable, to_kdl};
pub use schema::{
    ArgSpec, ArgValue, CommandLine, CopySpec, HealthcheckSpec, LayerSpec, MountSpec, Network, RunSpec, Security, SourceSpec, Spec,
    SpecStep, StageKind, StageSpec, StepSpec, Text,
};

use crate::frontend::BuildArgs;
use crate::graph::BuildGraph;

impl Spec {
    /// Parses KDL text into a spec; errors carry spans into `text`.
    pub fn parse(text: &str) -> Result<Spec, SourceErrors> {
        match parse::parse(text) {
            Ok((spec, errors)) if errors.is_empty() => Ok(spec),
            Ok((_, errors)) | Err(errors) => Err(SourceErrors { errors }),
        }
    }
}

/// Parses and lowers a KDL build spec into the build graph.
pub fn lower(file: &str, text: &str, build_args: &BuildArgs) -> miette::Result<BuildGraph> {
    let (spec, mut errors) = parse::parse(text).map_err(|errors| SourceErrors { errors }.into_report(file, text))?;
    // Lower even a spec with shape errors, to report reference errors too.
    let source = lower::SourceFile { name: Arc::from(file), lines: crate::frontend::LineIndex::new(text) };
    let lowered = lower::lower_spec(&spec, build_args, Some(source));
    match lowered {
        Ok(graph) if errors.is_empty() => Ok(graph),
        Ok(_) => Err(SourceErrors { errors }.into_report(file, text)),
        Err(more) => {
            errors.extend(more.errors);
            Err(SourceErrors { errors }.into_report(file, text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Base, ImageName, Op, StageId, StageName};

    fn lower_text(text: &str) -> Result<BuildGraph, SourceErrors> {
        let (spec, errors) = parse::parse(text).map_err(|errors| SourceErrors { errors })?;
        assert_eq!(errors, vec![]);
        spec.lower(&BuildArgs::new())
    }

    #[test]
    fn linked_layers_become_hidden_stages_before_their_parent() {
        let graph = lower_text(
            r#"image "app:1" from="busybox:latest" {
                layer "assets" link=#true { copy "a" "/a" }
                run "true"
            }"#,
        )
        .unwrap();
        assert_eq!(graph.stages.len(), 2);
        let layer = &graph.stages[0];
        assert!(layer.hidden);
        assert_eq!(layer.base, Base::Scratch);
        assert_eq!(layer.name.as_ref().map(StageName::as_str), Some("app:1/layer/assets"));
        assert_eq!(graph.stages[1].steps[0].op, Op::LinkLayers { stage: StageId(0), name: "assets".into() });
        assert_eq!(graph.images[0].stage, StageId(1));
    }

    #[test]
    fn copy_parents_lowers_and_prints_back() {
        let graph = lower_text(r#"image "app:1" from="busybox:latest" { copy "src/./a" "/out/" parents=#true }"#).unwrap();
        let Op::Copy(copy) = &graph.stages[0].steps[0].op else { panic!("not a copy") };
        assert!(copy.parents);
        assert!(to_kdl(&graph).contains("parents=#true"), "{}", to_kdl(&graph));
        let dockerfile = crate::frontend::convert::to_dockerfile(&graph).unwrap();
        assert!(dockerfile.contains("COPY --parents src/./a /out/"), "{dockerfile}");
    }

    #[test]
    fn copy_excludes_lower_and_print_back() {
        let graph = lower_text(r#"image "app:1" from="busybox:latest" { copy "." "/1" { exclude "*.png" "*/*.jpg"; }; }"#).unwrap();
        let Op::Copy(copy) = &graph.stages[0].steps[0].op else { panic!("not a copy") };
        assert_eq!(copy.exclude.len(), 2);
        let printed = to_kdl(&graph);
        assert!(printed.contains(r#"exclude "*.png" "*/*.jpg""#), "{printed}");
        assert_eq!(lower_text(&printed).unwrap(), graph);
        let dockerfile = crate::frontend::convert::to_dockerfile(&graph).unwrap();
        assert!(dockerfile.contains("COPY --exclude=*.png --exclude=*/*.jpg . /1"), "{dockerfile}");
    }

    #[test]
    fn add_unpack_lowers_and_prints_back() {
        let graph = lower_text(r#"image "app:1" from="busybox:latest" { add "t.tar.gz" "/kept/" unpack=#false; }"#).unwrap();
        let Op::Copy(copy) = &graph.stages[0].steps[0].op else { panic!("not an add") };
        assert_eq!(copy.unpack, Some(false));
        assert_eq!(lower_text(&to_kdl(&graph)).unwrap(), graph);
        let dockerfile = crate::frontend::convert::to_dockerfile(&graph).unwrap();
        assert!(dockerfile.contains("ADD --unpack=false t.tar.gz /kept/"), "{dockerfile}");
    }

    #[test]
    fn build_args_override_defaults_in_from_and_tags() {
        let spec = Spec::parse(
            r#"arg "V" default=1
            image "app:{V}" from="busybox:{V}" {}"#,
        )
        .unwrap();
        let args = BuildArgs::from([("V".to_string(), "2".to_string())]);
        let graph = spec.lower(&args).unwrap();
        assert_eq!(graph.stages[0].base, Base::Image(ImageName::parse("busybox:2").unwrap()));
        assert_eq!(graph.images[0].tags[0], "app:2");
        assert_eq!(graph.args[0].default.as_ref().and_then(|w| w.as_literal()).as_deref(), Some("1"));
    }

    #[test]
    fn every_error_is_reported() {
        let errors = Spec::parse(
            r#"stage from="busybox:latest" { wrkdir "/x"; copy "a" }
            imgae "x""#,
        )
        .unwrap_err();
        assert_eq!(errors.errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn comments_above_a_step_are_kept() {
        let graph = lower_text("stage from=\"busybox:latest\" {\n    // first\n    // second\n    run \"true\"\n}\n").unwrap();
        assert_eq!(graph.stages[0].steps[0].comments, vec!["first", "second"]);
        assert_eq!(graph.stages[0].steps[0].origin.line, 0);
    }
}
