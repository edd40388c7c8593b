//! A run's record, `strata/runs/NAME/run.json`, and what it says about the
//! run now: a process is named by its pid and its start time, so a run whose
//! waiting process died without recording the exit reads as dead, never as
//! running (and a reused pid is never taken for it).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use crate::oci::Digest;

/// A process by pid and start time (clock ticks after boot, `/proc/PID/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

impl ProcessId {
    /// The process `pid` is now, if it exists and has not exited.
    pub fn of(pid: i32) -> Option<ProcessId> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // fields[0] is field 3 (state); starttime is field 22.
        if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
            return None;
        }
        Some(ProcessId { pid, start: fields.get(19)?.parse().ok()? })
    }

    /// This process.
    pub fn current() -> Option<ProcessId> {
        ProcessId::of(std::process::id() as i32)
    }

    /// Whether this very process still runs.
    pub fn alive(&self) -> bool {
        ProcessId::of(self.pid) == Some(*self)
    }

    /// Sends `signal` if this very process still runs.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> nix::Result<()> {
        if !self.alive() {
            return Err(nix::errno::Errno::ESRCH);
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal)
    }
}

/// What `strata exec` needs to start a command as the run's own.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecContext {
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub confined: bool,
    pub user_namespace: bool,
    pub maps_from_outside: bool,
    /// The run has a network namespace of its own, which `exec` joins (named
    /// `network_none` by earlier versions, when none was the only such network).
    #[serde(alias = "network_none")]
    pub own_network: bool,
}

/// A run's record, `strata/runs/NAME/run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    /// 64 hex digits, as Docker's container ids (older records have none: see `id()`).
    #[serde(default)]
    pub id: String,
    pub image: String,
    pub image_manifest: Digest,
    pub command: Vec<String>,
    pub created: String,
    pub exit_code: Option<i32>,
    /// Image paths created only as mount points.
    pub mount_points: Vec<String>,
    /// The run used a copied root instead of an overlay (see `STRATA_SNAPSHOTTER`).
    #[serde(default)]
    pub copied_root: bool,
    #[serde(default)]
    pub dir_marks: crate::exec::copydiff::DirMarks,
    /// When the command started and ended (RFC 3339).
    #[serde(default)]
    pub started: Option<String>,
    #[serde(default)]
    pub finished: Option<String>,
    /// The process that waits for the sandbox: `strata run`, or a detached run's supervisor.
    #[serde(default)]
    pub owner: Option<ProcessId>,
    /// The command's PID 1, as the host sees it.
    #[serde(default)]
    pub pid: Option<ProcessId>,
    /// Started with `run -d`: its output is in the run's log.
    #[serde(default)]
    pub detached: bool,
    /// Remove the run once it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The image's STOPSIGNAL.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Why the run could not start, when it could not.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub exec: Option<ExecContext>,
}

/// What a run is doing, as `ps` tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Recorded, its supervisor not yet started.
    Created,
    Running,
    Exited(i32),
    /// Its waiting process ended without recording an exit (killed, or the machine restarted).
    Dead,
}

impl RunState {
    /// Docker's word for the state (`ps --filter status=`).
    pub fn word(&self) -> &'static str {
        match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Exited(_) => "exited",
            RunState::Dead => "dead",
        }
    }
}

impl RunRecord {
    /// The run's id (for a record older than ids, one derived from its name).
    pub fn id(&self) -> String {
        if self.id.is_empty() { Digest::of(self.name.as_bytes()).hex().to_string() } else { self.id.clone() }
    }

    pub fn state(&self) -> RunState {
        match (self.exit_code, self.owner) {
            (Some(code), _) => RunState::Exited(code),
            (None, Some(owner)) if owner.alive() => RunState::Running,
            (None, None) if self.error.is_none() && self.detached => RunState::Created,
            _ => RunState::Dead,
        }
    }
}

pub fn runs_dir(root: &Path) -> PathBuf {
    root.join("strata/runs")
}

/// The record in `dir`.
pub fn read(dir: &Path) -> Result<RunRecord, RuntimeError> {
    let path = dir.join("run.json");
    let bytes = fs::read(&path).map_err(|e| RuntimeError::io("read", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::BadRecord { path, source })
}

/// Writes the record in `dir` whole (temp file + rename): readers see the old or the new.
pub fn write(dir: &Path, record: &RunRecord) -> Result<(), RuntimeError> {
    let path = dir.join("run.json");
    let partial = dir.join(format!("run.json.{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(record).map_err(|source| RuntimeError::BadRecord { path: path.clone(), source })?;
    fs::write(&partial, bytes).map_err(|e| RuntimeError::io("write", &partial, e))?;
    fs::rename(&partial, &path).map_err(|e| RuntimeError::io("write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_it() {
        let me = ProcessId::current().expect("own stat");
        assert!(me.alive());
        assert!(!ProcessId { start: me.start + 1, ..me }.alive());
    }

    #[test]
    fn an_unrecorded_exit_of_a_gone_owner_reads_as_dead() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let owner = ProcessId::of(child.id() as i32);
        child.wait().expect("wait");
        let record = RunRecord {
            name: "n".into(),
            id: String::new(),
            image: "i".into(),
            image_manifest: Digest::of(b""),
            command: Vec::new(),
            created: String::new(),
            exit_code: None,
            mount_points: Vec::new(),
            copied_root: false,
            dir_marks: Default::default(),
            started: None,
            finished: None,
            owner: owner.or(Some(ProcessId { pid: i32::MAX, start: 0 })),
            pid: None,
            detached: false,
            auto_remove: false,
            stop_signal: None,
            error: None,
            exec: None,
        };
        assert_eq!(record.state(), RunState::Dead);
        let me = RunRecord { owner: ProcessId::current(), ..record.clone() };
        assert_eq!(me.state(), RunState::Running);
        assert_eq!(RunRecord { exit_code: Some(3), ..record }.state(), RunState::Exited(3));
    }
}
