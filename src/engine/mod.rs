//! The sweep: plan, one dispatcher per key (its queue, pace, in-flight limit, nonces and
//! write-ahead rows), one flow per account, everything recorded, the run settled.
//!
//! Stopping has one name per thing that stops: a [`StopSignal`] is the OS signal that came;
//! [`StopTokens`] carry it into the run (no new request; then stop waiting for replies); a
//! key's `KeyStop` is the switch that stops every request of one key (refused, unreachable, told
//! to wait too long, or the audit trail failed); a `StopCause` says which of the two kept a
//! request from being sent.
//!
//! - [`job`]: what a job is made of (groups, targets, stop tokens) and what it reports.
//! - [`group`]: one group's run: begin, discover, sweep, settle.
//! - [`fan_out`]: flat first: every account's cancel-all, then the listings that prove them.
//! - [`hold`]: `--hold`: the swept accounts listed in turn, and cancelled again, after the sweep.
//! - [`account`]: one account's cancel-alls, then the listing that proves it flat (with
//!   `--snapshot`, the listing before them too), with its retries.
//! - [`key`]: what callers hold of a key: its requests, and why it stopped.
//! - [`retry`]: how a call survives what is transient: back-off, attempts, what is final.
//! - [`dispatch`]: the key's one send path: queue, pace, in-flight limit, nonce, write-ahead row,
//!   hand-off, replies.
//! - [`pace`]: the key's pace (governor) and how it follows the exchange's push-back.
//! - [`lessons`]: what a reply teaches the dispatcher about its key.
//! - [`discovery`]: the group's accounts, as `/v1/account/list` pages them.
//! - [`progress`]: live counts for the progress display.
//! - [`resume`]: which earlier run `--resume` finishes, and with what.

mod account;
mod discovery;
mod dispatch;
mod fan_out;
mod group;
mod hold;
mod job;
mod key;
mod lessons;
mod pace;
pub mod progress;
mod recover;
mod resume;
mod retry;

use std::sync::Arc;
use std::time::Instant;

use crate::client::{Clock, Credentials};
use crate::config::{DEFAULT_GROUP, SweepConfig};
use crate::error::Error;
use crate::exit::KeyHalt;
pub use crate::exit::StopSignal;
use crate::lock::RunLock;
use crate::store;

pub use hold::cycle_secs as hold_cycle_secs;
pub use job::{GroupJob, StopTokens, SweepSummary, Target};
pub use key::MAX_RETRY_AFTER;
pub use progress::{Progress, ProgressCounts};
pub use resume::{ResumePlan, ResumeRequest, resume_target};

/// Checks what can be checked without the network: something to sweep, and a key that can
/// address it (a master key names each account; an account key acts on its one account).
pub fn plan(credentials: &Credentials, target: &Target, config: &SweepConfig) -> Result<(), Error> {
    if !config.hold.is_zero() && !config.verify {
        return Err(Error::Usage(
            "--hold keeps listing the swept accounts to catch new orders, and --no-verify turns those listings off; drop one of them".into(),
        ));
    }
    let Some(enabled) = target.to_sweep() else {
        if credentials.is_master() {
            return Ok(());
        }
        return Err(Error::Usage(
            "--all-accounts lists the group's accounts, which only the group's master key (master-...) can do"
                .into(),
        ));
    };
    if enabled == 0
        && let Target::New(_) = target
    {
        return Err(Error::Usage(format!(
            "{}: every account is disabled (enabled=false); nothing to sweep",
            config.accounts_file.display()
        )));
    }
    if credentials.is_master() || enabled <= 1 {
        return Ok(());
    }
    Err(Error::Usage(format!(
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
        return Err(Error::Usage(
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
        let (client, nonces) = group::open_key(&config, &store, credentials, &clock).await?;
        let run = dispatch::RunContext {
            store: store.clone(),
            run_id: None,
            invocation_id: None,
            shutdown: stopping.shutdown.clone(),
            hard_stop: stopping.hard_stop.clone(),
            progress: Arc::new(Progress::default()),
        };
        let limits = dispatch::KeyConfig {
            rate: config.rate,
            burst: config.burst,
            concurrency: 1,
        };
        let (key, dispatcher) = dispatch::start(client, nonces, limits, run);
        let retry = retry::Retry {
            max_attempts: config.max_attempts,
            base: config.retry_base,
        };
        let listing = discovery::list_group(&key, retry).await;
        let halt = key.halt.reason();
        drop(key);
        let _ = dispatcher.await;
        // The listing's record is queued: it must be on disk before the listing is used.
        store.flush().await?;
        Ok::<_, Error>((listing?, halt))
    }
    .await;
    drop(store);
    writer.join();
    match listing? {
        (discovery::Listing::Listed { accounts, doubt }, _) => Ok(GroupListing { accounts, doubt }),
        (discovery::Listing::Failed(why), _) => Err(Error::Unavailable(format!(
            "the exchange did not list the group's accounts: {why}"
        ))),
        (discovery::Listing::Stopped(_), Some(halt)) if halt.kind == KeyHalt::Refused => {
            Err(Error::Refused(halt.message))
        }
        (discovery::Listing::Stopped(_), Some(halt)) => Err(Error::Unavailable(halt.message)),
        (discovery::Listing::Stopped(_), None) => Err(Error::Unavailable(
            "interrupted before the accounts were listed".into(),
        )),
    }
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
    let shared = group::Shared {
        lock,
        clock,
        stopping,
        progress,
        stop_signal: Arc::new(stop_signal),
        store: store.clone(),
    };
    let swept = sweep_groups(jobs, &shared).await;
    // The writer flushes and checkpoints once every handle is gone.
    drop(shared);
    drop(store);
    writer.join();
    let swept = swept?;

    let conn = store::open_read_only(&db)?;
    Ok(swept
        .into_iter()
        .map(|result| {
            let swept = result?;
            let mut totals =
                store::run_totals(&conn, swept.run_id).map_err(|e| store::store_error(&db, e))?;
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

/// Every group at once, each its own run under its own key, on this one task: the dispatchers
/// and requests are tasks of their own, and a group waits on the network, not on the CPU.
async fn sweep_groups(
    jobs: Vec<GroupJob>,
    shared: &group::Shared,
) -> Result<Vec<Result<group::Swept, Error>>, Error> {
    // Holding the database's lock, any run still marked running belongs to a dead process.
    for dead in shared.store.take_over_dead_runs().await? {
        tracing::warn!(
            run_id = dead.run_id,
            pid = dead.pid,
            abandoned_attempts = dead.abandoned_attempts,
            "run {} was left running by pid {}, which is gone; marked died, taking it over. {} of its requests left without their reply being recorded (now `abandoned`): what they cancelled, if anything, no reply reports: a resume reads those accounts' order history into unreported_cancels once each is proven flat",
            dead.run_id,
            dead.pid,
            dead.abandoned_attempts
        );
    }
    let named = jobs.len() > 1 || jobs.iter().any(|j| j.config.group != DEFAULT_GROUP);
    let groups = jobs.into_iter().map(|job| {
        let span = if named {
            tracing::info_span!("group", name = %job.config.group)
        } else {
            tracing::Span::none()
        };
        let sweep = tracing::Instrument::instrument(group::sweep_group(job, shared), span);
        // A panic is a bug; it ends its own group, not the others.
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(sweep))
    });
    let swept = futures::future::join_all(groups).await;
    Ok(swept
        .into_iter()
        .map(|result| result.unwrap_or_else(|_| Err(Error::Bug("a group's sweep panicked"))))
        .collect())
}
