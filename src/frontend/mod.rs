//! Front ends: parse a build file into its own syntax tree (with spans) and
//! lower it into the one [`BuildGraph`]. Nothing after lowering knows which
//! front end a step came from.

pub mod convert;
pub mod diagnostic;
pub mod dockerfile;
pub mod duration;
pub mod kdl;

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

pub use crate::graph::args::BuildArgs;

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
    use super::{BuildArgs, LineIndex};
    use proptest::prelude::*;

    /// Text made of the pieces a front end reacts to, in any order.
    fn hostile(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![proptest::sample::select(pieces).prop_map(str::to_string), "[ -~\\n\\té€😀]{0,4}"], 0..40)
            .prop_map(|parts| parts.concat())
    }

    const DOCKERFILE: &[&str] = &[
        "FROM ",
        "busybox",
        " AS ",
        "b",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "ARG ",
        "LABEL ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "CMD ",
        "SHELL ",
        "WORKDIR ",
        "USER ",
        "EXPOSE ",
        "--from=",
        "--chmod=",
        "--mount=type=cache,target=",
        "--network=",
        "=",
        "\"",
        "'",
        "\\",
        "\\\n",
        "`",
        "$",
        "${",
        "}",
        ":-",
        ":+",
        "<<EOF",
        "<<-'E'",
        "\nEOF\n",
        "[\"",
        "\", \"",
        "\"]",
        "# escape=`\n",
        "# syntax=x\n",
        "#",
        "\n",
        "  ",
        "\t",
        "0",
        "/",
        "*",
        "..",
    ];

    const KDL: &[&str] = &[
        "stage",
        "image",
        "layer",
        "arg",
        "from=",
        "run",
        "copy",
        "add",
        "env",
        "workdir",
        "user",
        "label",
        "cmd",
        "entrypoint",
        "healthcheck",
        "onbuild",
        "mount",
        "{",
        "}",
        "\"",
        "\"a\"",
        "#\"",
        "\"#",
        "\"\"\"",
        "#true",
        "#false",
        "#null",
        "=",
        "/-",
        "//",
        "/*",
        "*/",
        ";",
        "\\",
        "\n",
        " ",
        "1",
        "-1",
        "1.5",
        "{NAME}",
        "(t)",
        "link=#true",
        "chmod=\"0644\"",
    ];

    /// Lowers `text`; an error must render without panicking.
    fn lowers_or_reports(lower: fn(&str, &str, &BuildArgs) -> miette::Result<crate::graph::BuildGraph>, text: &str) {
        if let Err(report) = lower("f", text, &BuildArgs::new()) {
            let mut out = String::new();
            let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
            handler.render_report(&mut out, report.as_ref()).expect("render diagnostic");
            assert!(!out.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_dockerfile_text_makes_the_front_end_panic(text in hostile(DOCKERFILE)) {
            lowers_or_reports(super::dockerfile::lower, &text);
        }

        #[test]
        fn no_kdl_text_makes_the_front_end_panic(text in hostile(KDL)) {
            lowers_or_reports(super::kdl::lower, &text);
        }
    }

    #[test]
    fn line_index_counts_lines_from_one() {
        let index = LineIndex::new("ab\ncd\n\nef");
        let lines: Vec<usize> = [0, 2, 3, 6, 7, 9].iter().map(|o| index.line(*o)).collect();
        assert_eq!(lines, [1, 1, 2, 3, 4, 4]);
    }
}
