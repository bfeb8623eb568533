//! One dispatcher task per key owns its send path: queue, pace, in-flight limit and nonces. A
//! send is one sequence (issue the nonce, commit the write-ahead row, first poll of the HTTP
//! request), so a key's requests reach the HTTP client in nonce order on any runtime. Replies
//! are drained before each send, so a reply's ids are committed before the key's next row.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::Either;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::key::{AttemptResult, KeyHalt, KeyHandle, KeyStop, Priority, Request, StopCause, Whom};
use super::lessons::{Learned, Lessons};
use super::pace::{Controller, Throttle};
use crate::client::{Chunk, ExchangeClient, Exchanged, NonceSource, Verdict};
use crate::error::Error;
use crate::store::{Action, AttemptEnd, AttemptStart, Sent, Store};

/// What a dispatcher needs of the run it works for.
pub struct RunContext {
    pub store: Store,
    /// `None` for requests made outside a run (`gemini-sweep accounts`).
    pub run_id: Option<i64>,
    pub invocation_id: Option<i64>,
    /// Cancelled by the first stop signal: no new request.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period is over, or by a second signal: stop waiting for replies.
    pub hard_stop: CancellationToken,
    pub progress: Arc<super::progress::Progress>,
}

pub struct KeyConfig {
    pub rate: f64,
    pub burst: u32,
    /// The most requests in flight at once.
    pub concurrency: usize,
}

/// How the key's dispatcher ended, for the run's last log line.
#[derive(Debug, Clone, Copy)]
pub struct KeyEnd {
    pub final_rate: f64,
    pub final_limit: usize,
    /// Nonce races that halved the in-flight limit.
    pub races: u64,
}

/// Starts the key's dispatcher; it ends once every handle is dropped and nothing is in flight.
pub fn start(
    client: ExchangeClient,
    nonces: NonceSource,
    key: KeyConfig,
    run: RunContext,
) -> (KeyHandle, tokio::task::JoinHandle<KeyEnd>) {
    let (requests, inbox) = mpsc::unbounded_channel();
    let (done_tx, done) = mpsc::unbounded_channel();
    let halt = Arc::new(KeyStop::default());
    let handle = KeyHandle {
        requests,
        halt: halt.clone(),
        shutdown: run.shutdown.clone(),
    };
    let dispatcher = Dispatcher {
        fingerprint: client.credentials().fingerprint().into(),
        client: Arc::new(client),
        lessons: Lessons::new(nonces.mode(), key.concurrency),
        nonces,
        controller: Controller::new(key.rate, Instant::now()),
        throttle: Throttle::new(key.rate, key.burst),
        run,
        halt,
        queue: Queue(BTreeMap::new(), 0),
        in_flight: HashMap::new(),
        sent: 0,
        done_tx,
        done,
    };
    (handle, tokio::spawn(dispatcher.run(inbox)))
}

struct Dispatcher {
    client: Arc<ExchangeClient>,
    fingerprint: Arc<str>,
    nonces: NonceSource,
    run: RunContext,
    halt: Arc<KeyStop>,
    queue: Queue<Request>,
    in_flight: HashMap<u64, InFlight>,
    /// Requests handed over so far (each one's number in that order).
    sent: u64,
    lessons: Lessons,
    controller: Controller,
    throttle: Throttle,
    /// Each request's task ends with its number and outcome.
    done_tx: UnboundedSender<(u64, Result<AttemptResult, Error>)>,
    done: UnboundedReceiver<(u64, Result<AttemptResult, Error>)>,
}

/// A request handed over and not yet answered; the pace it left under, and the others in flight.
struct InFlight {
    whom: Whom,
    action: Action,
    sent: Sent,
    generation: u64,
    others_at_send: usize,
    answer: tokio::sync::oneshot::Sender<Result<AttemptResult, Error>>,
}

impl Dispatcher {
    async fn run(mut self, mut inbox: UnboundedReceiver<Request>) -> KeyEnd {
        let mut open = true;
        self.run.progress.pace_changed(0.0, self.controller.rate());
        loop {
            // Replies first, so their records go ahead of the next send.
            self.take_replies();
            // A closed inbox is noticed below, when `recv` says so.
            while let Ok(request) = inbox.try_recv() {
                self.queue.push(request.call.priority, request);
            }
            if let Some(stop) = self.stopped() {
                while let Some(request) = self.queue.pop() {
                    let _ = request.answer.send(Ok(AttemptResult::NotSent(stop)));
                }
            }
            let Err(wake) = self.send_due().await else {
                continue;
            };
            if !open && self.queue.is_empty() && self.in_flight.is_empty() {
                break;
            }
            // Wakes for a request, a reply, the pace, or a stop (then refuses what waits).
            let watch_stops = self.stopped().is_none();
            tokio::select! {
                request = inbox.recv(), if open => match request {
                    Some(request) => self.queue.push(request.call.priority, request),
                    None => open = false,
                },
                Some((seq, outcome)) = self.done.recv() => self.on_done(seq, outcome),
                () = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                () = self.run.shutdown.cancelled(), if watch_stops => {}
                () = self.run.hard_stop.cancelled(), if watch_stops => {}
                () = self.halt.halted(), if watch_stops => {}
            }
        }
        self.run.progress.pace_changed(self.controller.rate(), 0.0);
        KeyEnd {
            final_rate: self.controller.rate(),
            final_limit: self.lessons.limit(),
            races: self.lessons.races(),
        }
    }

    fn take_replies(&mut self) {
        while let Ok((seq, outcome)) = self.done.try_recv() {
            self.on_done(seq, outcome);
        }
    }

    fn stopped(&self) -> Option<StopCause> {
        if self.halt.is_halted() {
            return Some(StopCause::Key);
        }
        let signalled = self.run.shutdown.is_cancelled() || self.run.hard_stop.is_cancelled();
        signalled.then_some(StopCause::Signal)
    }

    /// Sends what the in-flight limit and the pace let go now: nonces in order, their write-ahead
    /// rows in one commit, then each handed over in order. If nothing, says when to look again.
    async fn send_due(&mut self) -> Result<(), Option<Instant>> {
        let (mut batch, mut wake, limit) = (Vec::new(), None, self.lessons.limit());
        while !self.queue.is_empty() && self.in_flight.len() + batch.len() < limit {
            if let Err(at) = self.throttle.take() {
                wake = Some(at);
                break;
            }
            // A caller that has gone (its account was abandoned) would never read the answer;
            // its place in the pace goes to the next request.
            let mut waiting = std::iter::from_fn(|| self.queue.pop());
            batch.extend(waiting.find(|request| !request.answer.is_closed()));
        }
        if batch.is_empty() {
            return Err(wake);
        }
        // Replies that came in meanwhile: their records go in ahead of these rows.
        self.take_replies();
        let starts = (batch.iter())
            .map(|request| AttemptStart {
                run_id: self.run.run_id,
                invocation_id: self.run.invocation_id,
                account: request.call.whom.recorded(),
                attempt_no: request.call.attempt_no,
                action: request.call.action,
                key_fingerprint: self.fingerprint.clone(),
                nonce: self.nonces.issue(),
            })
            .collect();
        let sent = match self.run.store.begin_attempts(starts).await {
            Ok(sent) => sent,
            Err(e) => {
                let why = format!("aborted: the audit trail could not be written ({e})");
                self.halt.trigger(KeyHalt::Aborted, why);
                // One caller carries the error to the run (then aborted); the others were not sent.
                let mut error = Some(Error::from(e));
                for request in batch {
                    let not_sent = Ok(AttemptResult::NotSent(StopCause::Key));
                    let _ = request.answer.send(error.take().map_or(not_sent, Err));
                }
                return Ok(());
            }
        };
        for (request, sent) in batch.into_iter().zip(sent) {
            if let Some(stop) = self.stopped() {
                // Recorded, but it never left: it must not read as a request that may have acted.
                let invocation = self.run.invocation_id;
                self.run.store.never_sent(invocation, sent.attempt_id);
                let _ = request.answer.send(Ok(AttemptResult::NotSent(stop)));
            } else {
                self.hand_over(request, sent).await;
            }
        }
        Ok(())
    }

    /// Gives the request to the HTTP client: its first poll happens here, before the next
    /// nonce's, and the rest in a task of its own.
    async fn hand_over(&mut self, request: Request, sent: Sent) {
        let Request { call, answer } = request;
        let (seq, action, account) = (self.sent, call.action, call.whom.recorded());
        self.sent += 1;
        self.run.progress.request_sent();
        // A group's own listing names no account; an account key's requests name none either.
        let named = self.client.credentials().is_master() && matches!(call.whom, Whom::Account(_));
        let target = named.then(|| account.clone());
        let (client, store, run_id) =
            (self.client.clone(), self.run.store.clone(), self.run.run_id);
        let (hard_stop, params) = (self.run.hard_stop.clone(), call.params);
        let mut carry = Box::pin(async move {
            let (spill, mut chunks) = mpsc::channel::<Chunk>(4);
            let (nonce, target) = (&sent.nonce, target.as_deref());
            let exchange = client.exchange(action.endpoint(), target, nonce, &params, spill);
            let record = async {
                while let Some(chunk) = chunks.recv().await {
                    let (account, id) = (account.clone(), sent.attempt_id);
                    store.spill(run_id, account, action, id, chunk).await?;
                }
                Ok::<(), Error>(())
            };
            // join! polls the exchange first, and select polls join! first: the first poll of this
            // block hands the request over, even when the hard stop came before it.
            let both = std::pin::pin!(async { tokio::join!(exchange, record) });
            match futures::future::select(both, std::pin::pin!(hard_stop.cancelled())).await {
                Either::Left(((exchanged, recorded), _)) => {
                    recorded.map(|()| AttemptResult::Replied(exchanged))
                }
                // Dropped, it may still complete at the exchange: in flight until a listing tells.
                Either::Right(_) => Ok(AttemptResult::Abandoned),
            }
        });
        let (first, done) = (futures::poll!(carry.as_mut()), self.done_tx.clone());
        tokio::spawn(async move {
            let outcome = match first {
                std::task::Poll::Ready(outcome) => outcome,
                std::task::Poll::Pending => carry.await,
            };
            let _ = done.send((seq, outcome));
        });
        let flight = InFlight {
            whom: call.whom,
            action,
            sent,
            generation: self.controller.generation(),
            others_at_send: self.in_flight.len(),
            answer,
        };
        self.in_flight.insert(seq, flight);
    }

    /// A request's task ended: learn from its reply, queue its record, answer its caller.
    fn on_done(&mut self, seq: u64, outcome: Result<AttemptResult, Error>) {
        let Some(f) = self.in_flight.remove(&seq) else {
            return;
        };
        let outcome = match outcome {
            Ok(AttemptResult::Replied(exchanged)) => {
                // Alone: nothing else of the key was in flight when it left, nor sent since.
                let alone = f.others_at_send == 0 && self.sent == seq + 1;
                let (nonce_us, last) = (f.sent.nonce.value_us, self.nonces.last_issued_us());
                let learned = self.lessons.learn(&exchanged, nonce_us, last, alone);
                self.apply(learned, &exchanged, &f);
                let account = f.whom.recorded();
                let end = AttemptEnd::of(self.run.run_id, &account, f.action, f.sent, &exchanged);
                let recorded = self.run.store.finish_attempt(end).map_err(Error::from);
                recorded.map(|()| AttemptResult::Replied(exchanged))
            }
            other => other,
        };
        let _ = f.answer.send(outcome);
    }

    /// Moves the pace and stops the key where a reply says so.
    fn apply(&mut self, learned: Learned, exchanged: &Exchanged, f: &InFlight) {
        let (now, before) = (Instant::now(), self.controller.rate());
        if let Some(heard) = learned.heard
            && let Some(pace) = self.controller.on_reply(now, f.generation, heard)
        {
            self.run.progress.pace_changed(before, pace.per_second);
            self.throttle.follow(pace);
        }
        if let Some((kind, why)) = learned.halt {
            let url = self.client.base_url();
            let message = match kind {
                KeyHalt::Refused if matches!(exchanged.verdict, Verdict::KeyRefused { .. }) => {
                    let on = match f.action {
                        Action::Discover => "while listing the group's accounts".to_owned(),
                        action => format!("on the {} of {}", action.as_str(), f.whom),
                    };
                    format!("the exchange refused the key ({why}) {on}")
                }
                KeyHalt::Unreachable => format!("cannot reach the exchange at {url}: {why}"),
                _ => why,
            };
            self.halt.trigger(kind, message);
        }
    }
}

/// Waiting requests: the most urgent first, and first come, first served within a priority
/// (the arrivals so far number them).
struct Queue<T>(BTreeMap<(Priority, u64), T>, u64);

impl<T> Queue<T> {
    fn push(&mut self, priority: Priority, item: T) {
        self.1 += 1;
        self.0.insert((priority, self.1), item);
    }

    fn pop(&mut self) -> Option<T> {
        self.0.pop_first().map(|(_, item)| item)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_urgent_request_leaves_first_and_equals_in_the_order_they_came() {
        let mut queue = Queue(BTreeMap::new(), 0);
        queue.push(Priority::Hold, "hold listing of a");
        queue.push(Priority::Prove, "proof of b");
        queue.push(Priority::Hold, "hold listing of c");
        queue.push(Priority::Recancel, "re-cancel of d");
        queue.push(Priority::Cancel, "cancel-all of e");
        queue.push(Priority::Recancel, "re-cancel of f");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            order,
            [
                "cancel-all of e",
                "re-cancel of d",
                "re-cancel of f",
                "proof of b",
                "hold listing of a",
                "hold listing of c"
            ]
        );
    }
}
