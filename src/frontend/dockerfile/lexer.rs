//! Docker's shell-word rules for the instructions it expands: words split on
//! unquoted whitespace, quotes removed, `\` (or the escape character)
//! escaping, and `$VAR`, `${VAR}` and the `${VAR<op>…}` forms BuildKit
//! knows (`:-`, `:+`, `:?`, `#`, `##`, `%`, `%%`, `/`, `//`, the first three
//! also without `:`) kept as variable parts of a [`Word`] to expand at build
//! time.
//!
//! `${NAME:-${…}}` (or any form with a word inside) nests at most [`MAX_NESTING`] deep: everything that walks a
//! word (expansion, printing, the JSON dump, dropping it) recurses once per
//! level, and the pretty dump indents every level, so an unbounded depth would
//! cost stack and quadratic output. Deeper input is an error at its `${`.

use crate::graph::{Part, Word};

/// How deep `${NAME:-word}` and the other forms with a word may nest inside each other.
pub const MAX_NESTING: usize = 64;

/// A lexing problem at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub offset: usize,
    pub message: String,
}

struct Lexer<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    escape: char,
    text: &'a str,
    /// How many `${NAME:-…}` words enclose the position.
    depth: usize,
    /// Quotes are read (not in a heredoc body, where they are content).
    quotes: bool,
}

fn push_lit(parts: &mut Vec<Part>, c: char) {
    if let Some(Part::Lit(s)) = parts.last_mut() {
        s.push(c);
    } else {
        parts.push(Part::Lit(c.to_string()));
    }
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or(self.text.len(), |(o, _)| *o)
    }

    fn error(&self, message: impl Into<String>) -> LexError {
        LexError { offset: self.offset(), message: message.into() }
    }

    /// One word; stops at unquoted whitespace when `split`, else reads to the end.
    fn word(&mut self, split: bool) -> Result<Word, LexError> {
        let mut parts = Vec::new();
        while let Some(c) = self.peek() {
            if split && c.is_whitespace() {
                break;
            }
            self.pos += 1;
            match c {
                '\'' => self.single_quoted(&mut parts)?,
                '"' => self.double_quoted(&mut parts, false)?,
                '$' => self.variable(&mut parts)?,
                c if c == self.escape => match self.peek() {
                    Some(n) => {
                        self.pos += 1;
                        push_lit(&mut parts, n);
                    }
                    None => push_lit(&mut parts, c),
                },
                c => push_lit(&mut parts, c),
            }
        }
        Ok(Word(parts))
    }

    /// After a `'`: everything up to the next `'` as it is.
    fn single_quoted(&mut self, parts: &mut Vec<Part>) -> Result<(), LexError> {
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated single quote")),
                Some('\'') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(c) => {
                    self.pos += 1;
                    push_lit(parts, c);
                }
            }
        }
    }

    /// After a `"`: variables expanded, the escape taken before `"`, `$` and
    /// itself only; a pattern (`raw`) keeps every escape it reads.
    fn double_quoted(&mut self, parts: &mut Vec<Part>, raw: bool) -> Result<(), LexError> {
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated double quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('$') => {
                    self.pos += 1;
                    self.variable(parts)?;
                }
                Some(c) if c == self.escape => {
                    self.pos += 1;
                    if raw {
                        push_lit(parts, c);
                    }
                    match self.peek() {
                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                            self.pos += 1;
                            push_lit(parts, n);
                        }
                        _ => push_lit(parts, c),
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    push_lit(parts, c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// After a `$`: a variable reference, or a literal `$` when none follows.
    fn variable(&mut self, parts: &mut Vec<Part>) -> Result<(), LexError> {
        match self.peek() {
            Some('{') => {
                let start = self.pos - 1;
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err(self.error("bad substitution: expected a variable name after ${"));
                }
                let Some(first) = self.peek() else { return Err(self.error(format!("bad substitution in ${{{name}…}}: missing }}"))) };
                self.pos += 1;
                if first == '}' {
                    parts.push(Part::Var(name));
                    return Ok(());
                }
                let colon = first == ':';
                // As BuildKit: `:` only before `-`, `+` and `?`.
                let op = match if colon { self.peek() } else { Some(first) } {
                    Some(op @ ('-' | '+' | '?')) => op,
                    Some(op @ ('#' | '%' | '/')) if !colon => op,
                    other => {
                        let written = if colon { format!(":{}", other.map(String::from).unwrap_or_default()) } else { first.to_string() };
                        self.pos -= 1;
                        return Err(
                            self.error(format!("unsupported modifier ({written}) in ${{{name}…}}: use -, +, ?, :-, :+, :?, #, %, or /"))
                        );
                    }
                };
                if colon {
                    self.pos += 1;
                }
                if self.depth == MAX_NESTING {
                    self.pos = start;
                    return Err(self.error(format!("variable references nest deeper than {MAX_NESTING} levels")));
                }
                self.depth += 1;
                let part = self.modifier(name, colon, op);
                self.depth -= 1;
                parts.push(part?);
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                parts.push(Part::Var(name));
            }
            // Docker reads `$1` as a (never set) positional parameter: digits only.
            Some(c) if c.is_ascii_digit() => {
                let mut name = String::new();
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                parts.push(Part::Var(name));
            }
            _ => push_lit(parts, '$'),
        }
        Ok(())
    }

    /// The rest of `${NAME<op>…}` after its operator.
    fn modifier(&mut self, name: String, colon: bool, op: char) -> Result<Part, LexError> {
        Ok(match op {
            '-' => Part::Default { name, colon, word: self.nested('}', false)? },
            '+' => Part::Alt { name, colon, word: self.nested('}', false)? },
            '?' => Part::Required { name, colon, message: self.nested('}', false)? },
            '#' | '%' => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let pattern = self.nested('}', true)?;
                if op == '#' { Part::TrimPrefix { name, longest, pattern } } else { Part::TrimSuffix { name, longest, pattern } }
            }
            _ => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.nested('/', true)?;
                Part::Replace { name, all, pattern, replacement: self.nested('}', true)? }
            }
        })
    }

    /// The word inside `${NAME<op>…}` up to `stop`. A pattern (`raw`) keeps
    /// its escapes, as BuildKit's does: `\*` is a star, not a wildcard.
    fn nested(&mut self, stop: char, raw: bool) -> Result<Word, LexError> {
        let mut parts = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error(format!("bad substitution: missing {stop}"))),
                Some(c) if c == stop => {
                    self.pos += 1;
                    return Ok(Word(parts));
                }
                Some('$') => {
                    self.pos += 1;
                    self.variable(&mut parts)?;
                }
                // As BuildKit: quotes inside `${…}` are read, except in a heredoc body.
                Some('\'') if self.quotes => {
                    self.pos += 1;
                    self.single_quoted(&mut parts)?;
                }
                Some('"') if self.quotes => {
                    self.pos += 1;
                    self.double_quoted(&mut parts, raw)?;
                }
                Some(c) if c == self.escape => {
                    self.pos += 1;
                    if raw {
                        push_lit(&mut parts, c);
                    }
                    if let Some(n) = self.peek() {
                        self.pos += 1;
                        push_lit(&mut parts, n);
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    push_lit(&mut parts, c);
                }
            }
        }
    }
}

fn lexer(text: &str, escape: char) -> Lexer<'_> {
    Lexer { chars: text.char_indices().collect(), pos: 0, escape, text, depth: 0, quotes: true }
}

/// Splits `text` into words (quotes removed, variables kept).
pub fn words(text: &str, escape: char) -> Result<Vec<Word>, LexError> {
    let mut lx = lexer(text, escape);
    let mut out = Vec::new();
    loop {
        while lx.peek().is_some_and(char::is_whitespace) {
            lx.pos += 1;
        }
        if lx.peek().is_none() {
            return Ok(out);
        }
        out.push(lx.word(true)?);
    }
}

/// The whole of `text` as one word (spaces kept), as `ENV KEY value with spaces` reads it.
pub fn single_word(text: &str, escape: char) -> Result<Word, LexError> {
    lexer(text.trim(), escape).word(false)
}

/// A COPY heredoc body under an unquoted name, as BuildKit expands it: `$`
/// references, and a backslash (always `\`, whatever the escape directive)
/// dropped before any character, a newline included; quotes are content.
pub fn heredoc_word(text: &str) -> Result<Word, LexError> {
    let mut lx = Lexer { quotes: false, ..lexer(text, '\\') };
    let mut parts = Vec::new();
    while let Some(c) = lx.peek() {
        lx.pos += 1;
        match c {
            '$' => lx.variable(&mut parts)?,
            '\\' => {
                if let Some(n) = lx.peek() {
                    lx.pos += 1;
                    push_lit(&mut parts, n);
                }
            }
            c => push_lit(&mut parts, c),
        }
    }
    Ok(Word(parts))
}

/// Splits a raw word at its first unquoted `=`: `KEY=value` → ("KEY", "value").
pub fn split_assignment(raw: &str) -> Option<(&str, &str)> {
    let (key, value) = raw.split_once('=')?;
    (!key.is_empty() && !key.contains(['"', '\''])).then_some((key, value))
}

/// The raw (unlexed) words of `text`, split on unquoted whitespace.
pub fn raw_words(text: &str, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if !current.is_empty() {
                out.push((start, std::mem::take(&mut current)));
            }
            continue;
        }
        if current.is_empty() {
            start = i;
        }
        current.push(c);
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (q, c) if c == escape && q != Some('\'') => {
                if let Some((_, n)) = chars.next() {
                    current.push(n);
                }
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lit(s: &str) -> Part {
        Part::Lit(s.into())
    }

    #[test]
    fn quotes_escapes_and_variables() {
        let w = words(r#"a"b c"'$d' \$e ${F:-x y} $G"#, '\\').unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(w[0], Word(vec![lit("ab c$d")]));
        assert_eq!(w[1], Word(vec![lit("$e")]));
        assert_eq!(w[2], Word(vec![Part::Default { name: "F".into(), colon: true, word: Word(vec![lit("x y")]) }]));
        assert_eq!(w[3], Word(vec![Part::Var("G".into())]));
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(words("\"abc", '\\').is_err());
        assert!(words("${A", '\\').is_err());
    }

    fn var(s: &str) -> Part {
        Part::Var(s.into())
    }

    #[test]
    fn single_quotes_are_literal_and_double_quotes_escape_only_some() {
        assert_eq!(words(r#"'$a\ "b"'"#, '\\').unwrap(), [Word(vec![lit(r#"$a\ "b""#)])]);
        assert_eq!(words(r#""a\"b\$c\d\\e 'f'""#, '\\').unwrap(), [Word(vec![lit(r#"a"b$c\d\e 'f'"#)])]);
        assert_eq!(words(r#"a\ b \'c"#, '\\').unwrap(), [Word(vec![lit("a b")]), Word(vec![lit("'c")])]);
    }

    #[test]
    fn modifiers_with_and_without_colon() {
        let w = words("${A:+x} ${B-y} ${C+$D}", '\\').unwrap();
        assert_eq!(w[0], Word(vec![Part::Alt { name: "A".into(), colon: true, word: Word(vec![lit("x")]) }]));
        assert_eq!(w[1], Word(vec![Part::Default { name: "B".into(), colon: false, word: Word(vec![lit("y")]) }]));
        assert_eq!(w[2], Word(vec![Part::Alt { name: "C".into(), colon: false, word: Word(vec![var("D")]) }]));
        assert!(words("${}", '\\').is_err());
    }

    #[test]
    fn required_trim_and_replace_forms_as_buildkit_reads_them() {
        let w = words(r"${A:?no A} ${B##*/} ${C%.\*} ${D//a\/b/$E} ${F?}", '\\').unwrap();
        let name = |n: &str| n.to_string();
        assert_eq!(w[0], Word(vec![Part::Required { name: name("A"), colon: true, message: Word(vec![lit("no A")]) }]));
        assert_eq!(w[1], Word(vec![Part::TrimPrefix { name: name("B"), longest: true, pattern: Word(vec![lit("*/")]) }]));
        // A pattern keeps its escapes, so that `\*` stays a literal star when matched.
        assert_eq!(w[2], Word(vec![Part::TrimSuffix { name: name("C"), longest: false, pattern: Word(vec![lit(r".\*")]) }]));
        let (pattern, replacement) = (Word(vec![lit(r"a\/b")]), Word(vec![var("E")]));
        assert_eq!(w[3], Word(vec![Part::Replace { name: name("D"), all: true, pattern, replacement }]));
        assert_eq!(w[4], Word(vec![Part::Required { name: name("F"), colon: false, message: Word::default() }]));
    }

    #[test]
    fn quotes_inside_a_default_are_read_as_buildkit_reads_them() {
        let default = |word: Vec<Part>| Word(vec![Part::Default { name: "X".into(), colon: true, word: Word(word) }]);
        assert_eq!(single_word(r#"${X:-"a b"}"#, '\\').unwrap(), default(vec![lit("a b")]));
        assert_eq!(single_word(r#"${X:-'$Y'"$Z"}"#, '\\').unwrap(), default(vec![lit("$Y"), var("Z")]));
        assert_eq!(words(r#"${X:-"a b"} c"#, '\\').unwrap().len(), 2);
        // In a heredoc body quotes are content.
        assert_eq!(heredoc_word(r#"${X:-"a"}"#).unwrap(), default(vec![lit(r#""a""#)]));
    }

    #[test]
    fn modifiers_buildkit_refuses_are_errors_at_the_modifier() {
        for (text, written) in [("${A:#x}", ":#"), ("${A:%x}", ":%"), ("${A:/x/y}", ":/"), ("${A.b}", "."), ("${A:}", ":}")] {
            let error = words(text, '\\').unwrap_err();
            assert!(error.message.contains(&format!("unsupported modifier ({written})")), "{text}: {error:?}");
            assert_eq!(error.offset, 3, "{text}");
        }
        assert!(words("${A/x}", '\\').unwrap_err().message.contains("missing /"));
        assert!(words("${A#x", '\\').unwrap_err().message.contains("missing }"));
    }

    #[test]
    fn dollar_without_a_name_is_literal_and_digits_are_positional() {
        assert_eq!(single_word("a$ $- $1x", '\\').unwrap(), Word(vec![lit("a$ $- "), var("1"), lit("x")]));
        assert_eq!(single_word("cost$", '\\').unwrap(), Word(vec![lit("cost$")]));
    }

    #[test]
    fn backtick_escape_leaves_backslashes_alone() {
        assert_eq!(words(r"c:\dir `$HOME", '`').unwrap(), [Word(vec![lit(r"c:\dir")]), Word(vec![lit("$HOME")])]);
    }

    #[test]
    fn heredoc_bodies_keep_quotes_and_drop_backslashes_as_buildkit() {
        let w = heredoc_word("echo \"$A\" '${B}' $ \\$C\n").unwrap();
        assert_eq!(w, Word(vec![lit("echo \""), var("A"), lit("\" '"), var("B"), lit("' $ $C\n")]));
        // BuildKit's testCopyHeredocSpecialSymbols: `\` + newline keeps the newline, `\\` is one `\`.
        assert_eq!(heredoc_word("\\\n").unwrap(), Word(vec![lit("\n")]));
        assert_eq!(heredoc_word("\\\\\n").unwrap(), Word(vec![lit("\\\n")]));
        assert_eq!(heredoc_word("a\\b c\\").unwrap(), Word(vec![lit("ab c")]));
        assert!(heredoc_word("${ x}").is_err());
    }

    #[test]
    fn raw_words_keep_quotes_and_escaped_spaces() {
        let raw: Vec<String> = raw_words(r#"a="b c" d\ e 'f g'"#, '\\').into_iter().map(|(_, w)| w).collect();
        assert_eq!(raw, [r#"a="b c""#, r"d\ e", "'f g'"]);
    }

    fn nested(depth: usize) -> String {
        let mut text = "x".to_string();
        for i in 0..depth {
            text = format!("${{A{i}:-{text}}}");
        }
        text
    }

    #[test]
    fn nesting_is_bounded_and_the_error_points_at_the_deepest_allowed_level() {
        assert!(single_word(&nested(MAX_NESTING), '\\').is_ok());
        let text = nested(20_000);
        let error = single_word(&text, '\\').unwrap_err();
        assert!(error.message.contains("nest deeper than 64"), "{error:?}");
        assert_eq!(&text[error.offset..error.offset + 2], "${");
        assert_eq!(text[..error.offset].matches("${").count(), MAX_NESTING);
        assert!(heredoc_word(&text).is_err());
    }

    /// BuildKit's TestProcessWithMatches and TestShellParserMandatoryEnvVars
    /// (shell/lex_test.go), their edge cases with our own values: each word
    /// is lexed as one and expanded against `env`; `None` is an error.
    #[test]
    fn process_with_matches_cases_expand_as_buildkit_does() {
        let env = |name: &str| {
            let value = match name {
                "V" => "aabb",
                "EMPTY" => "",
                "ONE" => "a",
                "SPECIAL" => "{}()[]^$.*?|\\z",
                "STARS" => "q**",
                "MANY" => "q*+*rr*",
                "GLOBS" => "/src*/*/*.rs",
                "ESCAPED_STAR" => "\\*/",
                "DIRS" => "/var/var/log.txt",
                "VAR" => "/var",
                "PATHS" => "/x/lib/y/z.so",
                "ONE_DIR" => "/?/",
                "SLASH" => "/",
                "URL" => "http://example.org",
                "HTTP" => "http://",
                "HTTPS" => "https://",
                _ => return None,
            };
            Some(value.to_string())
        };
        let cases: &[(&str, Option<&str>)] = &[
            ("${V-x} ${EMPTY-y} ${UNSET-z}", Some("aabb  z")),
            ("${V:-x} ${EMPTY:-y} ${UNSET:-z}", Some("aabb y z")),
            ("${V+x} ${EMPTY+y} ${UNSET+z}", Some("x y ")),
            ("${V:+x} ${EMPTY:+y} ${UNSET:+z}", Some("x  ")),
            ("${V?no} ${EMPTY?no}", Some("aabb ")),
            ("${UNSET?no}", None),
            ("${V:?no}", Some("aabb")),
            ("${EMPTY:?no}", None),
            ("${UNSET:?}", None),
            ("${V=x}", None),
            ("${V=:x}", None),
            (r"${SPECIAL#{\}()[]^$.\*\?|\\}", Some("z")),
            (r"${STARS%%\**}", Some("q")),
            ("${V#*a*b}", Some("b")),
            ("${V#*}", Some("aabb")),
            ("${V#$ONE}", Some("abb")),
            ("${V#$EMPTY}", Some("aabb")),
            ("${V#}", Some("aabb")),
            ("${V##*a}", Some("bb")),
            ("${V##}", Some("aabb")),
            (r"${STARS#?\*}", Some("*")),
            ("${UNSET:-.}${V%b}${UNSET:-.}", Some(".aab.")),
            (r"${MANY%%\**\*}", Some("q")),
            ("${V%}", Some("aabb")),
            ("${V%%$EMPTY}", Some("aabb")),
            ("${V:#a}", None),
            ("${V:##a}", None),
            ("${V:%b}", None),
            ("${V:%%b}", None),
            ("${GLOBS/$ESCAPED_STAR/.} ${GLOBS//$ESCAPED_STAR/.}", Some("/src.*/*.rs /src..*.rs")),
            ("${DIRS/$VAR/} ${DIRS//$VAR/}", Some("/var/log.txt /log.txt")),
            ("${PATHS/$ONE_DIR/$SLASH} ${PATHS//$ONE_DIR/$SLASH}", Some("/lib/y/z.so /lib/z.so")),
            ("${URL/$HTTP/$HTTPS}", Some("https://example.org")),
            (r"${DIRS//\//\/}", Some(r"\/var\/var\/log.txt")),
            ("${V/$EMPTY/cc}", Some("ccaabb")),
            ("${V//cc}", None),
            ("${V//}", None),
            ("${V///}", Some("aabb")),
            ("${UNSET///}", Some("")),
            ("${V/a\\q/}", None),
        ];
        for (text, want) in cases {
            let got = single_word(text, '\\').ok().and_then(|word| word.expand(&env).ok());
            assert_eq!(got.as_deref(), *want, "{text}");
        }
        // The message is a word too, expanded before it is shown.
        let word = single_word("${UNSET:?set it, not $V}", '\\').unwrap();
        assert_eq!(word.expand(&env).unwrap_err().to_string(), "UNSET: set it, not aabb");
    }

    /// Words of literals (no quotes or braces, which Display leaves as they are) and variables.
    fn word_strategy() -> impl Strategy<Value = Word> {
        let name = "[A-Za-z_][A-Za-z0-9_]{0,6}";
        let literal = "[a-z0-9 $\\\\/._:-]{1,8}";
        // Quotes are read inside `${…}`, so nested literals may hold them.
        let nested = proptest::collection::vec("[a-z0-9 $\\\\/._:'\"-]{1,8}".prop_map(Part::Lit), 0..2).prop_map(Word);
        let part = prop_oneof![
            literal.prop_map(Part::Lit),
            name.prop_map(Part::Var),
            (name, any::<bool>(), nested.clone()).prop_map(|(name, colon, word)| Part::Default { name, colon, word }),
            (name, any::<bool>(), nested).prop_map(|(name, colon, word)| Part::Alt { name, colon, word }),
        ];
        proptest::collection::vec(part, 0..6).prop_map(|parts| {
            // Adjacent literals are one literal once lexed.
            let mut merged: Vec<Part> = Vec::new();
            for part in parts {
                match (merged.last_mut(), part) {
                    (Some(Part::Lit(a)), Part::Lit(b)) => a.push_str(&b),
                    (_, part) => merged.push(part),
                }
            }
            Word(merged)
        })
    }

    proptest! {
        #[test]
        fn displayed_words_lex_back_to_themselves(word in word_strategy()) {
            let quoted = format!("\"{word}\"");
            prop_assert_eq!(single_word(&quoted, '\\').unwrap(), word);
        }

        #[test]
        fn displayed_literals_lex_back_to_themselves(text in "[ -~]{0,40}") {
            let word = Word::lit(text.clone());
            let quoted = format!("\"{}\"", word.to_string().replace('"', "\\\""));
            prop_assert_eq!(single_word(&quoted, '\\').unwrap(), word);
        }
    }
}
