//! Layer unpacking on arbitrary bytes (tar, whiteouts, opaque markers, links):
//! it may refuse, but never panic, and never write outside its destination.
//! (The tar crate makes no device nodes; the only one unpacking makes is the 0/0 whiteout.)
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else { return };
    let dest = root.path().join("dest");
    if std::fs::create_dir(&dest).is_err() {
        return;
    }
    let _ = strata::store::snapshot::unpack_layer(std::io::Cursor::new(data), &dest);
    // Nothing may appear beside the destination.
    for entry in std::fs::read_dir(root.path()).into_iter().flatten().flatten() {
        assert_eq!(entry.file_name(), "dest", "unpack wrote {:?} outside its destination", entry.path());
    }
    open_up(&dest);
});

/// Makes every folder writable again so the temp dir can be removed.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            open_up(&path);
        }
    }
}
