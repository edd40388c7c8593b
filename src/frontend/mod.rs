//! Front ends: parse a build file into its own syntax tree (with spans) and
//! lower it into the one [`BuildGraph`]. Nothing after lowering knows which
//! front end a step came from.

pub mod convert;
pub mod diagnostic;
pub mod dockerfile;
pub mod kdl;

use std::collections::BTreeMap;
use std::path::Path;

use crate::graph::BuildGraph;

/// `--build-arg` values by name.
pub type BuildArgs = BTreeMap<String, String>;

/// Which front end reads a file: `.kdl` files are specs, anything else a Dockerfile.
pub fn is_kdl(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "kdl")
}

/// Reads and lowers a build file, choosing the front end by its name.
pub fn load(path: &Path, build_args: &BuildArgs) -> miette::Result<BuildGraph> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette::miette!("read build file {}: {e}", path.display()))?;
    let name = path.display().to_string();
    if is_kdl(path) {
        kdl::lower(&name, &text, build_args)
    } else {
        dockerfile::lower(&name, &text, build_args)
    }
}
