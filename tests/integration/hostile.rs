//! Hostile build files, contexts and archives: each is refused with a clear,
//! short error (exit code 1, never a signal or a panic), in work and memory
//! linear in its size.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use crate::{TestStore, context, require_root};

/// A diagnostic's text with miette's line wrapping undone.
fn unwrapped(stderr: &str) -> String {
    stderr.replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `${A0:-${A1:-…x…}}`, `depth` levels deep.
fn nested_defaults(depth: usize) -> String {
    let mut text = String::from("x");
    for i in 0..depth {
        text = format!("${{A{i}:-{text}}}");
    }
    text
}

/// Runs `strata graph --format json FILE` in a temp dir holding `name` = `text`; returns (status, stdout, stderr).
fn graph(name: &str, text: &str) -> (std::process::ExitStatus, String, String) {
    let ctx = context(&[(name, text)]);
    let store = TestStore::empty();
    let out = store.strata().current_dir(ctx.path()).args(["graph", "--format", "json", name]).output().expect("run strata graph");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn variable_defaults_nested_20000_deep_are_a_located_error() {
    let (status, _, stderr) = graph("Dockerfile", &format!("FROM scratch\nENV V={}\n", nested_defaults(20_000)));
    assert_eq!(status.code(), Some(1), "{status:?}\n{stderr}");
    assert!(stderr.contains("variable references nest deeper than 64 levels"), "{stderr}");
    assert!(stderr.contains("Dockerfile:2:"), "{stderr}");
    assert!(stderr.len() < 4096, "{} bytes of stderr", stderr.len());
    // As deep as allowed still lowers.
    let (status, stdout, stderr) = graph("Dockerfile", &format!("FROM scratch\nENV V={}\n", nested_defaults(64)));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("\"A63\""), "{stdout}");
}

#[test]
fn a_kdl_spec_nested_100000_deep_is_an_error_not_a_stack_overflow() {
    let (status, _, stderr) = graph("spec.kdl", &("a {\n".repeat(100_000) + &"}\n".repeat(100_000)));
    assert_eq!(status.code(), Some(1), "{status:?} (signal {:?})\n{stderr}", status.signal());
    assert!(stderr.contains("blocks nest deeper than 64 levels"), "{stderr}");
    assert!(stderr.contains("spec.kdl:65:3"), "{stderr}");
    let (status, _, stderr) = graph("spec.kdl", &format!("/*{}*/", "*".repeat(1 << 20)));
    assert_eq!(status.code(), Some(1), "{status:?} (signal {:?})\n{stderr}", status.signal());
    assert!(stderr.contains("block comment too complex"), "{stderr}");
}

#[test]
fn a_malformed_kdl_spec_with_many_open_braces_is_refused_before_parsing() {
    // Found by fuzzing: 1.5 KB on which the kdl crate's error recovery spent
    // 2 s and made 900,000 diagnostics (twice the text exhausted memory).
    let text = std::fs::read_to_string(crate::fixtures().join("fuzz/kdl/regress-open-braces.kdl")).expect("read fixture");
    for text in [text.clone(), format!("{text}\n{text}")] {
        let (status, _, stderr) = graph("spec.kdl", &text);
        assert_eq!(status.code(), Some(1), "{status:?} (signal {:?})\n{stderr}", status.signal());
        assert!(stderr.contains("more than 64 `{` are open at once"), "{stderr}");
        assert!(stderr.contains("spec.kdl:"), "{stderr}");
    }
}

#[test]
fn a_file_with_thousands_of_errors_reports_the_first_fifty() {
    let (status, _, stderr) = graph("Dockerfile", &format!("FROM scratch\n{}", "BOGUS x\n".repeat(10_000)));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(unwrapped(&stderr).contains("Dockerfile: 10000 errors (the first 50 shown)"), "{stderr}");
    assert_eq!(stderr.matches("unknown instruction: BOGUS").count(), 50, "{stderr}");
}

#[test]
fn an_error_in_a_megabyte_line_quotes_it_clipped() {
    let long = "x".repeat(1 << 20);
    let (status, _, stderr) = graph("Dockerfile", &format!("FROM scratch\nBOGUS{long}\nRUN true\n"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(unwrapped(&stderr).contains("unknown instruction: BOGUSxxx") && stderr.contains("not an instruction"), "{stderr}");
    assert!(stderr.len() < 4096, "{} bytes of stderr", stderr.len());
    let (status, _, stderr) = graph("Dockerfile", &format!("FROM scratch\nENV A={long}${{B\n"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("of a long line)"), "{stderr}");
    assert!(stderr.len() < 4096, "{} bytes of stderr", stderr.len());
}

#[test]
fn an_unreadable_dockerignore_fails_the_build() {
    let store = TestStore::empty();
    for make in ["directory", "loop", "dangling"] {
        let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "content")]);
        let ignore = ctx.path().join(".dockerignore");
        match make {
            "directory" => std::fs::create_dir(&ignore).expect("mkdir"),
            "loop" => std::os::unix::fs::symlink(".dockerignore", &ignore).expect("symlink"),
            _ => std::os::unix::fs::symlink("nowhere", &ignore).expect("symlink"),
        }
        let out = store.strata().args(["build", "-q"]).arg(ctx.path()).output().expect("run strata build");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{make}: {stderr}");
        assert!(stderr.contains(".dockerignore"), "{make}: {stderr}");
    }
    // A missing one is no rules at all.
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "content")]);
    store.strata().args(["build", "-q"]).arg(ctx.path()).assert().success();
}

/// Starts `strata ARGS` with its stdout a pipe whose reading end is closed at once.
fn with_stdout_closed(store: &TestStore, dir: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_ROOT", store.root())
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata");
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    (child.wait().expect("wait"), stderr)
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let store = TestStore::empty();
    // Far more output than a pipe holds, so the write meets the closed pipe whatever the timing.
    let dockerfile = "FROM scratch\n".to_string() + &"ENV A=b\n".repeat(20_000);
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let (status, stderr) = with_stdout_closed(&store, ctx.path(), &["graph", "--format", "json", "Dockerfile"]);
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (status, stderr) = with_stdout_closed(&store, ctx.path(), &["images"]);
    assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "{status:?}\n{stderr}");
    assert!(!stderr.contains("panicked") && status.code() != Some(101), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_run_step_closing_or_breaking_its_pipes_does_not_hurt_the_build() {
    if !require_root("a_run_step_closing_or_breaking_its_pipes_does_not_hurt_the_build") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nRUN yes | head -n 1 > /first && exec >&- && echo still running >&2\nRUN cat /first\n",
    )]);
    let (_, stderr) = store.build(ctx.path(), &[]);
    assert!(stderr.contains("still running"), "{stderr}");
    assert!(stderr.contains("\ny\n") || stderr.contains(" y\n"), "{stderr}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The blobs of a store (none if it has no blob folder yet).
fn blob_names(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// An OCI layout saved from a store holding busybox and a small image built on scratch.
struct SavedLayout {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SavedLayout {
    fn new() -> SavedLayout {
        let store = TestStore::with_busybox();
        let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "small")]);
        store.build(ctx.path(), &["-t", "small:1"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("layout");
        store.ok(&["save", "busybox:latest", "small:1", "-o", path.to_str().expect("utf-8")]);
        SavedLayout { _dir: dir, path }
    }

    fn index(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path.join("index.json")).expect("index.json")).expect("index json")
    }

    fn blob(&self, digest: &str) -> std::path::PathBuf {
        self.path.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    fn json(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.blob(digest)).expect("blob")).expect("blob json")
    }

    /// Writes `value` as a new blob; returns its digest and size.
    fn put(&self, value: &serde_json::Value) -> (String, u64) {
        let bytes = serde_json::to_vec(value).expect("json");
        let hex = sha256_hex(&bytes);
        std::fs::write(self.blob(&hex), &bytes).expect("write blob");
        (format!("sha256:{hex}"), bytes.len() as u64)
    }

    /// The manifest digest of the image named `name` (`io.containerd.image.name` ends with it).
    fn manifest_of(&self, name: &str) -> String {
        let index = self.index();
        let entry = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["io.containerd.image.name"].as_str().is_some_and(|full| full.ends_with(&format!("/{name}"))));
        entry.unwrap_or_else(|| panic!("{name} in {index}"))["digest"].as_str().expect("digest").to_string()
    }

    /// Loads the layout into a fresh store; asserts the load is refused with `message` and leaves nothing.
    fn assert_refused(&self, message: &str) {
        let fresh = TestStore::empty();
        let out = fresh.strata().args(["load", "-i"]).arg(&self.path).output().expect("run strata load");
        let stderr = unwrapped(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "a tampered layout was accepted\n{stderr}");
        assert!(stderr.contains(message), "expected {message:?} in\n{stderr}");
        assert_eq!(fresh.ok(&["images", "-q"]).trim(), "", "nothing is tagged");
        assert_eq!(blob_names(fresh.root()), Vec::<String>::new(), "no blob of a refused input stays");
    }
}

#[test]
fn a_saved_layout_loads_and_a_tampered_one_leaves_nothing() {
    let layout = SavedLayout::new();
    let fresh = TestStore::empty();
    let loaded = fresh.ok(&["load", "-i", layout.path.to_str().expect("utf-8")]);
    assert!(loaded.contains("busybox:latest") && loaded.contains("small:1"), "{loaded}");

    // The second image's manifest no longer matches its digest: the first image is not kept either.
    let small = layout.manifest_of("small:1");
    let original = std::fs::read(layout.blob(&small)).expect("manifest");
    let mut edited = original.clone();
    edited.extend_from_slice(b" ");
    std::fs::write(layout.blob(&small), &edited).expect("tamper");
    layout.assert_refused("is corrupt");
    std::fs::write(layout.blob(&small), &original).expect("restore");

    // A descriptor that lies about its blob's size.
    let pristine_index = std::fs::read(layout.path.join("index.json")).expect("index.json");
    let mut index = layout.index();
    for entry in index["manifests"].as_array_mut().expect("manifests") {
        if entry["digest"] == small.as_str() {
            entry["size"] = serde_json::json!(entry["size"].as_u64().expect("size") + 1);
        }
    }
    std::fs::write(layout.path.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("write index");
    layout.assert_refused("but its descriptor says");
    std::fs::write(layout.path.join("index.json"), &pristine_index).expect("restore index");

    // Every digest right, but the config names another diff_id than its layer's.
    let mut manifest = layout.json(&small);
    let mut config = layout.json(manifest["config"]["digest"].as_str().expect("config digest"));
    config["rootfs"]["diff_ids"][0] = serde_json::json!(format!("sha256:{}", sha256_hex(b"another layer")));
    let (config_digest, config_size) = layout.put(&config);
    manifest["config"]["digest"] = serde_json::json!(config_digest);
    manifest["config"]["size"] = serde_json::json!(config_size);
    let (manifest_digest, manifest_size) = layout.put(&manifest);
    let mut index = layout.index();
    for entry in index["manifests"].as_array_mut().expect("manifests") {
        if entry["digest"] == small.as_str() {
            entry["digest"] = serde_json::json!(manifest_digest);
            entry["size"] = serde_json::json!(manifest_size);
        }
    }
    std::fs::write(layout.path.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("write index");
    layout.assert_refused("lists sha256:");
}
