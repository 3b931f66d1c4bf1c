//! Latency histograms in vLLM's buckets, and their Prometheus text.

use std::fmt::Write as _;

/// vLLM's histogram buckets, in seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
pub(super) const ITL_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];

/// A Prometheus histogram: per-bucket counts (not cumulative), sum and count.
#[derive(Clone)]
pub(super) struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub(super) fn new(buckets: &'static [f64]) -> Self {
        Self { buckets, counts: vec![0; buckets.len()], sum: 0.0, count: 0 }
    }

    pub(super) fn observe_n(&mut self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(i) = self.buckets.iter().position(|le| v <= *le) {
            self.counts[i] += n;
        }
        self.sum += v * n as f64;
        self.count += n;
    }

    pub(super) fn observe(&mut self, v: f64) {
        self.observe_n(v, 1);
    }

    pub(super) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    pub(super) fn write(&self, out: &mut String, name: &str, help: &str, labels: &str, created: f64) {
        let _ = writeln!(out, "# HELP vllm:{name} {help}\n# TYPE vllm:{name} histogram");
        let mut cum = 0;
        for (le, c) in self.buckets.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "vllm:{name}_bucket{{{labels},le=\"{le:?}\"}} {:?}", cum as f64);
        }
        let _ = writeln!(out, "vllm:{name}_bucket{{{labels},le=\"+Inf\"}} {:?}", self.count as f64);
        let _ = writeln!(out, "vllm:{name}_count{{{labels}}} {:?}", self.count as f64);
        let _ = writeln!(out, "vllm:{name}_sum{{{labels}}} {:?}", self.sum);
        let _ = writeln!(out, "# HELP vllm:{name}_created {help}\n# TYPE vllm:{name}_created gauge");
        let _ = writeln!(out, "vllm:{name}_created{{{labels}}} {created:?}");
    }
}

/// The server-wide latency histograms, in vLLM's buckets.
pub(super) struct Histograms {
    pub(super) ttft: Histogram,
    pub(super) itl: Histogram,
    pub(super) e2e: Histogram,
}

impl Histograms {
    pub(super) fn new() -> Self {
        Self { ttft: Histogram::new(TTFT_BUCKETS), itl: Histogram::new(ITL_BUCKETS), e2e: Histogram::new(E2E_BUCKETS) }
    }
}
