//! RUN without overlayfs: the copy snapshotter must give the very same layers.

use crate::{TestStore, context, require_root};

#[test]
fn copy_snapshotter_gives_the_same_image_as_overlay() {
    if !require_root("copy_snapshotter_gives_the_same_image_as_overlay") {
        return;
    }
    let spec = r#"
image "changes:latest" from="busybox:latest" {
    run "mkdir -p /data/sub && echo x > /data/f && ln /data/f /data/hard && ln -s f /data/soft && rm /etc/group && chmod 700 /home"
    run "rm -rf /data/sub && mkdir /data/sub && echo y >> /etc/passwd && mkfifo /data/fifo"
}
"#;
    let ctx = context(&[("spec.kdl", spec)]);
    let mut ids = Vec::new();
    for snapshotter in ["overlay", "copy"] {
        let store = TestStore::with_busybox();
        let out = store
            .strata()
            .env("SOURCE_DATE_EPOCH", "0")
            .env("STRATA_SNAPSHOTTER", snapshotter)
            .args(["build", "-q", "--no-cache"])
            .arg(ctx.path().join("spec.kdl"))
            .output()
            .expect("run strata");
        assert!(out.status.success(), "{snapshotter}: {}", String::from_utf8_lossy(&out.stderr));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(ids[0], ids[1], "overlay and copy snapshotters disagree");
}
