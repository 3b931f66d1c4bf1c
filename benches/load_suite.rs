//! How long loading the repository's suite takes: `cargo bench --bench load_suite [-- RUNS]`
//! (default 20). Prints the fastest, median and slowest `load_suite` of `data/` (documents,
//! JSON positions, hashes). Aim: well under a second in a debug build, a few ms in release.
//!
//! A claim about speed, measured here rather than asserted by a test that a busy machine flips.

use std::path::Path;
use std::time::{Duration, Instant};

use turnbench::workload::load::load_suite;

fn main() {
    let runs: usize = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(20);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            let suite = load_suite(&data.join("conversations.json"), &data.join("rag_data.json")).expect("suite loads");
            let took = start.elapsed();
            std::hint::black_box(suite);
            took
        })
        .collect();
    times.sort();
    println!(
        "load_suite (data/, {} runs): fastest {:?}, median {:?}, slowest {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
