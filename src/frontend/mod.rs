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

/// Byte offset → 1-based line number, in O(log n) per lookup.
#[derive(Debug, Default)]
pub struct LineIndex {
    /// Offset of the first byte of every line after the first.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        LineIndex { starts: text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1).collect() }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset) + 1
    }
}

/// `--build-arg` values by name.
pub type BuildArgs = BTreeMap<String, String>;

/// Which front end reads a file: `.kdl` files are specs, anything else a Dockerfile.
pub fn is_kdl(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "kdl")
}

/// Reads and lowers a build file, choosing the front end by its name.
pub fn load(path: &Path, build_args: &BuildArgs) -> miette::Result<BuildGraph> {
    let text = std::fs::read_to_string(path).map_err(|e| miette::miette!("read build file {}: {e}", path.display()))?;
    let name = path.display().to_string();
    if is_kdl(path) { kdl::lower(&name, &text, build_args) } else { dockerfile::lower(&name, &text, build_args) }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn line_index_counts_lines_from_one() {
        let index = LineIndex::new("ab\ncd\n\nef");
        let lines: Vec<usize> = [0, 2, 3, 6, 7, 9].iter().map(|o| index.line(*o)).collect();
        assert_eq!(lines, [1, 1, 2, 3, 4, 4]);
    }
}
