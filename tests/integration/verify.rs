//! `strata system verify [--repair]` on a store damaged the ways a disk or a
//! killed process can damage it.

use std::path::{Path, PathBuf};

use crate::{TestStore, context, require_root};

/// The manifest digest (`sha256:…`) `index.json` records for `reference`.
pub fn manifest_digest(root: &Path, reference: &str) -> String {
    tags(root).into_iter().find(|(tag, _)| tag == reference).map(|(_, d)| d).unwrap_or_else(|| panic!("{reference} is not in index.json"))
}

/// Every tagged entry of `index.json`: (tag, manifest digest).
pub fn tags(root: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("index.json")).expect("index.json is JSON");
    let mut tags: Vec<_> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| {
            let tag = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((tag.to_string(), m["digest"].as_str()?.to_string()))
        })
        .collect();
    tags.sort();
    tags
}

/// The path of the blob `digest` (`sha256:…`).
pub fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// The layer digests of the image tagged `reference`.
fn layers(root: &Path, reference: &str) -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(root, &manifest_digest(root, reference))).expect("manifest")).expect("manifest JSON");
    manifest["layers"].as_array().expect("layers").iter().map(|l| l["digest"].as_str().expect("digest").to_string()).collect()
}

/// `strata system verify ARGS`: (exit code, stdout, stderr).
pub fn verify(store: &TestStore, args: &[&str]) -> (i32, String, String) {
    let out = store.strata().args(["system", "verify"]).args(args).output().expect("run strata system verify");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts the store verifies clean.
pub fn assert_clean(store: &TestStore, after: &str) {
    let (code, stdout, stderr) = verify(store, &[]);
    assert!(code == 0 && stdout.is_empty(), "verify after {after} found problems (exit {code})\nstdout:\n{stdout}\nstderr:\n{stderr}");
}

#[test]
fn verify_names_a_corrupt_blob_a_truncated_manifest_a_deleted_layer_and_a_temp_file_and_repair_drops_only_them() {
    let store = TestStore::with_busybox();
    let build = |tag: &str, content: &str| {
        let ctx = context(&[("file", content), ("Dockerfile", "FROM busybox:latest\nCOPY file /file\n")]);
        store.ok(&["build", "-q", "-t", tag, ctx.path().to_str().expect("utf-8 path")]);
    };
    for tag in ["corrupt", "truncated", "deleted", "whole"] {
        build(tag, &format!("the {tag} image\n"));
    }
    assert_clean(&store, "the builds");
    let root = store.root();
    let busybox = manifest_digest(root, "busybox:latest");
    let whole = manifest_digest(root, "whole:latest");

    let corrupt_layer = layers(root, "corrupt:latest").pop().expect("a layer");
    std::fs::write(blob(root, &corrupt_layer), b"not the layer any more").expect("corrupt a blob");
    let truncated = manifest_digest(root, "truncated:latest");
    let bytes = std::fs::read(blob(root, &truncated)).expect("read manifest");
    std::fs::write(blob(root, &truncated), &bytes[..bytes.len() / 2]).expect("truncate the manifest");
    let deleted_layer = layers(root, "deleted:latest").pop().expect("a layer");
    std::fs::remove_file(blob(root, &deleted_layer)).expect("delete a layer");
    std::fs::write(root.join("strata/tmp/.tmpLeftOver"), b"half a blob").expect("leave a temp file");

    let (code, stdout, stderr) = verify(&store, &[]);
    assert_eq!(code, 1, "verify of a damaged store fails\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in [
        format!("blob {corrupt_layer}: corrupt: its content hashes to"),
        format!("tag corrupt:latest ({}): layer {corrupt_layer} is corrupt", manifest_digest(root, "corrupt:latest")),
        format!("blob {truncated}: corrupt"),
        format!("tag truncated:latest ({truncated}): manifest {truncated} is corrupt"),
        format!("tag deleted:latest ({}): layer {deleted_layer} is missing", manifest_digest(root, "deleted:latest")),
        "temp file strata/tmp/.tmpLeftOver: left by an interrupted write".to_string(),
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(&expected)), "verify does not report {expected:?}\nstdout:\n{stdout}");
    }
    assert!(!stdout.contains("busybox") && !stdout.contains("whole"), "verify reports a whole image\n{stdout}");

    let (code, stdout, stderr) = verify(&store, &["--repair"]);
    assert_eq!(code, 0, "verify --repair repairs everything\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.lines().all(|l| l.ends_with("(removed)")), "{stdout}");
    assert_clean(&store, "--repair");
    let tags: Vec<String> = tags(root).into_iter().map(|(t, _)| t).collect();
    assert_eq!(tags, ["busybox:latest", "whole:latest"]);
    assert_eq!(manifest_digest(root, "busybox:latest"), busybox);
    assert_eq!(manifest_digest(root, "whole:latest"), whole);

    // What is whole still builds (the dropped images again, too) and runs.
    for tag in ["corrupt", "truncated", "deleted"] {
        build(tag, &format!("the {tag} image\n"));
    }
    assert_clean(&store, "rebuilding the dropped images");
    if require_root("verify_… (run after repair)") {
        let out = store.ok(&["run", "--rm", "whole:latest", "cat", "/file"]);
        assert_eq!(out, "the whole image\n");
    }
}

#[test]
fn verify_of_a_fresh_store_is_clean() {
    let store = TestStore::empty();
    let (code, stdout, stderr) = verify(&store, &[]);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(stderr.contains("no problems"), "{stderr}");
}
