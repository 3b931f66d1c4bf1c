//! Core types every layer shares: the chat message, the run clock, the per-request record and its
//! sink, the manifest and results folder, the sample timeline, and the error kinds that set the
//! exit code. Nothing here does network IO or knows about clap.

pub mod audit;
pub mod blocks;
pub mod chat;
pub mod clock;
pub mod config;
pub mod error;
pub mod hash;
pub mod record;
pub mod results;
pub mod timeline;

pub use chat::ChatMessage;
pub use clock::RunClock;
pub use error::{redact, AllFailed, ErrorRateExceeded, Interrupted, ServerDied, UsageError};

/// A mutex's guard even when a thread panicked holding it: the data it guards (records,
/// samples, counters) stays usable, and a benchmark keeps what it measured.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
