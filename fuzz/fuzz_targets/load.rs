//! `strata load` of an arbitrary tar (OCI archive or `docker save` tarball):
//! refused or loaded, never a panic; a refused input leaves no tag and no blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::store::Store;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let input = dir.path().join("image.tar");
    if std::fs::write(&input, data).is_err() {
        return;
    }
    let Ok(store) = Store::open(&dir.path().join("store")) else { return };
    if strata::store::archive::load(&store, &input, None).is_err() {
        assert!(store.entries().is_ok_and(|e| e.is_empty()), "a refused load left a tag");
        let blobs = std::fs::read_dir(dir.path().join("store/blobs/sha256")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(blobs, 0, "a refused load left blobs");
    }
});
