//! `Word`: a piece of user text whose variable references are kept apart from
//! its literal text, so expansion happens at build time against the stage's
//! real environment. Front ends produce words (and read their variables to
//! check them); the executor expands them (`expand`).
//!
//! The `${NAME…}` forms behave as BuildKit's shell lexer: a nested word is
//! expanded before its variable is looked at (so `${A:-${B:?}}` fails even
//! when `A` is set), and patterns are globs of `*` and `?` that, as BuildKit's
//! regular expressions, never match a newline.

use std::cell::Cell;
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
    /// `${NAME:?message}` or `${NAME?message}`: an error when unset (`colon`: or empty).
    Required { name: String, colon: bool, message: Word },
    /// `${NAME#pattern}` (`longest`: `##`): the value without the prefix the pattern matches.
    TrimPrefix { name: String, longest: bool, pattern: Word },
    /// `${NAME%pattern}` (`longest`: `%%`): the value without the suffix the pattern matches.
    TrimSuffix { name: String, longest: bool, pattern: Word },
    /// `${NAME/pattern/replacement}` (`all`: `//`): the first (every) longest match replaced.
    Replace { name: String, all: bool, pattern: Word, replacement: Word },
}

impl Part {
    /// The variable this part reads, if any.
    pub fn variable(&self) -> Option<&str> {
        match self {
            Part::Lit(_) => None,
            Part::Var(name)
            | Part::Default { name, .. }
            | Part::Alt { name, .. }
            | Part::Required { name, .. }
            | Part::TrimPrefix { name, .. }
            | Part::TrimSuffix { name, .. }
            | Part::Replace { name, .. } => Some(name),
        }
    }

    /// The words nested in this part, in the order they are written.
    fn nested(&self) -> impl Iterator<Item = &Word> {
        let (first, second) = match self {
            Part::Lit(_) | Part::Var(_) => (None, None),
            Part::Default { word, .. } | Part::Alt { word, .. } => (Some(word), None),
            Part::Required { message, .. } => (Some(message), None),
            Part::TrimPrefix { pattern, .. } | Part::TrimSuffix { pattern, .. } => (Some(pattern), None),
            Part::Replace { pattern, replacement, .. } => (Some(pattern), Some(replacement)),
        };
        first.into_iter().chain(second)
    }
}

/// The longest text a word may expand to. Hostile defaults that read each
/// other twice (`ARG B=$A$A`, `ARG C=$B$B`, …) would otherwise double per
/// line; the kernel refuses an environment string of over 128 KiB anyway.
pub const MAX_EXPANDED: usize = 1 << 20;

/// Why a word could not be expanded; the text is BuildKit's where BuildKit has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The expansion would be longer than [`MAX_EXPANDED`] bytes, or its
    /// pattern matches would take more than [`MAX_MATCH_STEPS`] steps.
    #[error("the expansion is longer than {MAX_EXPANDED} bytes or takes too long to match")]
    TooLong,
    /// `${NAME:?message}` met an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// A pattern with an escape other than `\*`, `\?`, `\\`, `\}` or `\/`.
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")]
    BadPattern { pattern: String, escaped: String },
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
    pub fn expand(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
        let mut out = String::new();
        self.expand_into(lookup, &mut out, &Cell::new(MAX_MATCH_STEPS))?;
        Ok(out)
    }

    /// `budget`: the pattern-matching steps left to the whole expansion, nested words included.
    fn expand_into(&self, lookup: &dyn Fn(&str) -> Option<String>, out: &mut String, budget: &Cell<usize>) -> Result<(), ExpandError> {
        for part in &self.0 {
            // As BuildKit: nested words first, whether or not they are used.
            let mut nested = Vec::new();
            for word in part.nested() {
                let mut text = String::new();
                word.expand_into(lookup, &mut text, budget)?;
                nested.push(text);
            }
            let value = part.variable().and_then(lookup);
            let set = |colon: bool| value.as_ref().is_some_and(|v| !(colon && v.is_empty()));
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(_) => out.push_str(value.as_deref().unwrap_or_default()),
                Part::Default { colon, .. } => match set(*colon) {
                    true => out.push_str(value.as_deref().unwrap_or_default()),
                    false => out.push_str(&nested[0]),
                },
                Part::Alt { colon, .. } => {
                    if set(*colon) {
                        out.push_str(&nested[0]);
                    }
                }
                Part::Required { name, colon, .. } => {
                    if !set(*colon) {
                        let message = match (&nested[0], &value) {
                            (m, _) if !m.is_empty() => m.clone(),
                            (_, None) => "is not allowed to be unset".into(),
                            (_, Some(_)) => "is not allowed to be empty".into(),
                        };
                        return Err(ExpandError::Required { name: name.clone(), message });
                    }
                    out.push_str(value.as_deref().unwrap_or_default());
                }
                Part::TrimPrefix { longest, .. } | Part::TrimSuffix { longest, .. } => {
                    let mut glob = Glob::parse(&nested[0], budget)?;
                    let mut chars: Vec<char> = value.as_deref().unwrap_or_default().chars().collect();
                    let suffix = matches!(part, Part::TrimSuffix { .. });
                    if suffix {
                        glob.tokens.reverse();
                        chars.reverse();
                    }
                    let cut = glob.prefix(&chars, *longest)?.unwrap_or(0);
                    let mut kept = chars.split_off(cut);
                    if suffix {
                        kept.reverse();
                    }
                    out.extend(kept);
                }
                Part::Replace { all, .. } => {
                    let glob = Glob::parse(&nested[0], budget)?;
                    let chars: Vec<char> = value.as_deref().unwrap_or_default().chars().collect();
                    glob.replace(&chars, &nested[1], *all, out)?;
                }
            }
            if out.len() > MAX_EXPANDED {
                return Err(ExpandError::TooLong);
            }
        }
        Ok(())
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
            names.extend(part.variable());
            for word in part.nested() {
                word.collect_variables(names);
            }
        }
    }

    /// Writes a pattern or replacement word: its literals keep their escapes as written.
    fn fmt_raw(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                Part::Lit(text) => f.write_str(text)?,
                other => fmt::Display::fmt(&Word(vec![other.clone()]), f)?,
            }
        }
        Ok(())
    }

    /// Writes a word nested in `${NAME:-…}`, where quotes are read too.
    fn fmt_nested(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.0 {
            match part {
                Part::Lit(text) => write_escaped(f, text, &['$', '\\', '"', '\''])?,
                other => fmt::Display::fmt(&Word(vec![other.clone()]), f)?,
            }
        }
        Ok(())
    }
}

/// `text` with a `\` before each of `special`.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str, special: &[char]) -> fmt::Result {
    for c in text.chars() {
        if special.contains(&c) {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    Ok(())
}

/// Renders in Dockerfile syntax: `$` and `\` in literals escaped, variables as `${NAME}`.
impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let colon = |c: bool| if c { ":" } else { "" };
        for part in &self.0 {
            match part {
                Part::Lit(text) => write_escaped(f, text, &['$', '\\'])?,
                Part::Var(name) => write!(f, "${{{name}}}")?,
                Part::Default { name, colon: c, word: nested }
                | Part::Alt { name, colon: c, word: nested }
                | Part::Required { name, colon: c, message: nested } => {
                    let op = match part {
                        Part::Default { .. } => '-',
                        Part::Alt { .. } => '+',
                        _ => '?',
                    };
                    write!(f, "${{{name}{}{op}", colon(*c))?;
                    nested.fmt_nested(f)?;
                    f.write_str("}")?;
                }
                Part::TrimPrefix { name, longest, pattern } | Part::TrimSuffix { name, longest, pattern } => {
                    let op = if matches!(part, Part::TrimPrefix { .. }) { "#" } else { "%" };
                    write!(f, "${{{name}{op}{}", if *longest { op } else { "" })?;
                    pattern.fmt_raw(f)?;
                    f.write_str("}")?;
                }
                Part::Replace { name, all, pattern, replacement } => {
                    write!(f, "${{{name}/{}", if *all { "/" } else { "" })?;
                    pattern.fmt_raw(f)?;
                    f.write_str("/")?;
                    replacement.fmt_raw(f)?;
                    f.write_str("}")?;
                }
            }
        }
        Ok(())
    }
}

/// One element of a shell pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: any one character but a newline.
    Any,
    /// `*`: any run of characters without a newline.
    Star,
}

impl Token {
    fn takes(self, c: char) -> bool {
        match self {
            Token::Char(want) => c == want,
            Token::Any | Token::Star => c != '\n',
        }
    }
}

/// A shell pattern of `*`, `?` and literal characters, matched by a set of
/// positions in it (an NFA): a search costs at most pattern × text steps, and
/// all the searches of one expansion at most [`MAX_MATCH_STEPS`].
#[derive(Debug)]
struct Glob<'b> {
    tokens: Vec<Token>,
    /// Steps left to the expansion this match is part of.
    budget: &'b Cell<usize>,
}

/// How many pattern-position steps the matches of one word's expansion may take: a
/// megabyte pattern against a megabyte value is refused, not run for hours.
const MAX_MATCH_STEPS: usize = 1 << 24;

/// The positions of a glob the match may be at, each with the earliest
/// start in the text that reaches it.
struct States(Vec<Option<usize>>);

impl States {
    /// Follows every `*` that may match nothing.
    fn close(&mut self, glob: &Glob<'_>) {
        for j in 0..glob.tokens.len() {
            if glob.tokens[j] == Token::Star
                && let Some(start) = self.0[j]
            {
                self.0[j + 1] = Some(self.0[j + 1].map_or(start, |s| s.min(start)));
            }
        }
    }

    fn step(&self, glob: &Glob<'_>, c: char) -> States {
        let mut next = States(vec![None; self.0.len()]);
        for (j, token) in glob.tokens.iter().enumerate() {
            let Some(start) = self.0[j] else { continue };
            if token.takes(c) {
                let to = if *token == Token::Star { j } else { j + 1 };
                next.0[to] = Some(next.0[to].map_or(start, |s| s.min(start)));
            }
        }
        next.close(glob);
        next
    }
}

impl<'b> Glob<'b> {
    /// Reads a pattern as BuildKit does: `\` escapes `*`, `?` and `\`, and
    /// drops before `}` and `/`; any other escape is an error.
    fn parse(pattern: &str, budget: &'b Cell<usize>) -> Result<Glob<'b>, ExpandError> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::Any,
                '\\' => match chars.peek().copied() {
                    Some('}' | '/') => continue,
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Token::Char(escaped)
                    }
                    other => {
                        let escaped = other.map(String::from).unwrap_or_default();
                        return Err(ExpandError::BadPattern { pattern: pattern.to_string(), escaped });
                    }
                },
                c => Token::Char(c),
            });
        }
        Ok(Glob { tokens, budget })
    }

    /// The states after reading `c`, paid for from the budget.
    fn advance(&self, states: &States, c: char) -> Result<States, ExpandError> {
        let left = self.budget.get().checked_sub(states.0.len()).ok_or(ExpandError::TooLong)?;
        self.budget.set(left);
        Ok(states.step(self, c))
    }

    /// The length of the shortest (or longest) start of `text` the pattern matches.
    fn prefix(&self, text: &[char], longest: bool) -> Result<Option<usize>, ExpandError> {
        let end = self.tokens.len();
        let mut states = States(vec![None; end + 1]);
        states.0[0] = Some(0);
        states.close(self);
        let mut found = None;
        for i in 0..=text.len() {
            if states.0[end].is_some() {
                found = Some(i);
                if !longest {
                    break;
                }
            }
            if i == text.len() || states.0.iter().all(Option::is_none) {
                break;
            }
            states = self.advance(&states, text[i])?;
        }
        Ok(found)
    }

    /// The leftmost match at or after `from`, as long as it goes: (start, end).
    fn find(&self, text: &[char], from: usize) -> Result<Option<(usize, usize)>, ExpandError> {
        let end = self.tokens.len();
        let mut states = States(vec![None; end + 1]);
        let mut best: Option<(usize, usize)> = None;
        for i in from..=text.len() {
            if best.is_none() && states.0[0].is_none() {
                states.0[0] = Some(i);
                states.close(self);
            }
            if let Some(start) = states.0[end]
                && best.is_none_or(|(s, _)| start <= s)
            {
                best = Some((start, i));
            }
            // Done when nothing still alive could start earlier or reach further.
            let alive = |s: &Option<usize>| s.is_some_and(|s| best.is_none_or(|(b, _)| s <= b));
            if i == text.len() || (best.is_some() && !states.0.iter().any(alive)) {
                break;
            }
            states = self.advance(&states, text[i])?;
        }
        Ok(best)
    }

    /// Replaces the first (or every) match, as Go's regexp replaces.
    fn replace(&self, text: &[char], replacement: &str, all: bool, out: &mut String) -> Result<(), ExpandError> {
        let (mut search, mut last_end) = (0, 0);
        while search <= text.len() {
            let Some((start, end)) = self.find(text, search)? else { break };
            out.extend(&text[last_end..start]);
            // An empty match right after another match is not replaced again.
            if end > last_end || start == 0 {
                out.push_str(replacement);
                if out.len() > MAX_EXPANDED {
                    return Err(ExpandError::TooLong);
                }
            }
            last_end = end;
            search = if end > search { end } else { search + 1 };
            if !all {
                break;
            }
        }
        out.extend(&text[last_end..]);
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
            "PATH_" => Some("/usr/local/bin/app.tar.gz".into()),
            "LINES" => Some("a1\nb2".into()),
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
            assert_eq!(Word(vec![part.clone()]).expand(&env).unwrap(), want, "{part:?}");
        }
    }

    fn required(name: &str, colon: bool, message: &str) -> Result<String, ExpandError> {
        Word(vec![Part::Required { name: name.into(), colon, message: Word::lit(message) }]).expand(&env)
    }

    #[test]
    fn required_variables_fail_naming_the_variable_and_the_message() {
        assert_eq!(required("SET", true, "m").unwrap(), "v");
        assert_eq!(required("EMPTY", false, "m").unwrap(), "");
        assert_eq!(required("UNSET", true, "give UNSET").unwrap_err().to_string(), "UNSET: give UNSET");
        assert_eq!(required("UNSET", false, "").unwrap_err().to_string(), "UNSET: is not allowed to be unset");
        assert_eq!(required("EMPTY", true, "").unwrap_err().to_string(), "EMPTY: is not allowed to be empty");
    }

    #[test]
    fn nested_words_are_expanded_even_when_unused_as_buildkit_does() {
        let inner = Word(vec![Part::Required { name: "UNSET".into(), colon: false, message: Word::default() }]);
        let word = Word(vec![Part::Default { name: "SET".into(), colon: true, word: inner }]);
        assert!(word.expand(&env).is_err());
    }

    fn trim(prefix: bool, name: &str, longest: bool, pattern: &str) -> String {
        let (name, pattern) = (name.into(), Word::lit(pattern));
        let part = if prefix { Part::TrimPrefix { name, longest, pattern } } else { Part::TrimSuffix { name, longest, pattern } };
        Word(vec![part]).expand(&env).unwrap()
    }

    #[test]
    fn trims_the_shortest_or_longest_matching_prefix_and_suffix() {
        assert_eq!(trim(true, "PATH_", false, "*/"), "usr/local/bin/app.tar.gz");
        assert_eq!(trim(true, "PATH_", true, "*/"), "app.tar.gz");
        assert_eq!(trim(false, "PATH_", false, ".*"), "/usr/local/bin/app.tar");
        assert_eq!(trim(false, "PATH_", true, ".*"), "/usr/local/bin/app");
        assert_eq!(trim(true, "PATH_", false, "/us?"), "/local/bin/app.tar.gz");
        assert_eq!(trim(true, "PATH_", false, "nomatch"), "/usr/local/bin/app.tar.gz");
        assert_eq!(trim(false, "UNSET", true, "*"), "");
        // `\*` is a literal star; `*` never crosses a newline, as in BuildKit.
        assert_eq!(trim(true, "PATH_", true, "\\*"), "/usr/local/bin/app.tar.gz");
        assert_eq!(trim(true, "LINES", true, "*"), "\nb2");
        assert_eq!(trim(false, "LINES", true, "?*"), "a1\n");
    }

    fn replace(all: bool, pattern: &str, replacement: &str, name: &str) -> Result<String, ExpandError> {
        let part = Part::Replace { name: name.into(), all, pattern: Word::lit(pattern), replacement: Word::lit(replacement) };
        Word(vec![part]).expand(&env)
    }

    #[test]
    fn replaces_the_first_or_every_longest_match() {
        assert_eq!(replace(false, "/", "\\", "PATH_").unwrap(), "\\usr/local/bin/app.tar.gz");
        assert_eq!(replace(true, "/", ":", "PATH_").unwrap(), ":usr:local:bin:app.tar.gz");
        assert_eq!(replace(false, "l*/", "", "PATH_").unwrap(), "/usr/app.tar.gz");
        assert_eq!(replace(true, "a?", "_", "PATH_").unwrap(), "/usr/loc_/bin/_p.t_.gz");
        assert_eq!(replace(true, "", "-", "SET").unwrap(), "-v-");
        assert_eq!(replace(true, "*", "-", "SET").unwrap(), "-");
        assert_eq!(replace(false, "x", "y", "UNSET").unwrap(), "");
        assert_eq!(
            replace(false, "a\\b", "", "SET").unwrap_err().to_string(),
            "invalid pattern (a\\b) in substitution: invalid escape '\\b'"
        );
    }

    #[test]
    fn a_hostile_pattern_costs_pattern_times_text_steps() {
        // Every star stays alive to the end; an exponential matcher would not finish.
        let value = "a".repeat(20_000);
        let pattern = "*a".repeat(200) + "b";
        let lookup = |_: &str| Some(value.clone());
        let part = Part::Replace { name: "V".into(), all: true, pattern: Word::lit(pattern), replacement: Word::lit("x") };
        assert_eq!(Word(vec![part]).expand(&lookup).unwrap(), value);
    }

    /// Whether `tokens` match all of `text`, by plain backtracking (exponential, for small cases only).
    fn matches_all(tokens: &[Token], text: &[char]) -> bool {
        match tokens.split_first() {
            None => text.is_empty(),
            Some((Token::Star, rest)) => {
                (0..=text.len()).take_while(|n| text[..*n].iter().all(|c| *c != '\n')).any(|n| matches_all(rest, &text[n..]))
            }
            Some((token, rest)) => text.first().is_some_and(|c| token.takes(*c)) && matches_all(rest, &text[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_matches_agree_with_backtracking(pattern in "[ab*?]{0,5}", text in "[ab\n]{0,8}") {
            let unlimited = Cell::new(usize::MAX);
            let glob = Glob::parse(&pattern, &unlimited).unwrap();
            let text: Vec<char> = text.chars().collect();
            let ends: Vec<usize> = (0..=text.len()).filter(|n| matches_all(&glob.tokens, &text[..*n])).collect();
            proptest::prop_assert_eq!(glob.prefix(&text, false).unwrap(), ends.first().copied());
            proptest::prop_assert_eq!(glob.prefix(&text, true).unwrap(), ends.last().copied());
            let spans: Vec<(usize, usize)> =
                (0..=text.len()).flat_map(|s| (s..=text.len()).map(move |e| (s, e))).filter(|(s, e)| matches_all(&glob.tokens, &text[*s..*e])).collect();
            let leftmost = spans.iter().map(|(s, _)| *s).min();
            let longest = leftmost.and_then(|l| spans.iter().filter(|(s, _)| *s == l).map(|(_, e)| *e).max());
            proptest::prop_assert_eq!(glob.find(&text, 0).unwrap(), leftmost.zip(longest));
        }
    }

    #[test]
    fn the_matches_of_one_word_share_a_step_budget() {
        // 2^11 positions against 2^12 characters: 2^23 steps, half the budget, so one
        // part expands and three do not.
        let value = "a".repeat(1 << 12);
        let lookup = |_: &str| Some(value.clone());
        let part = Part::TrimPrefix { name: "V".into(), longest: true, pattern: Word::lit("*a".repeat(1 << 10)) };
        assert_eq!(Word(vec![part.clone()]).expand(&lookup).map(|v| v.len()), Ok(0));
        assert_eq!(Word(vec![part.clone(), part.clone(), part]).expand(&lookup), Err(ExpandError::TooLong));
    }

    #[test]
    fn display_escapes_literals_and_braces_variables() {
        let word = Word(vec![Part::Lit("a$b\\".into()), Part::Var("X".into())]);
        assert_eq!(word.to_string(), "a\\$b\\\\${X}");
        let pattern = Word(vec![Part::Lit("\\*.".into()), Part::Var("E".into())]);
        let parts = vec![
            Part::TrimSuffix { name: "F".into(), longest: true, pattern: pattern.clone() },
            Part::Replace { name: "G".into(), all: true, pattern, replacement: Word::lit("_") },
            Part::Required { name: "H".into(), colon: true, message: Word::lit("need H") },
        ];
        assert_eq!(Word(parts).to_string(), "${F%%\\*.${E}}${G//\\*.${E}/_}${H:?need H}");
    }
}
