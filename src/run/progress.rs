//! The run's progress: one bar, fed by the records as they are made (the recorder calls
//! [`Progress::observe`]), never by polling them. A suite counts turns; a many-user run shows time
//! over the planned time and, every `--log-interval`, a line of what completed since the last.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::core::lock;
use crate::core::record::TurnRecord;
use crate::report::ProgressWindow;

#[derive(Default)]
struct Window {
    level: String,
    since_last_line: ProgressWindow,
    total: usize,
}

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// Many-user runs: what completed since the last log line.
    window: Option<Arc<Mutex<Window>>>,
    ticker: Option<Arc<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    /// A suite of `total` turns: the bar advances with every measured turn.
    pub fn turns(total: u64) -> Self {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} turns  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self { bar, window: None, ticker: None }
    }

    /// A many-user run of about `planned` time: the bar shows elapsed seconds; a summary line
    /// every `interval`.
    pub fn timed(planned: Duration, interval: Duration) -> Self {
        let bar = ProgressBar::new(planned.as_secs_f64().ceil().max(1.0) as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let window = Arc::new(Mutex::new(Window::default()));
        let ticker = {
            let (bar, window) = (bar.clone(), window.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let mut last_line = started;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let now = tokio::time::Instant::now();
                    bar.set_position(now.duration_since(started).as_secs());
                    let (label, total) = {
                        let w = lock(&window);
                        (w.level.clone(), w.total)
                    };
                    bar.set_message(format!("{label}  {total} requests"));
                    if now.duration_since(last_line) >= interval {
                        let line = lock(&window).since_last_line.take_line(&label, now.duration_since(last_line).as_secs_f64());
                        if bar.is_hidden() {
                            eprintln!("{line}");
                        } else {
                            bar.println(line);
                        }
                        last_line = now;
                    }
                }
            })
        };
        Self { bar, window: Some(window), ticker: Some(Arc::new(ticker)) }
    }

    /// A record was made.
    pub fn observe(&self, record: &TurnRecord) {
        match &self.window {
            Some(w) => {
                let mut w = lock(w);
                w.total += 1;
                w.since_last_line.push(record);
            }
            None if !record.warmup => self.bar.inc(1),
            None => {}
        }
    }

    /// Names what runs now (a conversation, a level).
    pub fn set_message(&self, what: &str) {
        match &self.window {
            Some(w) => lock(w).level = what.to_string(),
            None => self.bar.set_message(what.to_string()),
        }
    }

    /// A line above the bar.
    pub fn println(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
