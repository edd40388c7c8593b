//! RUN without overlayfs: the copy snapshotter must give the very same layers.

use crate::{TestStore, context, require_root};

fn layers(store: &TestStore, image: &str) -> serde_json::Value {
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", image])).expect("inspect is JSON");
    inspect[0]["RootFS"]["Layers"].clone()
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn copy_snapshotter_gives_the_same_layers_as_overlay() {
    if !require_root("copy_snapshotter_gives_the_same_layers_as_overlay") {
        return;
    }
    let spec = r#"
image "changes:latest" from="busybox:latest" {
    run "mkdir -p /data/sub && echo x > /data/f && ln /data/f /data/hard && ln -s f /data/soft && rm /etc/group && chmod 700 /home"
    run "rm -rf /data/sub && mkdir /data/sub && echo y >> /etc/passwd && mkfifo /data/fifo && rm -rf /tmp"
}
"#;
    let ctx = context(&[("spec.kdl", spec)]);
    let store = TestStore::with_busybox();
    for (snapshotter, tag) in [("overlay", "overlay:1"), ("copy", "copy:1")] {
        let out = store
            .strata()
            .env("SOURCE_DATE_EPOCH", "0")
            .env("STRATA_SNAPSHOTTER", snapshotter)
            .args(["build", "-q", "--no-cache", "-t", tag, "-f"])
            .arg(ctx.path().join("spec.kdl"))
            .arg(ctx.path())
            .output()
            .expect("run strata");
        assert!(out.status.success(), "{snapshotter}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (overlay, copy) = (layers(&store, "overlay:1"), layers(&store, "copy:1"));
    assert_eq!(overlay.as_array().map(Vec::len), Some(3));
    assert_eq!(overlay, copy, "overlay and copy snapshotters disagree");
}

/// Regression: two RUN steps with the same (empty) result made the same
/// snapshot appear twice in the overlay's lowerdirs; overlayfs refused it
/// (ELOOP) and every later RUN fell back to the slow copy snapshotter.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn identical_run_layers_still_mount_as_overlay() {
    if !require_root("identical_run_layers_still_mount_as_overlay") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN true\nRUN true\nRUN true\nRUN echo done > /done\n")]);
    let (_, stderr) = store.build(ctx.path(), &["--no-cache", "-t", "stacked"]);
    assert!(!stderr.contains("strata sandbox:"), "the sandbox reported a problem:\n{stderr}");
    let out = store.strata().args(["run", "--rm", "stacked", "cat", "/done"]).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
}
