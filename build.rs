//! Tells the integration tests what this machine lets them do, so that a test
//! needing root or FUSE where there is none is reported by the test runner as
//! ignored (with the reason), not counted as a pass. The tests are built and
//! run on the same machine; the checks run again when the user changes.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(strata_tests_root)");
    println!("cargo::rustc-check-cfg=cfg(strata_tests_fuse)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=/dev/fuse");
    println!("cargo::rerun-if-env-changed=USER");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if root {
        println!("cargo::rustc-cfg=strata_tests_root");
    }
    let fusermount = std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("fusermount3").exists()));
    if root && Path::new("/dev/fuse").exists() && fusermount {
        println!("cargo::rustc-cfg=strata_tests_fuse");
    }
}
