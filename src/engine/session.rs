//! One API key's session: its HTTP client, nonce source, pacer, in-flight window, and the switch
//! that stops everything the key does when the exchange refuses it. The engine holds one per key;
//! every request of the key goes through [`KeySession::attempt`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::departures::Departures;
use super::pacer::{Pacer, Urgency};
use super::window::Window;
use crate::client::{
    Chunk, Collected, Endpoint, ExchangeClient, Exchanged, NonceMode, NonceRefusal, NonceSource,
    Verdict,
};
use crate::error::Error;
use crate::store::{AttemptEnd, AttemptOutcome, AttemptStart, Failure, Phase, Sent, Store};

/// The longest `Retry-After` a run waits out. An exchange asking for longer stops the run
/// (status incomplete, the reason recorded) rather than being silently cut short.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why the key stopped sending.
#[derive(Debug, Clone)]
pub struct KeyStopReason {
    /// The exchange refused the key or the configuration (exit 4), as opposed to asking for a
    /// longer pause than a run waits (exit 1).
    pub refused: bool,
    pub message: String,
}

/// The switch that stops every request of the key. The first reason wins.
#[derive(Default)]
pub struct KeyStop {
    token: CancellationToken,
    reason: Mutex<Option<KeyStopReason>>,
}

impl KeyStop {
    pub fn trigger(&self, refused: bool, message: String) {
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            tracing::error!("{message}; no further request will be sent with this key");
            *reason = Some(KeyStopReason { refused, message });
        }
        self.token.cancel();
    }

    pub fn is_halted(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn halted(&self) {
        self.token.cancelled().await;
    }

    pub fn reason(&self) -> Option<KeyStopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Tells nonce races (harmless, the window absorbs them) from nonces the key can never accept.
#[derive(Default)]
struct NonceGuard {
    successes: u64,
    refusals: u64,
    /// Consecutive refusals no race can explain, without a success in between.
    lone_refusals: u32,
}

/// Refusals of a request that was alone in flight before the key is declared unusable: one could
/// be another process's request slipping in; two in a row is a pattern.
const LONE_REFUSALS_TO_HALT: u32 = 2;

impl NonceGuard {
    fn on_success(&mut self) {
        self.successes += 1;
        self.lone_refusals = 0;
    }

    /// Returns why the key must stop, if this refusal settles it.
    fn on_refusal(
        &mut self,
        refusal: NonceRefusal,
        alone: bool,
        mode: NonceMode,
        message: &str,
    ) -> Option<String> {
        self.refusals += 1;
        let never_accepted = self.successes == 0;
        match (refusal, mode) {
            (NonceRefusal::OutsideWindow, NonceMode::Increasing) => Some(format!(
                "InvalidNonce: {message} — the key expects time-based nonces (seconds): run with --nonce-mode time"
            )),
            (NonceRefusal::OutsideWindow, NonceMode::Time) => Some(format!(
                "InvalidNonce: {message} — this machine's clock is more than 30 s away from the exchange's: fix the clock (NTP)"
            )),
            (NonceRefusal::Unparseable, NonceMode::Time) => Some(format!(
                "InvalidNonce: {message} — the key expects increasing integer nonces: run with --nonce-mode increasing"
            )),
            (NonceRefusal::Unparseable, NonceMode::Increasing) => {
                Some(format!("InvalidNonce: {message}"))
            }
            (NonceRefusal::NotIncreased, _) => {
                // Time-mode nonces need no order, so no refusal of one is a race.
                if alone || mode == NonceMode::Time {
                    self.lone_refusals += 1;
                }
                if self.lone_refusals >= LONE_REFUSALS_TO_HALT {
                    return Some(not_increased_diagnosis(mode, never_accepted, message));
                }
                // Races waste requests but leave successes in between; more refusals than
                // successes is a pattern no race makes.
                (self.refusals >= 200 && self.refusals > self.successes).then(|| {
                    format!(
                        "InvalidNonce on {} requests ({} accepted): far more nonce refusals than races explain; another process is probably using this key",
                        self.refusals, self.successes
                    )
                })
            }
        }
    }
}

fn not_increased_diagnosis(mode: NonceMode, never_accepted: bool, message: &str) -> String {
    let cause = match (mode, never_accepted) {
        (NonceMode::Increasing, true) => {
            "the exchange has seen larger nonces for this key than this run sends: another process is using the key, or it was used with larger nonces (microseconds?), or it was created with time-based nonces (then run with --nonce-mode time)"
        }
        (NonceMode::Increasing, false) => {
            "another process started using this key during the run: its nonces are ahead of ours"
        }
        (NonceMode::Time, _) => {
            "the key seems to expect increasing nonces (run with --nonce-mode increasing), or another process is using it"
        }
    };
    format!("InvalidNonce even with no other request in flight: {message} — {cause}")
}

/// The longest back-off between two attempts of one call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one call (with its retries) ended.
pub enum Step {
    Done(Collected),
    Failed(Failure),
    Stopped(StopCause),
}

/// How the audit trail names the group's own requests (its account listing), which act on no
/// account: the empty name, which no account can have (the nickname rule needs a character).
pub const GROUP_CALLER: &str = "";

/// Whom a call is for ([`Caller::account`] or [`Caller::group`]), and what its calls so far
/// left.
pub struct Caller {
    /// The account, or [`GROUP_CALLER`] for the group; the name its attempts are recorded under.
    pub name: Arc<str>,
    pub attempt_no: u32,
    /// A request for it was sent by this invocation.
    pub sent_any: bool,
    pub last_error: Option<String>,
}

impl Caller {
    /// Calls for `account`, after the `attempt_no` attempts an earlier invocation made.
    pub fn account(account: &str, attempt_no: u32) -> Caller {
        Caller {
            name: account.into(),
            attempt_no,
            sent_any: false,
            last_error: None,
        }
    }

    /// Calls for the group itself (the account listing).
    pub fn group() -> Caller {
        Caller::account(GROUP_CALLER, 0)
    }
}

/// How patient a call is with transient failures.
#[derive(Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    /// First back-off pause; doubles with each further failure.
    pub base: Duration,
}

/// How one attempt ended, for the caller's retry loop.
pub enum AttemptResult {
    /// The exchange answered (or the transport failed) and it was recorded.
    Replied(Exchanged),
    /// Nothing was sent: the run is stopping (a signal) or the key is halted.
    NotSent(StopCause),
    /// Sent, but the run stopped waiting for the reply (grace period over, second signal). The
    /// attempt stays `in_flight` until the run is settled, then reads `abandoned`.
    Abandoned,
}

/// Why a request was not sent, or its reply not waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT/SIGTERM (or the grace period after one ran out).
    Signal,
    /// The key's [`KeyStop`] was thrown: the key was refused or told to wait longer than a run
    /// does.
    Key,
}

/// What an attempt needs to know about the run it belongs to.
pub struct RunContext {
    pub store: Store,
    /// `None` for requests made outside a run (`gemini-sweep accounts`).
    pub run_id: Option<i64>,
    pub invocation_id: Option<i64>,
    /// Cancelled by the first stop signal: no new request.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period is over, or by a second signal: stop waiting for replies.
    pub hard_stop: CancellationToken,
    pub progress: Arc<super::Progress>,
}

/// Cancel-alls waiting for the key's window or pace. While any is, no listing starts, so a
/// listing never holds a place in the window a cancel-all could have had.
#[derive(Default)]
struct UrgentQueue {
    waiting: std::sync::atomic::AtomicUsize,
    cleared: tokio::sync::Notify,
}

impl UrgentQueue {
    fn enter(&self) -> UrgentTurn<'_> {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        UrgentTurn(self)
    }

    /// Returns once no cancel-all is waiting.
    async fn cleared(&self) {
        loop {
            let cleared = self.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if self.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            cleared.await;
        }
    }
}

/// One cancel-all's place in the queue, given up once the pace lets it through (or it stops).
struct UrgentTurn<'a>(&'a UrgentQueue);

impl Drop for UrgentTurn<'_> {
    fn drop(&mut self) {
        let before = self
            .0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if before == 1 {
            self.0.cleared.notify_waiters();
        }
    }
}

pub struct KeySession {
    pub client: ExchangeClient,
    pub nonces: Arc<NonceSource>,
    pub fingerprint: Arc<str>,
    /// A master key names the account in each payload; an account key acts on its own.
    pub send_account: bool,
    pub pacer: Pacer,
    pub window: Window,
    /// Increasing-mode requests leave in nonce order.
    departures: Arc<Departures>,
    pub halt: KeyStop,
    guard: Mutex<NonceGuard>,
    urgent: UrgentQueue,
}

impl KeySession {
    pub fn new(
        client: ExchangeClient,
        nonces: Arc<NonceSource>,
        rate: f64,
        burst: u32,
        concurrency: usize,
    ) -> Self {
        let ordered = nonces.mode() == NonceMode::Increasing;
        KeySession {
            send_account: client.credentials().is_master(),
            fingerprint: client.credentials().fingerprint().into(),
            client,
            nonces,
            pacer: Pacer::new(rate, burst),
            window: Window::new(ordered, concurrency),
            departures: Arc::new(Departures::new(ordered)),
            halt: KeyStop::default(),
            guard: Mutex::new(NonceGuard::default()),
            urgent: UrgentQueue::default(),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, NonceGuard> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request of `phase` for `account` ('' for the group): admitted by the window and the
    /// pacer, recorded before it leaves, exchanged, reacted to (a refused key halts here, before
    /// the next request can be admitted), and recorded with its reply. `attempt_no` grows only if
    /// it was sent. `params` are the endpoint's own payload fields.
    pub async fn attempt(
        &self,
        run: &RunContext,
        account: &Arc<str>,
        phase: Phase,
        params: &[(&'static str, serde_json::Value)],
        attempt_no: &mut u32,
    ) -> Result<AttemptResult, Error> {
        let stopped = || {
            if run.shutdown.is_cancelled() {
                Some(StopCause::Signal)
            } else if self.halt.is_halted() {
                Some(StopCause::Key)
            } else {
                None
            }
        };
        if let Some(stop) = stopped() {
            return Ok(AttemptResult::NotSent(stop));
        }
        // Cancel-alls first: a listing waits while any cancel-all waits, and then takes only a
        // slot of the pace that no cancel-all wants (flat first, proof after).
        let urgency = match phase {
            Phase::Cancel | Phase::Discover => Urgency::Now,
            Phase::Snapshot | Phase::Verify => Urgency::CanWait,
        };
        let turn = (urgency == Urgency::Now).then(|| self.urgent.enter());
        if urgency == Urgency::CanWait {
            tokio::select! {
                _ = self.urgent.cleared() => {}
                _ = run.shutdown.cancelled() => return Ok(AttemptResult::NotSent(StopCause::Signal)),
                _ = self.halt.halted() => return Ok(AttemptResult::NotSent(StopCause::Key)),
            }
        }
        let mut slot = tokio::select! {
            slot = self.window.acquire(account) => slot,
            _ = run.shutdown.cancelled() => return Ok(AttemptResult::NotSent(StopCause::Signal)),
            _ = self.halt.halted() => return Ok(AttemptResult::NotSent(StopCause::Key)),
        };
        let pace = tokio::select! {
            ticket = self.pacer.admit(urgency) => ticket,
            _ = run.shutdown.cancelled() => return Ok(AttemptResult::NotSent(StopCause::Signal)),
            _ = self.halt.halted() => return Ok(AttemptResult::NotSent(StopCause::Key)),
        };
        drop(turn);
        if let Some(stop) = stopped() {
            return Ok(AttemptResult::NotSent(stop));
        }

        let endpoint = match phase {
            Phase::Discover => Endpoint::AccountList,
            Phase::Cancel => Endpoint::CancelAll,
            Phase::Snapshot | Phase::Verify => Endpoint::ListOrders,
        };
        *attempt_no += 1;
        let departures = self.departures.clone();
        let sent = run
            .store
            .begin_attempt(
                AttemptStart {
                    run_id: run.run_id,
                    invocation_id: run.invocation_id,
                    account: account.to_string(),
                    attempt_no: *attempt_no,
                    phase,
                    endpoint: endpoint.path(),
                    key_fingerprint: self.fingerprint.clone(),
                    nonces: self.nonces.clone(),
                },
                move |sent| departures.queue(sent.nonce.value_us),
            )
            .await?;
        let departure = tokio::select! {
            turn = self.departures.depart(sent.nonce.value_us) => turn,
            // Recorded, but it never left: it must not read as a request that may have acted.
            _ = run.hard_stop.cancelled() => {
                run.store.never_sent(run.invocation_id, sent.attempt_id);
                let stop = if self.halt.is_halted() { StopCause::Key } else { StopCause::Signal };
                return Ok(AttemptResult::NotSent(stop));
            }
        };
        self.window.sending(&mut slot);
        run.progress.request_sent();

        let (spill, mut chunks) = mpsc::channel::<Chunk>(4);
        let target = (self.send_account && phase != Phase::Discover).then_some(&**account);
        let exchange = self
            .client
            .exchange(endpoint, target, &sent.nonce, params, spill);
        // The first poll signs the request and hands it to the HTTP client, which queues it on a
        // connection; only then may the next nonce leave (see `departures`).
        let mut exchange = std::pin::pin!(exchange);
        let handed_over = futures::poll!(exchange.as_mut());
        drop(departure);
        let exchange = async move {
            match handed_over {
                std::task::Poll::Ready(exchanged) => exchanged,
                std::task::Poll::Pending => exchange.await,
            }
        };
        let record_chunks = async {
            while let Some(chunk) = chunks.recv().await {
                run.store
                    .spill(run.run_id, account.clone(), phase, sent.attempt_id, chunk)
                    .await?;
            }
            Ok::<(), Error>(())
        };
        let (exchanged, recorded) = tokio::select! {
            done = async { tokio::join!(exchange, record_chunks) } => done,
            // Dropping the request here may leave it to complete at the exchange: the attempt
            // stays in flight and a later listing finds out what it did.
            _ = run.hard_stop.cancelled() => return Ok(AttemptResult::Abandoned),
        };
        recorded?;

        self.react(&exchanged.verdict, &slot, &sent, pace, account, phase);
        drop(slot);

        run.store.finish_attempt(AttemptEnd {
            run_id: run.run_id,
            account: account.to_string(),
            phase,
            sent,
            latency: exchanged.latency,
            http_status: exchanged.http_status,
            outcome: recorded_outcome(&exchanged.verdict),
            body: exchanged.body.clone(),
            body_truncated: exchanged.body_truncated,
            collected: match &exchanged.verdict {
                Verdict::Ok(collected) => Some(collected.clone()),
                _ => None,
            },
        })?;
        Ok(AttemptResult::Replied(exchanged))
    }

    /// One call of `phase` for `acct`, retried while the failure is transient (with back-off),
    /// or a lost nonce race (at once: the window and the pacer space it).
    pub async fn call(
        &self,
        run: &RunContext,
        acct: &mut Caller,
        phase: Phase,
        params: &[(&'static str, serde_json::Value)],
        retry: Retry,
    ) -> Result<Step, Error> {
        let mut failures = 0u32;
        loop {
            let exchanged = match self
                .attempt(run, &acct.name, phase, params, &mut acct.attempt_no)
                .await?
            {
                AttemptResult::NotSent(stop) => return Ok(Step::Stopped(stop)),
                AttemptResult::Abandoned => {
                    acct.sent_any = true;
                    return Ok(Step::Stopped(StopCause::Signal));
                }
                AttemptResult::Replied(exchanged) => {
                    acct.sent_any = true;
                    exchanged
                }
            };
            let phase_name = phase.as_str();
            let account = &*acct.name;
            match exchanged.verdict {
                Verdict::Ok(collected) => return Ok(Step::Done(collected)),
                Verdict::KeyRefused { reason, message } => {
                    acct.last_error = Some(format!("{reason}: {message}"));
                    return Ok(Step::Failed(Failure::KeyRefused));
                }
                Verdict::AccountRefused { reason, message } => {
                    tracing::warn!(
                        account,
                        phase = phase_name,
                        reason,
                        message,
                        "the exchange refused this account; not retrying"
                    );
                    acct.last_error = Some(format!("{reason}: {message}"));
                    return Ok(Step::Failed(Failure::AccountRefused));
                }
                // A lost nonce race says nothing about the exchange's health: retried at once
                // (the window and the pacer space it); the session stops the key if the
                // refusals are not races.
                Verdict::NonceRefused { message, .. } => {
                    tracing::debug!(
                        account,
                        phase = phase_name,
                        "InvalidNonce; retrying with a fresh nonce"
                    );
                    acct.last_error = Some(format!("InvalidNonce: {message}"));
                }
                Verdict::Transient {
                    reason,
                    message,
                    pause,
                } => {
                    failures += 1;
                    acct.last_error = Some(format!("{reason}: {message}"));
                    if failures >= retry.max_attempts {
                        tracing::warn!(
                            account,
                            phase = phase_name,
                            reason,
                            "giving up after {failures} failed attempts"
                        );
                        return Ok(Step::Failed(Failure::OutOfAttempts));
                    }
                    let wait = backoff(retry.base, failures, pause.and_then(|p| p.retry_after()));
                    tracing::info!(
                        account,
                        phase = phase_name,
                        reason,
                        pause_ms = wait.as_millis() as u64,
                        "transient failure; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = run.shutdown.cancelled() => return Ok(Step::Stopped(StopCause::Signal)),
                        _ = self.halt.halted() => return Ok(Step::Stopped(StopCause::Key)),
                    }
                }
            }
        }
    }

    /// What the key learns from a reply: pace, window, and whether it must stop. Runs before the
    /// reply's place in the window is freed, so a refusal halts the key before anything else is
    /// admitted.
    fn react(
        &self,
        verdict: &Verdict,
        slot: &super::window::Slot<'_>,
        sent: &Sent,
        pace: super::pacer::PaceTicket,
        account: &str,
        phase: Phase,
    ) {
        match verdict {
            Verdict::Ok(_) => {
                self.pacer.on_admitted();
                self.window.on_success();
                if phase == Phase::Cancel {
                    self.window.prove();
                }
                self.guard().on_success();
            }
            Verdict::Transient {
                pause: Some(pause), ..
            } => {
                if let Some(asked) = pause.retry_after()
                    && asked > MAX_RETRY_AFTER
                {
                    self.halt.trigger(
                        false,
                        format!(
                            "the exchange asked the key to wait {} s (Retry-After), longer than a run waits ({} s); resume the run later",
                            asked.as_secs(),
                            MAX_RETRY_AFTER.as_secs()
                        ),
                    );
                } else {
                    self.pacer.on_push_back(*pause, pace);
                }
            }
            Verdict::Transient { .. } | Verdict::AccountRefused { .. } => {
                self.pacer.on_admitted();
            }
            Verdict::NonceRefused { refusal, message } => {
                self.pacer.on_admitted();
                let alone = self.window.was_alone(slot);
                if *refusal == NonceRefusal::NotIncreased && !alone {
                    self.window
                        .on_race(sent.nonce.value_us, self.nonces.last_issued_us());
                }
                let verdict = self
                    .guard()
                    .on_refusal(*refusal, alone, self.nonces.mode(), message);
                if let Some(why) = verdict {
                    self.halt.trigger(true, why);
                }
            }
            Verdict::KeyRefused { reason, message } => {
                let on = match phase {
                    // The group's listing names no account.
                    Phase::Discover => "while listing the group's accounts".to_owned(),
                    _ => format!("on the {} of {account}", phase.as_str()),
                };
                self.halt.trigger(
                    true,
                    format!("the exchange refused the key ({reason}: {message}) {on}"),
                );
            }
        }
    }
}

/// Exponential back-off with jitter: `base · 2^(n-1)`, scaled by a random 50–100 %, capped, and
/// never shorter than the exchange's `Retry-After` (the key's pacer holds every request for that
/// long anyway).
fn backoff(base: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let jittered = exp
        .mul_f64(0.5 + rand::random::<f64>() * 0.5)
        .min(MAX_BACKOFF);
    retry_after.map_or(jittered, |r| jittered.max(r))
}

fn recorded_outcome(verdict: &Verdict) -> AttemptOutcome {
    let reason = verdict.reason().unwrap_or_default().to_owned();
    let message = verdict.message().unwrap_or_default().to_owned();
    match verdict {
        Verdict::Ok(_) => AttemptOutcome::Ok,
        Verdict::Transient { .. } | Verdict::NonceRefused { .. } => {
            AttemptOutcome::Transient { reason, message }
        }
        Verdict::AccountRefused { .. } | Verdict::KeyRefused { .. } => {
            AttemptOutcome::Permanent { reason, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_the_wrong_mode_is_named_at_the_first_telling_refusal() {
        let mut g = NonceGuard::default();
        let why = g
            .on_refusal(
                NonceRefusal::OutsideWindow,
                false,
                NonceMode::Increasing,
                "m",
            )
            .unwrap();
        assert!(why.contains("--nonce-mode time"), "{why}");
        let why = g
            .on_refusal(NonceRefusal::Unparseable, false, NonceMode::Time, "m")
            .unwrap();
        assert!(why.contains("--nonce-mode increasing"), "{why}");
    }

    #[test]
    fn races_are_tolerated_but_two_lone_refusals_stop_the_key() {
        let mut g = NonceGuard::default();
        for _ in 0..50 {
            assert!(
                g.on_refusal(
                    NonceRefusal::NotIncreased,
                    false,
                    NonceMode::Increasing,
                    "m"
                )
                .is_none(),
                "a race is not a verdict"
            );
        }
        assert!(
            g.on_refusal(NonceRefusal::NotIncreased, true, NonceMode::Increasing, "m")
                .is_none()
        );
        g.on_success();
        assert!(
            g.on_refusal(NonceRefusal::NotIncreased, true, NonceMode::Increasing, "m")
                .is_none(),
            "a success in between resets the streak"
        );
        let why = g
            .on_refusal(NonceRefusal::NotIncreased, true, NonceMode::Increasing, "m")
            .unwrap();
        assert!(why.contains("another process"), "{why}");
    }

    #[test]
    fn a_key_refused_from_the_start_names_both_likely_causes() {
        let mut g = NonceGuard::default();
        g.on_refusal(NonceRefusal::NotIncreased, true, NonceMode::Increasing, "m");
        let why = g
            .on_refusal(NonceRefusal::NotIncreased, true, NonceMode::Increasing, "m")
            .unwrap();
        assert!(
            why.contains("--nonce-mode time") && why.contains("another process"),
            "{why}"
        );
        // In time mode no refusal is a race.
        let mut g = NonceGuard::default();
        g.on_refusal(NonceRefusal::NotIncreased, false, NonceMode::Time, "m");
        let why = g
            .on_refusal(NonceRefusal::NotIncreased, false, NonceMode::Time, "m")
            .unwrap();
        assert!(why.contains("--nonce-mode increasing"), "{why}");
    }

    #[test]
    fn the_total_of_nonce_refusals_is_bounded_across_the_run() {
        let mut g = NonceGuard::default();
        let mut halted_at = None;
        for i in 1..=1000 {
            if g.on_refusal(
                NonceRefusal::NotIncreased,
                false,
                NonceMode::Increasing,
                "m",
            )
            .is_some()
            {
                halted_at = Some(i);
                break;
            }
        }
        assert_eq!(halted_at, Some(200));
        // Races among many successes are not a verdict.
        let mut g = NonceGuard::default();
        for _ in 0..10_000 {
            g.on_success();
        }
        for _ in 0..5_000 {
            assert!(
                g.on_refusal(
                    NonceRefusal::NotIncreased,
                    false,
                    NonceMode::Increasing,
                    "m"
                )
                .is_none()
            );
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        for n in 1..=20 {
            let d = backoff(base, n, None);
            let nominal = base.saturating_mul(1 << (n - 1).min(16));
            assert!(d >= nominal.mul_f64(0.5).min(MAX_BACKOFF), "{n}: {d:?}");
            assert!(d <= nominal.min(MAX_BACKOFF), "{n}: {d:?}");
        }
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(90))),
            Duration::from_secs(90),
            "a Retry-After is followed exactly, not cut short"
        );
    }
}
