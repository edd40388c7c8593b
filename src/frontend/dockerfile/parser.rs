//! The line layer of a Dockerfile: parser directives, comments, line
//! continuations and heredocs, giving one `Line` per instruction with where
//! it was written. It knows no instruction's meaning.

use crate::frontend::diagnostic::SourceError;

/// One flag before the arguments: `--name` or `--name=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
    /// Byte offset in the file.
    pub offset: usize,
}

/// A heredoc body read after its instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub body: String,
    /// `<<"EOF"` or `<<'EOF'`: the body is taken literally.
    pub quoted: bool,
}

/// One instruction, its continuation lines joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub keyword: String,
    /// Byte offset of the keyword in the file.
    pub offset: usize,
    /// 1-based line of the keyword.
    pub line: usize,
    pub flags: Vec<Flag>,
    /// The arguments after the flags, continuation lines joined.
    pub args: String,
    /// Where `args` starts in the joined instruction text.
    args_start: usize,
    /// The joined text's pieces: (offset in the joined text, offset in the file).
    pieces: Vec<(usize, usize)>,
    pub heredocs: Vec<Heredoc>,
    /// Comment lines directly above, without `#`.
    pub comments: Vec<String>,
}

impl Line {
    /// The file offset of byte `at` of `args`, across continuation lines.
    pub fn args_offset(&self, at: usize) -> usize {
        source_offset(&self.pieces, self.args_start + at)
    }
}

/// The file offset of byte `at` of a joined instruction made of `pieces`.
fn source_offset(pieces: &[(usize, usize)], at: usize) -> usize {
    let (joined, file) = pieces.iter().rev().find(|(joined, _)| *joined <= at).copied().unwrap_or_default();
    file + (at - joined)
}

/// The lines of a file and its escape character.
#[derive(Debug)]
pub struct Parsed {
    pub lines: Vec<Line>,
    pub escape: char,
}

/// Parser directives BuildKit knows; `# other=x` is a comment.
const DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// Instructions whose arguments may start heredocs: RUN, COPY and ADD, also as an ONBUILD trigger.
fn takes_heredocs(keyword: &str, args: &str) -> bool {
    let heredoc_keyword = |k: &str| matches!(k.to_ascii_uppercase().as_str(), "RUN" | "COPY" | "ADD");
    heredoc_keyword(keyword) || (keyword.eq_ignore_ascii_case("ONBUILD") && args.split_whitespace().next().is_some_and(heredoc_keyword))
}

/// A heredoc marker in an instruction's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub strip: bool,
    /// `<<"EOF"` or `<<'EOF'`: the body is taken literally.
    pub quoted: bool,
    /// Where the marker is in the arguments, a file descriptor before it included.
    pub span: std::ops::Range<usize>,
}

/// Heredoc markers in an instruction's arguments. As BuildKit reads them, a
/// marker starts a word (`3<<EOF` names a file descriptor; `cat<<EOF` and
/// `<<<` are not markers) and blanks may follow `<<` or `<<-`.
pub fn heredoc_markers(args: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    let bytes = args.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'<' && bytes.get(i + 1) == Some(&b'<') => {
                let digits = bytes[..i].iter().rev().take_while(|b| b.is_ascii_digit()).count();
                let word_start = i - digits;
                let starts_word = word_start == 0 || bytes[word_start - 1].is_ascii_whitespace();
                let mut j = i + 2;
                let strip = bytes.get(j) == Some(&b'-');
                if strip {
                    j += 1;
                }
                while bytes.get(j).is_some_and(|b| *b == b' ' || *b == b'\t') {
                    j += 1;
                }
                let q = bytes.get(j).copied().filter(|b| *b == b'"' || *b == b'\'');
                if q.is_some() {
                    j += 1;
                }
                let start = j;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                if starts_word && j > start && bytes.get(i + 2) != Some(&b'<') && (q.is_none() || bytes.get(j).copied() == q) {
                    let end = if q.is_some() { j + 1 } else { j };
                    out.push(Marker { name: args[start..j].to_string(), strip, quoted: q.is_some(), span: word_start..end });
                    i = end;
                    continue;
                }
                // Not a marker: step over the whole run of `<`.
                while bytes.get(i + 1) == Some(&b'<') {
                    i += 1;
                }
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// Splits a file into instruction lines; every problem found is collected.
pub fn parse(text: &str) -> (Parsed, Vec<SourceError>) {
    let mut errors = Vec::new();
    let mut escape = '\\';
    // Physical lines with their byte offsets.
    let mut physical: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        physical.push((offset, raw.trim_end_matches(['\n', '\r'])));
        offset += raw.len();
    }
    let mut i = 0;
    // Parser directives: only at the very top, `# key=value`.
    let mut seen_directives = Vec::new();
    while i < physical.len() {
        let (off, line) = physical[i];
        let Some(rest) = line.trim_start().strip_prefix('#') else { break };
        let Some((key, value)) = rest.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        // As BuildKit does: an unknown directive is a comment, and ends the directives.
        if !DIRECTIVES.contains(&key.as_str()) {
            break;
        }
        if seen_directives.contains(&key) {
            errors.push(SourceError::new(format!("parser directive {key:?} given twice"), Some((off, line.len()).into()), "repeated"));
        }
        match (key.as_str(), value.trim()) {
            ("escape", "\\") => escape = '\\',
            ("escape", "`") => escape = '`',
            ("escape", other) => errors.push(
                SourceError::new(format!("invalid escape character {other:?}"), Some((off, line.len()).into()), "here")
                    .help("the escape directive takes \\ or `"),
            ),
            _ => {}
        }
        seen_directives.push(key);
        i += 1;
    }

    let mut lines = Vec::new();
    let mut comments = Vec::new();
    let index = crate::frontend::LineIndex::new(text);
    while i < physical.len() {
        let (off, line) = physical[i];
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            comments.clear();
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            comments.push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
            continue;
        }
        let keyword_offset = off + (line.len() - trimmed.len());
        let line_number = index.line(keyword_offset);
        // Join continuation lines; comment and empty lines inside are skipped.
        let mut joined = String::new();
        let mut pieces = Vec::new();
        let mut current = trimmed.to_string();
        let mut current_offset = keyword_offset;
        loop {
            // As BuildKit: an escape before trailing blanks continues the line,
            // unless it is itself escaped (`\\` at the end is a backslash).
            let end = current.trim_end_matches([' ', '\t']);
            pieces.push((joined.len(), current_offset));
            match end.strip_suffix(escape).filter(|head| !head.ends_with(escape)) {
                Some(head) => {
                    joined.push_str(head);
                    // The next line that is neither empty nor a comment continues it.
                    let mut next = None;
                    while i < physical.len() {
                        let (candidate_offset, candidate) = physical[i];
                        i += 1;
                        let t = candidate.trim_start();
                        if t.is_empty() || t.starts_with('#') {
                            continue;
                        }
                        next = Some(candidate.to_string());
                        current_offset = candidate_offset;
                        break;
                    }
                    match next {
                        Some(n) => current = n,
                        None => break, // a continuation at end of file ends the instruction
                    }
                }
                _ => {
                    joined.push_str(&current);
                    break;
                }
            }
        }
        let (keyword, after) = match joined.find(char::is_whitespace) {
            Some(k) => (joined[..k].to_string(), joined[k..].to_string()),
            None => (joined.clone(), String::new()),
        };
        // Flags: leading `--name[=value]` words.
        let mut rest = after.trim_start();
        let mut flags = Vec::new();
        let base = keyword.len() + (after.len() - rest.len());
        let mut consumed = 0;
        while let Some(flag) = rest.strip_prefix("--") {
            let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
            let word = &flag[..end];
            let next = flag[end..].trim_start();
            // A lone `--` ends the flags (BuildKit); it is not an argument.
            if word.is_empty() {
                consumed += rest.len() - next.len();
                rest = next;
                break;
            }
            let (name, value) = match word.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (word.to_string(), None),
            };
            flags.push(Flag { name, value, offset: source_offset(&pieces, base + consumed) });
            consumed += rest.len() - next.len();
            rest = next;
        }
        let args = rest.trim_end().to_string();
        let args_start = base + consumed;
        let mut heredocs = Vec::new();
        if takes_heredocs(&keyword, &args) {
            for Marker { name, strip, quoted, .. } in heredoc_markers(&args) {
                let mut body = String::new();
                let mut terminated = false;
                while i < physical.len() {
                    let (_, candidate) = physical[i];
                    i += 1;
                    let content = if strip { candidate.trim_start_matches('\t') } else { candidate };
                    if content == name {
                        terminated = true;
                        break;
                    }
                    body.push_str(content);
                    body.push('\n');
                }
                if !terminated {
                    errors.push(
                        SourceError::new(
                            format!("heredoc <<{name} is never terminated"),
                            Some((keyword_offset, keyword.len()).into()),
                            "this instruction",
                        )
                        .help(format!("end the heredoc with a line holding only {name}")),
                    );
                }
                heredocs.push(Heredoc { name, body, quoted });
            }
        }
        lines.push(Line {
            keyword,
            offset: keyword_offset,
            line: line_number,
            flags,
            args,
            args_start,
            pieces,
            heredocs,
            comments: std::mem::take(&mut comments),
        });
    }
    (Parsed { lines, escape }, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_skip_comments_and_accept_eof() {
        let (parsed, errors) = parse("FROM a\nRUN echo \\\n# inside\n  hi \\\n\n  there \\");
        assert!(errors.is_empty());
        assert_eq!(parsed.lines.len(), 2);
        assert_eq!(parsed.lines[1].args, "echo   hi   there");
        assert_eq!(parsed.lines[1].line, 2);
    }

    #[test]
    fn an_escaped_escape_at_the_end_does_not_continue_the_line() {
        let (parsed, _) = parse("FROM a\nENV C tail\\\\\nENV D next\nENV E a\\\n\\\nb\n");
        let args: Vec<&str> = parsed.lines.iter().map(|l| l.args.as_str()).collect();
        assert_eq!(args, ["a", "C tail\\\\", "D next", "E ab"]);
    }

    #[test]
    fn escape_directive_switches_to_backtick() {
        let (parsed, _) = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo");
        assert_eq!(parsed.escape, '`');
        assert_eq!(parsed.lines[1].args, "dir c:\\   && echo");
    }

    #[test]
    fn heredocs_are_read_in_order() {
        let (parsed, errors) = parse("FROM a\nCOPY <<one <<\"two\" /dst/\nfirst\none\nsecond $X\ntwo\nRUN x");
        assert!(errors.is_empty());
        let docs = &parsed.lines[1].heredocs;
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].name.as_str(), docs[0].body.as_str(), docs[0].quoted), ("one", "first\n", false));
        assert_eq!((docs[1].name.as_str(), docs[1].body.as_str(), docs[1].quoted), ("two", "second $X\n", true));
        assert_eq!(parsed.lines[2].keyword, "RUN");
    }

    #[test]
    fn heredoc_markers_start_a_word_as_in_buildkit() {
        let names = |args: &str| heredoc_markers(args).into_iter().map(|m| (m.name, m.strip, m.quoted)).collect::<Vec<_>>();
        assert_eq!(names("<< EOF"), [("EOF".to_string(), false, false)]);
        assert_eq!(names("cat <<- 'A' 3<<\"B\""), [("A".to_string(), true, true), ("B".to_string(), false, true)]);
        assert!(names("cat<<EOF").is_empty());
        assert!(names("cat <<<EOF").is_empty());
        assert!(names("echo '<<EOF'").is_empty());
        assert_eq!(heredoc_markers("3<<EOF")[0].span, 0..6);
    }

    #[test]
    fn flags_are_split_from_arguments() {
        let (parsed, _) = parse("COPY --from=build --chown=1:2 --link a b");
        let line = &parsed.lines[0];
        assert_eq!(line.flags.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["from", "chown", "link"]);
        assert_eq!(line.args, "a b");
        let (parsed, _) = parse("COPY --chmod=644 -- --a b\nCOPY -- c d");
        assert_eq!(parsed.lines[0].flags.len(), 1);
        assert_eq!((parsed.lines[0].args.as_str(), parsed.lines[1].args.as_str()), ("--a b", "c d"));
        assert_eq!(parsed.lines[0].args_offset(0), "COPY --chmod=644 -- ".len());
    }
}
