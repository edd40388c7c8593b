//! What a pull or push shows while blobs move: on a terminal, an indicatif
//! bar per blob under way; otherwise a plain line per blob when it is done;
//! nothing when quiet.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Options;
use crate::oci::Descriptor;

/// The transfers of one pull or push.
pub(super) struct Transfers {
    /// Bars on a terminal; `None` prints lines (or nothing when quiet).
    bars: Option<MultiProgress>,
    verbose: bool,
}

/// One blob under way: its bar counts the bytes moved.
pub(super) struct Transfer<'a> {
    owner: &'a Transfers,
    pub(super) bar: ProgressBar,
    blob: &'a Descriptor,
    started: Instant,
}

impl Transfers {
    pub(super) fn new(options: &Options) -> Transfers {
        let terminal = options.verbose && std::io::stderr().is_terminal();
        let bars = terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Transfers { bars, verbose: options.verbose }
    }

    /// Starts showing `blob` (`verb`: "pull" or "push").
    pub(super) fn start<'a>(&'a self, verb: &str, blob: &'a Descriptor) -> Transfer<'a> {
        let bar = match &self.bars {
            Some(bars) => {
                let style = ProgressStyle::with_template("{prefix} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .expect("a valid template")
                    .progress_chars("=> ");
                let bar = bars.add(ProgressBar::new(blob.size).with_style(style));
                bar.set_prefix(format!("{verb} {}", blob.digest.short()));
                bar
            }
            None => ProgressBar::hidden(),
        };
        Transfer { owner: self, bar, blob, started: Instant::now() }
    }
}

impl Transfer<'_> {
    /// Counts `bytes` more moved.
    pub(super) fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// The blob arrived (or left): its bar goes, or its line is printed.
    pub(super) fn done(self) {
        let line =
            format!("  {} {:.1} MB in {:.1}s", self.blob.digest.short(), self.blob.size as f64 / 1e6, self.started.elapsed().as_secs_f64());
        match &self.owner.bars {
            Some(bars) => {
                self.bar.finish_and_clear();
                let _ = bars.println(line);
            }
            None if self.owner.verbose => eprintln!("{line}"),
            None => {}
        }
    }
}

impl Drop for Transfer<'_> {
    /// A transfer that failed takes its bar with it.
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}
