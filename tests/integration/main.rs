//! The one integration-test binary: runs the real `strata` binary on real inputs.
//! Each module covers one area; helpers shared by all live here.

use std::path::{Path, PathBuf};

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A `strata` command with a private store under `root`.
pub fn strata(root: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("strata").expect("strata binary is built");
    cmd.env("STRATA_ROOT", root).env("NO_COLOR", "1").env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Whether golden files should be rewritten instead of compared (`STRATA_BLESS=1`).
pub fn bless() -> bool {
    std::env::var_os("STRATA_BLESS").is_some_and(|v| v == "1")
}

/// Compares `actual` with the golden file at `path`, or rewrites it when blessing.
pub fn assert_golden(path: &Path, actual: &str) {
    if bless() {
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read golden {}: {e} (run with STRATA_BLESS=1 to create it)", path.display()));
    if expected != actual {
        panic!(
            "golden mismatch for {}\n--- expected\n{expected}\n--- actual\n{actual}\n(run with STRATA_BLESS=1 to accept)",
            path.display()
        );
    }
}
