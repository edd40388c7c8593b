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
    assert!(history.contains("COPY app.js .") && history.contains("<missing>"), "{history}");
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
    for reference in [
        format!("docker-archive:{}", docker.display()),
        format!("oci-archive:{}", oci_tar.display()),
        // An exported layout names the tag alone, as `docker save` and BuildKit write it.
        format!("oci:{}:latest", oci_dir.display()),
    ] {
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

/// The parsed JSON of `strata image inspect IMAGE`, first element.
fn inspect(store: &TestStore, image: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&store.ok(&["image", "inspect", image])).expect("inspect prints JSON")[0].clone()
}

fn blob_json(root: &std::path::Path, digest: &str) -> serde_json::Value {
    let path = root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))).expect("blob is JSON")
}

/// Copies the tar archive `src` to `dst`, flipping one byte of its largest member
/// (the layer); returns that member's path.
fn corrupt_largest_member(src: &std::path::Path, dst: &std::path::Path) -> String {
    let mut archive = tar::Archive::new(std::fs::File::open(src).expect("open archive"));
    let mut members = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let header = entry.header().clone();
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read member");
        members.push((header, path, data));
    }
    let largest = (0..members.len()).max_by_key(|&i| members[i].2.len()).expect("a member");
    members[largest].2[1000] ^= 0xff;
    let victim = members[largest].1.clone();
    let mut out = tar::Builder::new(std::fs::File::create(dst).expect("create archive"));
    for (mut header, path, data) in members {
        out.append_data(&mut header, &path, data.as_slice()).expect("append");
    }
    out.finish().expect("finish archive");
    victim
}

#[test]
fn inspect_id_is_the_config_digest_and_layers_are_the_diff_ids() {
    let store = TestStore::with_busybox();
    store.build(&fixtures().join("web-ping"), &["-t", "web-ping"]);
    let image = inspect(&store, "web-ping");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(store.root().join("index.json")).expect("index")).expect("json");
    let manifest_digest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "web-ping:latest")
        .and_then(|m| m["digest"].as_str())
        .expect("web-ping in index.json")
        .to_string();
    let manifest = blob_json(store.root(), &manifest_digest);
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest");
    assert_eq!(image["Id"], config_digest, "Id is the config digest");
    let config = blob_json(store.root(), config_digest);
    assert_eq!(image["RootFS"]["Layers"], config["rootfs"]["diff_ids"]);
    let size: u64 = manifest["layers"].as_array().expect("layers").iter().filter_map(|l| l["size"].as_u64()).sum();
    assert_eq!(image["Size"].as_u64(), Some(size), "Size is the layers' size");
}

#[test]
fn tag_refuses_an_invalid_reference_and_an_unknown_source() {
    let store = TestStore::with_busybox();
    let index = std::fs::read(store.root().join("index.json")).expect("index");
    for (args, expected) in [(["tag", "busybox", "Bad:Name"], "invalid image reference"), (["tag", "nosuch", "x:1"], "\"nosuch\"")] {
        let out = store.strata().args(args).output().expect("tag");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(store.root().join("index.json")).expect("index"), index, "a refused tag changed index.json");
}

#[test]
fn rmi_of_an_unknown_image_fails_and_changes_nothing() {
    let store = TestStore::with_busybox();
    let (index, before) = (std::fs::read(store.root().join("index.json")).expect("index"), blobs(&store));
    let out = store.strata().args(["rmi", "nosuch"]).output().expect("rmi");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("\"nosuch\""));
    assert_eq!(std::fs::read(store.root().join("index.json")).expect("index"), index);
    assert_eq!(blobs(&store), before);
}

#[test]
fn rmi_force_removes_every_tag_of_an_id() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY f /f\n"), ("f", "forced")]);
    store.build(ctx.path(), &["-t", "a:1", "-t", "b:2"]);
    store.ok(&["tag", "a:1", "c:3"]);
    let id = store.ok(&["images", "-q", "a"]).trim().to_string();
    let out = store.ok(&["rmi", "-f", &id]);
    for tag in ["a:1", "b:2", "c:3"] {
        assert!(out.contains(&format!("Untagged: {tag}")), "{out}");
    }
    let listing = store.ok(&["images"]);
    let names: Vec<&str> = listing.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, vec!["busybox"], "{listing}");
    assert!(!listing.contains(&id), "{listing}");
}

#[test]
fn a_corrupt_oci_archive_loads_nothing() {
    let store = TestStore::with_busybox();
    let out = tempfile::tempdir().expect("temp dir");
    let (good, bad) = (out.path().join("good.tar"), out.path().join("bad.tar"));
    store.ok(&["save", "busybox", "-o", good.to_str().expect("utf-8")]);
    let victim = corrupt_largest_member(&good, &bad);
    let fresh = TestStore::empty();
    let result = fresh.strata().args(["load", "-i"]).arg(&bad).output().expect("load");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("corrupt"), "{stderr}");
    assert_eq!(fresh.ok(&["images", "-q"]).trim(), "", "nothing is tagged");
    let name = victim.rsplit('/').next().expect("name").to_string();
    assert!(!blobs(&fresh).contains(&name), "the corrupt blob {name} is in the store");
    for blob in blobs(&fresh) {
        use sha2::Digest as _;
        let bytes = std::fs::read(fresh.root().join("blobs/sha256").join(&blob)).expect("blob");
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), blob, "a stored blob does not match its name");
    }
}

#[test]
fn a_corrupt_docker_archive_loads_nothing() {
    let store = TestStore::with_busybox();
    let out = tempfile::tempdir().expect("temp dir");
    let (good, bad) = (out.path().join("good.tar"), out.path().join("bad.tar"));
    store.ok(&["save", "busybox", "-o", good.to_str().expect("utf-8"), "--format", "docker"]);
    let victim = corrupt_largest_member(&good, &bad);
    assert!(victim.ends_with("/layer.tar"), "{victim}");
    let fresh = TestStore::empty();
    let result = fresh.strata().args(["load", "-i"]).arg(&bad).output().expect("load");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "a corrupt layer was accepted: {}", String::from_utf8_lossy(&result.stdout));
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert_eq!(fresh.ok(&["images", "-q"]).trim(), "", "nothing is tagged");
}

#[test]
fn prune_frees_the_mount_indexes_of_removed_images() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nCOPY f /f\n"), ("f", "indexed")]);
    store.build(ctx.path(), &["-t", "indexed"]);
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "indexed"])).expect("json");
    let layer = inspect[0]["RootFS"]["Layers"][1].as_str().expect("layer").trim_start_matches("sha256:").to_string();
    // What `strata mount` leaves behind for a layer (its index), made here without FUSE.
    let dir = store.root().join("strata/mount-index");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("{layer}.v3.json")), "{}").expect("write index");
    store.ok(&["rmi", "indexed"]);
    store.ok(&["system", "prune"]);
    assert!(!dir.join(format!("{layer}.v3.json")).exists(), "the removed layer's mount index is freed");
}
