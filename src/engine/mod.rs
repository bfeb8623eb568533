//! The sweep: plan, fan out one sweep per account under the key's session (one rate limit, one
//! nonce sequence, one in-flight window, one switch that stops the key), record everything,
//! settle the run.
//!
//! Stopping has one name per thing that stops: a [`StopSignal`] is the OS signal that came;
//! [`StopTokens`] carry it into the run (no new request; then stop waiting for replies); a
//! key's `KeyStop` is the switch that stops every request of one key (refused, or told to wait
//! too long); a `StopCause` says which of the two kept a request from being sent.
//!
//! - [`session`]: one key's client, nonces, pacer, window and halt; every request goes through it.
//! - [`account`]: one account's cancel-alls, then the listing that proves it flat (with
//!   `--snapshot`, the listing before them too), with its retries.
//! - [`pacer`]: the key's pace, and how it follows the exchange's push-back.
//! - [`window`]: how many requests of the key may be in flight.
//! - [`departures`]: requests of an increasing-mode key leave in nonce order.
//! - [`discovery`]: the group's accounts, as `/v1/account/list` pages them.
//! - [`progress`]: live counts for the progress display.
//! - [`resume`]: which earlier run `--resume` finishes, and with what.

mod account;
mod departures;
mod discovery;
mod pacer;
pub mod progress;
mod resume;
mod session;
mod window;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountEntry;
use crate::client::{ClientOptions, Clock, Credentials, ExchangeClient, NonceSource};
use crate::config::{DEFAULT_GROUP, SweepConfig};
use crate::error::Error;
use crate::exit;
pub use crate::exit::StopSignal;
use crate::lock::RunLock;
use crate::store::{self, NewRun, NewRunAccount, Resume, RunTotals, Settle, Store};

pub use progress::{Progress, ProgressCounts};
pub use resume::{ResumePlan, ResumeRequest, resume_target};
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
    /// The run's end could not be written to the database (which reads `running` until the
    /// next run on it marks it died): status and stop reason here are this process's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record_unwritten: bool,
    pub exit_code: i32,
}

/// Which accounts a sweep works on.
pub enum Target {
    /// A new run over the CSV's accounts (disabled ones are recorded as skipped).
    New(Vec<AccountEntry>),
    /// A new run over every open exchange account the group lists (`--all-accounts`), but these.
    Discover { excluded: BTreeSet<String> },
    /// Finishing an earlier run: these of its accounts, under its run id.
    Resume { run_id: i64, accounts: Vec<String> },
}

impl Target {
    /// How many accounts it sweeps, if known before anything is sent.
    pub fn to_sweep(&self) -> Option<usize> {
        match self {
            Target::New(entries) => Some(entries.iter().filter(|a| a.enabled).count()),
            Target::Discover { .. } => None,
            Target::Resume { accounts, .. } => Some(accounts.len()),
        }
    }
}

/// How the process is told to stop: the first signal stops new requests, the grace period or a
/// second signal stops waiting for the ones in flight.
#[derive(Clone, Default)]
pub struct StopTokens {
    pub shutdown: CancellationToken,
    pub hard_stop: CancellationToken,
}

/// Checks what can be checked without the network: something to sweep, and a key that can
/// address it (a master key names each account; an account key acts on its one account).
pub fn plan(credentials: &Credentials, target: &Target, config: &SweepConfig) -> Result<(), Error> {
    let Some(enabled) = target.to_sweep() else {
        if credentials.is_master() {
            return Ok(());
        }
        return Err(Error::Config(
            "--all-accounts lists the group's accounts, which only the group's master key (master-...) can do"
                .into(),
        ));
    };
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

/// The group's accounts as `gemini-sweep accounts` lists them.
pub struct GroupListing {
    /// In the exchange's order, nicknames screened: an entry that breaks the nickname rule has
    /// its text escaped and `unusable` set.
    pub accounts: Vec<crate::client::ListedAccount>,
    /// Why the listing may be missing accounts; `None` when the pages prove it whole.
    pub doubt: Option<String>,
}

/// Lists the group's accounts outside any run (`gemini-sweep accounts`): the same locks, nonce
/// mark and recorded requests as a run, and nothing swept.
pub async fn list_accounts(
    config: SweepConfig,
    credentials: Credentials,
    clock: Arc<dyn Clock>,
    stopping: StopTokens,
) -> Result<GroupListing, Error> {
    if !credentials.is_master() {
        return Err(Error::Config(
            "listing the group's accounts needs the group's master key (master-...)".into(),
        ));
    }
    let fingerprint = credentials.fingerprint();
    let _lock = RunLock::acquire(
        &config.db,
        config.lock_dir.as_deref(),
        std::slice::from_ref(&fingerprint),
    )?;
    let (store, writer) = store::open(&config.db)?;
    let listing = async {
        store.take_over_dead_runs().await?;
        let session = open_session(&config, &store, credentials, clock, 1).await?;
        let run = session::RunContext {
            store: store.clone(),
            run_id: None,
            invocation_id: None,
            shutdown: stopping.shutdown.clone(),
            hard_stop: stopping.hard_stop.clone(),
            progress: Arc::new(Progress::default()),
        };
        let retry = session::Retry {
            max_attempts: config.max_attempts,
            base: config.retry_base,
        };
        let listing = discovery::list_group(&session, &run, retry).await?;
        // The listing's record is queued: it must be on disk before the listing is used.
        store.flush().await?;
        Ok::<_, Error>((listing, session.halt.reason()))
    }
    .await;
    drop(store);
    writer.join();
    match listing? {
        (discovery::Listing::Listed { accounts, doubt }, _) => Ok(GroupListing { accounts, doubt }),
        (discovery::Listing::Failed(why), _) => Err(Error::Unavailable(format!(
            "the exchange did not list the group's accounts: {why}"
        ))),
        (discovery::Listing::Stopped(_), Some(halt)) if halt.refused => {
            Err(Error::Refused(halt.message))
        }
        (discovery::Listing::Stopped(_), Some(halt)) => Err(Error::Unavailable(halt.message)),
        (discovery::Listing::Stopped(_), None) => Err(Error::Unavailable(
            "interrupted before the accounts were listed".into(),
        )),
    }
}

/// The accounts to sweep, by name only: the entries themselves move into the run's rows, so a
/// large CSV is not held twice.
fn enabled_names(entries: &[AccountEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.enabled)
        .map(|e| e.account.clone())
        .collect()
}

fn new_run_account(a: AccountEntry) -> NewRunAccount {
    NewRunAccount {
        account: a.account,
        csv_line: a.line,
        note: a.note,
        enabled: a.enabled,
    }
}

/// One group's sweep in a job: its settings, its key and its accounts.
pub struct GroupJob {
    pub config: SweepConfig,
    pub credentials: Credentials,
    pub target: Target,
}

/// Runs a whole sweep. Inputs must already be validated (see [`plan`]).
pub async fn run(
    config: SweepConfig,
    credentials: Credentials,
    target: Target,
    clock: Arc<dyn Clock>,
    stopping: StopTokens,
    stop_signal: impl Fn() -> Option<StopSignal> + Send + Sync + 'static,
) -> Result<SweepSummary, Error> {
    let job = GroupJob {
        config,
        credentials,
        target,
    };
    let progress = Arc::new(Progress::default());
    let mut results = run_groups(vec![job], clock, stopping, progress, stop_signal).await?;
    results.pop().expect("one job, one result")
}

/// Sweeps several groups at once, each under its own key session (pacer, nonces, window, halt)
/// and its own run, into one database. One group's refused key or failure stops that group only;
/// a stop signal stops them all. Every job must name the same database and lock directory.
///
/// The outer error is the job's (locks, database); the inner ones are each group's.
pub async fn run_groups(
    jobs: Vec<GroupJob>,
    clock: Arc<dyn Clock>,
    stopping: StopTokens,
    progress: Arc<Progress>,
    stop_signal: impl Fn() -> Option<StopSignal> + Send + Sync + 'static,
) -> Result<Vec<Result<SweepSummary, Error>>, Error> {
    let started = Instant::now();
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let (db, lock_dir) = (first.config.db.clone(), first.config.lock_dir.clone());
    for job in &jobs {
        assert!(
            job.config.db == db && job.config.lock_dir == lock_dir,
            "the groups of one job share the database and the lock directory"
        );
        plan(&job.credentials, &job.target, &job.config)?;
    }
    let fingerprints: Vec<String> = jobs.iter().map(|j| j.credentials.fingerprint()).collect();
    let lock = Arc::new(RunLock::acquire(&db, lock_dir.as_deref(), &fingerprints)?);
    let (store, writer) = store::open(&db)?;
    let stop_signal: StopSignalFn = Arc::new(stop_signal);
    let swept = async {
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
        let named = jobs.len() > 1 || jobs.iter().any(|j| j.config.group != DEFAULT_GROUP);
        let tasks: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let span = if named {
                    tracing::info_span!("group", name = %job.config.group)
                } else {
                    tracing::Span::none()
                };
                let sweep = sweep_with_store(
                    lock.clone(),
                    job,
                    clock.clone(),
                    stopping.clone(),
                    progress.clone(),
                    stop_signal.clone(),
                    store.clone(),
                );
                // A task per group, so that groups use both cores.
                tokio::spawn(tracing::Instrument::instrument(sweep, span))
            })
            .collect();
        let mut results = Vec::new();
        for task in futures::future::join_all(tasks).await {
            results.push(task.unwrap_or_else(|e| {
                Err(Error::Internal(format!("a group's sweep panicked: {e}")))
            }));
        }
        Ok::<_, Error>(results)
    }
    .await;
    // The writer flushes and checkpoints once every handle is gone.
    drop(store);
    writer.join();
    let swept = swept?;

    let conn = store::open_read_only(&db)?;
    Ok(swept
        .into_iter()
        .map(|result| {
            let swept = result?;
            let mut totals = store::run_totals(&conn, swept.run_id).map_err(|e| Error::Store {
                path: db.clone(),
                reason: e.to_string(),
            })?;
            if let Some(reason) = &swept.unrecorded {
                totals.status = store::RunStatus::Aborted;
                totals.stop_reason = Some(reason.clone());
            }
            Ok(SweepSummary {
                totals,
                invocation_id: Some(swept.invocation_id),
                wall_ms: swept.wall.min(started.elapsed()).as_millis() as u64,
                db: db.display().to_string(),
                nothing_to_resume: false,
                record_unwritten: swept.unrecorded.is_some(),
                exit_code: swept.exit_code,
            })
        })
        .collect())
}

/// Sweeps the accounts: flat first, proof after. Every account's cancel-all goes out at the
/// key's pace, `concurrency` accounts at a time; each account cancelled goes on to the listing
/// that proves it, which the session lets through only when no cancel-all is waiting. With
/// `--snapshot`, each account is swept start to end instead (its listing before its cancel-all).
///
/// Every account under way is let finish (a failed write stops the key, so they finish quickly)
/// rather than dropped, so that what they sent is settled with the run; accounts not yet started
/// once the run is aborting are not started. Returns each account's outcome, `None` for one
/// never started.
async fn sweep_accounts(
    sweeper: &account::AccountSweeper<'_>,
    to_sweep: Vec<String>,
    config: &SweepConfig,
    progress: &Arc<Progress>,
    aborting: &CancellationToken,
    abort: &(dyn Fn(&Error) + Sync),
) -> Vec<Option<Result<store::AccountStatus, Error>>> {
    let concurrency = config.concurrency as usize;
    let done = |status: &Result<store::AccountStatus, Error>| match status {
        Ok(status) => progress.account_done(*status),
        Err(e) => abort(e),
    };
    if config.snapshot {
        // Owned names: a future borrowing from the closure's argument is not Send-able to a task.
        return futures::stream::iter(to_sweep)
            .map(|account| async move {
                if aborting.is_cancelled() {
                    return None;
                }
                let status = sweeper.sweep(&account).await;
                done(&status);
                Some(status)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    }
    // Unbounded: a cancel-all never waits for a proof to make room.
    let (to_prove, proofs) = tokio::sync::mpsc::unbounded_channel::<account::Cancelled>();
    let cancels = async move {
        futures::stream::iter(to_sweep)
            .map(|account| async move {
                if aborting.is_cancelled() {
                    return None;
                }
                match sweeper.cancel(&account).await {
                    Ok(account::AfterCancel::ToProve(cancelled)) => Some(Ok(cancelled)),
                    Ok(account::AfterCancel::Done(status)) => {
                        done(&Ok(status));
                        Some(Err(Ok(status)))
                    }
                    Err(e) => {
                        abort(&e);
                        Some(Err(Err(e)))
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
            let status = sweeper.prove(cancelled).await;
            done(&status);
            Some(status)
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

/// The key's session: its nonces continue from the highest the database has recorded for it.
async fn open_session(
    config: &SweepConfig,
    store: &Store,
    credentials: Credentials,
    clock: Arc<dyn Clock>,
    concurrency: usize,
) -> Result<session::KeySession, Error> {
    let high_water = store.nonce_high_water(&credentials.fingerprint()).await?;
    let nonces = Arc::new(NonceSource::new(config.nonce_mode, clock, high_water));
    if let Some(mark) = nonces.ignored_mark_us() {
        let ahead = mark.saturating_sub(nonces.now_us()) as f64 / 1e6;
        tracing::warn!(
            key = %credentials.fingerprint(),
            mark = %crate::client::Nonce { value_us: mark, mode: config.nonce_mode },
            "the database's nonce mark for this time-mode key is {ahead:.0} s ahead of this machine's clock, beyond the exchange's {} s window (a machine with a clock running ahead used the key?); nonces start from the clock instead. If this machine's clock is the wrong one, the exchange will refuse them: fix it (NTP)",
            crate::client::nonce::TIME_WINDOW_US / 1_000_000
        );
    }
    let client = ExchangeClient::new(
        &ClientOptions {
            base_url: config.base_url(),
            timeout: config.timeout,
            proxy: config.proxy_url(),
        },
        credentials,
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(session::KeySession::new(
        client,
        nonces,
        config.rate,
        config.burst,
        concurrency,
    ))
}

type StopSignalFn = Arc<dyn Fn() -> Option<StopSignal> + Send + Sync>;

/// One group's run, start to settled: its run id, invocation id, exit code and how long it took.
async fn sweep_with_store(
    lock: Arc<RunLock>,
    job: GroupJob,
    clock: Arc<dyn Clock>,
    stopping: StopTokens,
    progress: Arc<Progress>,
    stop_signal: StopSignalFn,
    store: Store,
) -> Result<Swept, Error> {
    let started = Instant::now();
    let GroupJob {
        config,
        credentials,
        target,
    } = job;
    let config = &config;
    let session = open_session(
        config,
        &store,
        credentials,
        clock,
        config.concurrency as usize,
    )
    .await?;
    let fingerprint = session.fingerprint.to_string();

    let options_json = serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?;
    let new_run = |accounts: Vec<AccountEntry>| NewRun {
        base_url: config.base_url.clone(),
        key_fingerprint: fingerprint.clone(),
        group_name: config.group.clone(),
        options_json: options_json.clone(),
        verify: config.verify,
        accounts: accounts.into_iter().map(new_run_account).collect(),
    };
    let mut discover = None;
    let (run_id, invocation_id, to_sweep, resuming) = match target {
        Target::Discover { excluded } => {
            let (run_id, invocation_id) = store.begin_run(new_run(Vec::new())).await?;
            discover = Some(excluded);
            (run_id, invocation_id, Vec::new(), false)
        }
        Target::New(accounts) => {
            let enabled = enabled_names(&accounts);
            let (run_id, invocation_id) = store.begin_run(new_run(accounts)).await?;
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
    lock.set_run(Some(&fingerprint), Some(run_id));

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
    // The run's own hard stop: a signal's (the parent) reaches it, and an abort's reaches no
    // other group of the job.
    let hard_stop = stopping.hard_stop.child_token();
    // A write that fails stops the key (nothing may leave without its row); requests already
    // recorded and sent get the grace period to come back, then are abandoned.
    let aborting = CancellationToken::new();
    let abort_timer = {
        let (aborting, hard_stop, grace) = (aborting.clone(), hard_stop.clone(), config.grace);
        tokio::spawn(async move {
            aborting.cancelled().await;
            tokio::time::sleep(grace).await;
            hard_stop.cancel();
        })
    };
    let run = session::RunContext {
        store: store.clone(),
        run_id: Some(run_id),
        invocation_id: Some(invocation_id),
        shutdown: stopping.shutdown.clone(),
        hard_stop: hard_stop.clone(),
        progress: progress.clone(),
    };
    let retry = session::Retry {
        max_attempts: config.max_attempts,
        base: config.retry_base,
    };
    let abort = |e: &Error| {
        if !aborting.is_cancelled() {
            let why = match e {
                Error::Store { .. } => {
                    format!("aborted: the audit trail could not be written ({e})")
                }
                _ => format!("aborted: {e}"),
            };
            session.halt.trigger(false, why);
            aborting.cancel();
        }
    };
    let mut forced = None;
    let mut discovery_failed = None;
    let mut failure: Option<Error> = None;
    let to_sweep = match discover {
        None => to_sweep,
        Some(excluded) => match discovery::list_group(&session, &run, retry).await {
            Ok(discovery::Listing::Listed {
                accounts: listed,
                doubt,
            }) => {
                let entries = crate::accounts::from_listing(&listed, &excluded);
                // An open exchange account the run cannot address may hold orders: the run
                // cannot say the group is clean.
                let unaddressable = listed
                    .iter()
                    .filter(|a| a.unusable.is_some() && a.kind == "exchange" && a.status == "open")
                    .count();
                let invalid = listed.iter().filter(|a| a.unusable.is_some()).count();
                drop(listed);
                let mut notes = Vec::new();
                if let Some(doubt) = &doubt {
                    tracing::warn!(
                        run_id,
                        listed = entries.len(),
                        "the group's listing may be incomplete ({doubt}); sweeping the {} accounts listed, and the run cannot end completed",
                        entries.len()
                    );
                    notes.push(format!(
                        "the group's listing may be incomplete ({} accounts listed): {doubt}",
                        entries.len()
                    ));
                }
                if invalid > 0 {
                    tracing::warn!(
                        run_id,
                        invalid,
                        unaddressable,
                        "the exchange listed {invalid} accounts whose nickname breaks the nickname rule; recorded as skipped, never sent"
                    );
                }
                if unaddressable > 0 {
                    notes.push(format!(
                        "{unaddressable} open exchange accounts were listed with a nickname that cannot be sent (see the skipped accounts); their orders, if any, were not cancelled"
                    ));
                }
                let note = (!notes.is_empty()).then(|| notes.join("; "));
                let recorded = store.record_listing(run_id, doubt.is_some(), note).await;
                tracing::info!(
                    run_id,
                    listed = entries.len(),
                    to_sweep = entries.iter().filter(|e| e.enabled).count(),
                    "the group's accounts, as the exchange lists them"
                );
                let enabled = enabled_names(&entries);
                let added = match recorded {
                    Ok(()) => {
                        store
                            .add_accounts(
                                run_id,
                                invocation_id,
                                entries.into_iter().map(new_run_account).collect(),
                                config.verify,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                match added {
                    Ok(()) => enabled,
                    Err(e) => {
                        abort(&e);
                        failure = Some(e);
                        Vec::new()
                    }
                }
            }
            Ok(discovery::Listing::Failed(why)) => {
                forced = Some(store::RunStatus::Incomplete);
                discovery_failed = Some(format!("could not list the group's accounts: {why}"));
                Vec::new()
            }
            Ok(discovery::Listing::Stopped(session::StopCause::Signal)) => {
                forced = Some(store::RunStatus::Interrupted);
                Vec::new()
            }
            Ok(discovery::Listing::Stopped(session::StopCause::Key)) => Vec::new(),
            Err(e) => {
                abort(&e);
                failure = Some(e);
                Vec::new()
            }
        },
    };
    let sweeper = account::AccountSweeper {
        config,
        session: &session,
        run: &run,
        resuming,
    };
    let sweeper = &sweeper;
    progress.add_accounts(to_sweep.len());
    let progress = &progress;
    let results = sweep_accounts(sweeper, to_sweep, config, progress, &aborting, &abort).await;
    grace_timer.abort();
    abort_timer.abort();
    for result in results.into_iter().flatten() {
        if let Err(e) = result
            && failure.is_none()
        {
            failure = Some(e);
        }
    }

    if failure.is_none() {
        // A reply record queued without waiting may have failed since; settling reads it too.
        failure = store.write_failure();
    }
    if let Some(e) = &failure {
        tracing::error!(run_id, error = %e, "sweep aborted");
    }
    let halt = session.halt.reason();
    let signal = stop_signal();
    let stop_reason = match (&halt, signal) {
        (Some(h), _) => Some(h.message.clone()),
        (None, _) if discovery_failed.is_some() => discovery_failed,
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
            aborted: failure.is_some(),
            refused: halt.as_ref().is_some_and(|h| h.refused),
            forced,
            stop_reason,
            signal,
        })
        .await;
    // The run started, so it has its summary whatever happened: an aborted run reads its
    // status (exit 3) from the record like any other, and a record that could not be written
    // is said so in the summary.
    let (status, exit_code) = match settled {
        Ok(settled) => settled,
        Err(e) => {
            tracing::error!(run_id, error = %e, "the run's end could not be recorded");
            let reason = match &failure {
                Some(first) => format!(
                    "aborted: the audit trail could not be written ({first}), and the run's end could not be recorded either ({e})"
                ),
                None => format!("aborted: the run's end could not be recorded ({e})"),
            };
            return Ok(Swept {
                run_id,
                invocation_id,
                exit_code: exit::INTERNAL,
                wall: started.elapsed(),
                unrecorded: Some(reason),
            });
        }
    };
    tracing::info!(
        run_id,
        status = status.as_str(),
        final_rate = session.pacer.current_rate(),
        final_window = session.window.size(),
        "sweep finished"
    );
    Ok(Swept {
        run_id,
        invocation_id,
        exit_code,
        wall: started.elapsed(),
        unrecorded: None,
    })
}

/// How one group's run ended, for its summary.
struct Swept {
    run_id: i64,
    invocation_id: i64,
    exit_code: i32,
    wall: std::time::Duration,
    /// Set when the run's end could not be written: why, for the summary (the database still
    /// reads `running` until the next run on it marks the run died).
    unrecorded: Option<String>,
}
