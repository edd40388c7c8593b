//! ADD of remote sources (URLs and git repositories) against an HTTP server
//! the test starts on 127.0.0.1, and builds whose Dockerfile or context comes
//! on stdin. Tests named `buildkit_…` port the BuildKit test of that name
//! (frontend/dockerfile/dockerfile_add_test.go, dockerfile_addgit_test.go).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use crate::{TestStore, context, step_outcomes};

/// One file the server hands out.
#[derive(Clone, Default)]
struct Resource {
    body: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
    /// A Content-Length to claim instead of the body's (the body is then not sent).
    claimed_length: Option<u64>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Resource>,
    /// Files under `/git/` are served from this folder as they are (git's dumb protocol).
    root: Option<PathBuf>,
    /// Every request: path and the status answered.
    log: Vec<(String, u16)>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering GET (conditionally, with
/// ETag and Last-Modified) from a table of resources and a folder.
struct HttpServer {
    base: String,
    state: Arc<Mutex<State>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        HttpServer { base, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set(&self, path: &str, resource: Resource) {
        self.state.lock().expect("server state").files.insert(path.to_string(), resource);
    }

    fn serve_dir(&self, root: &Path) {
        self.state.lock().expect("server state").root = Some(root.to_path_buf());
    }

    /// The statuses answered for `path`, in order.
    fn statuses(&self, path: &str) -> Vec<u16> {
        self.state.lock().expect("server state").log.iter().filter(|(p, _)| p == path).map(|(_, s)| *s).collect()
    }

    /// How many requests asked for a path starting with `prefix`.
    fn requests_under(&self, prefix: &str) -> usize {
        self.state.lock().expect("server state").log.iter().filter(|(p, _)| p.starts_with(prefix)).count()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let mut state = state.lock().expect("server state");
        let found = state.files.get(&path).cloned().or_else(|| {
            let root = state.root.as_ref()?;
            let rel = path.strip_prefix("/git/")?;
            std::fs::read(root.join(rel)).ok().map(|body| Resource { body, ..Resource::default() })
        });
        let response = match found {
            None => (404, Vec::new(), Resource::default()),
            Some(r) => {
                let unchanged = match (&r.etag, headers.get("if-none-match"), &r.last_modified, headers.get("if-modified-since")) {
                    (Some(etag), Some(asked), _, _) => etag == asked,
                    (None, None, Some(date), Some(asked)) => date == asked,
                    _ => false,
                };
                if unchanged { (304, Vec::new(), r) } else { (200, r.body.clone(), r) }
            }
        };
        state.log.push((path, response.0));
        drop(state);
        let (status, body, resource) = response;
        let reason = match status {
            200 => "OK",
            304 => "Not Modified",
            _ => "Not Found",
        };
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        if let Some(etag) = &resource.etag {
            head.push_str(&format!("ETag: {etag}\r\n"));
        }
        if let Some(date) = &resource.last_modified {
            head.push_str(&format!("Last-Modified: {date}\r\n"));
        }
        if status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", resource.claimed_length.unwrap_or(body.len() as u64)));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if resource.claimed_length.is_some() {
            return;
        }
        if out.write_all(&body).is_err() {
            return;
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn build_fails(store: &TestStore, dir: &Path) -> String {
    let out = store.strata().args(["build", "--progress", "plain"]).arg(dir).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "build of {} succeeded but should fail\nstderr:\n{stderr}", dir.display());
    stderr
}

/// Regular files left anywhere under the store's temp folder.
fn temp_files(store: &TestStore) -> Vec<PathBuf> {
    walkdir::WalkDir::new(store.root().join("strata/tmp"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

const DATE: &str = "Wed, 01 Jan 2020 00:00:00 GMT";
const DATE_SECONDS: i64 = 1_577_836_800;

#[test]
fn buildkit_test_dockerfile_add_from_url() {
    let server = HttpServer::start();
    server.set("/foo", Resource { body: b"content1".to_vec(), etag: Some("\"e1\"".into()), ..Resource::default() });
    server.set("/", Resource { body: b"content2".to_vec(), last_modified: Some(DATE.into()), ..Resource::default() });
    let store = TestStore::empty();
    let dockerfile =
        format!("FROM scratch\nADD {} /dest/\nADD {} /dest/\nADD {} /named\n", server.url("/foo"), server.url("/"), server.url("/foo"));
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    store.build(ctx.path(), &["-t", "add-url"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("add-url:latest", unpacked.path());
    assert_eq!(std::fs::read(root.join("dest/foo")).expect("dest/foo"), b"content1");
    assert_eq!(std::fs::read(root.join("named")).expect("named"), b"content1", "a destination without / is the file's path");
    let unnamed = root.join("dest/__unnamed__");
    assert_eq!(std::fs::read(&unnamed).expect("dest/__unnamed__"), b"content2");
    let meta = std::fs::metadata(&unnamed).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "a download is mode 0600");
    assert_eq!(meta.mtime(), DATE_SECONDS, "mtime from Last-Modified");
    assert_eq!(std::fs::metadata(root.join("dest/foo")).expect("stat").mtime(), 0, "no Last-Modified: mtime 0, as BuildKit");

    // Again: the server is asked whether the files changed, says 304, and every step is cached.
    let (_, stderr) = store.build(ctx.path(), &["-t", "add-url"]);
    assert!(step_outcomes(&stderr).iter().filter(|(step, _)| step.contains("ADD")).all(|(_, cached)| *cached), "{stderr}");
    // /foo is added twice: downloaded once, then each use asks whether it changed.
    assert_eq!(server.statuses("/foo"), [200, 304, 304, 304]);
    assert_eq!(server.statuses("/"), [200, 304]);
}

#[test]
fn add_url_downloads_again_when_the_server_has_a_new_version() {
    let server = HttpServer::start();
    server.set("/f.txt", Resource { body: b"one".to_vec(), etag: Some("\"1\"".into()), ..Resource::default() });
    let store = TestStore::empty();
    let ctx = context(&[("Dockerfile", &format!("FROM scratch\nADD {} /f.txt\n", server.url("/f.txt")))]);
    store.build(ctx.path(), &["-t", "changing"]);
    server.set("/f.txt", Resource { body: b"two".to_vec(), etag: Some("\"2\"".into()), ..Resource::default() });
    let (_, stderr) = store.build(ctx.path(), &["-t", "changing"]);
    let outcomes = step_outcomes(&stderr);
    assert!(outcomes.iter().any(|(step, cached)| step.contains("ADD") && !cached), "{stderr}");
    assert_eq!(server.statuses("/f.txt"), [200, 200], "the stale ETag is asked about and the new bytes sent");
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("changing:latest", unpacked.path());
    assert_eq!(std::fs::read(root.join("f.txt")).expect("f.txt"), b"two");
    // --no-cache downloads again without asking whether it changed.
    store.build(ctx.path(), &["--no-cache"]);
    assert_eq!(server.statuses("/f.txt"), [200, 200, 200]);
}

#[test]
fn buildkit_test_add_url_chmod() {
    let server = HttpServer::start();
    server.set("/foo", Resource { body: b"content1".to_vec(), ..Resource::default() });
    let store = TestStore::empty();
    let url = server.url("/foo");
    let dockerfile = format!(
        "FROM scratch\nADD --chmod=644 {url} /tmp/foo1\nADD --chmod=0413 {url} /tmp/foo2\nARG mode\nADD --chmod=${{mode}} --chown=1000:1001 {url} /tmp/foo3\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    store.build(ctx.path(), &["-t", "url-chmod", "--build-arg", "mode=400"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("url-chmod:latest", unpacked.path());
    let mode = |name: &str| std::fs::metadata(root.join("tmp").join(name)).expect("stat").permissions().mode() & 0o7777;
    assert_eq!([mode("foo1"), mode("foo2"), mode("foo3")], [0o644, 0o413, 0o400]);
    let foo3 = std::fs::metadata(root.join("tmp/foo3")).expect("stat");
    assert_eq!((foo3.uid(), foo3.gid()), (1000, 1001));
}

#[test]
fn buildkit_test_dockerfile_add_archive_from_url_is_not_extracted() {
    let ctx = context(&[("inside.txt", "inside")]);
    let tar = Command::new("tar").arg("-czf").arg("-").arg("-C").arg(ctx.path()).arg("inside.txt").output().expect("run tar");
    assert!(tar.status.success());
    let server = HttpServer::start();
    server.set("/a.tar.gz", Resource { body: tar.stdout.clone(), ..Resource::default() });
    let store = TestStore::empty();
    let build = context(&[("Dockerfile", &format!("FROM scratch\nADD {} /x/\n", server.url("/a.tar.gz")))]);
    store.build(build.path(), &["-t", "remote-tar"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("remote-tar:latest", unpacked.path());
    assert_eq!(std::fs::read(root.join("x/a.tar.gz")).expect("the archive as a file"), tar.stdout);
    assert!(!root.join("x/inside.txt").exists(), "a remote archive is not extracted");
}

/// The `--unpack` part of BuildKit's testDockerfileAddArchive: `--unpack=true`
/// extracts a downloaded archive, `--unpack=false` keeps a local one whole.
#[test]
fn buildkit_test_dockerfile_add_archive_unpack() {
    let ctx = context(&[("inside.txt", "inside")]);
    let tar = Command::new("tar").arg("-czf").arg("-").arg("-C").arg(ctx.path()).arg("inside.txt").output().expect("run tar");
    assert!(tar.status.success());
    let server = HttpServer::start();
    server.set("/a.tar.gz", Resource { body: tar.stdout.clone(), ..Resource::default() });
    std::fs::write(ctx.path().join("t.tar.gz"), &tar.stdout).expect("write t.tar.gz");
    let dockerfile = format!(
        "FROM scratch\nADD --unpack=true {} /dest/\nADD --unpack=false t.tar.gz /kept/\nADD t.tar.gz /extracted/\n",
        server.url("/a.tar.gz")
    );
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    let store = TestStore::empty();
    store.build(ctx.path(), &["-t", "unpack"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("unpack:latest", unpacked.path());
    assert_eq!(std::fs::read(root.join("dest/inside.txt")).expect("extracted download"), b"inside");
    assert!(!root.join("dest/a.tar.gz").exists(), "the download was extracted, not kept");
    assert_eq!(std::fs::read(root.join("kept/t.tar.gz")).expect("the local archive whole"), tar.stdout);
    assert!(!root.join("kept/inside.txt").exists());
    assert_eq!(std::fs::read(root.join("extracted/inside.txt")).expect("a local archive by default"), b"inside");
}

#[test]
fn buildkit_test_add_checksum() {
    let server = HttpServer::start();
    server.set("/foo", Resource { body: b"content1".to_vec(), etag: Some("\"x\"".into()), ..Resource::default() });
    let url = server.url("/foo");
    let good = sha256(b"content1");
    let store = TestStore::empty();

    let valid = context(&[("Dockerfile", &format!("FROM scratch\nADD --checksum={good} {url} /tmp/foo\n"))]);
    store.build(valid.path(), &[]);
    let from_env = context(&[(
        "Dockerfile",
        &format!("FROM scratch\nENV DIGEST={good}\nENV LINK={url}\nADD --checksum=${{DIGEST}} ${{LINK}} /tmp/foo\n"),
    )]);
    store.build(from_env.path(), &[]);

    let fresh = TestStore::empty();
    let wrong = sha256(b"");
    let mismatch = context(&[("Dockerfile", &format!("FROM scratch\nADD --checksum={wrong} {url} /tmp/foo\n"))]);
    let stderr = build_fails(&fresh, mismatch.path());
    assert!(stderr.contains(&url) && stderr.contains(&wrong) && stderr.contains(&good) && stderr.contains("checksum mismatch"), "{stderr}");
    let hex = good.trim_start_matches("sha256:");
    assert!(!fresh.root().join("blobs/sha256").join(hex).exists(), "refused bytes are not kept");
    assert_eq!(temp_files(&fresh), Vec::<PathBuf>::new(), "nothing half-written stays");

    let md5 = context(&[("Dockerfile", &format!("FROM scratch\nADD --checksum=md5:7e55db001d319a94b0b713529a756623 {url} /tmp/foo\n"))]);
    assert!(build_fails(&store, md5.path()).contains("unsupported digest algorithm"));
    let no_algorithm = context(&[("Dockerfile", &format!("FROM scratch\nARG SUM={}\nADD --checksum=$SUM {url} /tmp/foo\n", hex))]);
    assert!(build_fails(&store, no_algorithm.path()).contains("expected sha256:"));
    let local = context(&[
        ("foo", "local file"),
        ("Dockerfile", &format!("FROM scratch\nADD --checksum={} foo /tmp/foo\n", sha256(b"local file"))),
    ]);
    assert!(build_fails(&store, local.path()).contains("--checksum requires an HTTP(S) or git source"));
}

#[test]
fn add_url_refuses_a_missing_file_and_a_file_over_the_limit() {
    let server = HttpServer::start();
    server.set("/huge", Resource { claimed_length: Some(9 << 30), ..Resource::default() });
    let store = TestStore::empty();
    let missing = context(&[("Dockerfile", &format!("FROM scratch\nADD {} /x\n", server.url("/nothing-here")))]);
    let stderr = build_fails(&store, missing.path());
    assert!(stderr.contains(&server.url("/nothing-here")) && stderr.contains("404"), "{stderr}");
    let huge = context(&[("Dockerfile", &format!("FROM scratch\nADD {} /x\n", server.url("/huge")))]);
    let stderr = build_fails(&store, huge.path());
    assert!(stderr.contains(&server.url("/huge")) && stderr.contains("limit"), "{stderr}");
    assert_eq!(temp_files(&store), Vec::<PathBuf>::new());
}

/// Whether the host has git; says the test is skipped when not.
fn have_git() -> bool {
    let found = Command::new("git").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: git is not installed (apt-get install git)");
    }
    found
}

/// `command` with a committer identity and `main` as the first branch, whatever the host's git config says.
fn with_git_identity(command: &mut Command) -> &mut Command {
    command
        .env("GIT_CONFIG_COUNT", "3")
        .env("GIT_CONFIG_KEY_0", "user.name")
        .env("GIT_CONFIG_VALUE_0", "t")
        .env("GIT_CONFIG_KEY_1", "user.email")
        .env("GIT_CONFIG_VALUE_1", "t@example.com")
        .env("GIT_CONFIG_KEY_2", "init.defaultBranch")
        .env("GIT_CONFIG_VALUE_2", "main")
}

/// Runs git with `args` in `cwd`; its stdout, trimmed.
fn git_in(cwd: &Path, args: &[&str]) -> String {
    let out = with_git_identity(Command::new("git").args(args).current_dir(cwd)).output().expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits (tag `v1` on the first, `main` on the
/// second), cloned bare into `served/repo.git` for git's dumb HTTP protocol.
fn git_repository(dir: &Path, object_format: &str) -> Option<(String, String)> {
    if !have_git() {
        return None;
    }
    let git = git_in;
    let work = dir.join("work");
    std::fs::create_dir_all(work.join("sub")).expect("mkdir");
    git(&work, &["init", "-q", &format!("--object-format={object_format}")]);
    std::fs::write(work.join("a.txt"), "one").expect("write");
    std::fs::write(work.join("sub/s.txt"), "in sub").expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "first"]);
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("a.txt"), "two").expect("write");
    git(&work, &["commit", "-qam", "second"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    git(&served, &["clone", "-q", "--bare", work.to_str().expect("utf-8 path"), "repo.git"]);
    git(&served.join("repo.git"), &["update-server-info"]);
    Some((first, second))
}

#[test]
fn buildkit_test_add_git_sha1() {
    add_git("sha1");
}

#[test]
fn buildkit_test_add_git_sha256() {
    add_git("sha256");
}

/// BuildKit's testAddGit, for a repository of either object format.
fn add_git(object_format: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((first, second)) = git_repository(dir.path(), object_format) else { return };
    let server = HttpServer::start();
    server.serve_dir(&dir.path().join("served"));
    let repo = server.url("/git/repo.git");
    let store = TestStore::empty();
    let dockerfile = format!(
        "FROM scratch\nADD {repo}#v1 /v1\nADD {repo} /head/\nADD --keep-git-dir --chown=4242:8484 {repo}#main /kept\nADD {repo}#v1:sub /sub\nADD --checksum={first} {repo}#v1 /pinned\n"
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    store.build(ctx.path(), &["-t", "add-git"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("add-git:latest", unpacked.path());
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert_eq!(read("v1/a.txt"), "one");
    assert_eq!(read("v1/sub/s.txt"), "in sub");
    assert!(!root.join("v1/.git").exists(), "no .git without --keep-git-dir");
    assert_eq!(read("head/a.txt"), "two");
    assert_eq!(read("kept/a.txt"), "two");
    assert!(root.join("kept/.git").is_dir(), "--keep-git-dir keeps .git");
    let kept = std::fs::metadata(root.join("kept/a.txt")).expect("stat");
    assert_eq!((kept.uid(), kept.gid()), (4242, 8484));
    let git_in_kept = |args: &[&str]| {
        let out = Command::new("git").args(["-c", "safe.directory=*", "-C"]).arg(root.join("kept")).args(args).output().expect("run git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(git_in_kept(&["rev-parse", "HEAD"]), second);
    assert_eq!(git_in_kept(&["status", "--porcelain"]), "", "the kept checkout is clean");
    assert_eq!(read("sub/s.txt"), "in sub");
    assert!(!root.join("sub/a.txt").exists(), "#ref:dir copies that folder only");
    assert_eq!(read("pinned/a.txt"), "one");

    // Again: the refs are listed, nothing is cloned, every step is cached.
    let objects = server.requests_under("/git/repo.git/objects/");
    let (_, stderr) = store.build(ctx.path(), &["-t", "add-git"]);
    assert!(step_outcomes(&stderr).iter().filter(|(step, _)| step.contains("ADD")).all(|(_, cached)| *cached), "{stderr}");
    assert_eq!(server.requests_under("/git/repo.git/objects/"), objects, "a cached git source is not cloned");

    let wrong = context(&[("Dockerfile", &format!("FROM scratch\nADD --checksum={} {repo}#v1 /x\n", "0".repeat(40)))]);
    let stderr = build_fails(&store, wrong.path());
    assert!(stderr.contains("checksum mismatch") && stderr.contains(&first), "{stderr}");
    let no_ref = context(&[("Dockerfile", &format!("FROM scratch\nADD {repo}#no-such-branch /x\n"))]);
    let stderr = build_fails(&store, no_ref.path());
    assert!(stderr.contains("no-such-branch") && stderr.contains(&repo), "{stderr}");
}

/// `git daemon` serving `base` on a free port of 127.0.0.1; killed on drop.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        // git-daemon itself, not `git daemon`, whose child would outlive a kill.
        let exec_path = Command::new("git").arg("--exec-path").output().expect("run git --exec-path");
        let daemon = Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(daemon)
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start git-daemon");
        let daemon = GitDaemon { child, port };
        // Ready once it accepts connections.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("git daemon did not listen on port {port}");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_git_fetches_only_the_commit_from_a_server_that_can() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((first, _)) = git_repository(dir.path(), "sha1") else { return };
    let daemon = GitDaemon::start(&dir.path().join("served"));
    let repo = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    let store = TestStore::empty();
    let ctx = context(&[("Dockerfile", &format!("FROM scratch\nADD --keep-git-dir {repo}#v1 /tag\nADD {repo}#{first} /commit\n"))]);
    store.build(ctx.path(), &["-t", "git-daemon"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("git-daemon:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("tag/a.txt")).expect("tag/a.txt"), "one");
    assert!(root.join("tag/.git/shallow").is_file(), "only the tagged commit was fetched");
    assert_eq!(std::fs::read_to_string(root.join("commit/a.txt")).expect("commit/a.txt"), "one");
}

#[test]
fn buildkit_test_add_git_checksum_cache() {
    // Pinning the commit a ref already names does not change the step's key.
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((first, _)) = git_repository(dir.path(), "sha1") else { return };
    let server = HttpServer::start();
    server.serve_dir(&dir.path().join("served"));
    let repo = server.url("/git/repo.git");
    let store = TestStore::empty();
    let plain = context(&[("Dockerfile", &format!("FROM scratch\nADD {repo}#v1 /x\n"))]);
    store.build(plain.path(), &[]);
    let pinned = context(&[("Dockerfile", &format!("FROM scratch\nADD --checksum={first} {repo}#v1 /x\n"))]);
    let (_, stderr) = store.build(pinned.path(), &[]);
    assert!(step_outcomes(&stderr).iter().any(|(step, cached)| step.contains("ADD") && *cached), "{stderr}");
}

/// A working tree whose `.git` git's dumb HTTP protocol can serve: a
/// Dockerfile committed on branch `first`, then a second commit that also
/// copies `bar2` (on the default branch).
fn git_context_repo(dir: &Path, object_format: &str) -> Option<()> {
    if !have_git() {
        return None;
    }
    let git = |args: &[&str]| git_in(dir, args);
    let mut dockerfile = String::from("FROM busybox AS build\nRUN echo -n fromgit > foo\nFROM scratch\nCOPY --from=build foo bar\n");
    std::fs::write(dir.join("Dockerfile"), &dockerfile).expect("write");
    git(&["init", "-q", &format!("--object-format={object_format}")]);
    git(&["add", "Dockerfile"]);
    git(&["commit", "-qm", "initial"]);
    git(&["branch", "first"]);
    dockerfile += "COPY --from=build foo bar2\n";
    std::fs::write(dir.join("Dockerfile"), &dockerfile).expect("write");
    git(&["commit", "-qam", "second"]);
    git(&["update-server-info"]);
    Some(())
}

/// BuildKit's testDockerfileFromGit: a git URL is the build context, at the
/// ref its fragment names, else at the default branch.
fn dockerfile_from_git(object_format: &str) {
    if !crate::require_root("dockerfile_from_git") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(()) = git_context_repo(dir.path(), object_format) else { return };
    let server = HttpServer::start();
    server.serve_dir(dir.path());
    let store = TestStore::with_busybox();
    let unpacked = tempfile::tempdir().expect("temp dir");
    store.build(Path::new(&server.url("/git/.git#first")), &["-t", "first"]);
    let root = store.unpack("first:latest", &unpacked.path().join("first"));
    assert_eq!(std::fs::read_to_string(root.join("bar")).expect("bar"), "fromgit");
    assert!(!root.join("bar2").exists(), "branch first has no bar2");
    store.build(Path::new(&server.url("/git/.git")), &["-t", "head"]);
    let root = store.unpack("head:latest", &unpacked.path().join("head"));
    assert_eq!(std::fs::read_to_string(root.join("bar")).expect("bar"), "fromgit");
    assert_eq!(std::fs::read_to_string(root.join("bar2")).expect("bar2"), "fromgit");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerfile_from_git_sha1() {
    dockerfile_from_git("sha1");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerfile_from_git_sha256() {
    dockerfile_from_git("sha256");
}

#[test]
fn buildkit_test_dockerfile_from_http() {
    let files = context(&[("mydockerfile", "FROM scratch\nCOPY foo bar\n"), ("foo", "foo-contents")]);
    let tar = Command::new("tar").arg("-cf").arg("-").arg("-C").arg(files.path()).args(["mydockerfile", "foo"]).output().expect("run tar");
    assert!(tar.status.success());
    let server = HttpServer::start();
    server.set("/myurl", Resource { body: tar.stdout, ..Resource::default() });
    let store = TestStore::empty();
    store.build(Path::new(&server.url("/myurl")), &["-f", "mydockerfile", "-t", "from-http"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("from-http:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("bar")).expect("bar"), "foo-contents");
    // A URL that answers 404 is a clear error naming it.
    let out = store.strata().args(["build", "-t", "x"]).arg(server.url("/missing")).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("/missing"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_http_dockerfile() {
    if !crate::require_root("buildkit_test_http_dockerfile") {
        return;
    }
    let dockerfile = "FROM busybox\nRUN echo -n \"foo-contents\" > /foo\nFROM scratch\nCOPY --from=0 /foo /foo\n";
    let server = HttpServer::start();
    server.set("/df", Resource { body: dockerfile.as_bytes().to_vec(), ..Resource::default() });
    let store = TestStore::with_busybox();
    // -f names a file inside a context; a Dockerfile alone is used whatever it says.
    store.build(Path::new(&server.url("/df")), &["-f", "mydockerfile", "-t", "http-dockerfile"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("http-dockerfile:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("foo")).expect("foo"), "foo-contents");
}

/// BuildKit's testGitQueryString: each form of a git URL (fragment and
/// query), as the build context and as an ADD source. The one case that
/// passes in BuildKit only because an earlier case cached its commit (a tag
/// with another tag's commit) is left out: here it fails as it should.
#[test]
fn buildkit_test_git_query_string() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = HttpServer::start();
    server.serve_dir(dir.path());
    let run = |cwd: &Path, line: &str| {
        let out = with_git_identity(Command::new("sh").args(["-ec", line]).current_dir(cwd)).output().expect("run sh");
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if !have_git() {
        return;
    }
    let (submod, main) = (dir.path().join("submod"), dir.path().join("main"));
    std::fs::create_dir_all(&submod).expect("mkdir");
    std::fs::create_dir_all(&main).expect("mkdir");
    run(&submod, "git init -q && echo 123 >file && git add file && git commit -qm initial && git update-server-info");
    std::fs::write(
        main.join("Dockerfile"),
        "FROM scratch AS withgit\nCOPY .git/HEAD out\nFROM scratch AS withsubmod\nCOPY submod/file out\nFROM scratch\nCOPY foo out\n",
    )
    .expect("write");
    run(&main, &format!("git init -q && echo base >foo && git submodule --quiet add {} submod", server.url("/git/submod/.git")));
    run(
        &main,
        "git add Dockerfile foo submod && git commit -qm initial && git tag v0.0.1 && git branch base \
         && echo feature >foo && mkdir sub && echo subfeature >sub/foo && cp Dockerfile sub/ && git add foo sub \
         && git commit -qm feature && git branch feature && git checkout -q -B master base \
         && echo v0.0.2 >foo && git add foo && git commit -qm v0.0.2 && git tag v0.0.2 \
         && echo latest >foo && git add foo && git commit -qm latest && git tag latest && git update-server-info",
    );
    let v2 = run(&main, "git rev-parse v0.0.2");
    let latest = run(&main, "git rev-parse latest");
    let url = server.url("/git/main/.git");
    // (URL, stage, the out file's content, or a phrase of the error)
    let cases: Vec<(String, &str, Result<String, &str>)> = vec![
        (format!("{url}?tag=v0.0.2&commit={latest}"), "", Err("not the commit=")),
        (format!("{url}#v0.0.2"), "", Ok("v0.0.2\n".into())),
        (format!("{url}?ref=base"), "", Ok("base\n".into())),
        (format!("{url}?branch=base"), "", Ok("base\n".into())),
        (format!("{url}?branch=invalid"), "", Err("no ref \"invalid\"")),
        (format!("{url}?branch=v0.0.2"), "", Err("no ref \"v0.0.2\"")),
        (format!("{url}?tag=v0.0.2#refs/tags/v0.0.2"), "", Ok("v0.0.2\n".into())),
        (format!("{url}?commit={v2}"), "", Ok("v0.0.2\n".into())),
        (format!("{url}?commit={}", &v2[..8]), "", Err("not the commit=")),
        (format!("{url}?commit={}", &latest[..8]), "", Ok("latest\n".into())),
        (format!("{url}?ref={v2}"), "", Ok("v0.0.2\n".into())),
        (format!("{url}?ref={}", &v2[..8]), "", Err("no ref")),
        (format!("{url}?tag=v0.0.2&commit={v2}"), "", Ok("v0.0.2\n".into())),
        (format!("{url}?ref={v2}&commit={v2}"), "", Ok("v0.0.2\n".into())),
        (format!("{url}?commit={latest}"), "", Ok("latest\n".into())),
        (format!("{url}?tag=v0.0.2#refs/heads/master"), "", Err("ref conflicts")),
        (format!("{url}#feature:sub"), "", Ok("subfeature\n".into())),
        (format!("{url}?subdir=sub&ref=feature"), "", Ok("subfeature\n".into())),
        (format!("{url}?keep-git-dir=true"), "withgit", Ok(format!("{latest}\n"))),
        (format!("{url}?tag=v0.0.2&keep-git-dir=true"), "withgit", Ok(format!("{v2}\n"))),
        (url.clone(), "withgit", Err(".git/HEAD")),
        (format!("{url}?keep-git-dir&submodules"), "withgit", Ok(format!("{latest}\n"))),
        (format!("{url}?keep-git-dir=false"), "withgit", Err(".git/HEAD")),
        (url.clone(), "withsubmod", Ok("123\n".into())),
        (format!("{url}?submodules=true"), "withsubmod", Ok("123\n".into())),
        (format!("{url}?submodules"), "withsubmod", Ok("123\n".into())),
        (format!("{url}?submodules=false"), "withsubmod", Err("submod/file")),
    ];
    let store = TestStore::empty();
    let unpacked = tempfile::tempdir().expect("temp dir");
    for (n, (case_url, target, expected)) in cases.iter().enumerate() {
        // As the build context, then as an ADD source.
        let add = context(&[(
            "Dockerfile",
            &format!(
                "FROM scratch AS main\nADD {case_url} /repo/\nFROM scratch AS withsubmod\nCOPY --from=main /repo/submod/file /repo/foo\n\
                 FROM scratch AS withgit\nCOPY --from=main /repo/.git/HEAD /repo/foo\nFROM main\n"
            ),
        )]);
        let targets = if target.is_empty() { vec![] } else { vec!["--target", target] };
        for (how, build_context, out) in [("context", PathBuf::from(case_url), "out"), ("add", add.path().to_path_buf(), "repo/foo")] {
            let tag = format!("q{n}-{how}");
            let built = store
                .strata()
                .args(["build", "--progress", "plain", "-t", &tag])
                .args(&targets)
                .arg(&build_context)
                .output()
                .expect("run strata build");
            let stderr = String::from_utf8_lossy(&built.stderr);
            match expected {
                Ok(content) => {
                    assert!(built.status.success(), "{how} {case_url} ({target}) failed:\n{stderr}");
                    let root = store.unpack(&format!("{tag}:latest"), &unpacked.path().join(&tag));
                    assert_eq!(&std::fs::read_to_string(root.join(out)).expect("out"), content, "{how} {case_url} ({target})");
                }
                Err(phrase) => assert!(!built.status.success() && stderr.contains(phrase), "{how} {case_url} ({target}): {stderr}"),
            }
        }
    }
}

// ---- dockerfile_source_date_epoch_test.go: SOURCE_DATE_EPOCH from a source ----

/// A tar of `(name, content, mtime)` files.
fn tar_with_times(files: &[(&str, &str, u64)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content, mtime) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(*mtime);
        header.set_cksum();
        builder.append_data(&mut header, name, content.as_bytes()).expect("append to tar");
    }
    builder.into_inner().expect("finish tar")
}

/// The image's creation time as `image inspect` prints it.
fn created(store: &TestStore, image: &str) -> String {
    let text = store.ok(&["image", "inspect", image]);
    let inspected: serde_json::Value = serde_json::from_str(&text).expect("inspect prints JSON");
    inspected[0]["Created"].as_str().expect("Created").to_string()
}

/// A git repository in `dir` whose one commit (a Dockerfile) was made at
/// `date`, ready for git's dumb HTTP protocol at `/git/.git`.
fn git_repository_at(dir: &Path, dockerfile: &str, date: &str) {
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write");
    git_in(dir, &["init", "-q"]);
    git_in(dir, &["add", "Dockerfile"]);
    let commit = with_git_identity(Command::new("git").args(["commit", "-qm", "msg"]))
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .current_dir(dir)
        .status()
        .expect("run git commit");
    assert!(commit.success());
    git_in(dir, &["update-server-info"]);
}

#[test]
fn buildkit_test_source_date_epoch_context_git() {
    if !have_git() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let date = "2023-11-14T22:15:01Z";
    git_repository_at(dir.path(), "FROM scratch\nCOPY Dockerfile /\n", date);
    let server = HttpServer::start();
    server.serve_dir(dir.path());
    let store = TestStore::empty();
    store.build(Path::new(&server.url("/git/.git")), &["--build-arg", "SOURCE_DATE_EPOCH=context", "-t", "epoch-git"]);
    assert_eq!(created(&store, "epoch-git"), date, "the commit's time");
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("epoch-git:latest", unpacked.path());
    assert_eq!(std::fs::metadata(root.join("Dockerfile")).expect("stat").mtime(), 1700000101, "a newer mtime is clamped");
}

/// Not among BuildKit's tests, which use HTTP sources alone: a source
/// stage's git ADD gives its commit's time; a second build reads the time
/// kept, fetching no objects.
#[test]
fn source_date_epoch_stage_git() {
    if !have_git() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    git_repository_at(dir.path(), "FROM scratch\n", "2023-11-14T22:15:01Z");
    let server = HttpServer::start();
    server.serve_dir(dir.path());
    let dockerfile =
        format!("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD {} /\nFROM scratch\nCOPY Dockerfile /\n", server.url("/git/.git"));
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let store = TestStore::empty();
    store.build(ctx.path(), &["-t", "epoch-git-stage"]);
    assert_eq!(created(&store, "epoch-git-stage"), "2023-11-14T22:15:01Z");
    let objects = server.requests_under("/git/.git/objects/");
    assert!(objects > 0, "the first build fetched the commit");
    store.build(ctx.path(), &["-t", "epoch-git-stage"]);
    assert_eq!(server.requests_under("/git/.git/objects/"), objects, "the second build fetched no objects");
    assert_eq!(created(&store, "epoch-git-stage"), "2023-11-14T22:15:01Z");
}

#[test]
fn buildkit_test_source_date_epoch_context_http_last_modified() {
    let tar = tar_with_times(&[("Dockerfile", "FROM scratch\nCOPY foo /\n", 1700000202 - 3600), ("foo", "bar", 1700000202)]);
    let server = HttpServer::start();
    server.set("/context.tar", Resource { body: tar, last_modified: Some("Tue, 14 Nov 2023 22:16:41 GMT".into()), ..Resource::default() });
    let store = TestStore::empty();
    store.build(Path::new(&server.url("/context.tar")), &["--build-arg", "SOURCE_DATE_EPOCH=context", "-t", "epoch-lm"]);
    assert_eq!(created(&store, "epoch-lm"), "2023-11-14T22:16:41Z", "Last-Modified wins over the files' times");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_source_date_epoch_context_http_archive() {
    if !crate::require_root("buildkit_test_source_date_epoch_context_http_archive") {
        return;
    }
    let dockerfile = "FROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo -n \"$SOURCE_DATE_EPOCH\" >/epoch\n";
    let tar = tar_with_times(&[("Dockerfile", dockerfile, 1700000302 - 3600), ("foo", "bar", 1700000302)]);
    let server = HttpServer::start();
    server.set("/context.tar", Resource { body: tar, ..Resource::default() });
    let store = TestStore::with_busybox();
    store.build(Path::new(&server.url("/context.tar")), &["--build-arg", "SOURCE_DATE_EPOCH=context", "-t", "epoch-archive"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("epoch-archive:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("epoch")).expect("epoch"), "1700000302", "RUN sees the newest file's time");
    assert_eq!(created(&store, "epoch-archive"), "2023-11-14T22:18:22Z");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_source_date_epoch_stage_http_archive() {
    if !crate::require_root("buildkit_test_source_date_epoch_stage_http_archive") {
        return;
    }
    let server = HttpServer::start();
    server.set(
        "/src.tar",
        Resource { body: tar_with_times(&[("foo", "bar", 1700000402)]), etag: Some("\"1\"".into()), ..Resource::default() },
    );
    let dockerfile = format!(
        "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nADD {}/src.tar /\nFROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo -n \"$SOURCE_DATE_EPOCH\" >/epoch\n",
        server.url("")
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let store = TestStore::with_busybox();
    store.build(ctx.path(), &["-t", "epoch-stage"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("epoch-stage:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("epoch")).expect("epoch"), "1700000402", "the newest file in the stage's archive");
    assert_eq!(std::fs::metadata(root.join("epoch")).expect("stat").mtime(), 1700000402, "the new layer's times are clamped");
    assert_eq!(created(&store, "epoch-stage"), "2023-11-14T22:20:02Z");
}

#[test]
fn buildkit_test_source_date_epoch_stage_override() {
    let server = HttpServer::start();
    server.set("/src.tar", Resource { body: tar_with_times(&[("foo", "bar", 1700000501)]), ..Resource::default() });
    // The stage sees the global args (BASE) without declaring them, as in BuildKit.
    let dockerfile = format!(
        "ARG SOURCE_DATE_EPOCH=mysource\nARG BASE={}\nFROM scratch AS mysource\nADD ${{BASE}}/src.tar /\nFROM scratch\nCOPY Dockerfile .\n",
        server.url("")
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let store = TestStore::empty();
    store.build(ctx.path(), &["--build-arg", "SOURCE_DATE_EPOCH=1700000502", "-t", "epoch-override"]);
    assert_eq!(created(&store, "epoch-override"), "2023-11-14T22:21:42Z", "the build arg wins");
    assert!(server.statuses("/src.tar").is_empty(), "the stage's source is not asked for");
    // Without the build arg, the stage's source gives the time.
    store.build(ctx.path(), &["-t", "epoch-from-stage"]);
    assert_eq!(created(&store, "epoch-from-stage"), "2023-11-14T22:21:41Z");
}

#[test]
fn buildkit_test_source_date_epoch_stage_invalid() {
    let store = TestStore::empty();
    let refused = |dockerfile: &str| build_fails(&store, context(&[("Dockerfile", dockerfile)]).path());
    let stderr = refused("ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nCOPY Dockerfile /Dockerfile\nFROM scratch\n");
    assert!(stderr.contains("does not meet source-only requirements: unsupported COPY instruction"), "{stderr}");
    assert!(stderr.contains("Dockerfile:3"), "names the line: {stderr}");
    let stderr = refused("ARG SOURCE_DATE_EPOCH=src\nFROM busybox AS src\nADD http://127.0.0.1:1/a.tar /\nFROM scratch\n");
    assert!(stderr.contains("must use FROM scratch"), "{stderr}");
    let stderr = refused("ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD local.tar /\nFROM scratch\n");
    assert!(stderr.contains("\"local.tar\" is not an HTTP(S) URL or a git repository"), "{stderr}");
    let stderr = refused("ARG SOURCE_DATE_EPOCH=nosuchstage\nFROM scratch\n");
    assert!(stderr.contains("invalid SOURCE_DATE_EPOCH \"nosuchstage\""), "{stderr}");
}
