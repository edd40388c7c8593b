//! `Word`: a piece of user text whose variable references are kept apart from
//! its literal text, so expansion happens at build time against the stage's
//! real environment. Front ends produce words; only `expand` reads them.

use std::fmt;

use serde::Serialize;

/// One piece of a word: literal text or a variable reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Text taken as it is.
    Lit(String),
    /// `$NAME` or `${NAME}`.
    Var(String),
    /// `${NAME:-word}` (`colon`: also when set but empty) or `${NAME-word}`.
    Default { name: String, colon: bool, word: Word },
    /// `${NAME:+word}` or `${NAME+word}`.
    Alt { name: String, colon: bool, word: Word },
}

/// A sequence of parts; see the module comment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Word(pub Vec<Part>);

impl Word {
    /// A word with no variable references.
    pub fn lit(text: impl Into<String>) -> Word {
        let text = text.into();
        if text.is_empty() { Word(Vec::new()) } else { Word(vec![Part::Lit(text)]) }
    }

    /// The text, if this word has no variable references.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Lit(text) => out.push_str(text),
                _ => return None,
            }
        }
        Some(out)
    }

    /// Substitutes every variable with `lookup`; unset variables become empty.
    pub fn expand(&self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        self.expand_into(lookup, &mut out);
        out
    }

    fn expand_into(&self, lookup: &dyn Fn(&str) -> Option<String>, out: &mut String) {
        for part in &self.0 {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(name) => out.push_str(&lookup(name).unwrap_or_default()),
                Part::Default { name, colon, word } => match lookup(name) {
                    Some(value) if !(*colon && value.is_empty()) => out.push_str(&value),
                    _ => word.expand_into(lookup, out),
                },
                Part::Alt { name, colon, word } => match lookup(name) {
                    Some(value) if !(*colon && value.is_empty()) => word.expand_into(lookup, out),
                    _ => {}
                },
            }
        }
    }

    /// Names of the variables this word reads.
    pub fn variables(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_variables(&mut names);
        names
    }

    /// Into one list, so nested words cost no copying per level.
    fn collect_variables<'w>(&'w self, names: &mut Vec<&'w str>) {
        for part in &self.0 {
            match part {
                Part::Lit(_) => {}
                Part::Var(name) => names.push(name.as_str()),
                Part::Default { name, word, .. } | Part::Alt { name, word, .. } => {
                    names.push(name.as_str());
                    word.collect_variables(names);
                }
            }
        }
    }
}

/// Renders in Dockerfile syntax: `$` and `\` in literals escaped, variables as `${NAME}`.
impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                Part::Lit(text) => {
                    for c in text.chars() {
                        if matches!(c, '$' | '\\') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                }
                Part::Var(name) => write!(f, "${{{name}}}")?,
                Part::Default { name, colon, word } => write!(f, "${{{name}{}-{word}}}", if *colon { ":" } else { "" })?,
                Part::Alt { name, colon, word } => write!(f, "${{{name}{}+{word}}}", if *colon { ":" } else { "" })?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("v".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_and_alternatives_as_the_shell_does() {
        let cases = [
            (Part::Default { name: "SET".into(), colon: true, word: Word::lit("d") }, "v"),
            (Part::Default { name: "EMPTY".into(), colon: true, word: Word::lit("d") }, "d"),
            (Part::Default { name: "EMPTY".into(), colon: false, word: Word::lit("d") }, ""),
            (Part::Default { name: "UNSET".into(), colon: false, word: Word::lit("d") }, "d"),
            (Part::Alt { name: "SET".into(), colon: true, word: Word::lit("a") }, "a"),
            (Part::Alt { name: "EMPTY".into(), colon: true, word: Word::lit("a") }, ""),
            (Part::Alt { name: "EMPTY".into(), colon: false, word: Word::lit("a") }, "a"),
            (Part::Alt { name: "UNSET".into(), colon: false, word: Word::lit("a") }, ""),
        ];
        for (part, want) in cases {
            assert_eq!(Word(vec![part.clone()]).expand(&env), want, "{part:?}");
        }
    }

    #[test]
    fn display_escapes_literals_and_braces_variables() {
        let word = Word(vec![Part::Lit("a$b\\".into()), Part::Var("X".into())]);
        assert_eq!(word.to_string(), "a\\$b\\\\${X}");
    }
}
