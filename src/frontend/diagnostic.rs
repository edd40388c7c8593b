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

/// [`SourceErrors`] against a named file.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}: {} errors", .errors.len())]
struct FileErrors {
    file: String,
    #[related]
    errors: Vec<SourceError>,
}

impl SourceErrors {
    /// A report of these errors against the file they came from: a single
    /// error is shown as itself, several under one heading.
    pub fn into_report(self, file: &str, text: &str) -> miette::Report {
        let source = miette::NamedSource::new(file, text.to_string());
        let mut errors = self.errors;
        if errors.len() == 1 {
            let only = errors.remove(0);
            miette::Report::new(only).with_source_code(source)
        } else {
            miette::Report::new(FileErrors { file: file.to_string(), errors }).with_source_code(source)
        }
    }
}
