//! SIGINT and SIGTERM during a run: the first stops new requests, the second stops waiting for
//! those in flight, the third exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::engine::{StopSignal, StopTokens};
use crate::exit::Exit;

/// Folds SIGINT and SIGTERM into the run's stop tokens and remembers which came first:
/// the first stops new requests (those in flight get the grace period), the second stops waiting
/// for them (the run is still settled and its summary printed), the third exits at once.
pub(super) fn watch_signals(stopping: StopTokens) -> Arc<AtomicU8> {
    const NONE: u8 = 0;
    let seen = Arc::new(AtomicU8::new(NONE));
    let flag = seen.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot install signal handlers; SIGINT/SIGTERM will kill the run");
            return;
        };
        let which = tokio::select! {
            _ = int.recv() => StopSignal::Interrupt,
            _ = term.recv() => StopSignal::Terminate,
        };
        flag.store(which as u8 + 1, Ordering::SeqCst);
        tracing::warn!(
            "{which:?} received: finishing requests in flight, starting no new ones (send again to stop waiting for them)"
        );
        stopping.shutdown.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!(
            "second signal: abandoning requests in flight; recording the run (send again to exit at once)"
        );
        stopping.hard_stop.cancel();
        let code = Exit::from(which).code();
        // Settling the run takes a few commits; a database that hangs must not hold the process.
        tokio::select! {
            _ = int.recv() => eprintln!("third signal: exiting now"),
            _ = term.recv() => eprintln!("third signal: exiting now"),
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                eprintln!("the run could not be recorded within 10 s of the second signal: exiting now");
            }
        }
        // SQLite's journal keeps the database consistent even when we leave mid-transaction.
        std::process::exit(code);
    });
    seen
}

pub(super) fn signal_seen(flag: &AtomicU8) -> Option<StopSignal> {
    match flag.load(Ordering::SeqCst) {
        1 => Some(StopSignal::Interrupt),
        2 => Some(StopSignal::Terminate),
        _ => None,
    }
}
