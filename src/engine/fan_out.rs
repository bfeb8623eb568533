//! Flat first, proof after: every account's cancel-all is asked of the key, `concurrency`
//! accounts at a time; each account cancelled goes on to the listing that proves it, which the
//! key's dispatcher sends only when no cancel-all waits (its queue's priorities). With
//! `--snapshot`, each account is swept start to end instead (its listing before its cancel-all).
//!
//! Every account under way is let finish (a failed write stops the key, so they finish quickly)
//! rather than dropped, so that what they sent is settled with the run; accounts not yet started
//! once the run is aborting are not started.

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::account::{AccountSweeper, AfterCancel, Cancelled};
use crate::error::Error;
use crate::store::AccountStatus;

/// An account's name and how its sweep ended.
pub type Outcome = (String, Result<AccountStatus, Error>);

/// Each account's outcome, `None` for one never started. `done` hears each finished account;
/// `abort` each error, once the run must stop.
pub async fn sweep_accounts(
    sweeper: &AccountSweeper<'_>,
    to_sweep: Vec<String>,
    aborting: &CancellationToken,
    abort: &(dyn Fn(&Error) + Sync),
) -> Vec<Option<Outcome>> {
    let concurrency = sweeper.config.concurrency as usize;
    let done = |status: &Result<AccountStatus, Error>| match status {
        Ok(status) => sweeper.progress.account_done(*status),
        Err(e) => abort(e),
    };
    if sweeper.config.snapshot {
        // Owned names: a future borrowing from the closure's argument is not Send-able to a task.
        return futures::stream::iter(to_sweep)
            .map(|account| async move {
                if aborting.is_cancelled() {
                    return None;
                }
                let status = sweeper.sweep(&account).await;
                done(&status);
                Some((account, status))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    }
    // Unbounded: a cancel-all never waits for a proof to make room.
    let (to_prove, proofs) = tokio::sync::mpsc::unbounded_channel::<Cancelled>();
    let cancels = async move {
        futures::stream::iter(to_sweep)
            .map(|account| async move {
                if aborting.is_cancelled() {
                    return None;
                }
                match sweeper.cancel(&account).await {
                    Ok(AfterCancel::ToProve(cancelled)) => Some(Ok(cancelled)),
                    Ok(AfterCancel::Done(status)) => {
                        done(&Ok(status));
                        Some(Err((account, Ok(status))))
                    }
                    Err(e) => {
                        abort(&e);
                        Some(Err((account, Err(e))))
                    }
                }
            })
            .buffer_unordered(concurrency)
            .filter_map(|outcome| {
                futures::future::ready(match outcome {
                    Some(Ok(cancelled)) => {
                        // The receiver only ends once every sender is gone.
                        let _ = to_prove.send(cancelled);
                        None
                    }
                    Some(Err(finished)) => Some(Some(finished)),
                    None => Some(None),
                })
            })
            .collect::<Vec<_>>()
            .await
    };
    let proving = receiver_stream(proofs)
        .map(|cancelled| async move {
            let account = cancelled.account().to_string();
            let status = sweeper.prove(cancelled).await;
            done(&status);
            Some((account, status))
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>();
    let (mut finished, proved) = tokio::join!(cancels, proving);
    finished.extend(proved);
    finished
}

/// The receiver as a stream that ends when every sender is gone.
fn receiver_stream<T>(
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
