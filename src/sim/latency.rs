//! The latency model, in the style of llm-d-inference-sim: a pure function of the request's
//! uncached prompt tokens and the number of running requests.

use std::time::Duration;

/// All times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct LatencyModel {
    /// Fixed time per request before prefill.
    pub overhead_ms: f64,
    /// Prefill time per uncached prompt token.
    pub prefill_ms_per_token: f64,
    /// Time between two output tokens.
    pub inter_token_ms: f64,
    /// Fractional slow-down per running request beyond the first.
    pub load_slowdown: f64,
}

/// Milliseconds as a `Duration`: zero for what is no positive number, at most a day (a delay
/// past that would only overflow a deadline).
fn ms(v: f64) -> Duration {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    if v.is_finite() && v > 0.0 {
        Duration::try_from_secs_f64(v / 1000.0).map_or(DAY, |d| d.min(DAY))
    } else {
        Duration::ZERO
    }
}

impl LatencyModel {
    /// `1 + load_slowdown × (running − 1)`; `running` counts this request.
    pub fn load_factor(&self, running: usize) -> f64 {
        1.0 + self.load_slowdown * running.saturating_sub(1) as f64
    }

    /// Time to first token: `(overhead + uncached × prefill) × load_factor(running)`.
    pub fn ttft(&self, uncached_tokens: usize, running: usize) -> Duration {
        ms((self.overhead_ms + uncached_tokens as f64 * self.prefill_ms_per_token) * self.load_factor(running))
    }

    /// Gap between two output tokens: `inter_token × load_factor(running)`.
    pub fn inter_token(&self, running: usize) -> Duration {
        ms(self.inter_token_ms * self.load_factor(running))
    }

    /// No prefill delay at all (the server must not sleep).
    pub fn prefill_is_zero(&self) -> bool {
        self.overhead_ms <= 0.0 && self.prefill_ms_per_token <= 0.0
    }

    /// No decode delay at all.
    pub fn decode_is_zero(&self) -> bool {
        self.inter_token_ms <= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttft_grows_with_uncached_tokens_and_load() {
        let m =
            LatencyModel { overhead_ms: 15.0, prefill_ms_per_token: 0.05, inter_token_ms: 10.0, load_slowdown: 0.1 };
        assert_eq!(m.ttft(0, 1), Duration::from_millis(15));
        assert_eq!(m.ttft(1000, 1), Duration::from_millis(65));
        assert!(m.ttft(2000, 1) > m.ttft(1000, 1));
        assert_eq!(m.inter_token(1), Duration::from_millis(10));
        assert_eq!(m.inter_token(3), Duration::from_millis(12));
        assert!((m.load_factor(11) - 2.0).abs() < 1e-12);
        assert!(m.ttft(1000, 5) > m.ttft(1000, 1));
        let zero = LatencyModel::default();
        assert!(zero.prefill_is_zero() && zero.decode_is_zero());
        assert_eq!(zero.ttft(100_000, 50), Duration::ZERO);
        let bad = LatencyModel { overhead_ms: f64::NAN, ..zero };
        assert_eq!(bad.ttft(1, 1), Duration::ZERO);
        let huge = LatencyModel { inter_token_ms: 1e300, ..zero };
        assert_eq!(huge.inter_token(3), Duration::from_secs(24 * 3600), "capped, not a panic");
    }
}
