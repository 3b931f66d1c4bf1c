//! The run's clock: every instant turnbench records is milliseconds since one monotonic origin,
//! so records, samples and level windows can be compared directly.

use tokio::time::Instant;

/// The run's monotonic origin: every recorded instant is milliseconds since it.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
}

impl RunClock {
    pub fn start() -> Self {
        Self { origin: Instant::now() }
    }
    pub fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64() * 1000.0
    }
    pub fn now_ms(&self) -> f64 {
        self.ms(Instant::now())
    }
}
