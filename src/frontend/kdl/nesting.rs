//! A cheap scan of KDL text, before the `kdl` crate parses it, that bounds
//! what the crate's parser recurses on: children blocks (`{`), and the pieces
//! of a block comment (its grammar recurses once per `*`, `/`, run of other
//! text and nested `/*`). Without it a hostile spec overflows the stack and
//! kills the process; with it the crate's recursion stays within
//! [`PARSE_STACK`], on a thread of its own.

use crate::frontend::diagnostic::SourceError;

/// How deep children blocks may nest; a build spec needs four.
pub const MAX_DEPTH: usize = 64;

/// How many pieces one block comment may have (a nested `/*` counts three,
/// as the parser spends about three times the stack on it).
pub const MAX_COMMENT_PIECES: usize = 10_000;

/// The stack the parser thread gets: ample for the bounds above (about
/// 1.2 KiB per comment piece and 5 KiB per block in a debug build).
pub const PARSE_STACK: usize = 64 << 20;

/// Checks the bounds above, skipping strings and comments as KDL v2 does.
pub fn check(text: &str) -> Result<(), SourceError> {
    check_blocks(text)?;
    check_open_braces(text)
}

/// Bounds the depth of children blocks and the pieces of block comments.
fn check_blocks(text: &str) -> Result<(), SourceError> {
    let mut scan = Scan { text, pos: 0 };
    let mut depth = 0usize;
    while let Some(c) = scan.peek() {
        match c {
            '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SourceError::new(
                        format!("blocks nest deeper than {MAX_DEPTH} levels"),
                        Some((scan.pos, 1).into()),
                        "too deep",
                    ));
                }
                scan.pos += 1;
            }
            '}' => {
                depth = depth.saturating_sub(1);
                scan.pos += 1;
            }
            '/' if scan.rest().starts_with("//") => scan.line_comment(),
            '/' if scan.rest().starts_with("/*") => scan.block_comment()?,
            '"' => scan.string(0),
            '#' => {
                let hashes = scan.rest().bytes().take_while(|b| *b == b'#').count();
                if scan.rest()[hashes..].starts_with('"') {
                    scan.pos += hashes;
                    scan.string(hashes);
                } else {
                    scan.pos += hashes;
                }
            }
            c => scan.pos += c.len_utf8(),
        }
    }
    Ok(())
}

/// Bounds the `{` open at once counting every brace, those in strings and
/// comments too. On a malformed document the crate's error recovery may read
/// any of them as a block, and its work and memory grow faster than the
/// square of how many are open (fuzzing found 1.5 KB of text with 175 of them
/// taking 2 s and 900,000 diagnostics, and 3 KB exhausting memory); a valid
/// spec has a few.
fn check_open_braces(text: &str) -> Result<(), SourceError> {
    let mut open = 0usize;
    for (offset, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => open += 1,
            b'}' => open = open.saturating_sub(1),
            _ => continue,
        }
        if open > MAX_DEPTH {
            return Err(SourceError::new(
                format!("more than {MAX_DEPTH} `{{` are open at once (counting those in strings and comments)"),
                Some((offset, 1).into()),
                "too many open",
            )
            .help("close the blocks and strings before this point"));
        }
    }
    Ok(())
}

/// KDL v2 newlines (CRLF is CR then LF).
fn is_newline(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

struct Scan<'a> {
    text: &'a str,
    pos: usize,
}

impl Scan<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn line_comment(&mut self) {
        match self.rest().find(is_newline) {
            Some(end) => self.pos += end,
            None => self.pos = self.text.len(),
        }
    }

    fn block_comment(&mut self) -> Result<(), SourceError> {
        let start = self.pos;
        self.pos += 2;
        let (mut depth, mut pieces) = (1usize, 0usize);
        while depth > 0 && self.pos < self.text.len() {
            let rest = self.rest();
            if rest.starts_with("/*") {
                depth += 1;
                pieces += 3;
                self.pos += 2;
            } else if rest.starts_with("*/") {
                depth -= 1;
                self.pos += 2;
            } else if rest.starts_with(['*', '/']) {
                pieces += 1;
                self.pos += 1;
            } else {
                pieces += 1;
                self.pos += rest.find(['*', '/']).unwrap_or(rest.len());
            }
            if pieces > MAX_COMMENT_PIECES {
                return Err(SourceError::new(
                    format!("block comment too complex: more than {MAX_COMMENT_PIECES} `*`, `/` and runs of text between them"),
                    Some((start, 2).into()),
                    "comment starts here",
                )
                .help("use `//` line comments"));
            }
        }
        Ok(())
    }

    /// A string at its opening `"`: raw when `hashes` > 0, multi-line when `"""`.
    fn string(&mut self, hashes: usize) {
        let multi = self.rest().starts_with("\"\"\"");
        let quotes = if multi { 3 } else { 1 };
        self.pos += quotes;
        let close: String = "\"".repeat(quotes) + &"#".repeat(hashes);
        while let Some(c) = self.peek() {
            if c == '\\' && hashes == 0 {
                self.pos += 1;
                if let Some(next) = self.peek() {
                    self.pos += next.len_utf8();
                }
            } else if self.rest().starts_with(close.as_str()) {
                self.pos += close.len();
                return;
            } else {
                self.pos += c.len_utf8();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        "a {\n".repeat(depth) + &"}\n".repeat(depth)
    }

    #[test]
    fn blocks_nest_up_to_the_limit() {
        assert!(check(&nested(MAX_DEPTH)).is_ok());
        let error = check(&nested(100_000)).unwrap_err();
        assert!(error.message.contains("deeper than 64"), "{error:?}");
        assert_eq!(error.span.map(|s| s.offset()), Some(MAX_DEPTH * 4 + 2));
    }

    #[test]
    fn braces_in_strings_and_comments_are_not_blocks() {
        let deep = "{".repeat(MAX_DEPTH + 1);
        for text in [
            format!("a \"{deep}\""),
            format!("a \"\\\"{deep}\""),
            format!("a #\"\\\"{deep}\"#"),
            format!("a ##\"\"#{deep}\"##"),
            format!("a \"\"\"\n\"{deep}\n\"\"\""),
            format!("a #\"\"\"\n\"\"\"{deep}\n\"\"\"#"),
            format!("// {deep}\na"),
            format!("/* /* */ {deep} */ a"),
            format!("a #true {{ b }} // {deep}"),
        ] {
            assert_eq!(check_blocks(&text), Ok(()), "{text}");
        }
        // A newline other than LF ends a line comment.
        assert!(check_blocks(&format!("// x\u{2028}{deep}")).is_err());
        assert!(check_blocks(&format!("a #\"{deep}")).is_ok(), "unterminated: the parser reports it");
    }

    #[test]
    fn open_braces_are_bounded_wherever_they_are() {
        let limit = "{".repeat(MAX_DEPTH);
        assert_eq!(check(&format!("a \"{limit}\"")), Ok(()));
        assert_eq!(check(&format!("a \"{limit}}}{{\"")), Ok(()));
        for text in [format!("a \"{limit}{{\""), format!("// {limit}{{\na"), format!("/-a \"\n{limit}{{")] {
            let error = check(&text).unwrap_err();
            assert!(error.message.contains("more than 64 `{` are open"), "{error:?}");
            assert_eq!(error.span.map(|s| s.offset()), text.rfind('{'));
        }
    }

    #[test]
    fn a_malformed_spec_found_by_fuzzing_fails_fast() {
        // 1.5 KB that took the parser 2 s and 900,000 diagnostics; 3 KB of it exhausted memory.
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fuzz/kdl/regress-open-braces.kdl")).unwrap();
        assert!(check(&text).is_err());
    }

    #[test]
    fn block_comments_with_too_many_pieces_are_refused() {
        assert!(check(&format!("/*{}*/ a", "*".repeat(80))).is_ok());
        assert!(check(&format!("/*{}*/ a", "*".repeat(100_000))).is_err());
        assert!(check(&format!("/*{}*/ a", "a/".repeat(100_000))).is_err());
        assert!(check(&format!("{}a{} a", "/*".repeat(100_000), "*/".repeat(100_000))).is_err());
    }

    #[test]
    fn what_passes_the_check_parses_on_the_parser_stack() {
        let nested_comments = format!("/*{}*/ a", "x/*y*/".repeat(MAX_COMMENT_PIECES / 5 - 1));
        let slashes = format!("/*{}a*/ a", "a/".repeat(MAX_COMMENT_PIECES / 2 - 1));
        for text in [nested(MAX_DEPTH), nested_comments, slashes] {
            assert_eq!(check(&text), Ok(()));
            let parsed =
                std::thread::Builder::new().stack_size(PARSE_STACK).spawn(move || kdl::KdlDocument::parse_v2(&text).is_ok()).unwrap();
            assert!(parsed.join().unwrap());
        }
    }
}
