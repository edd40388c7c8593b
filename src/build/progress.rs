//! Progress output: BuildKit-like plain lines on a pipe, indicatif spinners
//! on a terminal, or nothing (`quiet`). Steps are numbered in start order.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Quiet,
}

/// Receives what the build does, step by step.
pub trait Progress: Sync {
    /// A step began; returns its number.
    fn started(&self, label: &str) -> usize;
    fn cached(&self, id: usize);
    fn done(&self, id: usize, elapsed: Duration);
    fn output(&self, id: usize, line: &str);
    fn failed(&self, id: usize, message: &str);
    /// A note not tied to a step (image written, tag named).
    fn note(&self, text: &str);
}

/// Picks the reporter for a mode (`auto`: tty on a terminal, else plain).
pub fn reporter(mode: ProgressMode) -> Box<dyn Progress> {
    use std::io::IsTerminal;
    match mode {
        ProgressMode::Quiet => Box::new(Quiet),
        ProgressMode::Plain => Box::new(Plain::default()),
        ProgressMode::Tty => Box::new(Tty::default()),
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(Tty::default()),
        ProgressMode::Auto => Box::new(Plain::default()),
    }
}

struct Quiet;

impl Progress for Quiet {
    fn started(&self, _: &str) -> usize {
        0
    }
    fn cached(&self, _: usize) {}
    fn done(&self, _: usize, _: Duration) {}
    fn output(&self, _: usize, _: &str) {}
    fn failed(&self, _: usize, _: &str) {}
    fn note(&self, _: &str) {}
}

/// `#3 [2/6] COPY app.js .` / `#3 CACHED` / `#3 DONE 0.1s`, as BuildKit prints on a pipe.
#[derive(Default)]
struct Plain {
    state: Mutex<(usize, HashMap<usize, Instant>)>,
}

impl Plain {
    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }
}

impl Progress for Plain {
    fn started(&self, label: &str) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        let id = state.0;
        state.1.insert(id, Instant::now());
        self.line(&format!("#{id} {label}"));
        id
    }
    fn cached(&self, id: usize) {
        self.line(&format!("#{id} CACHED"));
    }
    fn done(&self, id: usize, elapsed: Duration) {
        self.line(&format!("#{id} DONE {:.1}s", elapsed.as_secs_f64()));
    }
    fn output(&self, id: usize, line: &str) {
        let start = self.state.lock().unwrap_or_else(|p| p.into_inner()).1.get(&id).copied();
        let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        self.line(&format!("#{id} {secs:.3} {line}"));
    }
    fn failed(&self, id: usize, message: &str) {
        self.line(&format!("#{id} ERROR: {message}"));
    }
    fn note(&self, text: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        self.line(&format!("#{} {text}", state.0));
    }
}

/// One spinner per running step; finished steps stay as one line each.
#[derive(Default)]
struct Tty {
    bars: MultiProgress,
    state: Mutex<(usize, HashMap<usize, ProgressBar>)>,
}

impl Tty {
    fn bar(&self, id: usize) -> Option<ProgressBar> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1.get(&id).cloned()
    }
}

impl Progress for Tty {
    fn started(&self, label: &str) -> usize {
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix} {wide_msg:.dim} {elapsed:>4}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        let id = state.0;
        bar.set_prefix(format!("#{id} {label}"));
        state.1.insert(id, bar);
        id
    }
    fn cached(&self, id: usize) {
        if let Some(bar) = self.bar(id) {
            bar.set_style(ProgressStyle::with_template("✔ {prefix} {msg:.green}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
            bar.finish_with_message("CACHED");
        }
    }
    fn done(&self, id: usize, elapsed: Duration) {
        if let Some(bar) = self.bar(id) {
            bar.set_style(ProgressStyle::with_template("✔ {prefix} {msg:.blue}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
            bar.finish_with_message(format!("{:.1}s", elapsed.as_secs_f64()));
        }
    }
    fn output(&self, id: usize, line: &str) {
        if let Some(bar) = self.bar(id) {
            bar.set_message(line.to_string());
        }
    }
    fn failed(&self, id: usize, message: &str) {
        if let Some(bar) = self.bar(id) {
            bar.set_style(ProgressStyle::with_template("✘ {prefix} {msg:.red}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
            bar.abandon_with_message(message.to_string());
        }
    }
    fn note(&self, text: &str) {
        let _ = self.bars.println(format!("  {text}"));
    }
}
