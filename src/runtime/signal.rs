//! Signals to and from a run: the waiting process passes SIGTERM, SIGINT,
//! SIGHUP and SIGQUIT on to the sandbox (which passes them to PID 1) and
//! kills it if it has not ended one stop timeout later, so an interrupted
//! `strata run` leaves nothing running; `stop` and `kill` signal PID 1 from
//! outside, by pid and start time.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::record::{self, ProcessId, RunRecord, RunState};
use super::{RuntimeError, find};
use crate::store::Store;

/// The last signal the waiting process received, 0 when none is pending.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember(signal: libc::c_int) {
    PENDING.store(signal, Ordering::SeqCst);
}

/// Catches SIGTERM, SIGINT, SIGHUP and SIGQUIT for `wait_forwarding`.
pub fn install_forwarding() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(SigHandler::Handler(remember), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Waits for the sandbox `child`, passing on the signals this process gets
/// and killing the sandbox (and so PID 1) `stop_timeout` after the first.
/// `started` is told PID 1 once the sandbox has recorded it in `pid_file`.
pub fn wait_forwarding(
    child: &mut Child,
    stop_timeout: Duration,
    started: &mut dyn FnMut(ProcessId),
    pid_file: &Path,
) -> std::io::Result<ExitStatus> {
    let sandbox = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut kill_at = None;
    let mut pid_known = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if !pid_known && let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|t| t.trim().parse().ok()).and_then(ProcessId::of)
        {
            pid_known = true;
            started(pid);
        }
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if let Ok(signal) = Signal::try_from(pending) {
            let _ = nix::sys::signal::kill(sandbox, signal);
            kill_at.get_or_insert(Instant::now() + stop_timeout);
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            let _ = nix::sys::signal::kill(sandbox, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, RuntimeError> {
    let bad = || RuntimeError::BadSignal(text.to_string());
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map_err(|_| bad())
}

/// Sends `signal` to a running run's PID 1.
pub fn kill(store: &Store, name: &str, signal: Signal) -> Result<(), RuntimeError> {
    let record = record::read(&find(store, name)?)?;
    if record.state() != RunState::Running {
        return Err(RuntimeError::NotRunning(record.name));
    }
    let pid = match record.pid {
        Some(pid) => pid,
        // Started a moment ago: PID 1 is recorded once the sandbox has forked it.
        None => wait_for_pid(store, name)?,
    };
    pid.signal(signal).map_err(|source| RuntimeError::Signal { name: record.name, source })
}

fn wait_for_pid(store: &Store, name: &str) -> Result<ProcessId, RuntimeError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = record::read(&find(store, name)?)?;
        match (record.pid, record.state()) {
            (Some(pid), _) => return Ok(pid),
            (None, RunState::Running | RunState::Created) if Instant::now() < deadline => {}
            _ => return Err(RuntimeError::NotRunning(record.name)),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the image's STOPSIGNAL (default SIGTERM), then SIGKILL if the run
/// has not ended after `timeout`; returns once its exit is recorded.
pub fn stop(store: &Store, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
    let dir = find(store, name)?;
    let record = record::read(&dir)?;
    if record.state() != RunState::Running {
        return Ok(());
    }
    let signal = parse_signal(record.stop_signal.as_deref().unwrap_or("SIGTERM"))?;
    match kill(store, name, signal) {
        Ok(()) | Err(RuntimeError::NotRunning(_)) => {}
        Err(e) => return Err(e),
    }
    if !wait_for_owner(&record, timeout) {
        match kill(store, name, Signal::SIGKILL) {
            Ok(()) | Err(RuntimeError::NotRunning(_)) => {}
            Err(e) => return Err(e),
        }
        wait_for_owner(&record, Duration::from_secs(30));
    }
    Ok(())
}

/// Waits until the run's waiting process has ended (having recorded the exit,
/// or removed a `--rm` run); false if it still runs after `timeout`.
pub fn wait_for_owner(record: &RunRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !record.owner.is_some_and(|owner| owner.alive()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_read_as_docker_takes_them() {
        assert_eq!(parse_signal("SIGTERM").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("term").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("KILL").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("9").ok(), Some(Signal::SIGKILL));
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
