//! Ctrl-C and SIGTERM: the first Ctrl-C stops scheduling (the turns in flight finish and are
//! recorded), a second abandons them; SIGTERM does both at once. Either way the run writes its
//! reports from what was recorded.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

static SIGTERM_RECEIVED: AtomicBool = AtomicBool::new(false);

/// Whether SIGTERM (rather than Ctrl-C) stopped the run: it then exits 143, not 130.
pub fn by_sigterm() -> bool {
    SIGTERM_RECEIVED.load(Ordering::Relaxed)
}

/// Watches the signals until the second Ctrl-C or a SIGTERM, cancelling `stop` and `abort`.
pub async fn watch_signals(stop: CancellationToken, abort: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(terminate);
    let mut presses = 0;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if r.is_err() { return; }
                presses += 1;
                if presses == 1 {
                    eprintln!("\nCtrl-C: finishing the turns in flight, then writing reports (Ctrl-C again to abandon them)");
                    stop.cancel();
                } else {
                    eprintln!("\nCtrl-C again: abandoning the turns in flight");
                    abort.cancel();
                    return;
                }
            }
            _ = &mut terminate => {
                SIGTERM_RECEIVED.store(true, Ordering::Relaxed);
                eprintln!("\nSIGTERM: abandoning the turns in flight, writing reports");
                stop.cancel();
                abort.cancel();
                return;
            }
        }
    }
}

/// Runs `fut` unless `stop` fires first (then `None`; dropping `fut` kills a starting server).
pub async fn until_stopped<T>(
    stop: &CancellationToken,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        r = fut => r.map(Some),
        _ = stop.cancelled() => Ok(None),
    }
}
