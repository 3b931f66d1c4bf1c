//! Schedulers: several ways to start conversations, one request loop. Every conversation is
//! replayed by [`replay_conversation_paced`]; a scheduler only decides *when* conversations start
//! (open loop: seeded Poisson or constant arrivals) or *how many* run at once (closed loop).
//!
//! A level runs for its duration; then no new turn starts and the requests in flight finish, so
//! every request of the level is recorded under the level's label.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Client;
use crate::core::record::Recorder;
use crate::replay::{replay_conversation_paced, Pacing, ReplayLabels, ReplaySettings, Target};
use crate::workload::Conversation;

/// How arrivals are spaced in open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process), seeded.
    Poisson,
    /// Equal gaps of 1/qps.
    Constant,
}

/// Arrival offsets in seconds from the level start, below `horizon_s`, at `rate` per second,
/// generated one at a time: memory stays constant however long the level (a week at 10⁶/s is
/// 6 × 10¹¹ arrivals). Deterministic for a given seed.
pub fn arrival_offsets(arrivals: Arrivals, rate: f64, horizon_s: f64, seed: u64) -> ArrivalOffsets {
    ArrivalOffsets {
        arrivals,
        rate: if rate.is_finite() && rate > 0.0 { rate } else { 0.0 },
        horizon_s,
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        n: 0,
        t: 0.0,
        ended: false,
    }
}

/// The iterator of [`arrival_offsets`].
#[derive(Debug, Clone)]
pub struct ArrivalOffsets {
    arrivals: Arrivals,
    rate: f64,
    horizon_s: f64,
    rng: rand::rngs::StdRng,
    /// Arrivals given so far.
    n: u64,
    t: f64,
    ended: bool,
}

impl Iterator for ArrivalOffsets {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.ended || self.rate <= 0.0 {
            return None;
        }
        match self.arrivals {
            Arrivals::Constant => self.t = self.n as f64 / self.rate,
            Arrivals::Poisson => {
                // 1 − U is in (0, 1], so the logarithm is finite.
                let u: f64 = 1.0 - self.rng.random::<f64>();
                self.t += -u.ln() / self.rate;
            }
        }
        // NaN horizons end the arrivals too.
        if self.t >= self.horizon_s || self.t.is_nan() || self.horizon_s.is_nan() {
            self.ended = true;
            return None;
        }
        self.n += 1;
        Some(self.t)
    }
}

/// Open-loop conversations still running, and the first error one of them returned.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
    first_error: std::sync::Mutex<Option<anyhow::Error>>,
}

/// Counts one conversation out when dropped, even if its task panicked or was cancelled.
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    fn start(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    fn fail(&self, e: anyhow::Error) {
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }

    async fn until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// How a level starts conversations.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `concurrency` sessions, each replaying one conversation after another.
    Closed { concurrency: usize },
    /// Conversations arrive at `qps` per second whatever the server does.
    Open { qps: f64, arrivals: Arrivals },
}

/// One load level.
#[derive(Debug, Clone)]
pub struct Level {
    /// Recorded in every `TurnRecord::level` of the level.
    pub label: String,
    pub mode: Mode,
    /// Time during which new turns start.
    pub duration: Duration,
    /// Think time before a conversation's next turn, drawn uniformly from `[min, max]`.
    pub think: (Duration, Duration),
    /// Open loop: at most this many conversations active; later arrivals wait (their waiting is
    /// part of their queue time). Closed loop: this many conversations active (at least
    /// `concurrency`), their turns sharing `concurrency` clients, so at most `concurrency`
    /// requests are in flight.
    pub max_active: Option<usize>,
    pub seed: u64,
}

/// What is shared by every conversation of a run.
#[derive(Clone)]
pub struct LoadContext {
    pub client: Client,
    pub server: Target,
    /// Run-wide stop/abort tokens (Ctrl-C, `--time`).
    pub settings: ReplaySettings,
    pub recorder: Recorder,
    pub test: u32,
    /// Conversations, used round-robin.
    pub pool: Arc<Vec<Conversation>>,
}

/// Where a level ran on the run clock, for the reports (stored in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelWindow {
    pub label: String,
    pub target_qps: Option<f64>,
    pub concurrency: Option<usize>,
    pub start_ms: f64,
    /// When the level stopped starting turns.
    pub stop_ms: f64,
    /// When its last request ended.
    pub end_ms: f64,
    /// Open-loop arrivals scheduled in the level.
    pub scheduled_conversations: usize,
}

/// Runs one level to its end: its duration elapsed (or the run stopped), then the requests in
/// flight finished.
pub async fn run_level(ctx: &LoadContext, level: &Level) -> Result<LevelWindow> {
    let stop = ctx.settings.stop.child_token();
    let mut settings = ctx.settings.clone();
    settings.stop = stop.clone();
    let clock = ctx.client.clock();
    let start = Instant::now();
    let start_ms = clock.ms(start);
    let deadline = start + level.duration;
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            stop.cancel();
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let mut scheduled_conversations = 0;
    let open_loop = Arc::new(InFlight::default());
    let mut first_error = None;
    match &level.mode {
        Mode::Closed { concurrency } => {
            let active = level.max_active.unwrap_or(*concurrency).max(*concurrency);
            let gate = (active > *concurrency).then(|| Arc::new(Semaphore::new(*concurrency)));
            for session in 0..active {
                let gate = gate.clone();
                let ctx = ctx.clone();
                let settings = settings.clone();
                let next = next.clone();
                let level = level.clone();
                tasks.spawn(async move {
                    while !settings.stop.is_cancelled() {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        replay_one(&ctx, &settings, &level, session as u32, k, None, gate.clone()).await?;
                    }
                    Ok(())
                });
            }
        }
        Mode::Open { qps, arrivals } => {
            let offsets = arrival_offsets(*arrivals, *qps, level.duration.as_secs_f64(), level.seed);
            let gate = level.max_active.map(|n| Arc::new(Semaphore::new(n.max(1))));
            let in_flight = open_loop.clone();
            let spawn = {
                let (ctx, settings, level) = (ctx.clone(), settings.clone(), level.clone());
                move |k: usize, scheduled_ms: f64| {
                    let (ctx, settings, level, gate) = (ctx.clone(), settings.clone(), level.clone(), gate.clone());
                    let guard = in_flight.start();
                    async move {
                        let result = async {
                            let _permit = match gate {
                                Some(g) => Some(g.acquire_owned().await?),
                                None => None,
                            };
                            replay_one(&ctx, &settings, &level, k as u32, k, Some(scheduled_ms), None).await
                        }
                        .await;
                        if let Err(e) = result {
                            guard.0.fail(e);
                        }
                        drop(guard);
                    }
                }
            };
            // Arrivals are paced by a dedicated thread: an OS sleep wakes within tens of
            // microseconds, the async timer only to the next millisecond, and a busy worker
            // cannot delay the next arrival. Each conversation runs as a task of the runtime;
            // arrivals are drawn one at a time, so nothing grows with the level's length.
            let handle = tokio::runtime::Handle::current();
            let std_start = std::time::Instant::now() - start.elapsed();
            let stop_pacer = stop.clone();
            let pacer = tokio::task::spawn_blocking(move || {
                let mut spawned = 0usize;
                for (k, offset) in offsets.enumerate() {
                    let at = std_start.checked_add(Duration::from_secs_f64(offset)).unwrap_or(std_start);
                    loop {
                        if stop_pacer.is_cancelled() {
                            return spawned;
                        }
                        let now = std::time::Instant::now();
                        if now >= at {
                            break;
                        }
                        std::thread::sleep((at - now).min(Duration::from_millis(20)));
                    }
                    // Detached: `open_loop` counts it until it ends.
                    drop(handle.spawn(spawn(k, start_ms + offset * 1000.0)));
                    spawned += 1;
                }
                spawned
            });
            scheduled_conversations = pacer.await?;
        }
    }
    // Later turns keep starting until the level's duration is over (or the run stops).
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => {}
        _ = stop.cancelled() => {}
    }
    stop.cancel();
    let stop_ms = clock.now_ms();
    while let Some(done) = tasks.join_next().await {
        note_error(&mut first_error, done);
    }
    open_loop.until_idle().await;
    if let Some(e) = open_loop.first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        first_error.get_or_insert(e);
    }
    timer.abort();
    if let Some(e) = first_error {
        return Err(e);
    }
    let (target_qps, concurrency) = match level.mode {
        Mode::Closed { concurrency } => (None, Some(concurrency)),
        Mode::Open { qps, .. } => (Some(qps), None),
    };
    Ok(LevelWindow {
        label: level.label.clone(),
        target_qps,
        concurrency,
        start_ms,
        stop_ms,
        end_ms: clock.now_ms(),
        scheduled_conversations,
    })
}

fn note_error(first: &mut Option<anyhow::Error>, done: std::result::Result<Result<()>, tokio::task::JoinError>) {
    let err = match done {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(e) => anyhow::Error::new(e),
    };
    first.get_or_insert(err);
}

async fn replay_one(
    ctx: &LoadContext,
    settings: &ReplaySettings,
    level: &Level,
    session: u32,
    k: usize,
    first_turn_scheduled_ms: Option<f64>,
    request_gate: Option<Arc<Semaphore>>,
) -> Result<()> {
    if ctx.pool.is_empty() {
        anyhow::bail!("the workload has no conversation");
    }
    let conversation = &ctx.pool[k % ctx.pool.len()];
    let labels = ReplayLabels { test: ctx.test, level: Some(level.label.clone()), session: Some(session) };
    let pacing = Pacing {
        first_turn_scheduled_ms,
        think_range: Some(level.think),
        seed: level.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        request_gate,
    };
    replay_conversation_paced(&ctx.client, &ctx.server, settings, &ctx.recorder, &labels, conversation, &pacing).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let a: Vec<f64> = arrival_offsets(Arrivals::Constant, 10.0, 1.0, 1).collect();
        assert_eq!(a.len(), 10);
        assert!((a[3] - 0.3).abs() < 1e-12);
    }

    #[test]
    fn poisson_arrivals_are_seeded_and_average_the_rate() {
        let a: Vec<f64> = arrival_offsets(Arrivals::Poisson, 100.0, 100.0, 7).collect();
        assert_eq!(a, arrival_offsets(Arrivals::Poisson, 100.0, 100.0, 7).collect::<Vec<_>>());
        assert_ne!(a, arrival_offsets(Arrivals::Poisson, 100.0, 100.0, 8).collect::<Vec<_>>());
        let rate = a.len() as f64 / 100.0;
        assert!((rate - 100.0).abs() < 5.0, "rate {rate}");
        assert!(a.windows(2).all(|w| w[1] > w[0]));
        // Exponential gaps: coefficient of variation ≈ 1.
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / m - 1.0).abs() < 0.1, "cv {}", sd / m);
    }

    #[test]
    fn poisson_counts_are_unbiased_across_seeds() {
        let counts: Vec<usize> = (0..400).map(|seed| arrival_offsets(Arrivals::Poisson, 100.0, 5.0, seed).count()).collect();
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        assert!((mean - 500.0).abs() < 5.0, "mean arrivals {mean}, expected 500");
    }

    #[test]
    fn no_rate_no_arrivals() {
        assert_eq!(arrival_offsets(Arrivals::Poisson, 0.0, 10.0, 1).count(), 0);
        assert_eq!(arrival_offsets(Arrivals::Constant, f64::NAN, 10.0, 1).count(), 0);
    }

    #[test]
    fn a_week_at_a_million_per_second_is_drawn_lazily() {
        // 6 × 10¹¹ arrivals: only an iterator can hold that; the first ones come at once.
        let week = 7.0 * 24.0 * 3600.0;
        let mut a = arrival_offsets(Arrivals::Constant, 1e6, week, 1);
        assert_eq!(a.nth(999_999), Some(0.999999));
        assert!(std::mem::size_of_val(&a) < 1024);
        let mut p = arrival_offsets(Arrivals::Poisson, 1e6, week, 1).skip(1_000_000);
        let t = p.next().unwrap();
        assert!(t > 0.9 && t < 1.1, "{t}");
    }
}
