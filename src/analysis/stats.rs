//! Primitive statistics: percentiles by linear interpolation between closest ranks (numpy's
//! default), mean, sample standard deviation, and the [`Stats`] summary of a distribution.
//! Non-finite values are ignored.

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
        let v = sorted_finite(values);
        let p = |q| percentile_sorted(&v, q);
        Some(Stats {
            count: v.len(),
            mean: mean(&v)?,
            std: std_dev(&v)?,
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

/// The median of the finite values.
pub fn p50(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    percentile_sorted(&sorted_finite(values), 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_deviation_is_the_sample_one_from_two_values_on() {
        assert_eq!(std_dev(&[]), None);
        assert_eq!(std_dev(&[5.0]), Some(0.0));
        assert_eq!(std_dev(&[1.0, 3.0]), Some(2f64.sqrt()));
        assert!((std_dev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap() - 2.138_089_935).abs() < 1e-9);
    }
}
