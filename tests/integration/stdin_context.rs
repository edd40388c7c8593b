//! `strata build` reading from stdin as `docker build` does: `-f -` (the
//! Dockerfile), `-` (a context tar, plain or compressed, or a Dockerfile
//! alone). BuildKit's tests of the same name are in dockerfile_export_test.go.

use std::io::Write;

use crate::{TestStore, context};

/// A tar holding `files` (path, content), each a regular file of mode 0644.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, content.as_bytes()).expect("append to tar");
    }
    builder.into_inner().expect("finish tar")
}

/// A tar with one entry whose name is written as given (a tar writer would refuse `..`).
fn tar_with_raw_name(name: &[u8], kind: tar::EntryType, link: Option<&str>, content: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().expect("gnu header").name[..name.len()].copy_from_slice(name);
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    if let Some(link) = link {
        header.set_link_name(link).expect("link name");
    }
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, content).expect("append");
    builder.into_inner().expect("finish tar")
}

fn compress(kind: &str, bytes: &[u8]) -> Vec<u8> {
    match kind {
        "plain" => bytes.to_vec(),
        "gzip" => {
            let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            out.write_all(bytes).expect("gzip");
            out.finish().expect("gzip")
        }
        "zstd" => zstd::encode_all(bytes, 3).expect("zstd"),
        "bzip2" => {
            let mut out = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            out.write_all(bytes).expect("bzip2");
            out.finish().expect("bzip2")
        }
        "xz" => {
            let mut out = xz2::write::XzEncoder::new(Vec::new(), 6);
            out.write_all(bytes).expect("xz");
            out.finish().expect("xz")
        }
        other => panic!("no compression {other}"),
    }
}

/// `strata build` with `args`, `stdin` piped in; returns (success, stderr).
fn build_with_stdin(store: &TestStore, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let out =
        store.strata().args(["build", "--progress", "plain"]).args(args).write_stdin(stdin.to_vec()).output().expect("run strata build");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn read_in_image(store: &TestStore, image: &str, path: &str) -> String {
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack(image, unpacked.path());
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("read {path} in {image}: {e}"))
}

#[test]
fn buildkit_test_tar_context() {
    let tar = tar_of(&[("Dockerfile", "FROM scratch\nCOPY foo /foo\n"), ("foo", "bar")]);
    let store = TestStore::empty();
    for kind in ["plain", "gzip", "zstd", "bzip2", "xz"] {
        let tag = format!("tar-context-{kind}");
        let (ok, stderr) = build_with_stdin(&store, &["-t", &tag, "-"], &compress(kind, &tar));
        assert!(ok, "{kind}: {stderr}");
        assert_eq!(read_in_image(&store, &format!("{tag}:latest"), "foo"), "bar", "{kind}");
    }
}

#[test]
fn buildkit_test_tar_context_external_dockerfile() {
    // -f names a Dockerfile inside the tar; a path that leaves it is refused.
    let tar = tar_of(&[("sub/build.Dockerfile", "FROM scratch\nCOPY foo /from-sub\n"), ("foo", "bar")]);
    let store = TestStore::empty();
    let (ok, stderr) = build_with_stdin(&store, &["-t", "inside", "-f", "sub/build.Dockerfile", "-"], &tar);
    assert!(ok, "{stderr}");
    assert_eq!(read_in_image(&store, "inside:latest", "from-sub"), "bar");
    let (ok, stderr) = build_with_stdin(&store, &["-f", "../escape", "-"], &tar);
    assert!(!ok && stderr.contains("../escape"), "{stderr}");
}

#[test]
fn dockerfile_from_stdin_with_a_context_folder() {
    let ctx = context(&[("foo", "from the folder"), ("Dockerfile", "FROM scratch\nCOPY missing /x\n")]);
    let store = TestStore::empty();
    let dir = ctx.path().to_str().expect("utf-8 path");
    let (ok, stderr) = build_with_stdin(&store, &["-t", "stdin-file", "-f", "-", dir], b"FROM scratch\nCOPY foo /foo\n");
    assert!(ok, "the Dockerfile comes from stdin, not the folder: {stderr}");
    assert_eq!(read_in_image(&store, "stdin-file:latest", "foo"), "from the folder");
    let (ok, stderr) = build_with_stdin(&store, &["-f", "-", dir], b"FROM scratch\nNOSUCH x\n");
    assert!(!ok && stderr.contains("Dockerfile:2"), "an error names the stdin Dockerfile's line: {stderr}");
}

#[test]
fn a_dockerfile_alone_on_stdin_has_an_empty_context() {
    let store = TestStore::empty();
    let (ok, stderr) = build_with_stdin(&store, &["-t", "alone", "-"], b"FROM scratch\nENV A=1\n");
    assert!(ok, "{stderr}");
    let (ok, stderr) = build_with_stdin(&store, &["-"], b"FROM scratch\nCOPY anything /x\n");
    assert!(!ok && stderr.contains("anything"), "nothing to copy from: {stderr}");
    let (ok, stderr) = build_with_stdin(&store, &["-f", "-", "-"], b"FROM scratch\n");
    assert!(!ok && stderr.contains("stdin"), "{stderr}");
}

#[test]
fn a_context_tar_cannot_write_outside_its_folder() {
    let store = TestStore::empty();
    let outside = store.root().join("strata/tmp/escaped");
    let (ok, stderr) = build_with_stdin(&store, &["-"], &tar_with_raw_name(b"../escaped", tar::EntryType::Regular, None, b"x"));
    assert!(!ok && stderr.contains("<stdin>") && stderr.contains("../escaped"), "a .. entry is refused: {stderr}");
    // An absolute name lands inside the folder, as in Docker (there is no Dockerfile then).
    let absolute = tar_with_raw_name(outside.to_str().expect("utf-8").as_bytes(), tar::EntryType::Regular, None, b"x");
    let (ok, stderr) = build_with_stdin(&store, &["-"], &absolute);
    assert!(!ok && stderr.contains("no Dockerfile"), "{stderr}");
    // A symlink out of the folder, then a file written through it.
    let target = tempfile::tempdir().expect("temp dir");
    let mut both = tar_with_raw_name(b"link", tar::EntryType::Symlink, Some(target.path().to_str().expect("utf-8")), b"");
    both.truncate(both.len() - 1024); // drop the end-of-archive blocks
    both.extend(tar_with_raw_name(b"link/planted", tar::EntryType::Regular, None, b"x"));
    let (ok, stderr) = build_with_stdin(&store, &["-"], &both);
    assert!(!ok, "writing through a symlink out is refused: {stderr}");
    assert!(!target.path().join("planted").exists());
    assert!(!outside.exists() && !store.root().join("strata/escaped").exists());
}
