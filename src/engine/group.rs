//! One group's run, start to settled, in four steps: [`GroupRun::begin`] (the run's record and
//! the key's dispatcher), [`GroupRun::discover`] (with `--all-accounts`), [`GroupRun::sweep`]
//! (flat first) and [`GroupRun::settle`] (status, stop reason, exit code).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::account::AccountSweeper;
use super::dispatch::{self, KeyConfig, KeyEnd, RunContext};
use super::job::{GroupJob, StopTokens, Target};
use super::key::{KeyHalt, KeyHandle, StopCause};
use super::progress::Progress;
use super::retry::Retry;
use super::{discovery, fan_out, hold};
use crate::accounts::AccountEntry;
use crate::client::{ClientOptions, Clock, Credentials, ExchangeClient, NonceMode, NonceSource};
use crate::config::SweepConfig;
use crate::error::Error;
use crate::exit::Exit;
use crate::exit::StopSignal;
use crate::lock::RunLock;
use crate::store::{NewRun, NewRunAccount, Resume, RunStatus, Settle, Store};

/// What every group of a job shares.
pub(super) struct Shared {
    pub lock: Arc<RunLock>,
    pub clock: Arc<dyn Clock>,
    pub stopping: StopTokens,
    pub progress: Arc<Progress>,
    pub stop_signal: Arc<dyn Fn() -> Option<StopSignal> + Send + Sync>,
    pub store: Store,
}

/// How one group's run ended, for its summary.
pub(super) struct Swept {
    pub run_id: i64,
    pub invocation_id: i64,
    pub exit_code: Exit,
    pub wall: Duration,
    /// Set when the run's end could not be written: why, for the summary (the database still
    /// reads `running` until the next run on it marks the run died).
    pub unrecorded: Option<String>,
}

/// One group's run, start to settled.
pub(super) async fn sweep_group(job: GroupJob, shared: &Shared) -> Result<Swept, Error> {
    let started = Instant::now();
    let (mut run, target) = GroupRun::begin(job, shared).await?;
    let timers = run.start_timers(&shared.stopping);
    let to_sweep = run.discover(target).await;
    run.sweep(to_sweep).await;
    run.hold().await;
    for timer in timers {
        timer.abort();
    }
    Ok(run.settle(started, (shared.stop_signal)()).await)
}

/// Who a run sweeps, once it has begun.
enum Accounts {
    Named(Vec<String>),
    /// The group's listing, but these.
    Discover(BTreeSet<String>),
}

struct GroupRun {
    config: SweepConfig,
    store: Store,
    key: KeyHandle,
    dispatcher: JoinHandle<KeyEnd>,
    nonce_mode: NonceMode,
    run_id: i64,
    invocation_id: i64,
    resuming: bool,
    progress: Arc<Progress>,
    /// The run's own hard stop: a signal's reaches it; an abort's reaches no other group.
    hard_stop: CancellationToken,
    /// Cancelled when a write fails: the key stops, in-flight requests get the grace period.
    aborting: CancellationToken,
    /// A status the accounts cannot tell, and why.
    forced: Option<RunStatus>,
    discovery_failed: Option<String>,
    failure: Option<Error>,
    /// What the hold did, if there was one.
    held: Option<hold::Held>,
}

impl GroupRun {
    /// Records the run (or the resume) and starts the key's dispatcher, its nonces continuing
    /// from the highest the database has recorded for the key.
    async fn begin(job: GroupJob, shared: &Shared) -> Result<(GroupRun, Accounts), Error> {
        let GroupJob {
            config,
            credentials,
            target,
        } = job;
        let fingerprint = credentials.fingerprint();
        let (client, nonces) = open_key(&config, &shared.store, credentials, &shared.clock).await?;
        let store = shared.store.clone();
        let (run_id, invocation_id, accounts, resuming) =
            begin_record(&config, &store, &fingerprint, target).await?;
        shared.lock.set_run(Some(&fingerprint), Some(run_id));
        let hard_stop = shared.stopping.hard_stop.child_token();
        let nonce_mode = nonces.mode();
        let (key, dispatcher) = dispatch::start(
            client,
            nonces,
            KeyConfig {
                rate: config.rate,
                burst: config.burst,
                concurrency: config.concurrency as usize,
            },
            RunContext {
                store: store.clone(),
                run_id: Some(run_id),
                invocation_id: Some(invocation_id),
                shutdown: shared.stopping.shutdown.clone(),
                hard_stop: hard_stop.clone(),
                progress: shared.progress.clone(),
            },
        );
        let named = match &accounts {
            Accounts::Named(names) => names.len(),
            Accounts::Discover(_) => 0,
        };
        tracing::info!(
            run_id,
            invocation_id,
            resuming,
            accounts = named,
            rate = config.rate,
            concurrency = config.concurrency,
            nonce_mode = config.nonce_mode.as_str(),
            key = %fingerprint,
            base_url = %config.base_url,
            "sweep started; at least {:.1} s at this rate",
            (named * config.calls_per_account()) as f64 / config.rate
        );
        let run = GroupRun {
            config,
            store,
            key,
            dispatcher,
            nonce_mode,
            run_id,
            invocation_id,
            resuming,
            progress: shared.progress.clone(),
            hard_stop,
            aborting: CancellationToken::new(),
            forced: None,
            discovery_failed: None,
            failure: None,
            held: None,
        };
        Ok((run, accounts))
    }

    /// After a stop signal, requests in flight get the grace period to finish; after a failed
    /// write, the same, for this run only. Then they are abandoned.
    fn start_timers(&self, stopping: &StopTokens) -> [JoinHandle<()>; 2] {
        let grace = self.config.grace;
        let stopping = stopping.clone();
        let signal = tokio::spawn(async move {
            stopping.shutdown.cancelled().await;
            tokio::select! {
                _ = tokio::time::sleep(grace) => {
                    tracing::warn!("grace period over: abandoning requests still in flight");
                    stopping.hard_stop.cancel();
                }
                _ = stopping.hard_stop.cancelled() => {}
            }
        });
        let (aborting, hard_stop) = (self.aborting.clone(), self.hard_stop.clone());
        let abort = tokio::spawn(async move {
            aborting.cancelled().await;
            tokio::time::sleep(grace).await;
            hard_stop.cancel();
        });
        [signal, abort]
    }

    /// Stops the key once the run must end: nothing may leave without its row.
    fn abort(&self, e: &Error) {
        if !self.aborting.is_cancelled() {
            let why = match e {
                Error::Store(_) => {
                    format!("aborted: the audit trail could not be written ({e})")
                }
                _ => format!("aborted: {e}"),
            };
            self.key.halt.trigger(KeyHalt::Aborted, why);
            self.aborting.cancel();
        }
    }

    fn retry(&self) -> Retry {
        Retry {
            max_attempts: self.config.max_attempts,
            base: self.config.retry_base,
        }
    }

    /// The accounts to sweep: named, or as the exchange lists the group.
    async fn discover(&mut self, accounts: Accounts) -> Vec<String> {
        let excluded = match accounts {
            Accounts::Named(names) => return names,
            Accounts::Discover(excluded) => excluded,
        };
        match discovery::list_group(&self.key, self.retry()).await {
            Ok(discovery::Listing::Listed { accounts, doubt }) => {
                match self.take_listing(accounts, doubt, &excluded).await {
                    Ok(names) => names,
                    Err(e) => self.fail(e),
                }
            }
            Ok(discovery::Listing::Failed(why)) => {
                self.forced = Some(RunStatus::Incomplete);
                self.discovery_failed = Some(format!("could not list the group's accounts: {why}"));
                Vec::new()
            }
            Ok(discovery::Listing::Stopped(StopCause::Signal)) => {
                self.forced = Some(RunStatus::Interrupted);
                Vec::new()
            }
            Ok(discovery::Listing::Stopped(StopCause::Key)) => Vec::new(),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: Error) -> Vec<String> {
        self.abort(&e);
        self.failure = Some(e);
        Vec::new()
    }

    /// Records the listing and its accounts in the run; returns the names to sweep.
    async fn take_listing(
        &self,
        listed: Vec<crate::client::ListedAccount>,
        doubt: Option<String>,
        excluded: &BTreeSet<String>,
    ) -> Result<Vec<String>, Error> {
        let run_id = self.run_id;
        let entries = crate::accounts::from_listing(&listed, excluded);
        // An open exchange account the run cannot address may hold orders: the run cannot say
        // the group is clean.
        let unaddressable = listed
            .iter()
            .filter(|a| a.unusable.is_some() && a.may_hold_orders())
            .count();
        let invalid = listed.iter().filter(|a| a.unusable.is_some()).count();
        drop(listed);
        let mut notes = Vec::new();
        if let Some(doubt) = &doubt {
            let n = entries.len();
            tracing::warn!(
                run_id,
                listed = n,
                "the group's listing may be incomplete ({doubt}); sweeping the {n} accounts listed, and the run cannot end completed"
            );
            notes.push(format!(
                "the group's listing may be incomplete ({n} accounts listed): {doubt}"
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
            notes.push(format!("{unaddressable} open exchange accounts were listed with a nickname that cannot be sent (see the skipped accounts); their orders, if any, were not cancelled"));
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        self.store
            .record_listing(run_id, doubt.is_some(), note)
            .await?;
        let names = enabled_names(&entries);
        tracing::info!(
            run_id,
            listed = entries.len(),
            to_sweep = names.len(),
            "the group's accounts, as the exchange lists them"
        );
        let rows = entries.into_iter().map(new_run_account).collect();
        self.store
            .add_accounts(run_id, self.invocation_id, rows, self.config.verify)
            .await?;
        Ok(names)
    }

    fn sweeper(&self, resuming: bool) -> AccountSweeper<'_> {
        AccountSweeper {
            config: &self.config,
            key: &self.key,
            store: &self.store,
            run_id: self.run_id,
            progress: &self.progress,
            resuming,
        }
    }

    /// Every account, flat first; the first error of any stops the run.
    async fn sweep(&mut self, to_sweep: Vec<String>) {
        let calls_each = self.config.calls_per_account();
        self.progress.add_accounts(to_sweep.len(), calls_each);
        let sweeper = self.sweeper(self.resuming);
        let abort = |e: &Error| self.abort(e);
        let results = fan_out::sweep_accounts(&sweeper, to_sweep, &self.aborting, &abort).await;
        for (_, outcome) in results.into_iter().flatten() {
            if let Err(e) = outcome
                && self.failure.is_none()
            {
                self.failure = Some(e);
            }
        }
    }

    /// With `--hold`: keeps every account the run cancelled flat until the hold is over, unless
    /// the run is stopping already. The run's record says which: a resume holds those an earlier
    /// process swept too, as that process may have died in its hold.
    async fn hold(&mut self) {
        let stopping = self.failure.is_some()
            || self.key.halt.is_halted()
            || self.hard_stop.is_cancelled()
            || self.key.stopping();
        if self.config.hold.is_zero() || stopping {
            return;
        }
        let accounts = match self.store.cancelled_accounts(self.run_id).await {
            Ok(accounts) => accounts,
            Err(e) => {
                let e = Error::from(e);
                self.abort(&e);
                self.failure = Some(e);
                return;
            }
        };
        if accounts.is_empty() {
            return;
        }
        // Attempt numbers continue from the sweep's.
        let sweeper = self.sweeper(true);
        let until = tokio::time::Instant::now() + self.config.hold;
        match hold::hold(&sweeper, accounts, until).await {
            Ok(held) => self.held = Some(held),
            Err(e) => {
                self.abort(&e);
                self.failure = Some(e);
            }
        }
    }

    /// Lets the key's dispatcher finish, then records how the run ended.
    async fn settle(self, started: Instant, signal: Option<StopSignal>) -> Swept {
        let GroupRun {
            key,
            dispatcher,
            store,
            run_id,
            invocation_id,
            mut failure,
            ..
        } = self;
        let halt = key.halt.reason();
        drop(key);
        let end = dispatcher.await.ok();
        // A reply record queued without waiting may have failed since; settling reads it too.
        if failure.is_none() {
            failure = store.write_failure().map(Error::from);
        }
        if let Some(e) = &failure {
            tracing::error!(run_id, error = %e, "sweep aborted");
        }
        // A signal during the hold ends the hold, not the sweep, which was over by then.
        let interrupted = |name: &str| match self.held {
            Some(held) => format!(
                "the hold was ended early by {name} after {:.1} s",
                held.took.as_secs_f64()
            ),
            None => format!("interrupted by {name}"),
        };
        let stop_reason = match (&halt, signal) {
            (Some(h), _) => Some(h.message.clone()),
            (None, _) if self.discovery_failed.is_some() => self.discovery_failed.clone(),
            (None, Some(StopSignal::Interrupt)) => Some(interrupted("SIGINT")),
            (None, Some(StopSignal::Terminate)) => Some(interrupted("SIGTERM")),
            (None, None) => None,
        };
        if let Some(end) = &end
            && end.races > 10
            && self.nonce_mode == NonceMode::Increasing
        {
            tracing::warn!(
                races = end.races,
                "requests raced each other to the exchange and were refused (InvalidNonce) {} times; a key created with time-based nonces (--nonce-mode time) cannot race",
                end.races
            );
        }
        // The database decides the run's status from all its accounts (a resumed run's earlier
        // ones included), using the same reconciliation views the reports read.
        let settled = store
            .settle(Settle {
                run_id,
                invocation_id,
                aborted: failure.is_some(),
                halt: halt.as_ref().map(|h| h.kind),
                forced: self.forced,
                stop_reason,
                signal,
                hold: self.held.map(|h| (h.took, h.cycles)),
            })
            .await;
        let wall = started.elapsed();
        match settled {
            Ok((status, exit_code)) => {
                tracing::info!(
                    run_id,
                    status = status.as_str(),
                    final_rate = end.map(|e| e.final_rate),
                    final_in_flight = end.map(|e| e.final_limit),
                    "sweep finished"
                );
                Swept {
                    run_id,
                    invocation_id,
                    exit_code,
                    wall,
                    unrecorded: None,
                }
            }
            // The run started, so it has its summary whatever happened.
            Err(e) => {
                tracing::error!(run_id, error = %e, "the run's end could not be recorded");
                let reason = match &failure {
                    Some(first) => format!(
                        "aborted: the audit trail could not be written ({first}), and the run's end could not be recorded either ({e})"
                    ),
                    None => format!("aborted: the run's end could not be recorded ({e})"),
                };
                Swept {
                    run_id,
                    invocation_id,
                    exit_code: Exit::Internal,
                    wall,
                    unrecorded: Some(reason),
                }
            }
        }
    }
}

/// The key's client and nonce source; its nonces continue from the database's mark for it.
pub(super) async fn open_key(
    config: &SweepConfig,
    store: &Store,
    credentials: Credentials,
    clock: &Arc<dyn Clock>,
) -> Result<(ExchangeClient, NonceSource), Error> {
    let high_water = store.nonce_high_water(&credentials.fingerprint()).await?;
    let nonces = NonceSource::new(config.nonce_mode, clock.clone(), high_water);
    if let Some(mark) = nonces.ignored_mark_us() {
        let ahead = mark.saturating_sub(nonces.now_us()) as f64 / 1e6;
        tracing::warn!(
            key = %credentials.fingerprint(),
            mark = %crate::client::Nonce { value_us: mark, mode: config.nonce_mode },
            "the database's nonce mark for this time-mode key is {ahead:.0} s ahead of this machine's clock, beyond the exchange's {} s window (a machine with a clock running ahead used the key?); nonces start from the clock instead. If this machine's clock is the wrong one, the exchange will refuse them: fix it (NTP)",
            crate::client::nonce::TIME_WINDOW_US / 1_000_000
        );
    }
    let options = ClientOptions {
        base_url: config.base_url(),
        timeout: config.timeout,
        proxy: config.proxy_url(),
    };
    let client = ExchangeClient::new(&options, credentials)
        .map_err(|e| Error::internal("build the HTTP client", e))?;
    Ok((client, nonces))
}

/// Writes the run's start (or its resume's); returns its ids, whom it sweeps and whether it is
/// a resume.
async fn begin_record(
    config: &SweepConfig,
    store: &Store,
    fingerprint: &str,
    target: Target,
) -> Result<(i64, i64, Accounts, bool), Error> {
    let options_json = serde_json::to_string(config)
        .map_err(|e| Error::internal("write the run's options as JSON", e))?;
    let new_run = |accounts: Vec<AccountEntry>| NewRun {
        base_url: config.base_url.clone(),
        key_fingerprint: fingerprint.to_owned(),
        group_name: config.group.clone(),
        options_json: options_json.clone(),
        verify: config.verify,
        accounts: accounts.into_iter().map(new_run_account).collect(),
    };
    Ok(match target {
        Target::Discover { excluded } => {
            let (run_id, invocation_id) = store.begin_run(new_run(Vec::new())).await?;
            (run_id, invocation_id, Accounts::Discover(excluded), false)
        }
        Target::New(accounts) => {
            let enabled = enabled_names(&accounts);
            let (run_id, invocation_id) = store.begin_run(new_run(accounts)).await?;
            (run_id, invocation_id, Accounts::Named(enabled), false)
        }
        Target::Resume { run_id, accounts } => {
            let resume = Resume {
                run_id,
                base_url: config.base_url.clone(),
                options_json,
                verify: config.verify,
                accounts: accounts.clone(),
            };
            let invocation_id = store.begin_resume(resume).await?;
            (run_id, invocation_id, Accounts::Named(accounts), true)
        }
    })
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
