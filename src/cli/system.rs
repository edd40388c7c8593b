//! `system info`: where the store is, how large, which snapshotter runs use,
//! rootless or not, and strata's version.

use std::process::ExitCode;

use super::images::human_size;
use strata::store::Store;

/// The snapshotter a RUN or `strata run` starts with: overlay where the kernel
/// has it and `STRATA_SNAPSHOTTER=copy` does not ask otherwise. (A sandbox
/// whose overlay root is refused still falls back to a copy.)
fn snapshotter() -> &'static str {
    let overlay = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.lines().any(|l| l.trim_end().ends_with("\toverlay")));
    if strata::exec::launch::copy_snapshotter_forced() || !overlay { "copy" } else { "overlay" }
}

/// Bytes under `dir`, each hard-linked file once.
fn tree_size(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))))
        .map(|m| m.len())
        .sum()
}

pub fn info(store: &Store) -> miette::Result<ExitCode> {
    let images = store.entries().map_err(miette::Report::from_err)?;
    let runs = strata::runtime::list(store).map_err(miette::Report::from_err)?;
    let running = runs.iter().filter(|r| r.state() == strata::runtime::RunState::Running).count();
    let rootless = !nix::unistd::geteuid().is_root();
    println!("Version: {}", env!("CARGO_PKG_VERSION"));
    println!("Store: {}", store.root().display());
    println!("Store Size: {}", human_size(tree_size(store.root())));
    println!("Storage Driver: {}", snapshotter());
    println!("Rootless: {rootless}");
    println!("Images: {}", images.len());
    println!("Runs: {} ({running} running)", runs.len());
    println!("Network: host");
    Ok(ExitCode::SUCCESS)
}
