//! Progress of long work: an indicatif bar with events/s and ETA on a terminal, plain
//! `tracing` lines every few seconds otherwise (logs, CI), or nothing (tests).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar if stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    Log,
    Off,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    log: bool,
    total: u64,
    done: u64,
    started: Instant,
    logged: Instant,
}

impl Progress {
    /// `total` is an estimate (the log's highest position); the bar grows it if exceeded.
    pub fn new(label: &str, total: u64, mode: ProgressMode) -> Self {
        let terminal = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(total.max(1));
            let style = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        });
        let now = Instant::now();
        Self {
            label: label.to_string(),
            log: mode != ProgressMode::Off && bar.is_none(),
            bar,
            total,
            done: 0,
            started: now,
            logged: now,
        }
    }

    pub fn advance(&mut self, events: u64) {
        self.done += events;
        if let Some(bar) = &self.bar {
            if self.done > bar.length().unwrap_or(0) {
                bar.set_length(self.done);
            }
            bar.set_position(self.done);
        } else if self.log && self.logged.elapsed() >= LOG_EVERY {
            self.logged = Instant::now();
            let rate = self.rate();
            let left = self.total.saturating_sub(self.done) as f64;
            let eta = if rate > 0.0 { left / rate } else { 0.0 };
            tracing::info!(
                "{}: {} of ~{} events, {rate:.0} events/s, ETA {eta:.0}s",
                self.label,
                self.done,
                self.total
            );
        }
    }

    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.log || self.bar.is_some() {
            tracing::info!(
                "{}: {} events in {:.1}s ({:.0} events/s)",
                self.label,
                self.done,
                self.started.elapsed().as_secs_f64(),
                self.rate()
            );
        }
    }
}
