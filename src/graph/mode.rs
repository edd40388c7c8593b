//! `--chmod` modes: octal (`0644`) or symbolic as chmod(1) writes them
//! (`u+x,go-w`, `a=rX`, `g=u`), which BuildKit also takes.

use std::fmt;

/// A parsed `--chmod`: what mode a copied file gets, from the mode it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every file gets this mode.
    Octal(u32),
    /// Clauses applied in order to each file's own mode; kept with the text as written.
    Symbolic { text: String, clauses: Vec<Clause> },
}

/// One `who op perms` of a symbolic mode; a clause like `u+r-w` is two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// The mode bits of the classes named (all of them when none is).
    who: u32,
    op: u8,
    perms: Perms,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Perms {
    /// `r`, `w`, `x`, `s`, `t` as mode bits, and whether `X` was given.
    Bits { bits: u32, exec_if_searchable: bool },
    /// `u`, `g` or `o`: the permissions that class has now.
    Copy(u32),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

/// Reads a `--chmod` value; `None` when it is neither form.
pub fn parse_mode(text: &str) -> Option<Mode> {
    if text.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return u32::from_str_radix(text, 8).ok().filter(|mode| *mode <= 0o7777).map(Mode::Octal);
    }
    let mut clauses = Vec::new();
    for part in text.split(',') {
        let ops_at = part.find(['+', '-', '='])?;
        let mut who = 0;
        for c in part[..ops_at].chars() {
            who |= match c {
                'u' => USER,
                'g' => GROUP,
                'o' => OTHER,
                'a' => USER | GROUP | OTHER,
                _ => return None,
            };
        }
        if who == 0 {
            who = USER | GROUP | OTHER;
        }
        let mut rest = &part[ops_at..];
        while let Some(op) = rest.bytes().next().filter(|b| b"+-=".contains(b)) {
            rest = &rest[1..];
            let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
            let perms = perms(&rest[..end])?;
            clauses.push(Clause { who, op, perms });
            rest = &rest[end..];
        }
    }
    Some(Mode::Symbolic { text: text.to_string(), clauses })
}

fn perms(text: &str) -> Option<Perms> {
    match text {
        "u" => return Some(Perms::Copy(USER)),
        "g" => return Some(Perms::Copy(GROUP)),
        "o" => return Some(Perms::Copy(OTHER)),
        _ => {}
    }
    let (mut bits, mut exec_if_searchable) = (0, false);
    for c in text.chars() {
        match c {
            'r' => bits |= 0o444,
            'w' => bits |= 0o222,
            'x' => bits |= 0o111,
            'X' => exec_if_searchable = true,
            's' => bits |= 0o6000,
            't' => bits |= 0o1000,
            _ => return None,
        }
    }
    Some(Perms::Bits { bits, exec_if_searchable })
}

impl Mode {
    /// The mode a file of mode `old` (a directory when `dir`) gets.
    pub fn apply(&self, old: u32, dir: bool) -> u32 {
        let clauses = match self {
            Mode::Octal(mode) => return *mode,
            Mode::Symbolic { clauses, .. } => clauses,
        };
        let mut mode = old & 0o7777;
        for clause in clauses {
            let bits = match clause.perms {
                Perms::Bits { bits, exec_if_searchable } => {
                    let x = exec_if_searchable && (dir || mode & 0o111 != 0);
                    bits | if x { 0o111 } else { 0 }
                }
                // The class's rwx, repeated into every class.
                Perms::Copy(class) => {
                    let rwx = (mode & class & 0o777) >> class.trailing_zeros() & 0o7;
                    rwx * 0o111
                }
            } & clause.who;
            // As chmod: `=` keeps a directory's set-id bits unless it names them.
            let cleared = if dir { clause.who & 0o777 } else { clause.who };
            mode = match clause.op {
                b'+' => mode | bits,
                b'-' => mode & !bits,
                _ => (mode & !cleared) | bits,
            };
        }
        mode
    }
}

impl fmt::Display for Mode {
    /// As history and cache keys show it: octal digits, or the text as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Octal(mode) => write!(f, "{mode:o}"),
            Mode::Symbolic { text, .. } => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, old: u32, dir: bool) -> u32 {
        parse_mode(text).unwrap_or_else(|| panic!("{text} does not parse")).apply(old, dir)
    }

    #[test]
    fn octal_modes_replace_the_mode() {
        assert_eq!(apply("0640", 0o777, false), 0o640);
        assert_eq!(apply("4755", 0, true), 0o4755);
        for bad in ["0986", "17777", "+644", "", "-1"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }

    #[test]
    fn symbolic_modes_change_each_file_as_chmod_does() {
        // BuildKit's testChmodNonOctal cases: a 0666 file and a 0124 directory.
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("u=rw,g=r,o=r", 0o666, false), 0o644);
        assert_eq!(apply("a+X", 0o666, false), 0o666);
        assert_eq!(apply("go-w", 0o124, true), 0o104);
        assert_eq!(apply("u+rw,g+r,o-x,o+w", 0o124, true), 0o766);
        assert_eq!(apply("a+X", 0o124, true), 0o135);
        // X adds execute to a file that some class may execute already.
        assert_eq!(apply("a+X", 0o744, false), 0o755);
        assert_eq!(apply("+x", 0o600, false), 0o711);
        assert_eq!(apply("u+s,g+s,+t", 0o755, true), 0o7755);
        assert_eq!(apply("g=u", 0o640, false), 0o660);
        assert_eq!(apply("o=g-r", 0o650, false), 0o651);
        assert_eq!(apply("a=", 0o777, false), 0);
        assert_eq!(apply("u=rwx", 0o4755, false), 0o755);
        assert_eq!(apply("g=rx", 0o2775, true), 0o2755);
    }

    #[test]
    fn malformed_symbolic_modes_are_refused() {
        for bad in ["u", "z+x", "u+q", "u+x,", ",u+x", "u+ug", "rwx"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_mode_shows_as_written() {
        assert_eq!(parse_mode("0640").unwrap().to_string(), "640");
        assert_eq!(parse_mode("go-w").unwrap().to_string(), "go-w");
    }
}
