//! Errors in a build file (Dockerfile or spec): one diagnostic per problem, all collected, pointing at
//! the node or value that caused it.

use miette::{Diagnostic, SourceSpan};

/// One problem in a spec, with the span it was written at (if from a file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct SourceError {
    pub message: String,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl SourceError {
    /// An error at `span`, labelled `label`.
    pub fn new(message: impl Into<String>, span: Option<SourceSpan>, label: impl Into<String>) -> SourceError {
        SourceError { message: message.into(), span, label: label.into(), help: None }
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> SourceError {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean …?" when `suggestion` is set.
    pub fn did_you_mean(self, suggestion: Option<String>) -> SourceError {
        match suggestion {
            Some(s) => self.help(format!("did you mean {s:?}?")),
            None => self,
        }
    }
}

/// Every problem found in a spec; a spec with any builds nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Diagnostic)]
#[error("{} errors in the build file", .errors.len())]
pub struct SourceErrors {
    #[related]
    pub errors: Vec<SourceError>,
}

/// [`SourceErrors`] against a named file: the first [`MAX_REPORTED`] of `total`.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}: {total} errors{}", if *.total > .errors.len() { format!(" (the first {} shown)", .errors.len()) } else { String::new() })]
struct FileErrors {
    file: String,
    total: usize,
    #[related]
    errors: Vec<SourceError>,
}

/// The most errors one report shows: past them a reader learns nothing new,
/// and a hostile file could otherwise make millions.
pub const MAX_REPORTED: usize = 50;

impl SourceErrors {
    /// A report of these errors against the file they came from: a single
    /// error is shown as itself, several under one heading.
    ///
    /// User text is shown clipped: a message, label or hint to [`MAX_SHOWN`]
    /// characters, and a source line longer than that to a window around the
    /// error in it (the label then names the real column), so a 1 MiB line is
    /// never printed whole.
    pub fn into_report(self, file: &str, text: &str) -> miette::Report {
        let total = self.errors.len();
        let shown = &self.errors[..total.min(MAX_REPORTED)];
        let clipped = ClippedText::new(text, shown.iter().filter_map(|e| e.span));
        let source = miette::NamedSource::new(file, clipped.text.clone());
        let mut errors: Vec<SourceError> = self.errors.into_iter().take(MAX_REPORTED).map(|e| clipped.error(e)).collect();
        if total == 1 {
            let only = errors.remove(0);
            miette::Report::new(only).with_source_code(source)
        } else {
            miette::Report::new(FileErrors { file: file.to_string(), total, errors }).with_source_code(source)
        }
    }
}

/// The most characters of user text a diagnostic shows in one piece.
pub const MAX_SHOWN: usize = 200;

/// `text` cut to [`MAX_SHOWN`] characters, with an ellipsis when cut.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// What stands for the cut part of a source line.
const ELLIPSIS: &str = "...";

/// A source text whose long lines are cut to a window, and how offsets map into it.
struct ClippedText<'a> {
    original: &'a str,
    text: String,
    /// Pieces of the original, in order: `(old start, old end, new start, kept)`;
    /// a piece not kept became one [`ELLIPSIS`].
    pieces: Vec<(usize, usize, usize, bool)>,
    /// Lines that were cut: their original start and end.
    cut_lines: Vec<(usize, usize)>,
}

impl<'a> ClippedText<'a> {
    fn new(text: &'a str, spans: impl Iterator<Item = SourceSpan>) -> ClippedText<'a> {
        let mut starts: Vec<usize> = spans.map(|s| s.offset()).collect();
        starts.sort_unstable();
        let mut clipped = ClippedText { original: text, text: String::new(), pieces: Vec::new(), cut_lines: Vec::new() };
        let mut line_start = 0;
        for line in text.split_inclusive('\n') {
            let line_end = line_start + line.len();
            if line.len() <= MAX_SHOWN {
                clipped.keep(line_start, line_end, text);
            } else {
                clipped.cut_lines.push((line_start, line_end));
                // A window of MAX_SHOWN bytes around the first error on the line.
                let first = starts[starts.partition_point(|o| *o < line_start)..].first().copied().filter(|o| *o < line_end);
                let from = floor_char(text, first.map_or(line_start, |o| o.saturating_sub(MAX_SHOWN / 2).max(line_start)));
                let to = floor_char(text, (from + MAX_SHOWN).min(line_end));
                if from > line_start {
                    clipped.drop(line_start, from);
                }
                clipped.keep(from, to, text);
                let newline = if line.ends_with('\n') { line_end - 1 } else { line_end };
                if to < newline {
                    clipped.drop(to, newline);
                }
                clipped.keep(newline.max(to), line_end, text);
            }
            line_start = line_end;
        }
        clipped
    }

    fn keep(&mut self, from: usize, to: usize, text: &str) {
        self.pieces.push((from, to, self.text.len(), true));
        self.text.push_str(&text[from..to]);
    }

    fn drop(&mut self, from: usize, to: usize) {
        self.pieces.push((from, to, self.text.len(), false));
        // ASCII, so the renderer's byte columns stay on character boundaries.
        self.text.push_str(ELLIPSIS);
    }

    /// Where an original offset is in the clipped text; `end`: the offset ends a span.
    fn map(&self, offset: usize, end: bool) -> usize {
        let index = self.pieces.partition_point(|(_, old_end, _, _)| *old_end < offset + usize::from(!end));
        match self.pieces.get(index) {
            Some((old_start, _, new_start, true)) => new_start + offset.saturating_sub(*old_start),
            // Into a cut piece: at its ellipsis, so a label underlines only text that is shown.
            Some((_, _, new_start, false)) => *new_start,
            None => self.text.len(),
        }
    }

    /// `error` with its text clipped and its span moved into the clipped text.
    fn error(&self, error: SourceError) -> SourceError {
        let mut label = clip(&error.label);
        let span = error.span.map(|span| {
            let offset = span.offset();
            if let Some((line_start, _)) = self.cut_lines.iter().find(|(start, end)| *start <= offset && offset < *end) {
                let column = self.original.get(*line_start..offset).map_or(0, |before| before.chars().count()) + 1;
                label = format!("{label} (column {column} of a long line)");
            }
            let start = self.map(span.offset(), false);
            let end = self.map(span.offset() + span.len(), true).max(start);
            SourceSpan::from((start, end - start))
        });
        SourceError { message: clip(&error.message), span, label, help: error.help.as_deref().map(clip) }
    }
}

fn floor_char(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(report: miette::Report) -> String {
        let mut out = String::new();
        let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(1000);
        handler.render_report(&mut out, report.as_ref()).expect("render");
        out
    }

    #[test]
    fn a_huge_line_and_message_are_shown_clipped_around_the_error() {
        let long = "x".repeat(1 << 20);
        let text = format!("FROM scratch\nRUN {long}BAD{long}\nRUN ok\n");
        let at = text.find("BAD").unwrap();
        let error = SourceError::new(format!("bad word {long}"), Some((at, 3).into()), "here");
        let out = render(SourceErrors { errors: vec![error] }.into_report("Dockerfile", &text));
        assert!(out.len() < 4096, "{} bytes", out.len());
        assert!(out.contains("BAD"), "{out}");
        assert!(out.contains(&format!("here (column {} of a long line)", (1 << 20) + 5)), "{out}");
        assert!(out.contains("RUN ok"), "{out}");
        assert!(out.contains("bad word xxx") && out.contains("x…"), "{out}");
    }

    #[test]
    fn short_lines_are_shown_as_they_are() {
        let text = "FROM scratch\nBOGUS x\n";
        let error = SourceError::new("unknown instruction: BOGUS", Some((13, 5).into()), "not an instruction");
        let out = render(SourceErrors { errors: vec![error] }.into_report("Dockerfile", text));
        assert!(out.contains("2 │ BOGUS x") && out.contains("not an instruction\n"), "{out}");
    }

    #[test]
    fn a_report_shows_the_first_errors_and_counts_them_all() {
        let text = "x\n".repeat(MAX_REPORTED + 70);
        let errors = (0..MAX_REPORTED + 70).map(|i| SourceError::new(format!("error number {i}"), Some((2 * i, 1).into()), "here"));
        let out = render(SourceErrors { errors: errors.collect() }.into_report("spec.kdl", &text));
        assert!(out.contains(&format!("spec.kdl: {} errors (the first {MAX_REPORTED} shown)", MAX_REPORTED + 70)), "{out}");
        assert!(out.contains(&format!("error number {}\n", MAX_REPORTED - 1)), "{out}");
        assert!(!out.contains(&format!("error number {}\n", MAX_REPORTED)), "{out}");
    }

    #[test]
    fn offsets_map_through_cut_pieces() {
        let text = format!("{}\nab\n", "y".repeat(1000));
        let clipped = ClippedText::new(&text, std::iter::empty());
        assert_eq!(clipped.text, format!("{}...\nab\n", "y".repeat(MAX_SHOWN)));
        assert_eq!(clipped.map(1001, false), MAX_SHOWN + 4);
        assert_eq!(clipped.map(500, false), MAX_SHOWN);
        assert_eq!(clipped.map(500, true), MAX_SHOWN);
        assert_eq!(clipped.map(text.len(), true), clipped.text.len());
    }
}
