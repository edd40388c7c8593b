//! The image verbs: images, tag, history, inspect, rm, system df/prune, save/load.

use std::process::Command;

use crate::{TestStore, context, fixtures};

fn blobs(store: &TestStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.root().join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn images_tag_history_and_inspect() {
    let store = TestStore::with_busybox();
    store.build(&fixtures().join("web-ping"), &["-t", "web-ping"]);
    store.ok(&["tag", "web-ping", "web-ping:v1"]);
    store.ok(&["tag", "busybox", "other:1"]);
    let listing = store.ok(&["images"]);
    assert!(listing.starts_with("REPOSITORY"), "{listing}");
    for name in ["web-ping", "busybox", "other"] {
        assert!(listing.contains(name), "{name} missing:\n{listing}");
    }
    let filtered = store.ok(&["images", "w*"]);
    assert!(filtered.contains("web-ping") && !filtered.contains("busybox"), "{filtered}");
    let ids = store.ok(&["images", "-q"]);
    assert_eq!(ids.lines().count(), 2, "ids are listed once per image:\n{ids}");
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "web-ping:v1"])).expect("json");
    let image = &inspect[0];
    let id = image["Id"].as_str().expect("Id");
    assert!(ids.lines().any(|short| id.trim_start_matches("sha256:").starts_with(short)));
    assert_eq!(image["RepoTags"], serde_json::json!(["web-ping:latest", "web-ping:v1"]));
    assert_eq!(image["RootFS"]["Layers"].as_array().map(Vec::len), Some(3), "busybox + WORKDIR + COPY");
    assert!(image["Size"].as_u64().is_some_and(|s| s > 2_000_000));
    let history = store.ok(&["image", "history", "web-ping"]);
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].contains("CREATED BY") && lines[0].contains("SIZE"), "{history}");
    assert!(lines[1].contains("CMD [\"node\",\"/web-ping/app.js\"]") && lines[1].contains("0B"), "{history}");
    assert!(history.contains("COPY app.js /web-ping/") && history.contains("<missing>"), "{history}");
    let long = store.ok(&["history", "--no-trunc", "web-ping"]);
    assert!(long.contains("ENV TARGET=blog.sixeyed.com METHOD=HEAD INTERVAL=3000"), "{long}");
    assert!(!store.strata().args(["image", "inspect", "nosuch"]).output().expect("run").status.success());
}

#[test]
fn rm_untags_and_frees_what_nothing_references() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY f /f\n"), ("f", "unique content")]);
    store.build(ctx.path(), &["-t", "one", "-t", "two"]);
    let out = store.strata().args(["rmi", store.ok(&["images", "-q", "one"]).trim()]).output().expect("rmi");
    assert!(!out.status.success(), "an id with several tags needs -f");
    store.ok(&["image", "rm", "one"]);
    assert!(store.ok(&["images"]).contains("two"), "removing one tag keeps the other");
    // The build cache still holds the layer; a prune frees it once no tag does.
    store.ok(&["rmi", "two"]);
    let layer_kept = blobs(&store);
    store.ok(&["system", "prune"]);
    let after = blobs(&store);
    assert!(after.len() < layer_kept.len(), "prune freed the unreferenced layer");
    let busybox: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "busybox"])).expect("json");
    let base_layer = busybox[0]["RootFS"]["Layers"][0].as_str().expect("layer").trim_start_matches("sha256:").to_string();
    assert!(after.contains(&base_layer), "a tagged image's layers stay");
}

#[test]
fn system_df_counts_shared_layers_once() {
    let store = TestStore::with_busybox();
    store.build(&fixtures().join("web-ping"), &["-t", "web-ping"]);
    let df = store.ok(&["system", "df"]);
    let images = df.lines().find(|l| l.starts_with("Images")).expect("Images row");
    let cells: Vec<&str> = images.split_whitespace().collect();
    assert_eq!(cells[1], "2", "{df}");
    assert_ne!(cells[2], cells[3], "actual and logical sizes differ when layers are shared:\n{df}");
    let verbose = store.ok(&["system", "df", "-v"]);
    assert!(verbose.contains("SHARED SIZE"), "{verbose}");
}

#[test]
fn save_and_load_round_trip_through_every_format() {
    let store = TestStore::with_busybox();
    store.build(&fixtures().join("web-ping"), &["-t", "web-ping"]);
    let id = store.ok(&["images", "-q", "web-ping"]).trim().to_string();
    let out = tempfile::tempdir().expect("temp dir");
    let docker = out.path().join("web-ping-docker.tar");
    let oci_tar = out.path().join("web-ping-oci.tar");
    let oci_dir = out.path().join("web-ping-layout");
    store.ok(&["save", "web-ping", "-o", docker.to_str().expect("utf-8"), "--format", "docker"]);
    store.ok(&["save", "web-ping", "-o", oci_tar.to_str().expect("utf-8")]);
    store.ok(&["save", "web-ping", "-o", oci_dir.to_str().expect("utf-8")]);
    for reference in [format!("docker-archive:{}", docker.display()), format!("oci-archive:{}", oci_tar.display()), format!("oci:{}:web-ping:latest", oci_dir.display())] {
        let inspected = Command::new("skopeo").args(["inspect", "--config", &reference]).output().expect("skopeo");
        assert!(inspected.status.success(), "{reference}: {}", String::from_utf8_lossy(&inspected.stderr));
    }
    for input in [&docker, &oci_tar, &oci_dir] {
        let fresh = TestStore::empty();
        let loaded = fresh.ok(&["load", "-i", input.to_str().expect("utf-8")]);
        assert!(loaded.contains("web-ping:latest"), "{}: {loaded}", input.display());
        assert_eq!(fresh.ok(&["images", "-q", "web-ping"]).trim(), id, "{} keeps the image id", input.display());
    }
}

#[test]
fn a_corrupt_archive_loads_nothing() {
    // Also checks that an export shares nothing with the store: the corruption stays outside.
    let store = TestStore::with_busybox();
    let out = tempfile::tempdir().expect("temp dir");
    let layout = out.path().join("layout");
    store.ok(&["save", "busybox", "-o", layout.to_str().expect("utf-8")]);
    // Corrupt the largest blob (the layer): its content no longer matches its name.
    let mut largest = None;
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).expect("blobs").flatten() {
        let size = blob.metadata().expect("meta").len();
        if largest.as_ref().is_none_or(|(s, _)| size > *s) {
            largest = Some((size, blob.path()));
        }
    }
    let (_, victim) = largest.expect("a blob");
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes[1000] ^= 0xff;
    std::fs::write(&victim, bytes).expect("corrupt");
    let fresh = TestStore::empty();
    let result = fresh.strata().args(["load", "-i"]).arg(&layout).output().expect("load");
    assert!(!result.status.success(), "a corrupt blob was accepted");
    assert!(String::from_utf8_lossy(&result.stderr).contains("corrupt"), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(fresh.ok(&["images", "-q"]).trim(), "", "nothing is tagged");
    let name = victim.file_name().expect("name").to_string_lossy().into_owned();
    assert!(!blobs(&fresh).contains(&name), "the corrupt blob is not in the store");
    let original = std::fs::read(store.root().join("blobs/sha256").join(&name)).expect("store blob");
    use sha2::Digest as _;
    assert_eq!(hex::encode(sha2::Sha256::digest(&original)), name, "editing the export changed the store");
}
