//! The build context: a directory the build may read, minus what
//! `.dockerignore` excludes. Nothing outside it is ever read.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobMatcher};

use super::ExecError;
use crate::store::snapshot::{clean_layer_path, decompress};

/// `.dockerignore` rules, Docker's way: patterns match a path or any of its
/// parents, `**` spans directories, `!` re-includes, and the last match wins.
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<(GlobMatcher, bool)>,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<IgnoreRules, ExecError> {
        let mut rules = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            // As BuildKit: a `!` that re-includes nothing is a mistake, not an empty rule.
            if negated && pattern.is_empty() {
                return Err(ExecError::EmptyExclusion { file: file.to_path_buf(), line: number + 1 });
            }
            let matcher = matcher(pattern).map_err(|source| ExecError::IgnorePattern {
                file: file.to_path_buf(),
                line: number + 1,
                pattern: pattern.to_string(),
                source,
            })?;
            rules.push((matcher, negated));
        }
        Ok(IgnoreRules { rules })
    }

    /// Rules from `--exclude` patterns (no `!`), each a path relative to the source it filters.
    pub fn exclude(patterns: &[String]) -> Result<IgnoreRules, ExecError> {
        let rules = patterns
            .iter()
            .map(|pattern| {
                let matcher = matcher(pattern).map_err(|source| ExecError::Pattern { pattern: pattern.clone(), source })?;
                Ok((matcher, false))
            })
            .collect::<Result<_, ExecError>>()?;
        Ok(IgnoreRules { rules })
    }

    /// Whether `rel` (relative to the context root) is excluded.
    pub fn excluded(&self, rel: &Path) -> bool {
        let mut excluded = false;
        for (matcher, negated) in &self.rules {
            let hit = rel.ancestors().filter(|a| !a.as_os_str().is_empty()).any(|a| matcher.is_match(a));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some `!` rule could re-include a path under an excluded directory.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, negated)| *negated)
    }
}

/// A pattern's matcher, the pattern cleaned as a path (`**` spans folders).
fn matcher(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    let cleaned = clean(Path::new(pattern)).unwrap_or_default();
    let text = cleaned.to_string_lossy();
    let glob = Glob::new(if text.is_empty() { "." } else { &text })?;
    Ok(globset::GlobBuilder::new(glob.glob()).literal_separator(true).backslash_escape(true).build()?.compile_matcher())
}

/// A path made relative and cleaned; `None` if it climbs out of its root.
pub fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// The directory a build reads its COPY/ADD sources from.
#[derive(Debug)]
pub struct BuildContext {
    pub root: PathBuf,
    pub ignore: IgnoreRules,
}

impl BuildContext {
    /// Opens a context directory and reads its `.dockerignore`, or `ignore_file` instead.
    pub fn open(root: &Path, ignore_file: Option<&Path>) -> Result<BuildContext, ExecError> {
        let root = root.canonicalize().map_err(|e| ExecError::io("open build context", root, e))?;
        let ignore_file = ignore_file.map_or_else(|| root.join(".dockerignore"), Path::to_path_buf);
        let ignore = match std::fs::read_to_string(&ignore_file) {
            Ok(text) => IgnoreRules::parse(&text, &ignore_file)?,
            // Only a missing file means no rules; a dangling symlink is there but unreadable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ignore_file.symlink_metadata().is_err() => IgnoreRules::default(),
            Err(e) => return Err(ExecError::io("read", &ignore_file, e)),
        };
        Ok(BuildContext { root, ignore })
    }

    /// The real path of `rel`, following symlinks but refusing any that leave the context.
    pub fn resolve(&self, rel: &Path, shown: &str) -> Result<PathBuf, ExecError> {
        let joined = self.root.join(rel);
        let real = joined.canonicalize().map_err(|_| ExecError::NotFound(shown.to_string()))?;
        if !real.starts_with(&self.root) {
            return Err(ExecError::OutsideContext(format!("{shown} (resolves to {})", real.display())));
        }
        Ok(real)
    }
}

/// What `strata build -` found on stdin.
#[derive(Debug, PartialEq, Eq)]
pub enum StdinContext {
    /// A tar, unpacked into the destination folder; the newest mtime among
    /// its regular files (a URL context's time when the server gives none).
    Unpacked { newest: Option<u64> },
    /// A Dockerfile alone: the context is empty.
    Dockerfile(String),
}

/// The name stdin has in errors.
const STDIN: &str = "<stdin>";

/// The largest Dockerfile read alone from stdin.
const MAX_DOCKERFILE: u64 = 16 << 20;

/// Reads a build context from `input` as `docker build -` does: a tar (plain,
/// gzip, bzip2, xz or zstd) is unpacked into `dest`; anything else is a
/// Dockerfile alone.
pub fn read_stdin_context(input: impl Read + 'static, dest: &Path) -> Result<StdinContext, ExecError> {
    read_context(input, dest, Path::new(STDIN))
}

/// [`read_stdin_context`] of any input; `name` names it in errors.
pub fn read_context(input: impl Read + 'static, dest: &Path, name: &Path) -> Result<StdinContext, ExecError> {
    let bad = |source| ExecError::Extract { archive: name.to_path_buf(), source };
    let mut reader = decompress(input).map_err(bad)?;
    let mut head = Vec::with_capacity(512);
    reader.by_ref().take(512).read_to_end(&mut head).map_err(bad)?;
    let is_tar = head.get(257..262) == Some(b"ustar".as_slice());
    let whole = std::io::Cursor::new(head).chain(reader);
    if !is_tar {
        let mut text = String::new();
        whole.take(MAX_DOCKERFILE).read_to_string(&mut text).map_err(bad)?;
        return Ok(StdinContext::Dockerfile(text));
    }
    Ok(StdinContext::Unpacked { newest: unpack_context(whole, dest, name)? })
}

/// Unpacks a context tar into `dest`, streaming, as hostile input: an entry
/// whose name climbs out with `..` is refused (an absolute one lands inside),
/// and so is any write through a symlink out of it (the tar crate checks each
/// entry's parent and hard link target); device nodes and fifos are skipped;
/// owners are not kept. Returns the newest mtime among its regular files.
fn unpack_context(reader: impl Read, dest: &Path, name: &Path) -> Result<Option<u64>, ExecError> {
    let bad = |source| ExecError::Extract { archive: name.to_path_buf(), source };
    let escape = |entry: &Path| ExecError::ArchiveEscape { archive: name.to_path_buf(), what: "entry", entry: entry.to_path_buf() };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    let mut newest = None;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type().is_file() {
            newest = newest.max(entry.header().mtime().ok());
        }
        let raw = entry.path().map_err(bad)?.into_owned();
        if clean_layer_path(&raw).is_none() {
            return Err(escape(&raw));
        }
        if matches!(entry.header().entry_type(), tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) {
            continue;
        }
        if !entry.unpack_in(dest).map_err(bad)? {
            return Err(escape(&raw));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text, Path::new(".dockerignore")).unwrap()
    }

    #[test]
    fn patterns_match_parents_and_last_match_wins() {
        let r = rules("# comment\nnode_modules\n*.log\n!keep.log\n**/secret\n/build/*.o\n");
        assert!(r.excluded(Path::new("node_modules/x/y.js")));
        assert!(r.excluded(Path::new("a.log")));
        assert!(!r.excluded(Path::new("keep.log")));
        assert!(!r.excluded(Path::new("sub/a.log")), "* does not cross /");
        assert!(r.excluded(Path::new("a/b/secret")));
        assert!(r.excluded(Path::new("build/x.o")));
        assert!(!r.excluded(Path::new("src/main.rs")));
    }

    #[test]
    fn clean_refuses_climbing_out() {
        assert_eq!(clean(Path::new("/a/./b/../c")), Some(PathBuf::from("a/c")));
        assert_eq!(clean(Path::new("../x")), None);
    }
}
