//! The sweep: plan, fan out one sweep per account under the key's session (one rate limit, one
//! nonce sequence, one in-flight window, one switch that stops the key), record everything,
//! settle the run.
//!
//! - [`session`]: one key's client, nonces, pacer, window and halt; every request goes through it.
//! - [`account`]: one account's snapshot, cancel-all and verify, with its retries.
//! - [`pacer`]: the key's pace, and how it follows the exchange's push-back.
//! - [`window`]: how many requests of the key may be in flight.
//! - [`departures`]: requests of an increasing-mode key leave in nonce order.

mod account;
mod departures;
mod pacer;
mod session;
mod window;

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountEntry;
use crate::client::{ClientOptions, Clock, Credentials, ExchangeClient, NonceSource};
use crate::config::SweepConfig;
use crate::error::{Error, exit_code};
use crate::lock::RunLock;
use crate::store::{self, NewRun, NewRunAccount, Resume, RunTotals, Settle, Store};

pub use session::MAX_RETRY_AFTER;

/// What a finished sweep reports: the database's totals plus what only the process knows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepSummary {
    #[serde(flatten)]
    pub totals: RunTotals,
    /// This process's invocation of the run (`null` when a resume found nothing to do).
    pub invocation_id: Option<i64>,
    pub wall_ms: u64,
    pub db: String,
    /// Set by a `--resume` that found nothing left to do, and so sent and wrote nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nothing_to_resume: bool,
    pub exit_code: i32,
}

/// The signal that stopped a run, if any; decides 130 versus 143.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

/// Which accounts a sweep works on.
pub enum Target {
    /// A new run over the CSV's accounts (disabled ones are recorded as skipped).
    New(Vec<AccountEntry>),
    /// Finishing an earlier run: these of its accounts, under its run id.
    Resume { run_id: i64, accounts: Vec<String> },
}

impl Target {
    fn to_sweep(&self) -> usize {
        match self {
            Target::New(entries) => entries.iter().filter(|a| a.enabled).count(),
            Target::Resume { accounts, .. } => accounts.len(),
        }
    }
}

/// How the process is told to stop: the first signal stops new requests, the grace period or a
/// second signal stops waiting for the ones in flight.
#[derive(Clone, Default)]
pub struct Stopping {
    pub shutdown: CancellationToken,
    pub hard_stop: CancellationToken,
}

/// Checks what can be checked without the network: something to sweep, and a key that can
/// address it (a master key names each account; an account key acts on its one account).
pub fn plan(credentials: &Credentials, target: &Target, config: &SweepConfig) -> Result<(), Error> {
    let enabled = target.to_sweep();
    if enabled == 0
        && let Target::New(_) = target
    {
        return Err(Error::Config(format!(
            "{}: every account is disabled (enabled=false); nothing to sweep",
            config.accounts_file.display()
        )));
    }
    if credentials.is_master() || enabled <= 1 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the API key is not a master key (it does not start with master-), so it acts on one account only, but {} lists {enabled} enabled accounts; use the group's master key, or list just the key's own account",
        config.accounts_file.display()
    )))
}

/// Runs a whole sweep. Inputs must already be validated (see [`plan`]).
pub async fn run(
    config: SweepConfig,
    credentials: Credentials,
    target: Target,
    clock: Arc<dyn Clock>,
    stopping: Stopping,
    stop_signal: impl Fn() -> Option<StopSignal> + Send + 'static,
) -> Result<SweepSummary, Error> {
    let started = Instant::now();
    plan(&credentials, &target, &config)?;
    let fingerprint = credentials.fingerprint();
    let mut lock = RunLock::acquire(&config.db, config.lock_dir.as_deref(), &fingerprint)?;
    let (store, writer) = store::open(&config.db)?;
    let result = sweep_with_store(
        &mut lock,
        &config,
        credentials,
        target,
        clock,
        stopping,
        Box::new(stop_signal),
        store,
    )
    .await;
    // The writer flushes and checkpoints once every handle is gone.
    writer.join();
    let (run_id, invocation_id, exit_code) = result?;

    let conn = store::open_read_only(&config.db)?;
    let totals = store::run_totals(&conn, run_id).map_err(|e| Error::Store {
        path: config.db.clone(),
        reason: e.to_string(),
    })?;
    Ok(SweepSummary {
        totals,
        invocation_id: Some(invocation_id),
        wall_ms: started.elapsed().as_millis() as u64,
        db: config.db.display().to_string(),
        nothing_to_resume: false,
        exit_code,
    })
}

#[allow(clippy::too_many_arguments)]
async fn sweep_with_store(
    lock: &mut RunLock,
    config: &SweepConfig,
    credentials: Credentials,
    target: Target,
    clock: Arc<dyn Clock>,
    stopping: Stopping,
    stop_signal: Box<dyn Fn() -> Option<StopSignal> + Send>,
    store: Store,
) -> Result<(i64, i64, i32), Error> {
    // Holding the database's lock, any run still marked running belongs to a dead process.
    for dead in store.take_over_dead_runs().await? {
        tracing::warn!(
            run_id = dead.run_id,
            pid = dead.pid,
            abandoned_attempts = dead.abandoned_attempts,
            "run {} was left running by pid {}, which is gone; marked died, taking it over",
            dead.run_id,
            dead.pid
        );
    }
    let fingerprint = credentials.fingerprint();
    let high_water = store.nonce_high_water(&fingerprint).await?;
    let nonces = Arc::new(NonceSource::new(config.nonce_mode, clock, high_water));
    let client = ExchangeClient::new(
        &ClientOptions {
            base_url: config.base_url(),
            timeout: config.timeout,
            proxy: config.proxy_url(),
        },
        credentials,
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    let session = session::KeySession::new(
        client,
        nonces,
        config.rate,
        config.burst,
        config.concurrency as usize,
    );

    let options_json = serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?;
    let (run_id, invocation_id, to_sweep, resuming) = match target {
        Target::New(accounts) => {
            let (run_id, invocation_id) = store
                .begin_run(NewRun {
                    base_url: config.base_url.clone(),
                    key_fingerprint: fingerprint.clone(),
                    group_name: config.group.clone(),
                    options_json,
                    verify: config.verify,
                    accounts: accounts
                        .iter()
                        .map(|a| NewRunAccount {
                            account: a.account.clone(),
                            csv_line: a.line,
                            note: a.note.clone(),
                            enabled: a.enabled,
                        })
                        .collect(),
                })
                .await?;
            let enabled = accounts
                .into_iter()
                .filter(|a| a.enabled)
                .map(|a| a.account)
                .collect::<Vec<_>>();
            (run_id, invocation_id, enabled, false)
        }
        Target::Resume { run_id, accounts } => {
            let invocation_id = store
                .begin_resume(Resume {
                    run_id,
                    base_url: config.base_url.clone(),
                    options_json,
                    verify: config.verify,
                    accounts: accounts.clone(),
                })
                .await?;
            (run_id, invocation_id, accounts, true)
        }
    };
    lock.set_run(Some(run_id));

    tracing::info!(
        run_id,
        invocation_id,
        resuming,
        accounts = to_sweep.len(),
        rate = config.rate,
        concurrency = config.concurrency,
        nonce_mode = config.nonce_mode.as_str(),
        key = %fingerprint,
        base_url = %config.base_url,
        "sweep started; at least {:.1} s at this rate",
        (to_sweep.len() * config.calls_per_account()) as f64 / config.rate
    );

    // After a stop signal, requests in flight get `grace` to finish; then they are abandoned.
    let grace_timer = {
        let (stopping, grace) = (stopping.clone(), config.grace);
        tokio::spawn(async move {
            stopping.shutdown.cancelled().await;
            tokio::select! {
                _ = tokio::time::sleep(grace) => {
                    tracing::warn!("grace period over: abandoning requests still in flight");
                    stopping.hard_stop.cancel();
                }
                _ = stopping.hard_stop.cancelled() => {}
            }
        })
    };
    let run = session::RunContext {
        store: store.clone(),
        run_id,
        invocation_id,
        shutdown: stopping.shutdown.clone(),
        hard_stop: stopping.hard_stop.clone(),
    };
    let sweeper = account::AccountSweeper {
        config,
        session: &session,
        run: &run,
        resuming,
    };
    let outcome = futures::stream::iter(to_sweep.iter())
        .map(|account| sweeper.sweep(account))
        .buffer_unordered(config.concurrency as usize)
        .try_collect::<Vec<_>>()
        .await;
    grace_timer.abort();

    if let Err(e) = &outcome {
        tracing::error!(run_id, error = %e, "sweep aborted");
    }
    let halt = session.halt.reason();
    let signal = stop_signal();
    let stop_reason = match (&halt, signal) {
        (Some(h), _) => Some(h.message.clone()),
        (None, Some(StopSignal::Interrupt)) => Some("interrupted by SIGINT".to_owned()),
        (None, Some(StopSignal::Terminate)) => Some("interrupted by SIGTERM".to_owned()),
        (None, None) => None,
    };
    if session.window.shrinks() > 10
        && session.nonces.mode() == crate::client::NonceMode::Increasing
    {
        tracing::warn!(
            races = session.window.shrinks(),
            "requests raced each other to the exchange and were refused (InvalidNonce) {} times; a key created with time-based nonces (--nonce-mode time) cannot race",
            session.window.shrinks()
        );
    }
    // The database decides the run's status from all its accounts (a resumed run's earlier ones
    // included), using the same reconciliation views the reports read.
    let settled = store
        .settle(Settle {
            run_id,
            invocation_id,
            aborted: outcome.is_err(),
            refused: halt.as_ref().is_some_and(|h| h.refused),
            stop_reason,
            exit_code: Box::new(move |status| exit_code::for_run(status, signal)),
        })
        .await;
    outcome?;
    let (status, exit_code) = settled?;
    tracing::info!(
        run_id,
        status = status.as_str(),
        final_rate = session.pacer.current_rate(),
        final_window = session.window.size(),
        "sweep finished"
    );
    Ok((run_id, invocation_id, exit_code))
}
