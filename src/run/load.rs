//! The levels of a many-user run, one after another through [`crate::schedule::run_level`]:
//! one closed-loop level, the open-loop rates, or a sweep (a synchronous level, a max-throughput
//! level, then evenly spaced rates between their achieved rates).

use anyhow::Result;

use super::progress::Progress;
use crate::analysis::load::level_summary;
use crate::core::results::ShardInfo;
use crate::plan::{LevelsPlan, LoadPlan};
use crate::schedule::{run_level, Level, LevelWindow, LoadContext, Mode};

fn level(plan: &LoadPlan, label: String, mode: Mode, index: usize, seed: u64) -> Level {
    Level {
        label,
        mode,
        duration: plan.duration,
        think: plan.think,
        max_active: plan.max_active,
        seed: seed.wrapping_add(index as u64 * 7919),
    }
}

pub fn qps_label(q: f64) -> String {
    format!("qps-{q}")
}

/// Runs the levels of `plan`; `done` is called after each with its window.
pub async fn run_levels(
    plan: &LoadPlan,
    ctx: &LoadContext,
    progress: &Progress,
    seed: u64,
    shard: Option<&ShardInfo>,
    mut done: impl FnMut(&LevelWindow) -> Result<()>,
) -> Result<()> {
    // A shard runs its share of each level under the whole run's label (so merged shards line
    // up), with a seed of its own (independent arrival and think-time streams).
    let seed = shard.map_or(seed, |s| seed ^ (s.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let rate_share = shard.map_or(1.0, |s| 1.0 / s.count as f64);
    let clients = |c: usize| shard.map_or(c, |s| s.share(c));
    let shared = LoadPlan { max_active: plan.max_active.map(clients), ..plan.clone() };
    let plan = &shared;
    let run = |lv: Level| {
        progress.set_message(&lv.label);
        async move { run_level(ctx, &lv).await }
    };
    let rates: Vec<f64> = match &plan.levels {
        LevelsPlan::Closed(c) => {
            let w = run(level(plan, format!("concurrency-{c}"), Mode::Closed { concurrency: clients(*c) }, 0, seed)).await?;
            return done(&w);
        }
        LevelsPlan::Rates(rates) => rates.clone(),
        LevelsPlan::SweepAuto { levels, max_concurrency } => {
            // The two calibration levels' records, kept for their rates (then let go).
            let mark = ctx.recorder.len();
            let kept_already = ctx.recorder.keeps_from(mark);
            ctx.recorder.retain_from(Some(mark));
            let sync = run(level(plan, "sync".into(), Mode::Closed { concurrency: 1 }, 0, seed)).await?;
            done(&sync)?;
            if ctx.settings.stop.is_cancelled() {
                return Ok(());
            }
            let max = run(level(plan, "max-throughput".into(), Mode::Closed { concurrency: *max_concurrency }, 1, seed)).await?;
            done(&max)?;
            if ctx.settings.stop.is_cancelled() {
                return Ok(());
            }
            let records = ctx.recorder.records_since(mark);
            if !kept_already {
                ctx.recorder.retain_from(None);
            }
            let lo = level_summary(&records, &sync, &plan.settings).achieved_qps;
            let hi = level_summary(&records, &max, &plan.settings).achieved_qps;
            sweep_rates(lo, hi, *levels)
        }
    };
    for (i, q) in rates.into_iter().enumerate() {
        if ctx.settings.stop.is_cancelled() {
            break;
        }
        let w = run(level(plan, qps_label(q), Mode::Open { qps: q * rate_share, arrivals: plan.arrivals }, i + 2, seed)).await?;
        done(&w)?;
    }
    Ok(())
}

/// `n` evenly spaced rates from `lo` to `hi` (both included), rounded to 3 significant digits.
pub fn sweep_rates(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let lo = if lo > 0.0 { lo } else { hi / n.max(1) as f64 };
    let hi = hi.max(lo);
    if n <= 1 {
        return vec![round3(hi)];
    }
    let mut out: Vec<f64> = (0..n).map(|i| round3(lo + (hi - lo) * i as f64 / (n - 1) as f64)).filter(|q| *q > 0.0).collect();
    out.dedup();
    out
}

fn round3(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 0.0;
    }
    let mag = 10f64.powi(2 - x.log10().floor() as i32);
    (x * mag).round() / mag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_rates_are_evenly_spaced_between_sync_and_max() {
        assert_eq!(sweep_rates(2.0, 10.0, 5), vec![2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(sweep_rates(0.0, 9.0, 3), vec![3.0, 6.0, 9.0]);
        assert_eq!(sweep_rates(1.234, 1.234, 1), vec![1.23]);
    }
}
