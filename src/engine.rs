//! The sweep: plan, fan out one cancel-all per account under the key's one rate limit, retry what
//! is transient, record everything.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use governor::{Jitter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountEntry;
use crate::client::nonce::PersistMark;
use crate::client::{
    ClientError, ClientOptions, Clock, Credentials, ExchangeClient, NonceSource, Outcome,
};
use crate::config::SweepConfig;
use crate::error::{Error, exit_code};
use crate::lock::RunLock;
use crate::store::{
    self, AccountStatus, NewRun, NewRunAccount, Phase, RunStatus, RunTotals, Store,
};

/// The longest a run of 429s pauses the whole key, and the longest any single back-off lasts.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// How many `InvalidNonce` answers one call absorbs before they count as failures. Races are
/// rare at the exchange's rates and frequent only when many requests leave within a millisecond;
/// a key whose nonces are really wrong (a time-mode clock 30 s off) still fails, just later.
const MAX_NONCE_RACES: u32 = 25;
const REASON_INVALID_NONCE: &str = "InvalidNonce";

/// What a finished sweep reports: the database's totals plus what only the process knows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepSummary {
    #[serde(flatten)]
    pub totals: RunTotals,
    pub wall_ms: u64,
    pub db: String,
    pub exit_code: i32,
}

/// The signal that stopped a run, if any; decides 130 versus 143.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

/// Everything the workers share.
struct Sweep {
    config: SweepConfig,
    client: ExchangeClient,
    store: Store,
    pacer: KeyPacer,
    run_id: i64,
    send_account: bool,
    /// A resumed run continues attempt numbers and keeps the first snapshot.
    resuming: bool,
    shutdown: CancellationToken,
    /// Cancelled when the grace period after a stop signal is over.
    hard_stop: CancellationToken,
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
    shutdown: CancellationToken,
    stop_signal: impl Fn() -> Option<StopSignal>,
) -> Result<SweepSummary, Error> {
    let started = Instant::now();
    plan(&credentials, &target, &config)?;
    let mut lock = RunLock::acquire(&config.db, &config.lock_dir, &credentials.fingerprint())?;
    let (store, writer) = store::open(&config.db)?;
    let result = sweep_with_store(
        &mut lock,
        &config,
        credentials,
        target,
        clock,
        shutdown,
        store,
    )
    .await;
    // The writer flushes and checkpoints once every handle is gone.
    writer.join();
    let (run_id, status) = result?;

    let conn = store::open_read_only(&config.db)?;
    let totals = store::run_totals(&conn, run_id).map_err(|e| Error::Store {
        path: config.db.clone(),
        reason: e.to_string(),
    })?;
    let exit_code = match status {
        RunStatus::Completed => exit_code::OK,
        RunStatus::Incomplete => exit_code::INCOMPLETE,
        RunStatus::Interrupted => match stop_signal() {
            Some(StopSignal::Terminate) => exit_code::SIGTERM,
            _ => exit_code::SIGINT,
        },
        RunStatus::Aborted => exit_code::INTERNAL,
    };
    Ok(SweepSummary {
        totals,
        wall_ms: started.elapsed().as_millis() as u64,
        db: config.db.display().to_string(),
        exit_code,
    })
}

async fn sweep_with_store(
    lock: &mut RunLock,
    config: &SweepConfig,
    credentials: Credentials,
    target: Target,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    store: Store,
) -> Result<(i64, RunStatus), Error> {
    // An account key acts on its own account and must not name it.
    let send_account = credentials.is_master();
    let fingerprint = credentials.fingerprint();
    let high_water = store.nonce_high_water(&fingerprint).await?;
    let persist: PersistMark = {
        let store = store.clone();
        let fingerprint = fingerprint.clone();
        Arc::new(move |mark| {
            let store = store.clone();
            let fingerprint = fingerprint.clone();
            Box::pin(async move {
                store
                    .raise_nonce_high_water(&fingerprint, mark)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    };
    let nonces = Arc::new(NonceSource::new(
        config.nonce_mode,
        clock,
        high_water,
        persist,
    ));
    let client = ExchangeClient::new(
        &ClientOptions {
            base_url: config.base_url(),
            timeout: config.timeout,
        },
        credentials,
        nonces,
    )
    .map_err(|e| Error::Internal(e.to_string()))?;

    let options_json = serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?;
    let (run_id, to_sweep, resuming) = match target {
        Target::New(accounts) => {
            let run_id = store
                .begin_run(NewRun {
                    base_url: &config.base_url,
                    key_fingerprint: &fingerprint,
                    options_json,
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
            (run_id, enabled, false)
        }
        Target::Resume { run_id, accounts } => {
            store
                .reopen_run(run_id, &config.base_url, options_json, &accounts)
                .await?;
            (run_id, accounts, true)
        }
    };
    lock.set_run(Some(run_id));

    tracing::info!(
        run_id,
        resuming,
        accounts = to_sweep.len(),
        rate = config.rate,
        concurrency = config.concurrency,
        key = %fingerprint,
        base_url = %config.base_url,
        "sweep started; at least {:.1} s at this rate",
        (to_sweep.len() * config.calls_per_account()) as f64 / config.rate
    );

    // After a stop signal, requests in flight get `grace` to finish; then they are abandoned.
    let hard_stop = CancellationToken::new();
    let grace_timer = {
        let (shutdown, hard_stop, grace) = (shutdown.clone(), hard_stop.clone(), config.grace);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            tracing::warn!("grace period over: abandoning requests still in flight");
            hard_stop.cancel();
        })
    };
    let sweep = Sweep {
        config: config.clone(),
        client,
        store: store.clone(),
        pacer: KeyPacer::new(config.rate, config.burst),
        run_id,
        send_account,
        resuming,
        shutdown: shutdown.clone(),
        hard_stop,
    };
    let outcome = futures::stream::iter(to_sweep.iter().map(Ok))
        .map_ok(|account| sweep.sweep_account(account))
        .try_buffer_unordered(config.concurrency as usize)
        .try_collect::<Vec<AccountStatus>>()
        .await;
    grace_timer.abort();
    // Abandoned requests (after the grace period) may still be in flight with their nonces, but
    // those are at or below the last issued one, so the exact mark stays safe.
    let last_nonce = sweep.client.nonces().last_issued().await;
    let nonce_settled = store
        .settle_nonce_high_water(&fingerprint, last_nonce)
        .await;

    if let Err(e) = &outcome {
        tracing::error!(run_id, error = %e, "sweep aborted");
    }
    // The database decides the run's status from all its accounts (a resumed run's earlier ones
    // included), using the same reconciliation views the reports read.
    let settled = store.settle_run(run_id, outcome.is_err()).await;
    outcome?;
    nonce_settled?;
    let status = settled?;
    tracing::info!(run_id, status = status.as_str(), "sweep finished");
    Ok((run_id, status))
}

/// How one call (with its retries) ended.
enum Step {
    Done(Outcome),
    Failed { permanent: bool },
    Stopped,
}

impl Sweep {
    /// Snapshot, cancel-all (again while orders are rejected), verify; record every attempt.
    async fn sweep_account(&self, account: &str) -> Result<AccountStatus, Error> {
        let (mut attempt_no, snapshot_taken) = if self.resuming {
            self.store.account_progress(self.run_id, account).await?
        } else {
            (0, false)
        };
        let mut last_error: Option<String> = None;

        if self.config.verify && !snapshot_taken {
            // A failed snapshot only costs the reconciliation its "before" side; cancelling
            // matters more, so the sweep goes on either way.
            let step = self
                .call(account, Phase::Snapshot, &mut attempt_no, &mut last_error)
                .await?;
            if let Step::Stopped = step {
                return self
                    .finish(account, AccountStatus::Interrupted, last_error)
                    .await;
            }
        }

        let mut reject_retries_left = self.config.reject_retries;
        // The status the account keeps if nothing more succeeds.
        let mut standing = AccountStatus::Failed;
        let mut permanent_failure = false;
        loop {
            match self
                .call(account, Phase::Cancel, &mut attempt_no, &mut last_error)
                .await?
            {
                Step::Done(Outcome::CancelAll { rejected, .. }) if !rejected.is_empty() => {
                    standing = AccountStatus::RejectsLeft;
                    last_error = Some(format!("{} orders refused cancellation", rejected.len()));
                    if reject_retries_left == 0 {
                        break;
                    }
                    reject_retries_left -= 1;
                }
                Step::Done(_) => {
                    standing = AccountStatus::Swept;
                    last_error = None;
                    break;
                }
                Step::Failed { permanent } => {
                    permanent_failure = permanent;
                    break;
                }
                Step::Stopped => {
                    return self
                        .finish(account, AccountStatus::Interrupted, last_error)
                        .await;
                }
            }
        }

        if !self.config.verify {
            return self.finish(account, standing, last_error).await;
        }
        // After a permanent failure the listing would fail the same way; not worth a request.
        if permanent_failure {
            return self.finish(account, standing, last_error).await;
        }
        let mut verify_error = None;
        match self
            .call(account, Phase::Verify, &mut attempt_no, &mut verify_error)
            .await?
        {
            Step::Done(Outcome::Orders(open)) => {
                if !open.is_empty() {
                    tracing::warn!(
                        account,
                        still_open = open.len(),
                        "orders still open after the sweep"
                    );
                    if standing == AccountStatus::Swept {
                        last_error =
                            Some(format!("{} orders still open after the sweep", open.len()));
                    }
                }
            }
            Step::Stopped => {
                return self
                    .finish(account, AccountStatus::Interrupted, last_error)
                    .await;
            }
            _ => {
                last_error = last_error.or(verify_error.map(|e| format!("verify: {e}")));
            }
        }
        self.finish(account, standing, last_error).await
    }

    async fn finish(
        &self,
        account: &str,
        status: AccountStatus,
        last_error: Option<String>,
    ) -> Result<AccountStatus, Error> {
        self.store
            .finish_account(self.run_id, account, status, last_error)
            .await?;
        Ok(status)
    }

    /// One call of `phase`, retried while the failure is transient: paced by the key's limiter,
    /// recorded whatever happens, abandoned when the run is stopped.
    async fn call(
        &self,
        account: &str,
        phase: Phase,
        attempt_no: &mut u32,
        last_error: &mut Option<String>,
    ) -> Result<Step, Error> {
        let target = self.send_account.then_some(account);
        let mut failures = 0u32;
        let mut nonce_races = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(Step::Stopped);
            }
            tokio::select! {
                _ = self.pacer.admit() => {}
                _ = self.shutdown.cancelled() => return Ok(Step::Stopped),
            }
            *attempt_no += 1;
            let request = async {
                match phase {
                    Phase::Cancel => self.client.cancel_all(target).await,
                    Phase::Snapshot | Phase::Verify => self.client.list_orders(target).await,
                }
            };
            // A request abandoned here may still have reached the exchange; the verify step of a
            // resumed run is what finds out what it did.
            let sent = tokio::select! {
                sent = request => sent,
                _ = self.hard_stop.cancelled() => return Ok(Step::Stopped),
            };
            let attempt = sent.map_err(|e| match e {
                ClientError::Nonce(e) => Error::Store {
                    path: self.store.path().to_path_buf(),
                    reason: e.to_string(),
                },
                ClientError::Build(e) => Error::Internal(e),
            })?;
            self.store
                .record_attempt(self.run_id, account, *attempt_no, phase, &attempt)
                .await?;
            let phase_name = phase.as_str();
            match &attempt.outcome {
                Outcome::CancelAll {
                    cancelled,
                    rejected,
                } => {
                    self.pacer.on_success();
                    tracing::info!(
                        account,
                        attempt_no = *attempt_no,
                        cancelled = cancelled.len(),
                        rejected = rejected.len(),
                        "cancel-all done"
                    );
                    return Ok(Step::Done(attempt.outcome));
                }
                Outcome::Orders(orders) => {
                    self.pacer.on_success();
                    tracing::debug!(
                        account,
                        phase = phase_name,
                        open = orders.len(),
                        "orders listed"
                    );
                    return Ok(Step::Done(attempt.outcome));
                }
                Outcome::Permanent { reason, message } => {
                    tracing::warn!(
                        account,
                        phase = phase_name,
                        attempt_no = *attempt_no,
                        reason,
                        message,
                        "permanent failure; not retrying"
                    );
                    *last_error = Some(format!("{reason}: {message}"));
                    return Ok(Step::Failed { permanent: true });
                }
                // Two requests in flight can reach the exchange out of nonce order, and the later
                // one is refused. That says nothing about the exchange's health, so it is retried
                // at once (still through the limiter) on its own budget instead of backing off.
                Outcome::Transient { reason, .. }
                    if reason == REASON_INVALID_NONCE && nonce_races < MAX_NONCE_RACES =>
                {
                    nonce_races += 1;
                    *last_error = Some(format!("{reason}: lost a nonce race"));
                    tracing::debug!(
                        account,
                        phase = phase_name,
                        attempt_no = *attempt_no,
                        "nonce race lost; retrying with a fresh nonce"
                    );
                }
                Outcome::Transient {
                    reason,
                    message,
                    retry_after,
                } => {
                    failures += 1;
                    *last_error = Some(format!("{reason}: {message}"));
                    if attempt.outcome.is_rate_limited() {
                        self.pacer.on_rate_limited(*retry_after);
                    }
                    if failures >= self.config.max_attempts {
                        tracing::warn!(
                            account,
                            phase = phase_name,
                            attempt_no = *attempt_no,
                            reason,
                            "giving up after {failures} failed attempts"
                        );
                        return Ok(Step::Failed { permanent: false });
                    }
                    let pause = backoff(self.config.retry_base, failures, reason, *retry_after);
                    tracing::info!(
                        account,
                        phase = phase_name,
                        attempt_no = *attempt_no,
                        reason,
                        pause_ms = pause.as_millis() as u64,
                        "transient failure; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shutdown.cancelled() => return Ok(Step::Stopped),
                    }
                }
            }
        }
    }
}

/// Exponential back-off with jitter: `base · 2^(n-1)`, scaled by a random 50–100 %, longer for
/// maintenance, never shorter than the server's `Retry-After`.
fn backoff(base: Duration, failures: u32, reason: &str, retry_after: Option<Duration>) -> Duration {
    let base = if reason == "Maintenance" {
        base * 8
    } else {
        base
    };
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let jittered = exp
        .mul_f64(0.5 + rand::random::<f64>() * 0.5)
        .min(MAX_PAUSE);
    retry_after.map_or(jittered, |r| jittered.max(r.min(MAX_PAUSE)))
}

/// The key's one rate limit, plus a slowdown that 429s switch on: when the exchange says "too
/// many", every worker slows down, not just the one that heard it. Each 429 pauses the key and
/// doubles the spacing between requests (multiplicative decrease); each success shrinks it by 2 %
/// until the configured rate is back (slow recovery), so a `--rate` set above what the exchange
/// grants converges on what it grants instead of hammering it.
struct KeyPacer {
    limiter: governor::DefaultDirectRateLimiter,
    /// The spacing `--rate` asks for.
    base_interval: Duration,
    slowdown: std::sync::Mutex<Slowdown>,
}

struct Slowdown {
    paused_until: Option<tokio::time::Instant>,
    /// Extra spacing between requests; zero when the key runs at its configured rate.
    interval: Duration,
    next_slot: tokio::time::Instant,
}

/// The widest spacing the slowdown reaches: one request every 5 s.
const MAX_INTERVAL: Duration = Duration::from_secs(5);

impl KeyPacer {
    fn new(rate: f64, burst: u32) -> Self {
        let base_interval = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let quota = Quota::with_period(base_interval)
            .expect("period is positive")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        KeyPacer {
            limiter: RateLimiter::direct(quota),
            base_interval,
            slowdown: std::sync::Mutex::new(Slowdown {
                paused_until: None,
                interval: Duration::ZERO,
                next_slot: tokio::time::Instant::now(),
            }),
        }
    }

    fn slowdown(&self) -> std::sync::MutexGuard<'_, Slowdown> {
        self.slowdown.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn admit(&self) {
        loop {
            let until = self.slowdown().paused_until;
            match until {
                Some(until) if until > tokio::time::Instant::now() => {
                    tokio::time::sleep_until(until).await;
                }
                _ => break,
            }
        }
        // Governor's waiters are not fair; a little jitter keeps them from waking in lockstep.
        self.limiter
            .until_ready_with_jitter(Jitter::up_to(Duration::from_millis(1)))
            .await;
        let slot = {
            let mut s = self.slowdown();
            if s.interval.is_zero() {
                return;
            }
            let slot = s.next_slot.max(tokio::time::Instant::now());
            s.next_slot = slot + s.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    fn on_success(&self) {
        let mut s = self.slowdown();
        if !s.interval.is_zero() {
            s.interval = s.interval.mul_f64(0.98);
            if s.interval <= self.base_interval {
                s.interval = Duration::ZERO;
                tracing::info!("back to the configured rate");
            }
        }
    }

    fn on_rate_limited(&self, retry_after: Option<Duration>) {
        let mut s = self.slowdown();
        let now = tokio::time::Instant::now();
        // The 429s of one burst arrive together; they are one signal, not one each.
        let already_paused = s.paused_until.is_some_and(|p| p > now);
        if !already_paused {
            s.interval = (s.interval * 2)
                .max(self.base_interval * 2)
                .min(MAX_INTERVAL);
        }
        let pause = retry_after
            .unwrap_or(s.interval.max(Duration::from_millis(250)))
            .min(MAX_PAUSE);
        if s.paused_until.is_none_or(|p| p < now + pause) {
            s.paused_until = Some(now + pause);
        }
        if !already_paused {
            tracing::warn!(
                pause_ms = pause.as_millis() as u64,
                interval_ms = s.interval.as_millis() as u64,
                "rate limited (429); slowing the whole key down"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        for n in 1..=20 {
            let d = backoff(base, n, "System", None);
            let nominal = base.saturating_mul(1 << (n - 1).min(16));
            assert!(d >= nominal.mul_f64(0.5).min(MAX_PAUSE), "{n}: {d:?}");
            assert!(d <= nominal.min(MAX_PAUSE), "{n}: {d:?}");
        }
        assert!(backoff(base, 1, "Maintenance", None) >= base * 4);
        assert!(
            backoff(base, 1, "RateLimit", Some(Duration::from_secs(3))) >= Duration::from_secs(3)
        );
    }
}
