//! Terminal progress for `turnbench setup`: a [`DownloadObserver`] drawing indicatif bars.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::download::DownloadObserver;

/// Progress bars: one per file in flight, one overall.
pub(crate) struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    files: Mutex<HashMap<String, ProgressBar>>,
    done: Mutex<HashMap<String, u64>>,
}

impl Bars {
    pub(crate) fn new() -> Self {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.set_prefix("total");
        Self { multi, overall, files: Mutex::default(), done: Mutex::default() }
    }
}

impl DownloadObserver for Bars {
    fn start(&self, _files: usize, total_bytes: u64) {
        self.overall.set_length(total_bytes);
    }
    fn file(&self, name: &str, done: u64, total: u64, complete: bool) {
        let (Ok(mut files), Ok(mut seen)) = (self.files.lock(), self.done.lock()) else { return };
        let before = seen.insert(name.to_string(), done).unwrap_or(0);
        self.overall.inc(done.saturating_sub(before));
        if complete {
            if let Some(bar) = files.remove(name) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
            return;
        }
        let bar = files.entry(name.to_string()).or_insert_with(|| {
            let bar = self.multi.insert_before(&self.overall, ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("{msg:>30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(name.to_string());
            bar
        });
        bar.set_position(done);
    }
    fn finish(&self) {
        self.overall.finish_and_clear();
    }
}
