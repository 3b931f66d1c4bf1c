//! Admission, as vLLM's scheduler bounds it: at most `max_num_seqs` requests run at once, up to
//! `max_waiting` more wait in FIFO order, and a request beyond that gets a 503.

// `admit` returns the error `Response` itself: built once per refused request, moved straight
// out; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

use super::errors::unavailable;
use super::state::Shared;

/// A place in the running batch; gives it back (and its KV blocks) when dropped.
pub(super) struct Slot {
    s: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    pub(super) blocks: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.s.running.fetch_sub(1, Relaxed);
        self.s.blocks_in_use.fetch_sub(self.blocks, Relaxed);
    }
}

/// A place in the waiting queue; leaves it when dropped (admitted, refused or cancelled).
struct WaitGuard(Arc<Shared>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

/// Takes a running slot, waiting in FIFO order; 503 when `max_waiting` requests already wait.
pub(super) async fn admit(s: &Arc<Shared>) -> Result<Slot, Response> {
    let permit = match s.sem.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(TryAcquireError::Closed) => return Err(unavailable("The server is shutting down.")),
        Err(TryAcquireError::NoPermits) => {
            let before = s.waiting.fetch_add(1, Relaxed);
            let guard = WaitGuard(s.clone());
            if before >= s.cfg.max_waiting {
                return Err(unavailable(&format!(
                    "The waiting queue is full ({} requests waiting, {} running); try again later.",
                    s.cfg.max_waiting, s.cfg.max_num_seqs
                )));
            }
            let p = s.sem.clone().acquire_owned().await.map_err(|_| unavailable("The server is shutting down."))?;
            drop(guard);
            p
        }
    };
    s.running.fetch_add(1, Relaxed);
    Ok(Slot { s: s.clone(), _permit: permit, blocks: 0 })
}
