//! A detached run's log, `strata/runs/NAME/log.json`: one JSON object a line
//! in Docker's json-file format (`{"log":"text\n","stream":"stdout","time":…}`),
//! written by the run's supervisor as the command prints, read by `logs`.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{self, RunState};
use super::{RuntimeError, find};
use crate::store::Store;

/// The log's file name in a run's folder.
pub const FILE: &str = "log.json";

/// One line the command printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was read, RFC 3339 with nanoseconds.
    pub time: String,
}

fn now() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

/// Copies the child's stdout and stderr (piped) into the log at `path`, a thread each.
pub fn copy_output(child: &mut Child, path: &Path) -> io::Result<Vec<JoinHandle<()>>> {
    let file = Arc::new(Mutex::new(fs::OpenOptions::new().create(true).append(true).open(path)?));
    let mut threads = Vec::new();
    let streams: [(&str, Option<Box<dyn Read + Send>>); 2] = [
        ("stdout", child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
        ("stderr", child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
    ];
    for (stream, pipe) in streams {
        let Some(pipe) = pipe else { continue };
        let file = Arc::clone(&file);
        threads.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let entry = Entry { log: String::from_utf8_lossy(&line).into_owned(), stream: stream.to_string(), time: now() };
                if let Ok(mut text) = serde_json::to_vec(&entry) {
                    text.push(b'\n');
                    if let Ok(mut file) = file.lock() {
                        let _ = file.write_all(&text);
                    }
                }
                line.clear();
            }
        }));
    }
    Ok(threads)
}

/// What `logs` prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogOptions {
    /// Keep printing until the run exits.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// Hands each entry of a run's log to `print`, oldest first; with `follow`, also
/// what the run prints next, until it exits.
pub fn read(store: &Store, name: &str, options: LogOptions, print: &mut dyn FnMut(&Entry)) -> Result<(), RuntimeError> {
    let dir = find(store, name)?;
    let record = record::read(&dir)?;
    if !record.detached {
        return Err(RuntimeError::NoLog(record.name));
    }
    let path = dir.join(FILE);
    let mut file = match fs::File::open(&path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(RuntimeError::io("read", &path, e)),
    };
    let mut pending = Vec::new();
    let mut read_new = |file: &mut Option<fs::File>, entries: &mut Vec<Entry>| -> Result<(), RuntimeError> {
        if file.is_none() {
            *file = fs::File::open(&path).ok();
        }
        let Some(file) = file else { return Ok(()) };
        file.read_to_end(&mut pending).map_err(|e| RuntimeError::io("read", &path, e))?;
        // Whole lines only: the supervisor may be writing the next one.
        let complete = pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in pending[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
                entries.push(entry);
            }
        }
        pending.drain(..complete);
        Ok(())
    };
    let mut entries = Vec::new();
    read_new(&mut file, &mut entries)?;
    let skip = options.tail.map_or(0, |n| entries.len().saturating_sub(n));
    entries.iter().skip(skip).for_each(&mut *print);
    if !options.follow {
        return Ok(());
    }
    loop {
        // Read once more after the run ended: what it printed last.
        let ended = record::read(&dir).map_or(true, |r| !matches!(r.state(), RunState::Running | RunState::Created));
        let mut entries = Vec::new();
        read_new(&mut file, &mut entries)?;
        entries.iter().for_each(&mut *print);
        if ended {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
