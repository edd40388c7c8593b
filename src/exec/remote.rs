//! ADD's remote sources: files over HTTP(S) and git repositories. Knows
//! nothing of layers: it turns a URL into a file (or a checkout) the COPY
//! plan takes like any other source.
//!
//! A download streams into the store as a blob (sha256, so `--checksum` is
//! checked as it lands, and a mismatch stores nothing) and its validators
//! (ETag, Last-Modified) are recorded under `strata/downloads/`, so a rebuild
//! asks the server whether it changed (`If-None-Match`, `If-Modified-Since`)
//! and uses the stored bytes on 304. A git source is resolved to a commit
//! (`git ls-remote`) and cloned only when its layer is not cached.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ureq::http::StatusCode;

use super::ExecError;
use super::context::{StdinContext, clean, read_context};
use super::copy::CopyInput;
use crate::graph::{Checksum, parse_checksum};
use crate::oci::Digest;
use crate::store::snapshot::decompress;
use crate::store::{Store, StoreError};

/// How far a download may go.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// The largest file ADD downloads.
    max_bytes: u64,
    /// A connection or a download that stays silent this long fails.
    stall: Duration,
}

const LIMITS: Limits = Limits { max_bytes: 8 << 30, stall: Duration::from_secs(120) };

/// A remote source that could not be fetched or checked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url:?} is not an HTTP(S) URL or a git repository")]
    NotRemote { url: String },
    #[error("fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("fetch {url}: the server answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("fetch {url}: more than ADD's limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("ADD {url}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { url: String, expected: String, actual: String },
    #[error("ADD: {0}")]
    Checksum(String),
    #[error("git {url}: {action} failed: {message}")]
    Git { url: String, action: &'static str, message: String },
    #[error("git {url}: no ref {reference:?} (expected a branch, a tag or a full commit)")]
    NoSuchRef { url: String, reference: String },
    #[error("git {url}: {reference} is commit {actual}, not the commit={expected} the URL asks for")]
    CommitMismatch { url: String, reference: String, expected: String, actual: String },
    #[error("git {url}: {message}")]
    BadUrl { url: String, message: String },
    #[error("git {url}: subdirectory {subdir:?} is not a directory of commit {commit}")]
    NoSubdir { url: String, subdir: String, commit: String },
}

/// What a URL's last download left: the blob and the validators to ask about it again.
#[derive(Serialize, Deserialize)]
struct Record {
    url: String,
    digest: Digest,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A git source: `URL[?query][#ref[:subdir]]`. The query, as BuildKit reads
/// it, names the ref (`ref=`, or `branch=` / `tag=` to look among branches or
/// tags only), `commit=` (the commit, or a prefix the ref's commit must
/// have), `subdir=`, `keep-git-dir` and `submodules` (true unless `=false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    pub remote: String,
    pub reference: Option<String>,
    pub kind: RefKind,
    pub subdir: Option<String>,
    pub commit: Option<String>,
    /// `keep-git-dir` in the URL; unset, ADD's `--keep-git-dir` decides.
    pub keep_git_dir: Option<bool>,
    pub submodules: bool,
}

/// Where a ref name is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Any,
    Branch,
    Tag,
}

impl RefKind {
    /// The full names `name` may stand for, most specific first.
    fn candidates(self, name: &str) -> Vec<String> {
        if name.starts_with("refs/") {
            return vec![name.to_string()];
        }
        match self {
            RefKind::Any => vec![name.to_string(), format!("refs/{name}"), format!("refs/tags/{name}"), format!("refs/heads/{name}")],
            RefKind::Branch => vec![format!("refs/heads/{name}")],
            RefKind::Tag => vec![format!("refs/tags/{name}")],
        }
    }
}

/// Whether ADD fetches `source` over HTTP(S) (a git URL is not one of these).
pub fn is_http(source: &str) -> bool {
    (source.starts_with("http://") || source.starts_with("https://")) && git_source(source).is_none()
}

/// A git repository ADD clones: `git@host:path`, `ssh://`, `git://`, or an
/// `http(s)://` URL whose path ends in `.git`, as BuildKit tells them apart;
/// an error when its query or fragment is not one BuildKit takes.
pub fn git_source(source: &str) -> Option<Result<GitSource, RemoteError>> {
    let (url, fragment) = match source.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (source, None),
    };
    let (remote, query) = match url.split_once('?') {
        Some((remote, query)) => (remote, Some(query)),
        None => (url, None),
    };
    let is_git = if let Some(rest) = remote.strip_prefix("http://").or_else(|| remote.strip_prefix("https://")) {
        rest.split_once('/').is_some_and(|(_, path)| path.ends_with(".git"))
    } else {
        remote.starts_with("git@") || remote.starts_with("ssh://") || remote.starts_with("git://")
    };
    is_git.then(|| parse_git(remote, query, fragment))
}

fn parse_git(remote: &str, query: Option<&str>, fragment: Option<&str>) -> Result<GitSource, RemoteError> {
    let bad = |message: String| RemoteError::BadUrl { url: remote.to_string(), message };
    let mut git = GitSource {
        remote: remote.to_string(),
        reference: None,
        kind: RefKind::Any,
        subdir: None,
        commit: None,
        keep_git_dir: None,
        submodules: true,
    };
    let flag = |key: &str, value: Option<&str>| match value {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(bad(format!("{key}={other}: expected true or false"))),
    };
    for param in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').map_or((param, None), |(k, v)| (k, Some(v)));
        let text = || value.filter(|v| !v.is_empty()).map(str::to_string).ok_or_else(|| bad(format!("{key}= needs a value")));
        match key {
            "ref" | "branch" | "tag" => {
                if git.reference.is_some() {
                    return Err(bad("ref conflicts: give one of ref=, branch= and tag=".into()));
                }
                git.reference = Some(text()?);
                git.kind = match key {
                    "branch" => RefKind::Branch,
                    "tag" => RefKind::Tag,
                    _ => RefKind::Any,
                };
            }
            "commit" => git.commit = Some(text()?.to_ascii_lowercase()),
            "subdir" => git.subdir = Some(text()?),
            "keep-git-dir" => git.keep_git_dir = Some(flag(key, value)?),
            "submodules" => git.submodules = flag(key, value)?,
            other => {
                return Err(bad(format!("unknown query parameter {other:?} (ref, branch, tag, commit, subdir, keep-git-dir, submodules)")));
            }
        }
    }
    if let Some((reference, subdir)) = fragment.map(|f| f.split_once(':').unwrap_or((f, ""))) {
        if !reference.is_empty() {
            match &git.reference {
                // The same ref twice is allowed, by its short or full name.
                Some(named) if !git.kind.candidates(named).iter().any(|c| c == reference) && named != reference => {
                    return Err(bad(format!("ref conflicts: the query names {named:?}, the fragment {reference:?}")));
                }
                Some(_) => {}
                None => git.reference = Some(reference.to_string()),
            }
        }
        if !subdir.is_empty() {
            if git.subdir.as_deref().is_some_and(|s| s != subdir) {
                return Err(bad(format!(
                    "subdir conflicts: the query names {:?}, the fragment {subdir:?}",
                    git.subdir.unwrap_or_default()
                )));
            }
            git.subdir = Some(subdir.to_string());
        }
    }
    Ok(git)
}

/// The name a download takes in a destination folder: the URL path's last
/// segment (percent-decoded), or `__unnamed__`, as BuildKit names it.
pub fn file_name(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.split(['?', '#']).next().unwrap_or_default();
    let path = path.split_once('/').map_or("", |(_, path)| path);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let decoded = percent_decode(last);
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') { "__unnamed__".to_string() } else { decoded }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_time(text: &str) -> Option<u64> {
    let format = time::macros::format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    let parsed = time::PrimitiveDateTime::parse(text.trim(), format).ok()?;
    u64::try_from(parsed.assume_utc().unix_timestamp()).ok()
}

fn agent(limits: Limits) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(limits.stall))
        .timeout_per_read(Some(limits.stall))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Downloads `url` (or, unless `fresh`, finds it unchanged) into the store;
/// the blob's digest must be `expected` when given. Returns the source the
/// plan takes and what the key needs beyond the file's content (its
/// Last-Modified, which is its mtime).
fn fetch(store: &Store, url: &str, expected: Option<&Digest>, fresh: bool, limits: Limits) -> Result<(CopyInput, String), ExecError> {
    let records = store.strata_dir("downloads");
    let record_path = records.join(Digest::of(url.as_bytes()).hex());
    let known = fs::read(&record_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
        .filter(|record| !fresh && record.url == url && store.has_blob(&record.digest));
    let mismatch = |actual: &Digest, expected: &Digest| RemoteError::ChecksumMismatch {
        url: url.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    let record = match known {
        // Pinned content already here: nothing to ask.
        Some(record) if expected == Some(&record.digest) => record,
        known => {
            // A fragment names a part of the resource for the client; it is not sent.
            let mut request = agent(limits).get(url.split('#').next().unwrap_or(url));
            if let Some(record) = &known {
                if let Some(etag) = &record.etag {
                    request = request.header("If-None-Match", etag);
                }
                if let Some(date) = &record.last_modified {
                    request = request.header("If-Modified-Since", date);
                }
            }
            let response = request.call().map_err(|e| RemoteError::Fetch { url: url.to_string(), message: e.to_string() })?;
            match (response.status(), known) {
                (StatusCode::NOT_MODIFIED, Some(record)) => {
                    if let Some(expected) = expected {
                        return Err(mismatch(&record.digest, expected).into());
                    }
                    record
                }
                (status, _) if status.is_success() => {
                    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                    let (etag, last_modified) = (header("ETag"), header("Last-Modified"));
                    let record = download(store, url, response, expected, (etag, last_modified), limits)?;
                    fs::create_dir_all(&records).map_err(|e| ExecError::io("create", &records, e))?;
                    store.write_file(
                        &record_path,
                        &serde_json::to_vec(&record).map_err(|source| ExecError::Encode { what: "download record", source })?,
                    )?;
                    record
                }
                (status, _) => return Err(RemoteError::Status { url: url.to_string(), status }.into()),
            }
        }
    };
    let mtime = record.last_modified.as_deref().and_then(http_time);
    let key = format!("url {} {}", record.digest, record.last_modified.as_deref().unwrap_or(""));
    Ok((CopyInput::Download { url: url.to_string(), name: file_name(url), file: store.blob_path(&record.digest), mtime }, key))
}

/// Streams a response into a blob, at most `limits.max_bytes`; a refused
/// download leaves nothing behind (the blob writer's temp file goes with it).
fn download(
    store: &Store,
    url: &str,
    response: ureq::http::Response<ureq::Body>,
    expected: Option<&Digest>,
    (etag, last_modified): (Option<String>, Option<String>),
    limits: Limits,
) -> Result<Record, ExecError> {
    let too_large = || RemoteError::TooLarge { url: url.to_string(), limit: limits.max_bytes };
    if response.body().content_length().is_some_and(|len| len > limits.max_bytes) {
        return Err(too_large().into());
    }
    let mut writer = store.blob_writer()?;
    let mut body = response.into_body().into_reader().take(limits.max_bytes + 1);
    let copied = io::copy(&mut body, &mut writer).map_err(|e| RemoteError::Fetch { url: url.to_string(), message: e.to_string() })?;
    if copied > limits.max_bytes {
        return Err(too_large().into());
    }
    let blob = writer.commit(expected).map_err(|e| match e {
        StoreError::Corrupt { expected, actual } => ExecError::from(RemoteError::ChecksumMismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }),
        other => other.into(),
    })?;
    Ok(Record { url: url.to_string(), digest: blob.digest, etag, last_modified })
}

/// Runs git with `args`, never prompting; returns its stdout.
fn git(url: &str, action: &'static str, args: &[&str]) -> Result<String, RemoteError> {
    let failed = |message: String| RemoteError::Git { url: url.to_string(), action, message };
    let out = Command::new("git")
        .args(["-c", "http.lowSpeedLimit=1", "-c", &format!("http.lowSpeedTime={}", LIMITS.stall.as_secs())])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("run git (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl GitSource {
    /// The commit the ref names on the remote, and the ref's full name: a full
    /// commit as given, else `git ls-remote`'s answer (a tag peeled to its
    /// commit), HEAD without a ref.
    fn resolve(&self) -> Result<(String, Option<String>), RemoteError> {
        // A full commit alone names what to check out.
        if let (None, Some(commit)) = (&self.reference, &self.commit)
            && is_commit(commit)
        {
            return Ok((commit.clone(), None));
        }
        let wanted = self.reference.as_deref().unwrap_or("HEAD");
        let (commit, refname) = if self.kind == RefKind::Any && is_commit(wanted) {
            (wanted.to_ascii_lowercase(), None)
        } else {
            let listed = git(&self.remote, "ls-remote", &["ls-remote", "--", &self.remote])?;
            let refs: Vec<(&str, &str)> = listed.lines().filter_map(|line| line.split_once('\t')).collect();
            let find = |name: &str| refs.iter().find(|(_, r)| *r == name).map(|(commit, _)| commit.to_string());
            self.kind
                .candidates(wanted)
                .into_iter()
                .find_map(|name| find(&format!("{name}^{{}}")).or_else(|| find(&name)).map(|commit| (commit, Some(name))))
                .ok_or_else(|| RemoteError::NoSuchRef { url: self.remote.clone(), reference: wanted.to_string() })?
        };
        if let Some(expected) = self.commit.as_deref().filter(|expected| !commit.starts_with(expected)) {
            return Err(RemoteError::CommitMismatch {
                url: self.remote.clone(),
                reference: wanted.to_string(),
                expected: expected.to_string(),
                actual: commit,
            });
        }
        Ok((commit, refname))
    }

    /// Checks the repository out at `commit` in a new folder under `tmp`;
    /// returns the folder (removed on drop), the directory to copy (the
    /// subdir, if any) and the commit's committer time (seconds). The commit alone is fetched (`--depth 1`, by its ref
    /// name where it has one); where the server cannot (git's dumb HTTP
    /// protocol, a commit no ref names), the whole repository is cloned.
    fn checkout(
        &self,
        commit: &str,
        refname: Option<&str>,
        keep_git_dir: bool,
        tmp: &Path,
    ) -> Result<(tempfile::TempDir, PathBuf, u64), ExecError> {
        let scratch = tempfile::Builder::new().prefix("git-").tempdir_in(tmp).map_err(|e| ExecError::io("create temp dir in", tmp, e))?;
        let repo = scratch.path().join("repo");
        let repo_arg = repo.to_string_lossy().to_string();
        let remote = self.remote.as_str();
        let shallow = || -> Result<bool, RemoteError> {
            git(remote, "init", &["init", "--quiet", &repo_arg])?;
            git(remote, "remote add", &["-C", &repo_arg, "remote", "add", "origin", remote])?;
            let fetched = git(
                remote,
                "fetch",
                &["-C", &repo_arg, "fetch", "--quiet", "--depth", "1", "--no-tags", "origin", refname.unwrap_or(commit)],
            );
            Ok(fetched.is_ok() && git(remote, "rev-parse", &["-C", &repo_arg, "rev-parse", "FETCH_HEAD^{commit}"])?.trim() == commit)
        };
        if !shallow()? {
            fs::remove_dir_all(&repo).map_err(|e| ExecError::io("remove", &repo, e))?;
            git(remote, "clone", &["clone", "--quiet", "--no-checkout", "--", remote, &repo_arg])?;
        }
        git(remote, "checkout", &["-C", &repo_arg, "-c", "advice.detachedHead=false", "checkout", "--quiet", commit])?;
        let committed = git(remote, "log", &["-C", &repo_arg, "log", "-1", "--format=%ct", commit])?;
        let time = committed.trim().parse().map_err(|_| RemoteError::Git {
            url: remote.to_string(),
            action: "log",
            message: format!("no commit time in {committed:?}"),
        })?;
        if self.submodules && repo.join(".gitmodules").exists() {
            git(&self.remote, "submodule update", &["-C", &repo_arg, "submodule", "update", "--init", "--recursive", "--quiet"])?;
        }
        if !self.keep_git_dir.unwrap_or(keep_git_dir) {
            let dot_git = repo.join(".git");
            fs::remove_dir_all(&dot_git).map_err(|e| ExecError::io("remove", &dot_git, e))?;
        }
        let no_subdir = || RemoteError::NoSubdir {
            url: self.remote.clone(),
            subdir: self.subdir.clone().unwrap_or_default(),
            commit: commit.to_string(),
        };
        let root = match &self.subdir {
            Some(subdir) => {
                let rel = clean(Path::new(subdir)).ok_or_else(no_subdir)?;
                let real = repo.join(rel).canonicalize().map_err(|_| no_subdir())?;
                if !real.starts_with(repo.canonicalize().map_err(|e| ExecError::io("open", &repo, e))?) || !real.is_dir() {
                    return Err(no_subdir().into());
                }
                real
            }
            None => repo.canonicalize().map_err(|e| ExecError::io("open", &repo, e))?,
        };
        Ok((scratch, root, time))
    }
}

/// ADD's remote sources after resolution: what the key needs beyond the
/// plan's content, and the git sources still to clone on a miss.
#[derive(Default)]
pub struct RemoteSources {
    /// Each remote source's identity: a download's digest and Last-Modified, a git source's commit.
    key: String,
    /// Each git source: its index among the sources, the source, its commit and the ref naming it.
    git: Vec<(usize, GitSource, String, Option<String>)>,
    keep_git_dir: bool,
}

impl RemoteSources {
    /// Whether any source was remote.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    /// The step's key inputs: the plan's content key, then each remote source's identity.
    pub fn key_with(&self, content: &Digest) -> String {
        if self.key.is_empty() { content.to_string() } else { format!("{content}\n{}", self.key) }
    }

    /// Whether a git source waits to be cloned.
    pub fn has_checkouts(&self) -> bool {
        !self.git.is_empty()
    }

    /// `sources` with every git source cloned; the folders live as long as the returned guards.
    pub fn checkout(&self, sources: &[CopyInput], tmp: &Path) -> Result<(Vec<CopyInput>, Vec<tempfile::TempDir>), ExecError> {
        let mut sources = sources.to_vec();
        let mut guards = Vec::new();
        for (index, git, commit, refname) in &self.git {
            let (guard, root, _) = git.checkout(commit, refname.as_deref(), self.keep_git_dir, tmp)?;
            if let Some(CopyInput::Checkout { dir, .. }) = sources.get_mut(*index) {
                *dir = Some(root);
            }
            guards.push(guard);
        }
        Ok((sources, guards))
    }
}

/// Resolves ADD's remote sources in place: a URL becomes its downloaded file,
/// a git repository a checkout keyed by its commit (cloned by `checkout`).
/// `--checksum` needs exactly one source, a URL (sha256) or a git repository
/// (commit). `fresh` (`--no-cache`) downloads again without asking.
pub fn resolve(
    store: &Store,
    sources: &mut [CopyInput],
    checksum: Option<&str>,
    keep_git_dir: bool,
    fresh: bool,
) -> Result<RemoteSources, ExecError> {
    let checksum =
        checksum.map(|text| parse_checksum(text).map_err(|why| RemoteError::Checksum(format!("--checksum={text}: {why}")))).transpose()?;
    let remote_count = sources.iter().filter(|s| matches!(s, CopyInput::Path(p) if is_http(p) || git_source(p).is_some())).count();
    if checksum.is_some() && (sources.len() != 1 || remote_count != 1) {
        let why = if sources.len() == 1 { "--checksum requires an HTTP(S) or git source" } else { "--checksum allows one source only" };
        return Err(RemoteError::Checksum(why.into()).into());
    }
    let mut remote = RemoteSources { keep_git_dir, ..RemoteSources::default() };
    for (index, source) in sources.iter_mut().enumerate() {
        let CopyInput::Path(text) = source else { continue };
        if let Some(git) = git_source(text) {
            let git = git?;
            let (commit, refname) = git.resolve()?;
            if let Some(expected) = &checksum {
                let matches = matches!(expected, Checksum::Commit(prefix) if commit.starts_with(prefix.as_str()));
                if !matches {
                    let expected = match expected {
                        Checksum::Commit(prefix) => prefix.clone(),
                        Checksum::Sha256(digest) => digest.to_string(),
                    };
                    return Err(RemoteError::ChecksumMismatch { url: text.clone(), expected, actual: commit }.into());
                }
            }
            let keep = git.keep_git_dir.unwrap_or(keep_git_dir);
            let submodules = if git.submodules { "" } else { " no-submodules" };
            remote.key.push_str(&format!("git {commit} {} {keep}{submodules}\n", git.subdir.as_deref().unwrap_or("")));
            *source = CopyInput::Checkout { url: text.clone(), dir: None };
            remote.git.push((index, git, commit, refname));
        } else if is_http(text) {
            let expected = match &checksum {
                None => None,
                Some(Checksum::Sha256(digest)) => Some(digest),
                Some(Checksum::Commit(hex)) => {
                    return Err(RemoteError::Checksum(format!("--checksum={hex}: expected sha256:<64 hex digits>")).into());
                }
            };
            let (input, key) = fetch(store, text, expected, fresh, LIMITS)?;
            remote.key.push_str(&key);
            remote.key.push('\n');
            *source = input;
        }
    }
    Ok(remote)
}

/// A build context given as a URL (`strata build URL`), fetched as `docker build` fetches one.
pub enum UrlContext {
    /// A git repository checked out at its ref; the context is the folder
    /// (its subdir, if the URL names one), which lives as long as the guard.
    Checkout { root: PathBuf, guard: tempfile::TempDir },
    /// A tar (plain or compressed) downloaded and unpacked into the destination folder.
    Unpacked,
    /// A Dockerfile alone downloaded: the context is empty.
    Dockerfile(String),
}

/// Fetches the build context `url` names: a git URL (as ADD tells them
/// apart) is checked out under `dest`; an HTTP(S) URL is downloaded into the
/// store and unpacked into `dest` when it is a tar, else read as the Dockerfile.
/// Returns it with its time, which `SOURCE_DATE_EPOCH=context` takes (see [`source_time`]).
pub fn fetch_context(store: &Store, url: &str, dest: &Path) -> Result<(UrlContext, Option<u64>), ExecError> {
    if let Some(git) = git_source(url) {
        let git = git?;
        let (commit, refname) = git.resolve()?;
        let (guard, root, time) = git.checkout(&commit, refname.as_deref(), false, dest)?;
        return Ok((UrlContext::Checkout { root, guard }, Some(time)));
    }
    let (input, _) = fetch(store, url, None, false, LIMITS)?;
    let CopyInput::Download { file, mtime, .. } = input else { unreachable!("fetch gives a download") };
    let reader = fs::File::open(&file).map_err(|e| ExecError::io("open", &file, e))?;
    Ok(match read_context(reader, dest, Path::new(url))? {
        StdinContext::Unpacked { newest } => (UrlContext::Unpacked, mtime.or(newest)),
        StdinContext::Dockerfile(text) => (UrlContext::Dockerfile(text), mtime),
    })
}

/// The time of a remote source, as BuildKit reads one for
/// `SOURCE_DATE_EPOCH`: a git source's commit time; a download's
/// Last-Modified, else the newest regular file in it when it is a tar
/// (plain or compressed), else none. `checksum` is ADD's `--checksum`.
pub fn source_time(store: &Store, url: &str, checksum: Option<&str>) -> Result<Option<u64>, ExecError> {
    let mut sources = [CopyInput::Path(url.to_string())];
    let remote = resolve(store, &mut sources, checksum, false, false)?;
    match (&sources, remote.git.first()) {
        (_, Some((_, git, commit, refname))) => {
            // A commit's time never changes: kept once read, so a cached build fetches nothing more.
            let dir = store.strata_dir("git-commit-times");
            let record = is_commit(commit).then(|| dir.join(commit.to_ascii_lowercase()));
            if let Some(time) = record.as_ref().and_then(|path| fs::read_to_string(path).ok()).and_then(|text| text.trim().parse().ok()) {
                return Ok(Some(time));
            }
            let (_guard, _, time) = git.checkout(commit, refname.as_deref(), false, &store.tmp_dir())?;
            if let Some(record) = record {
                fs::create_dir_all(&dir).map_err(|e| ExecError::io("create", &dir, e))?;
                store.write_file(&record, time.to_string().as_bytes())?;
            }
            Ok(Some(time))
        }
        ([CopyInput::Download { file, mtime, .. }], None) => Ok(mtime.or_else(|| newest_in_archive(file))),
        _ => Err(RemoteError::NotRemote { url: url.to_string() }.into()),
    }
}

/// The newest mtime among the regular files of a tar (plain or
/// compressed); none when `file` is not one.
fn newest_in_archive(file: &Path) -> Option<u64> {
    let reader = decompress(fs::File::open(file).ok()?).ok()?;
    let mut newest = None;
    for entry in tar::Archive::new(reader).entries().ok()? {
        let entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            newest = newest.max(Some(entry.header().mtime().ok()?));
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sources_are_told_from_downloads_as_buildkit_does() {
        let git = git_source("https://example.com/a/repo.git#v1.2:sub/dir").expect("a git source").expect("valid");
        assert_eq!(
            (git.remote.as_str(), git.reference.as_deref(), git.subdir.as_deref()),
            ("https://example.com/a/repo.git", Some("v1.2"), Some("sub/dir"))
        );
        assert_eq!(git_source("git@github.com:o/r.git").and_then(Result::ok).map(|g| g.remote), Some("git@github.com:o/r.git".into()));
        assert!(git_source("ssh://host/r").is_some());
        assert!(git_source("https://example.com/a/file.tar").is_none());
        assert!(is_http("https://example.com/a/file.tar"));
        assert!(!is_http("https://example.com/r.git"));
        assert!(!is_http("file.txt"));
    }

    #[test]
    fn git_queries_are_read_as_buildkit_reads_them() {
        let parse = |url: &str| git_source(url).expect("a git source");
        let git = parse("https://h/r.git?tag=v1&commit=ABC1&subdir=s&keep-git-dir&submodules=false").expect("valid");
        assert_eq!((git.reference.as_deref(), git.kind, git.commit.as_deref()), (Some("v1"), RefKind::Tag, Some("abc1")));
        assert_eq!((git.subdir.as_deref(), git.keep_git_dir, git.submodules), (Some("s"), Some(true), false));
        assert!(parse("https://h/r.git?tag=v1#refs/tags/v1").is_ok());
        for bad in [
            "https://h/r.git?tag=v1#refs/heads/main",
            "https://h/r.git?ref=a&branch=b",
            "https://h/r.git?depth=1",
            "https://h/r.git?keep-git-dir=yes",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_download_is_named_after_the_url_path() {
        assert_eq!(file_name("https://example.com/dir/file%20one.txt?x=1#frag"), "file one.txt");
        assert_eq!(file_name("http://127.0.0.1:8080/a/b/"), "b");
        assert_eq!(file_name("http://127.0.0.1:8080/"), "__unnamed__");
        assert_eq!(file_name("http://127.0.0.1:8080"), "__unnamed__");
        assert_eq!(file_name("http://h/a%2Fb"), "__unnamed__");
    }

    /// Serves one connection: `head`, then `body` in pieces, then waits until the client hangs up.
    fn serve_once(head: &'static str, body: Vec<u8>) -> String {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/file", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut reader = io::BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = stream.write_all(head.as_bytes());
            for piece in body.chunks(16) {
                let _ = stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes());
                let _ = stream.write_all(piece);
                let _ = stream.write_all(b"\r\n");
            }
            // Silent until the client gives up and closes.
            let _ = reader.read_line(&mut line);
        });
        url
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        (dir, store)
    }

    #[test]
    fn a_download_without_a_length_stops_at_the_limit_and_leaves_nothing() {
        let (_dir, store) = store();
        let url = serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", vec![b'x'; 100]);
        let limits = Limits { max_bytes: 50, stall: Duration::from_secs(5) };
        let error = fetch(&store, &url, None, false, limits).err().expect("refused");
        assert!(matches!(&error, ExecError::Remote(RemoteError::TooLarge { limit: 50, .. })), "{error}");
        let left: Vec<_> = walkdir::WalkDir::new(store.tmp_dir()).into_iter().flatten().filter(|e| e.file_type().is_file()).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_silent_server_fails_the_download() {
        let (_dir, store) = store();
        let url = serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"begun".to_vec());
        let limits = Limits { max_bytes: 1 << 20, stall: Duration::from_millis(300) };
        let error = fetch(&store, &url, None, false, limits).err().expect("timed out");
        assert!(matches!(&error, ExecError::Remote(RemoteError::Fetch { message, .. }) if message.contains("timeout")), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
    }

    #[test]
    fn http_dates_read_as_seconds() {
        assert_eq!(http_time("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_time("yesterday"), None);
    }
}
