//! Primitive statistics: percentiles by linear interpolation between closest ranks (numpy's
//! default), mean, sample standard deviation, and the [`Stats`] summary of a distribution.
//! Non-finite values are ignored. [`Distribution`] takes values one at a time, so a run's
//! statistics never need its records in memory: exact up to [`EXACT_LIMIT`] values, then an HDR
//! histogram (3 significant digits) for the percentiles, with count, mean, std, min and max
//! still exact.

use serde::{Deserialize, Serialize};

/// Distribution of one quantity. `count` values went in; see the module docs for the method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Sorts finite values ascending, dropping NaN/∞.
pub fn sorted_finite(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Percentile `p` (0–100) of an ascending slice, linear interpolation (numpy's default).
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Sample standard deviation (ddof = 1); 0 for one value.
pub fn std_dev(values: &[f64]) -> Option<f64> {
    let m = mean(values)?;
    if values.len() < 2 {
        return Some(0.0);
    }
    let ss: f64 = values.iter().map(|x| (x - m).powi(2)).sum();
    Some((ss / (values.len() - 1) as f64).sqrt())
}

impl Stats {
    /// `None` when there is no finite value.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        Self::from_sorted(&sorted_finite(values))
    }

    /// From finite values sorted ascending.
    fn from_sorted(v: &[f64]) -> Option<Stats> {
        let p = |q| percentile_sorted(v, q);
        Some(Stats {
            count: v.len(),
            mean: mean(v)?,
            std: std_dev(v)?,
            min: *v.first()?,
            p25: p(25.0)?,
            p50: p(50.0)?,
            p75: p(75.0)?,
            p90: p(90.0)?,
            p95: p(95.0)?,
            p99: p(99.0)?,
            max: *v.last()?,
        })
    }
}

/// Values a [`Distribution`] keeps one by one (8 bytes each) before it turns into a histogram:
/// every test-sized run is computed exactly, a million-request one in bounded memory.
pub const EXACT_LIMIT: usize = 65_536;

/// Histogram resolution above [`EXACT_LIMIT`]: values are recorded in thousandths (µs for
/// milliseconds) with 3 significant digits, so a percentile is within 0.1 % of the exact one.
const SCALE: f64 = 1000.0;
const SIGNIFICANT_DIGITS: u8 = 3;

/// One quantity's values, taken one at a time (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Distribution {
    exact: Vec<f64>,
    histogram: Option<hdrhistogram::Histogram<u64>>,
    count: usize,
    /// Running mean and sum of squared deviations (Welford), for the histogram form.
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Distribution {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value; NaN and ±∞ are ignored, as everywhere in the statistics.
    pub fn push(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.count += 1;
        let delta = v - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (v - self.mean);
        if self.count == 1 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        match &mut self.histogram {
            Some(h) => record(h, v),
            None => {
                self.exact.push(v);
                if self.exact.len() > EXACT_LIMIT {
                    self.spill_to_histogram();
                }
            }
        }
    }

    fn spill_to_histogram(&mut self) {
        // Auto-resizing: the range grows with the largest value seen.
        let Ok(mut h) = hdrhistogram::Histogram::<u64>::new(SIGNIFICANT_DIGITS) else { return };
        for v in std::mem::take(&mut self.exact) {
            record(&mut h, v);
        }
        self.histogram = Some(h);
    }

    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        for v in values {
            self.push(v);
        }
    }

    /// How many finite values went in.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether the values are held one by one (every statistic exact).
    pub fn is_exact(&self) -> bool {
        self.histogram.is_none()
    }

    /// Percentile `p` (0–100): exact (numpy's interpolation) while the values are held, else from
    /// the histogram, clamped to the exact min and max.
    pub fn percentile(&mut self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        match &self.histogram {
            None => {
                self.sort();
                percentile_sorted(&self.exact, p)
            }
            Some(h) => {
                let q = p.clamp(0.0, 100.0) / 100.0;
                let v = h.median_equivalent(h.value_at_quantile(q)) as f64 / SCALE;
                Some(v.clamp(self.min, self.max))
            }
        }
    }

    fn sort(&mut self) {
        if !self.exact.is_sorted_by(|a, b| a <= b) {
            self.exact.sort_by(f64::total_cmp);
        }
    }

    pub fn mean(&mut self) -> Option<f64> {
        match &self.histogram {
            None => {
                self.sort();
                mean(&self.exact)
            }
            Some(_) => (self.count > 0).then_some(self.mean),
        }
    }

    /// The summary of the values; `None` when there is none.
    pub fn stats(&mut self) -> Option<Stats> {
        if self.histogram.is_none() {
            self.sort();
            return Stats::from_sorted(&self.exact);
        }
        let std = if self.count < 2 { 0.0 } else { (self.m2 / (self.count - 1) as f64).max(0.0).sqrt() };
        Some(Stats {
            count: self.count,
            mean: self.mean,
            std,
            min: self.min,
            p25: self.percentile(25.0)?,
            p50: self.percentile(50.0)?,
            p75: self.percentile(75.0)?,
            p90: self.percentile(90.0)?,
            p95: self.percentile(95.0)?,
            p99: self.percentile(99.0)?,
            max: self.max,
        })
    }
}

/// A value in thousandths; negatives (a clock step) count as 0 in the histogram (min, mean and
/// max keep them).
fn record(h: &mut hdrhistogram::Histogram<u64>, v: f64) {
    let scaled = (v * SCALE).round().clamp(0.0, u64::MAX as f64 / 4.0) as u64;
    // `record` grows the range (auto-resize); past what it can grow to, the top bucket counts it.
    if h.record(scaled).is_err() {
        h.saturating_record(scaled);
    }
}

/// The median of the finite values.
pub fn p50(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    percentile_sorted(&sorted_finite(values), 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_is_exact_up_to_its_limit_and_close_beyond() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 * 0.37 + 1.0).chain([f64::NAN]).collect();
        let mut d = Distribution::new();
        d.extend(values.iter().copied());
        assert!(d.is_exact());
        assert_eq!(d.stats(), Stats::from_values(values.iter().copied()));
        assert_eq!(Distribution::new().stats(), None);

        // Past the limit: a skewed spread of milliseconds, as TTFTs are.
        let n = EXACT_LIMIT * 3;
        let big: Vec<f64> = (0..n).map(|i| 0.05 + ((i * 104_729) % n) as f64 / n as f64 * 40.0 + ((i % 97) as f64).powi(3) / 100.0).collect();
        let mut d = Distribution::new();
        d.extend(big.iter().copied());
        assert!(!d.is_exact());
        let got = d.stats().unwrap();
        let want = Stats::from_values(big.iter().copied()).unwrap();
        assert_eq!(got.count, want.count);
        assert_eq!((got.min, got.max), (want.min, want.max));
        assert!((got.mean - want.mean).abs() < 1e-9 * want.mean, "{} vs {}", got.mean, want.mean);
        assert!((got.std - want.std).abs() < 1e-9 * want.std, "{} vs {}", got.std, want.std);
        for (g, w) in [(got.p25, want.p25), (got.p50, want.p50), (got.p75, want.p75), (got.p90, want.p90), (got.p95, want.p95), (got.p99, want.p99)] {
            assert!((g - w).abs() <= 1e-3 * w + 1e-3, "{g} vs {w}");
        }
    }

    #[test]
    fn standard_deviation_is_the_sample_one_from_two_values_on() {
        assert_eq!(std_dev(&[]), None);
        assert_eq!(std_dev(&[5.0]), Some(0.0));
        assert_eq!(std_dev(&[1.0, 3.0]), Some(2f64.sqrt()));
        assert!((std_dev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap() - 2.138_089_935).abs() < 1e-9);
    }
}
