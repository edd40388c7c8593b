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
//! assert_eq!(graph.images[0].tags[0].as_literal().as_deref(), Some("hello:2.0"));
//!
//! // The same spec, as text:
//! let text = strata::frontend::kdl::to_kdl(&graph);
//! assert!(text.contains(r#"image "hello:2.0" from="busybox:latest""#));
//! ```

mod error;
mod lower;
mod parse;
mod print;
mod schema;

use std::sync::Arc;

pub use error::{SpecError, SpecErrors};
pub use lower::parse_word;
pub use parse::parse_duration;
pub use print::{check as check_printable, to_kdl};
pub use schema::{
    ArgSpec, ArgValue, CommandLine, CopySpec, HealthcheckSpec, LayerSpec, MountSpec, Network,
    RunSpec, SourceSpec, Spec, StageKind, StageSpec, Step, StepSpec, Text,
};

use crate::frontend::BuildArgs;
use crate::graph::BuildGraph;

impl Spec {
    /// Parses KDL text into a spec; errors carry spans into `text`.
    pub fn parse(text: &str) -> Result<Spec, SpecErrors> {
        match parse::parse(text) {
            Ok((spec, errors)) if errors.is_empty() => Ok(spec),
            Ok((_, errors)) | Err(errors) => Err(SpecErrors { errors }),
        }
    }
}

/// Parses and lowers a KDL build spec into the build graph.
pub fn lower(file: &str, text: &str, build_args: &BuildArgs) -> miette::Result<BuildGraph> {
    let (spec, mut errors) =
        parse::parse(text).map_err(|errors| SpecErrors { errors }.into_report(file, text))?;
    // Lower even a spec with shape errors, to report reference errors too.
    let source = lower::SourceFile {
        name: Arc::from(file),
        text,
    };
    let lowered = lower::lower_spec(&spec, build_args, Some(source));
    match lowered {
        Ok(graph) if errors.is_empty() => Ok(graph),
        Ok(_) => Err(SpecErrors { errors }.into_report(file, text)),
        Err(more) => {
            errors.extend(more.errors);
            Err(SpecErrors { errors }.into_report(file, text))
        }
    }
}
