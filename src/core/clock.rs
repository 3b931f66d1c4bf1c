//! The run's clock: every instant turnbench records is milliseconds since one monotonic origin,
//! so records, samples and level windows can be compared directly.

use tokio::time::Instant;

/// The run's monotonic origin: every recorded instant is milliseconds since it.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
    /// The wall-clock time of the origin: what lets `turnbench merge` put the records of shards
    /// that ran on different machines on one clock.
    origin_wall: std::time::SystemTime,
}

impl RunClock {
    pub fn start() -> Self {
        Self { origin: Instant::now(), origin_wall: std::time::SystemTime::now() }
    }
    /// The origin as RFC 3339 wall-clock time (nanoseconds kept).
    pub fn origin_rfc3339(&self) -> String {
        jiff::Timestamp::try_from(self.origin_wall).map(|t| t.to_string()).unwrap_or_default()
    }
    pub fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64() * 1000.0
    }
    pub fn now_ms(&self) -> f64 {
        self.ms(Instant::now())
    }
}
