//! KDL specs: golden graphs, invalid specs with the diagnostic a user sees,
//! the example specs under `specs/`, and KDL → graph → KDL round trips.

use std::path::{Path, PathBuf};

use strata::frontend::kdl;
use strata::graph::to_json;

use crate::{assert_golden, fixtures, strata};

/// The case folders under `fixtures/<set>/`, sorted.
fn cases(set: &str) -> Vec<PathBuf> {
    let dir = fixtures().join(set);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("spec.kdl").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", dir.display());
    cases
}

/// The example specs, sorted.
fn example_specs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "kdl"))
        .collect();
    specs.sort();
    specs
}

/// `--build-arg` flags from a case's optional `build-args` file (one `K=V` a line).
fn build_arg_flags(case: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(case.join("build-args")) else {
        return Vec::new();
    };
    text.lines().filter(|l| !l.trim().is_empty()).flat_map(|l| ["--build-arg".to_string(), l.to_string()]).collect()
}

fn build_args(case: &Path) -> strata::frontend::BuildArgs {
    let flags = build_arg_flags(case);
    flags.chunks(2).filter_map(|pair| pair[1].split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

#[test]
fn specs_lower_to_their_golden_graph() {
    let root = tempfile::tempdir().expect("temp dir");
    for case in cases("kdl") {
        let output = strata(root.path())
            .current_dir(&case)
            .args(["graph", "--format", "json"])
            .args(build_arg_flags(&case))
            .arg("spec.kdl")
            .output()
            .expect("run strata");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "strata graph failed for {}:\n{stderr}", case.display());
        assert_golden(&case.join("graph.json"), &String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn invalid_specs_fail_with_their_diagnostic() {
    let root = tempfile::tempdir().expect("temp dir");
    for case in cases("kdl-invalid") {
        let output = strata(root.path()).current_dir(&case).args(["graph", "--format", "json", "spec.kdl"]).output().expect("run strata");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{} should fail, printed:\n{}", case.display(), String::from_utf8_lossy(&output.stdout));
        assert!(output.stdout.is_empty(), "{} printed a graph despite errors", case.display());
        assert_golden(&case.join("error.txt"), &stderr);
    }
}

#[test]
fn invalid_specs_point_at_the_line_and_column() {
    let case = fixtures().join("kdl-invalid/unknown-stage");
    let root = tempfile::tempdir().expect("temp dir");
    strata(root.path())
        .current_dir(&case)
        .args(["graph", "spec.kdl"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("spec.kdl:6:24"))
        .stderr(predicates::str::contains("did you mean \"builder\"?"));
}

#[test]
fn example_specs_lower() {
    let specs = example_specs();
    assert!(specs.len() >= 5, "expected the example specs, found {specs:?}");
    let root = tempfile::tempdir().expect("temp dir");
    for spec in specs {
        let output = strata(root.path()).args(["graph", "--format", "json"]).arg(&spec).output().expect("run strata");
        assert!(output.status.success(), "strata graph {} failed:\n{}", spec.display(), String::from_utf8_lossy(&output.stderr));
    }
}

/// KDL → graph → KDL → graph gives the same graph, for every spec we have.
#[test]
fn printed_specs_lower_to_the_same_graph() {
    let mut files: Vec<(PathBuf, strata::frontend::BuildArgs)> =
        cases("kdl").into_iter().map(|case| (case.join("spec.kdl"), build_args(&case))).collect();
    files.extend(example_specs().into_iter().map(|spec| (spec, Default::default())));
    for (file, args) in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {name}: {e}"));
        let graph = kdl::lower(&name, &text, &args).unwrap_or_else(|e| panic!("lower {name}: {e:?}"));
        kdl::check_printable(&graph).unwrap_or_else(|e| panic!("{name} is not printable: {e}"));
        let printed = kdl::to_kdl(&graph);
        let again =
            kdl::lower("printed.kdl", &printed, &args).unwrap_or_else(|e| panic!("lower printed {name}: {e:?}\n--- printed\n{printed}"));
        assert_eq!(to_json(&graph), to_json(&again), "{name} changed in a round trip; printed:\n{printed}");
        let comments = |g: &strata::graph::BuildGraph| -> Vec<Vec<String>> {
            g.stages.iter().flat_map(|s| s.steps.iter().map(|step| step.comments.clone())).collect()
        };
        assert_eq!(comments(&graph), comments(&again), "{name} lost comments; printed:\n{printed}");
    }
}

/// A Dockerfile and its KDL twin lower to the same graph.
#[test]
fn dockerfiles_and_their_kdl_twins_lower_alike() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (case, spec) in [("web-ping", "specs/web-ping.kdl"), ("multistage", "specs/multistage.kdl")] {
        let dockerfile = fixtures().join(case).join("Dockerfile");
        let text = std::fs::read_to_string(&dockerfile).expect("read Dockerfile");
        let from_dockerfile = strata::frontend::dockerfile::lower("Dockerfile", &text, &Default::default())
            .unwrap_or_else(|e| panic!("lower {}: {e:?}", dockerfile.display()));
        let spec_text = std::fs::read_to_string(root.join(spec)).expect("read spec");
        let from_kdl = kdl::lower(spec, &spec_text, &Default::default()).unwrap_or_else(|e| panic!("lower {spec}: {e:?}"));
        assert_eq!(to_json(&from_dockerfile), to_json(&from_kdl), "{} and {spec} differ", dockerfile.display());
    }
}

/// With SOURCE_DATE_EPOCH set, a Dockerfile and its KDL twin build the same image.
#[test]
fn dockerfile_and_kdl_twin_build_the_same_image() {
    let store = crate::TestStore::with_busybox();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let context = fixtures().join("web-ping");
    let mut ids = Vec::new();
    for file in [context.join("Dockerfile"), root.join("specs/web-ping.kdl")] {
        let out = store
            .strata()
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["build", "-q", "--no-cache", "-f"])
            .arg(&file)
            .arg(&context)
            .output()
            .expect("run strata build");
        assert!(out.status.success(), "build {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert!(ids[0].starts_with("sha256:"), "{ids:?}");
    assert_eq!(ids[0], ids[1], "the Dockerfile and its KDL twin built different images");
}

/// Every example in `specs/` (but the Debian one, a `just` recipe) builds, each with its context.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn example_specs_build() {
    if !crate::require_root("example_specs_build") {
        return;
    }
    let store = crate::TestStore::with_busybox();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        ("specs/web-ping.kdl", fixtures().join("web-ping")),
        ("specs/multistage.kdl", fixtures().join("multistage")),
        ("specs/multi-image.kdl", fixtures().join("multi-image")),
        ("specs/rootfs-base.kdl", crate::busybox_context()),
    ];
    for (spec, context) in &cases {
        let path = root.join(spec);
        store.build(context, &["-f", path.to_str().expect("utf-8 path")]);
    }
    let images = store.ok(&["images"]);
    for tag in ["rootfs-base", "app"] {
        assert!(images.contains(tag), "{tag} missing from:\n{images}");
    }
    // Both images of multi-image.kdl exist, and only the app one has the linked assets layer.
    let app: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "app:1.0"])).expect("json");
    let debug: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "app:1.0-debug"])).expect("json");
    let history = |v: &serde_json::Value| v[0]["History"].as_array().cloned().unwrap_or_default();
    assert!(history(&app).iter().any(|h| h["created_by"].as_str().is_some_and(|c| c.contains("/srv/static/"))));
    assert!(!history(&debug).iter().any(|h| h["created_by"].as_str().is_some_and(|c| c.contains("/srv/static/"))));
    let out = store.strata().args(["run", "--rm", "app:1.0"]).output().expect("run app");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app 1.0 running");
}

/// The shared build stage of a multi-image spec is built once for both images.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn shared_stage_builds_once() {
    if !crate::require_root("shared_stage_builds_once") {
        return;
    }
    let store = crate::TestStore::with_busybox();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/multi-image.kdl");
    let (_, stderr) = store.build(&fixtures().join("multi-image"), &["--no-cache", "-f", spec.to_str().expect("utf-8")]);
    let runs = stderr.lines().filter(|l| l.contains("] RUN mkdir -p /out")).count();
    assert_eq!(runs, 1, "the build stage ran {runs} times:\n{stderr}");
}
