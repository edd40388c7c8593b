//! Golden tests of the Dockerfile front end: `fixtures/dockerfile/<case>/Dockerfile`
//! and `fixtures/dockerfile-parser/<case>/Dockerfile` (BuildKit's parser
//! testfiles, in our own words) → `strata graph --format json` must equal
//! `graph.json`, and every
//! `fixtures/dockerfile-invalid/<case>/Dockerfile` must fail with `error.txt`.
//! Regenerate with `STRATA_BLESS=1 cargo test --test integration dockerfile`.

use std::path::PathBuf;

use crate::{assert_golden, fixtures, strata};

fn cases(folder: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join(folder))
        .unwrap_or_else(|e| panic!("list fixtures/{folder}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    cases
}

#[test]
fn valid_dockerfiles_lower_to_their_golden_graphs() {
    let store = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    // `dockerfile-parser/` holds one case of our own per BuildKit parser testfile (see its README).
    let parser_cases = cases("dockerfile-parser");
    assert!(parser_cases.len() >= 33, "only {} parser cases", parser_cases.len());
    for case in cases("dockerfile").into_iter().chain(parser_cases).chain([fixtures().join("web-ping"), fixtures().join("multistage")]) {
        let out = strata(store.path()).args(["graph", "--format", "json"]).arg(case.join("Dockerfile")).output().expect("run strata");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: strata graph failed:\n{stderr}", case.display());
        assert_golden(&case.join("graph.json"), &String::from_utf8_lossy(&out.stdout));
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases");
}

#[test]
fn invalid_dockerfiles_fail_with_their_golden_messages() {
    let store = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    for case in cases("dockerfile-invalid") {
        // Run from the case folder so the report names the file as `Dockerfile`.
        let out = strata(store.path()).current_dir(&case).args(["graph", "Dockerfile"]).output().expect("run strata");
        assert!(!out.status.success(), "{}: strata graph accepted an invalid Dockerfile", case.display());
        assert!(out.stdout.is_empty(), "{}: printed a graph for an invalid Dockerfile", case.display());
        assert_golden(&case.join("error.txt"), &String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} cases");
}

#[test]
fn error_reports_name_line_column_and_suggestion() {
    let case = fixtures().join("dockerfile-invalid/unknown-instruction");
    let store = tempfile::tempdir().expect("temp dir");
    let out = strata(store.path()).current_dir(&case).args(["graph", "Dockerfile"]).output().expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Dockerfile:2:1"), "{stderr}");
    assert!(stderr.contains("did you mean RUN?"), "{stderr}");
}

#[test]
fn several_errors_are_reported_together() {
    let case = fixtures().join("dockerfile-invalid/several-errors");
    let store = tempfile::tempdir().expect("temp dir");
    let out = strata(store.path()).current_dir(&case).args(["graph", "Dockerfile"]).output().expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in ["Dockerfile:2:1", "Dockerfile:3:1", "Dockerfile:4:6", "Dockerfile:5:1", "did you mean WORKDIR?"] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn graph_dot_renders_with_graphviz() {
    if std::process::Command::new("dot").arg("-V").output().is_err() {
        eprintln!("skipping graph_dot_renders_with_graphviz: graphviz (dot) is not installed");
        return;
    }
    let store = tempfile::tempdir().expect("temp dir");
    let out =
        strata(store.path()).args(["graph"]).arg(fixtures().join("dockerfile/multistage-index/Dockerfile")).output().expect("run strata");
    assert!(out.status.success());
    let mut dot = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run dot");
    use std::io::Write;
    dot.stdin.take().expect("stdin").write_all(&out.stdout).expect("feed dot");
    let rendered = dot.wait_with_output().expect("dot output");
    assert!(rendered.status.success(), "dot rejected the graph");
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("<svg"));
}

// ---- variable forms (Dockerfile reference, "Environment replacement") ----

#[test]
fn trim_and_replace_forms_expand_at_build_time() {
    let store = crate::TestStore::empty();
    let text = "FROM scratch\nARG V=/usr/local/lib/app.tar.gz\n\
                ENV BASE=${V##*/} STEM=${V%%.*} FLAT=${V//\\//_} REL=${V#/usr/} TAR=${V%.gz} SET=${V:?unused}\n";
    let ctx = crate::context(&[("Dockerfile", text)]);
    store.build(ctx.path(), &["-t", "forms"]);
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "forms"])).expect("inspect prints JSON");
    let env: Vec<String> = serde_json::from_value(inspect[0]["Config"]["Env"].clone()).expect("Env");
    let want = [
        "BASE=app.tar.gz",
        "STEM=/usr/local/lib/app",
        "FLAT=_usr_local_lib_app.tar.gz",
        "REL=local/lib/app.tar.gz",
        "TAR=/usr/local/lib/app.tar",
        "SET=/usr/local/lib/app.tar.gz",
    ];
    for expected in want {
        assert!(env.contains(&expected.to_string()), "{expected} missing from {env:?}");
    }
}

#[test]
fn required_variable_fails_the_step_naming_the_variable_its_message_and_the_line() {
    let store = crate::TestStore::empty();
    let ctx = crate::context(&[("Dockerfile", "FROM scratch\nARG NOPE\nWORKDIR /${NOPE:?pass --build-arg NOPE}\n")]);
    let out = store.strata().args(["build", "--progress", "plain"]).arg(ctx.path()).output().expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a required variable left unset built:\n{stderr}");
    assert!(stderr.contains("Dockerfile:3"), "no location in:\n{stderr}");
    assert!(stderr.contains("NOPE: pass --build-arg NOPE"), "no variable and message in:\n{stderr}");
    // Given, it builds.
    store.build(ctx.path(), &["--build-arg", "NOPE=x"]);
}

#[test]
fn required_global_arg_is_refused_where_it_is_declared() {
    let store = tempfile::tempdir().expect("temp dir");
    let ctx = crate::context(&[("Dockerfile", "ARG BASE=\"${IMAGE:?name the base image}\"\nFROM $BASE\n")]);
    let out = strata(store.path()).current_dir(ctx.path()).args(["graph", "Dockerfile"]).output().expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{stderr}");
    assert!(stderr.contains("IMAGE: name the base image") && stderr.contains("Dockerfile:1:"), "{stderr}");
    let given = strata(store.path()).current_dir(ctx.path()).args(["graph", "--build-arg", "IMAGE=busybox", "Dockerfile"]).output();
    assert!(given.expect("run strata").status.success());
}

// ---- heredocs (BuildKit's dockerfile_heredoc_test.go) ----

#[test]
fn buildkit_test_copy_heredoc_special_symbols() {
    let store = crate::TestStore::empty();
    // Unquoted, `\` is dropped before any character (a newline too) and `\$` is a dollar; quoted, all is kept.
    let text = "FROM scratch\n\
                COPY <<EOF /quotes\n'single' \"double\"\nEOF\n\
                COPY <<EOF /continued\nab\\\ncd\nEOF\n\
                COPY <<EOF /doubled\nx\\\\y\nEOF\n\
                COPY <<EOF /dollar\n\\$HOME \\q\nEOF\n\
                COPY <<\"EOF\" /raw-continued\nab\\\ncd\nEOF\n\
                COPY <<'EOF' /raw-doubled\nx\\\\y \\$HOME\nEOF\n";
    let ctx = crate::context(&[("Dockerfile", text)]);
    store.build(ctx.path(), &["-t", "symbols"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("symbols:latest", unpacked.path());
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
    assert_eq!(read("quotes"), "'single' \"double\"\n");
    assert_eq!(read("continued"), "ab\ncd\n");
    assert_eq!(read("doubled"), "x\\y\n");
    assert_eq!(read("dollar"), "$HOME q\n");
    assert_eq!(read("raw-continued"), "ab\\\ncd\n");
    assert_eq!(read("raw-doubled"), "x\\\\y \\$HOME\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_shebang_heredoc() {
    if !crate::require_root("buildkit_test_run_shebang_heredoc") {
        return;
    }
    let store = crate::TestStore::with_busybox();
    // Run by awk from its #! line (a shell would fail on `BEGIN {`), with and without tab stripping.
    let text = "FROM busybox:latest AS build\nWORKDIR /out\n\
                RUN <<PROG\n#!/usr/bin/awk -f\nBEGIN {\n\tprint \"by awk\" > \"./plain\"\n}\nPROG\n\
                RUN <<-PROG\n\t#!/usr/bin/awk -f\n\tBEGIN {\n\t\tprint \"stripped\" > \"./chomped\"\n\t}\nPROG\n\
                FROM scratch\nCOPY --from=build /out /\n";
    let ctx = crate::context(&[("Dockerfile", text)]);
    store.build(ctx.path(), &["-t", "shebang"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("shebang:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("plain")).expect("plain"), "by awk\n");
    assert_eq!(std::fs::read_to_string(root.join("chomped")).expect("chomped"), "stripped\n");
    // Another script is another step: the body is in the cache key, not only the path it runs as.
    let changed = text.replace("by awk", "by awk, changed");
    std::fs::write(ctx.path().join("Dockerfile"), changed).expect("write");
    store.build(ctx.path(), &["-t", "shebang"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("shebang:latest", unpacked.path());
    assert_eq!(std::fs::read_to_string(root.join("plain")).expect("plain"), "by awk, changed\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_run_heredoc_is_named_as_buildkit_names_it_and_its_history_stays_whole_on_one_row() {
    if !crate::require_root("a_run_heredoc_is_named_as_buildkit_names_it_and_its_history_stays_whole_on_one_row") {
        return;
    }
    let store = crate::TestStore::with_busybox();
    let ctx = crate::context(&[("Dockerfile", "FROM busybox:latest\nRUN <<EOF\necho one\necho\ttwo\nEOF\n")]);
    let (_, progress) = store.build(ctx.path(), &["-t", "heredoc-history"]);
    assert!(progress.lines().any(|l| l.ends_with("[2/2] RUN <<EOF (echo one...)")), "{progress}");
    // The config keeps the whole instruction, as BuildKit writes it.
    let inspect: serde_json::Value =
        serde_json::from_str(&store.ok(&["image", "inspect", "heredoc-history"])).expect("inspect prints JSON");
    let history = inspect[0]["History"].as_array().expect("History").clone();
    assert_eq!(history.last().expect("an entry")["created_by"], "RUN /bin/sh -c echo one\necho\ttwo\n");
    // The table has one line per entry; the heredoc shows escaped, whole with --no-trunc.
    let table = store.ok(&["image", "history", "--no-trunc", "heredoc-history"]);
    assert_eq!(table.lines().count(), 1 + history.len(), "{table}");
    assert!(table.contains("RUN /bin/sh -c echo one\\necho two\\n"), "{table}");
    let truncated = store.ok(&["image", "history", "heredoc-history"]);
    assert_eq!(truncated.lines().count(), 1 + history.len(), "{truncated}");
}
