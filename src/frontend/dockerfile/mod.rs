//! The Dockerfile front end (to be written).

use crate::frontend::BuildArgs;
use crate::graph::BuildGraph;

/// Parses and lowers a Dockerfile into the build graph.
pub fn lower(_file: &str, _text: &str, _build_args: &BuildArgs) -> miette::Result<BuildGraph> {
    Err(miette::miette!("dockerfile front end not written yet"))
}
