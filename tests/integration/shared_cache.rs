//! The shared build cache (`--cache-to`/`--cache-from`) against Debian's
//! docker-registry on 127.0.0.1 and in an OCI directory, with stores
//! standing for machines: a fresh machine hits every step and downloads
//! only the final image's layers; a changed file rebuilds from its step on;
//! eight exporters at once lose nothing; a deleted or altered layer is a
//! miss and a correct build; `cache prune` empties the cache.

use std::collections::HashMap;
use std::path::Path;

use crate::registry::Registry;
use crate::{TestStore, context, require_root};

/// A machine: an empty store holding the same `busybox:latest` as every other.
fn machine() -> TestStore {
    let store = TestStore::empty();
    let ctx = crate::busybox_context();
    store.strata().env("SOURCE_DATE_EPOCH", "0").args(["build", "-q", "-t", "busybox:latest"]).arg(&ctx).assert().success();
    store
}

/// A multi-stage project: a builder stage of 5 steps, a final stage of 4.
fn project() -> tempfile::TempDir {
    context(&[
        (
            "Dockerfile",
            "FROM busybox:latest AS builder\n\
             WORKDIR /src\n\
             COPY lib.txt ./\n\
             RUN cat lib.txt > /out-lib && echo built >> /out-lib\n\
             COPY main.txt ./\n\
             RUN cat main.txt /out-lib > /out-app\n\
             FROM busybox:latest\n\
             ENV APP=1\n\
             COPY --from=builder /out-app /app/app\n\
             COPY config.txt /app/\n\
             CMD [\"cat\", \"/app/app\"]\n",
        ),
        ("lib.txt", "lib 1\n"),
        ("main.txt", "main 1\n"),
        ("config.txt", "config 1\n"),
    ])
}

/// Builds under SOURCE_DATE_EPOCH=0; returns the image id and, per step (FROM left out), whether it was CACHED.
fn build(store: &TestStore, dir: &Path, extra: &[&str]) -> (String, Vec<(String, bool)>, String) {
    let out = store
        .strata()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["build", "--progress", "plain", "-t", "app"])
        .args(extra)
        .arg(dir)
        .output()
        .expect("run strata build");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "build failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut cached: HashMap<String, bool> = HashMap::new();
    for line in stderr.lines() {
        let Some((id, rest)) = line.split_once(' ') else { continue };
        if rest.starts_with('[') && !rest.contains("] FROM ") {
            steps.retain(|(i, _)| i != id);
            steps.push((id.to_string(), rest.to_string()));
        } else if rest == "CACHED" {
            cached.insert(id.to_string(), true);
        }
    }
    let outcomes = steps.into_iter().map(|(id, text)| (text, cached.get(&id).copied().unwrap_or(false))).collect();
    (stdout.trim().to_string(), outcomes, stderr)
}

/// Blob GETs on the cache repository since the access log was last cleared.
fn blob_gets(registry: &Registry, repository: &str) -> usize {
    let needle = format!("\"GET /v2/{repository}/blobs/");
    registry.requests().iter().filter(|l| l.contains(&needle)).count()
}

/// The layer blobs (gzip) in the registry's storage.
fn stored_layers(registry: &Registry) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let blobs = registry.dir.path().join("data/docker/registry/v2/blobs/sha256");
    for prefix in std::fs::read_dir(&blobs).expect("registry blobs").flatten() {
        for blob in std::fs::read_dir(prefix.path()).expect("blob folder").flatten() {
            let data = blob.path().join("data");
            if std::fs::read(&data).is_ok_and(|b| b.starts_with(&[0x1f, 0x8b])) {
                found.push(data);
            }
        }
    }
    found
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_fresh_machine_hits_every_step_and_downloads_only_the_final_layers() {
    if !require_root("a_fresh_machine_hits_every_step_and_downloads_only_the_final_layers") {
        return;
    }
    let registry = Registry::start();
    let cache = format!("type=registry,ref={}/cache", registry.addr);
    let dir = project();
    let a = machine();
    let (id_a, steps, _) = build(&a, dir.path(), &["--cache-to", &format!("{cache},mode=max")]);
    assert_eq!(steps.len(), 9, "{steps:?}");
    assert!(steps.iter().all(|(_, cached)| !cached), "{steps:?}");

    let b = machine();
    registry.clear_requests();
    let (id_b, steps, stderr) = build(&b, dir.path(), &["--cache-from", &cache]);
    assert_eq!(id_a, id_b, "same image digest on both machines\n{stderr}");
    assert!(steps.iter().all(|(_, cached)| *cached), "every step CACHED: {steps:?}");
    // The final image's own layers (COPY --from, COPY config.txt); none of the builder stage's.
    assert_eq!(blob_gets(&registry, "cache"), 2, "{stderr}");
    let run = b.ok(&["run", "--rm", "app"]);
    assert_eq!(run, "main 1\nlib 1\nbuilt\n");

    // One source file changes: B builds from that step on, and only there.
    std::fs::write(dir.path().join("main.txt"), "main 2\n").expect("edit main.txt");
    let (_, steps, _) = build(&b, dir.path(), &["--cache-from", &cache]);
    let built: Vec<&str> = steps.iter().filter(|(_, cached)| !cached).map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        built,
        [
            "[builder 5/6] COPY main.txt ./",
            "[builder 6/6] RUN cat main.txt /out-lib > /out-app",
            "[stage-1 3/5] COPY --from=builder /out-app /app/app",
            "[stage-1 4/5] COPY config.txt /app/",
            "[stage-1 5/5] CMD [\"cat\", \"/app/app\"]",
        ],
        "{steps:?}"
    );
    assert_eq!(b.ok(&["run", "--rm", "app"]), "main 2\nlib 1\nbuilt\n");

    // Prune: nothing is an hour old; then everything goes, and a fresh machine misses.
    let reference = format!("{}/cache", registry.addr);
    let kept = a.ok(&["cache", "prune", "--ref", &reference, "--older-than", "1h"]);
    assert!(kept.contains("removed 0 cache entries"), "{kept}");
    let pruned = a.ok(&["cache", "prune", "--ref", &reference]);
    assert!(!pruned.contains("removed 0 "), "{pruned}");
    let c = machine();
    let (_, steps, _) = build(&c, dir.path(), &["--cache-from", &cache]);
    assert!(steps.iter().all(|(_, cached)| !cached), "a pruned cache has no entries: {steps:?}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn eight_machines_export_to_one_ref_at_once_and_a_ninth_hits_all_their_steps() {
    if !require_root("eight_machines_export_to_one_ref_at_once_and_a_ninth_hits_all_their_steps") {
        return;
    }
    let registry = Registry::start();
    let cache = format!("type=registry,ref={}/cache", registry.addr);
    let projects: Vec<tempfile::TempDir> = (0..8)
        .map(|i| {
            let dir = project();
            std::fs::write(dir.path().join("main.txt"), format!("main {i}\n")).expect("edit");
            dir
        })
        .collect();
    let machines: Vec<TestStore> = (0..8).map(|_| machine()).collect();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = machines
            .iter()
            .zip(&projects)
            .map(|(m, dir)| scope.spawn(|| build(m, dir.path(), &["--cache-to", &format!("{cache},mode=max")]).0))
            .collect();
        handles.into_iter().map(|h| h.join().expect("builder thread")).collect()
    });
    let ninth = machine();
    for (dir, id) in projects.iter().zip(&ids) {
        let (again, steps, stderr) = build(&ninth, dir.path(), &["--cache-from", &cache]);
        assert_eq!(&again, id, "{stderr}");
        assert!(steps.iter().all(|(_, cached)| *cached), "{steps:?}\n{stderr}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_deleted_or_altered_layer_is_a_miss_and_a_correct_build() {
    if !require_root("a_deleted_or_altered_layer_is_a_miss_and_a_correct_build") {
        return;
    }
    let dir = project();
    let a = machine();
    for damage in ["delete", "alter"] {
        let registry = Registry::start();
        let cache = format!("type=registry,ref={}/cache", registry.addr);
        let (id_a, _, _) = build(&a, dir.path(), &["--cache-to", &format!("{cache},mode=max")]);
        let layers = stored_layers(&registry);
        assert!(layers.len() >= 6, "{layers:?}");
        for layer in &layers {
            if damage == "delete" {
                std::fs::remove_file(layer).expect("delete layer");
            } else {
                let mut bytes = std::fs::read(layer).expect("read layer");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
                std::fs::write(layer, bytes).expect("alter layer");
            }
        }
        let b = machine();
        let (id_b, _, stderr) = build(&b, dir.path(), &["--cache-from", &cache]);
        assert_eq!(id_a, id_b, "{damage}: a correct build\n{stderr}");
        assert!(stderr.contains("warning: --cache-from"), "{damage}: a warning\n{stderr}");
        assert_eq!(b.ok(&["run", "--rm", "app"]), "main 1\nlib 1\nbuilt\n");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_local_cache_directory_round_trips_and_skopeo_reads_it() {
    if !require_root("a_local_cache_directory_round_trips_and_skopeo_reads_it") {
        return;
    }
    let dir = project();
    let cache = tempfile::tempdir().expect("cache dir");
    let a = machine();
    let (id_a, _, _) = build(&a, dir.path(), &["--cache-to", &format!("type=local,dest={},mode=max", cache.path().display())]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("index.json")).expect("index.json")).expect("parse index");
    let tags: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string))
        .collect();
    assert!(tags.len() >= 9 && tags.iter().all(|t| t.starts_with("sha256-")), "{tags:?}");
    for tag in &tags {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:{tag}", cache.path().display())])
            .output()
            .expect("run skopeo");
        assert!(out.status.success(), "skopeo inspect {tag}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let b = machine();
    let (id_b, steps, stderr) = build(&b, dir.path(), &["--cache-from", &format!("type=local,src={}", cache.path().display())]);
    assert_eq!(id_a, id_b, "{stderr}");
    assert!(steps.iter().all(|(_, cached)| *cached), "{steps:?}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_kdl_spec_names_its_cache_and_a_fresh_machine_hits_every_step_from_it() {
    if !require_root("a_kdl_spec_names_its_cache_and_a_fresh_machine_hits_every_step_from_it") {
        return;
    }
    let dir = context(&[
        (
            "app.kdl",
            "arg \"CACHE\"\n\
             cache {\n    from \"type=local,src={CACHE}\"\n    to \"type=local,dest={CACHE},mode=max\"\n}\n\
             stage \"builder\" from=\"busybox:latest\" {\n    copy \"lib.txt\" \"/src/\"\n    run \"cat /src/lib.txt > /out-lib\"\n}\n\
             image \"app\" from=\"busybox:latest\" {\n    copy \"/out-lib\" \"/app/lib\" from=\"builder\"\n}\n",
        ),
        ("lib.txt", "lib 1\n"),
    ]);
    let cache = tempfile::tempdir().expect("cache dir");
    let spec = dir.path().join("app.kdl");
    let arg = format!("CACHE={}", cache.path().display());
    let a = machine();
    let (id_a, _, _) = build(&a, &spec, &["--build-arg", &arg]);
    assert!(cache.path().join("index.json").exists(), "the spec's `to` exported the cache");
    let b = machine();
    let (id_b, steps, stderr) = build(&b, &spec, &["--build-arg", &arg]);
    assert_eq!(id_a, id_b, "{stderr}");
    assert!(!steps.is_empty() && steps.iter().all(|(_, cached)| *cached), "every step is CACHED from the spec's `from`: {steps:?}");

    // A value the cache flags would refuse is refused, naming the spec.
    std::fs::write(&spec, "cache {\n    to \"type=ftp,ref=x\"\n}\nimage \"app\" from=\"busybox:latest\" {\n    cmd \"true\"\n}\n")
        .expect("write spec");
    let out = b.strata().args(["build", "-q"]).arg(&spec).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("app.kdl") && stderr.contains("unknown type \"ftp\""), "{stderr}");
}
