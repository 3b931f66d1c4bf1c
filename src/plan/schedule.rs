//! `--concurrency`, `--qps`, `--sweep` and the other many-user flags → the run's schedule.

use std::time::Duration;

use anyhow::Result;

use super::{SchedulePlan, MAX_TIMEOUT_S};
use crate::analysis::load::LoadSettings;
use crate::cli::{ArrivalsArg, RunArgs, SweepKind};
use crate::core::UsageError;
use crate::schedule::Arrivals;

/// Which levels a many-user run has.
#[derive(Debug, Clone, PartialEq)]
pub enum LevelsPlan {
    /// `--concurrency N`: one closed-loop level.
    Closed(usize),
    /// `--qps R[,R…]`: one open-loop level per rate.
    Rates(Vec<f64>),
    /// `--sweep auto`: a synchronous level, a max-throughput level, then `levels` rates between.
    SweepAuto { levels: usize, max_concurrency: usize },
}

/// A many-user run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub levels: LevelsPlan,
    /// How long each level starts new turns.
    pub duration: Duration,
    /// `--time`: no turn starts after it.
    pub time: Option<Duration>,
    /// Think time before a conversation's next turn, drawn from `[min, max]`.
    pub think: (Duration, Duration),
    pub max_active: Option<usize>,
    pub arrivals: Arrivals,
    pub log_interval: Duration,
    /// What the analysis needs (levels are appended as they end).
    pub settings: LoadSettings,
}

impl LoadPlan {
    /// Levels the run will have, for the progress bar.
    pub fn planned_levels(&self) -> usize {
        match &self.levels {
            LevelsPlan::Closed(_) => 1,
            LevelsPlan::Rates(r) => r.len().max(1),
            LevelsPlan::SweepAuto { levels, .. } => levels + 2,
        }
    }
}

/// Open-loop rates above this are not a benchmark of any server turnbench can drive.
const MAX_QPS: f64 = 1_000_000.0;
/// Clients and conversations at once.
const MAX_PARALLEL: usize = 100_000;

pub fn plan(args: &RunArgs) -> Result<SchedulePlan> {
    let l = &args.load;
    if !l.is_multi_user() {
        return Ok(SchedulePlan::Sequential);
    }
    let bad = |m: String| -> Result<SchedulePlan> { Err(UsageError::new(m).into()) };
    let seconds = |flag: &str, v: f64| -> Result<Duration> {
        if v.is_finite() && v > 0.0 && v <= MAX_TIMEOUT_S {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(UsageError::new(format!("{flag} {v}: must be a positive number of seconds, at most {MAX_TIMEOUT_S}")).into())
        }
    };
    if let Some(c) = l.concurrency {
        if c == 0 || c > MAX_PARALLEL {
            return bad(format!("--concurrency {c}: must be between 1 and {MAX_PARALLEL}"));
        }
    }
    if let Some(q) = l.qps.iter().find(|q| !(q.is_finite() && **q > 0.0 && **q <= MAX_QPS)) {
        return bad(format!("--qps {q}: rates must be positive, at most {MAX_QPS}"));
    }
    let duration = seconds("--duration", l.duration)?;
    let time = l.time.map(|t| seconds("--time", t)).transpose()?;
    if !(l.min_delay.is_finite() && l.min_delay >= 0.0 && l.max_delay >= l.min_delay && l.max_delay <= MAX_TIMEOUT_S) {
        return bad(format!("--min-delay {} / --max-delay {}: need 0 ≤ min ≤ max (seconds, at most a week)", l.min_delay, l.max_delay));
    }
    if !(l.trim_warmup.is_finite()
        && l.trim_cooldown.is_finite()
        && l.trim_warmup >= 0.0
        && l.trim_cooldown >= 0.0
        && l.trim_warmup + l.trim_cooldown < l.duration)
    {
        return bad("--trim-warmup + --trim-cooldown must be zero or more and shorter than --duration".into());
    }
    if let Some(p) = l.percentiles.iter().find(|p| !(**p >= 0.0 && **p <= 100.0)) {
        return bad(format!("--percentiles {p}: must be between 0 and 100"));
    }
    let mut sorted = l.percentiles.clone();
    sorted.sort_by(f64::total_cmp);
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return bad(format!("--percentiles {}: each percentile once", l.percentiles.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")));
    }
    let log_interval = seconds("--log-interval", l.log_interval)?;
    if !(l.saturation_ttft_factor.is_finite() && l.saturation_ttft_factor >= 1.0) {
        return bad(format!("--saturation-ttft-factor {}: must be a number ≥ 1", l.saturation_ttft_factor));
    }
    if !(l.saturation_ttft_floor_ms.is_finite() && l.saturation_ttft_floor_ms >= 0.0) {
        return bad(format!("--saturation-ttft-floor-ms {}: must be zero or more", l.saturation_ttft_floor_ms));
    }
    if let (Some(c), Some(m)) = (l.concurrency, l.max_active_conversations) {
        if m < c {
            return bad(format!("--max-active-conversations {m} is below --concurrency {c}: every client needs a conversation"));
        }
    }
    if l.max_active_conversations.is_some_and(|m| m == 0 || m > MAX_PARALLEL)
        || l.sweep_levels == 0
        || l.sweep_levels > 1000
        || l.sweep_max_concurrency == 0
        || l.sweep_max_concurrency > MAX_PARALLEL
    {
        return bad(format!(
            "--max-active-conversations and --sweep-max-concurrency must be between 1 and {MAX_PARALLEL}, --sweep-levels between 1 and 1000"
        ));
    }
    let (levels, mode) = match (l.concurrency, l.sweep) {
        (_, Some(SweepKind::Auto)) => {
            (LevelsPlan::SweepAuto { levels: l.sweep_levels, max_concurrency: l.sweep_max_concurrency }, "sweep_auto")
        }
        (Some(c), None) => (LevelsPlan::Closed(c), "closed"),
        (None, None) => (LevelsPlan::Rates(l.qps.clone()), if l.qps.len() == 1 { "open" } else { "sweep" }),
    };
    let arrivals = match l.arrivals {
        ArrivalsArg::Poisson => Arrivals::Poisson,
        ArrivalsArg::Constant => Arrivals::Constant,
    };
    let workload = format!("{:?}", l.workload).to_lowercase();
    Ok(SchedulePlan::Load(LoadPlan {
        levels,
        duration,
        time,
        think: (Duration::from_secs_f64(l.min_delay), Duration::from_secs_f64(l.max_delay)),
        max_active: l.max_active_conversations,
        arrivals,
        log_interval,
        settings: LoadSettings {
            mode: mode.into(),
            percentiles: l.percentiles.clone(),
            trim_warmup_s: l.trim_warmup,
            trim_cooldown_s: l.trim_cooldown,
            saturation_ttft_factor: l.saturation_ttft_factor,
            saturation_ttft_floor_ms: l.saturation_ttft_floor_ms,
            workload,
            levels: Vec::new(),
        },
    }))
}
