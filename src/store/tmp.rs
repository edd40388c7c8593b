//! The store's temp folder, one subfolder per process.
//!
//! Every temp file and folder of the store lives under `strata/tmp/<pid>-<start>/`,
//! named after the process that writes it (its pid and its start time, so that a
//! reused pid is not mistaken for the writer). Every write there is renamed into
//! place or removed; a process killed half way leaves its folder behind, and the
//! next `Store::open` removes the folders of processes that no longer run. So a
//! crash costs nothing but the interrupted work, and no live writer ever loses a
//! temp file to another process's clean-up.

use std::fs;
use std::path::PathBuf;

use super::{Result, Store, io_err};

/// A process, as named in the temp folder: pid and start time (clock ticks since boot).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Writer {
    pid: u32,
    start: u64,
}

impl Writer {
    fn this() -> Option<Writer> {
        let pid = std::process::id();
        Some(Writer { pid, start: start_time(pid)? })
    }

    fn parse(name: &str) -> Option<Writer> {
        let (pid, start) = name.split_once('-')?;
        Some(Writer { pid: pid.parse().ok()?, start: start.parse().ok()? })
    }

    fn name(self) -> String {
        format!("{}-{}", self.pid, self.start)
    }

    /// Whether the process still runs (the same one: a reused pid has another start time).
    fn alive(self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// A process's start time from `/proc/PID/stat` (field 22, after the parenthesised name).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(19)?.parse().ok()
}

impl Store {
    /// This process's temp folder, created on first use: temp files and folders go
    /// here and are renamed into place or removed.
    pub fn tmp_dir(&self) -> PathBuf {
        let root = self.strata_dir("tmp");
        // Without /proc the shared folder stands in; verify then reports what a crash leaves.
        let Some(writer) = Writer::this() else { return root };
        let dir = root.join(writer.name());
        // A failure shows at the caller's first write into the folder, with its path.
        let _ = fs::create_dir(&dir);
        dir
    }

    /// Removes the temp folders of processes that no longer run. Best effort: two
    /// processes may sweep at once, or the store may be another user's; what stays
    /// is swept next time, and `system verify` reports it.
    /// Anything else in the temp folder is not a writer's and is left for verify to report.
    pub(super) fn sweep_abandoned(&self) {
        let root = self.strata_dir("tmp");
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_str().and_then(Writer::parse).is_some_and(|writer| !writer.alive()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// What in the temp folder belongs to no running process: folders of dead
    /// writers, and anything not named after a writer.
    pub(super) fn abandoned_temp(&self) -> Result<Vec<PathBuf>> {
        let root = self.strata_dir("tmp");
        let mut abandoned = Vec::new();
        for entry in fs::read_dir(&root).map_err(io_err("list", &root))?.flatten() {
            let name = entry.file_name();
            let writer = name.to_str().and_then(Writer::parse);
            if !writer.is_some_and(Writer::alive) {
                abandoned.push(entry.path());
            }
        }
        Ok(abandoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Writer::this().expect("/proc is mounted");
        assert!(me.alive());
        assert_eq!(Writer::parse(&me.name()), Some(me));
        assert!(!Writer { start: me.start + 1, ..me }.alive(), "same pid, another start time: a reused pid");
        assert_eq!(Writer::parse("snapshot-abc"), None);
    }

    #[test]
    fn open_removes_what_dead_writers_left_and_keeps_live_folders() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let mine = store.tmp_dir();
        fs::write(mine.join("half"), b"x").expect("write");
        let dead = store.strata_dir("tmp").join(Writer { pid: std::process::id(), start: 1 }.name());
        fs::create_dir(&dead).expect("dead writer's folder");
        fs::write(dead.join("half"), b"x").expect("write");
        let store = Store::open(dir.path()).expect("reopen");
        assert!(!dead.exists(), "a dead writer's folder is removed");
        assert!(mine.join("half").exists(), "a live writer's file stays");
        assert!(store.abandoned_temp().expect("list").is_empty());
    }
}
