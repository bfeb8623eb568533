//! One dispatcher task per key owns the key's send path.
//!
//! Callers ask for requests through a [`KeyHandle`]; the dispatcher queues them by priority and,
//! when the pace and the in-flight limit allow, sends them in one sequence: issue the nonce,
//! commit the write-ahead row, hand the request to the HTTP client (its first poll, here). So
//! the requests of a key reach the HTTP client in nonce order because this code does one thing
//! after another, on any runtime. Replies come back to the dispatcher, which learns from them
//! ([`Lessons`]), queues their records (committed before the next write-ahead row, so a reply's
//! ids are on disk before the key's next request leaves) and answers the caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, error::TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::key::{
    AttemptResult, Call, KeyHalt, KeyHandle, KeyStop, Priority, Request, StopCause, Whom,
};
use super::lessons::Lessons;
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

/// The key's settings.
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
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let halt = Arc::new(KeyStop::default());
    let handle = KeyHandle {
        requests,
        halt: halt.clone(),
        shutdown: run.shutdown.clone(),
    };
    let ordered = nonces.mode() == crate::client::NonceMode::Increasing;
    let dispatcher = Dispatcher {
        send_account: client.credentials().is_master(),
        fingerprint: client.credentials().fingerprint().into(),
        client: Arc::new(client),
        lessons: Lessons::new(ordered, key.concurrency),
        nonces,
        controller: Controller::new(key.rate, Instant::now()),
        throttle: Throttle::new(key.rate, key.burst),
        paused_until: None,
        run,
        halt,
        queue: Queue::default(),
        in_flight: HashMap::new(),
        sent: 0,
        done_tx,
    };
    (handle, tokio::spawn(dispatcher.run(inbox, done_rx)))
}

struct Dispatcher {
    client: Arc<ExchangeClient>,
    fingerprint: Arc<str>,
    /// A master key names the account in each payload; an account key acts on its own.
    send_account: bool,
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
    paused_until: Option<Instant>,
    done_tx: UnboundedSender<(u64, Carried)>,
}

/// A request handed over and not yet answered.
struct InFlight {
    whom: Whom,
    action: Action,
    sent: Sent,
    /// The pace it left under, and how many others were in flight then.
    generation: u64,
    others_at_send: usize,
    answer: tokio::sync::oneshot::Sender<Result<AttemptResult, Error>>,
}

/// How a request's task ended.
enum Carried {
    Replied(Exchanged),
    /// The run stopped waiting for the reply.
    Abandoned,
    /// Part of a large reply could not be written.
    Failed(Error),
}

/// What the loop waits for next.
enum Event {
    Request(Option<Request>),
    Done(u64, Carried),
    Wake,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut inbox: UnboundedReceiver<Request>,
        mut done: UnboundedReceiver<(u64, Carried)>,
    ) -> KeyEnd {
        let (shutdown, hard_stop, halt) = (
            self.run.shutdown.clone(),
            self.run.hard_stop.clone(),
            self.halt.clone(),
        );
        let mut open = true;
        self.run.progress.pace_changed(0.0, self.controller.rate());
        loop {
            self.take_in(&mut inbox, &mut done, &mut open);
            if let Some(stop) = self.stopped() {
                self.refuse_queued(stop);
            }
            if !open && self.queue.is_empty() && self.in_flight.is_empty() {
                break;
            }
            let wake = match self.due() {
                Due::Now => {
                    self.send_due(&mut done).await;
                    continue;
                }
                Due::At(at) => Some(at),
                Due::Idle => None,
            };
            let watch_stops = self.stopped().is_none();
            let event = tokio::select! {
                request = inbox.recv(), if open => Event::Request(request),
                Some((seq, carried)) = done.recv() => Event::Done(seq, carried),
                () = sleep_until(wake) => Event::Wake,
                () = shutdown.cancelled(), if watch_stops => Event::Wake,
                () = hard_stop.cancelled(), if watch_stops => Event::Wake,
                () = halt.halted(), if watch_stops => Event::Wake,
            };
            match event {
                Event::Request(Some(request)) => self.enqueue(request),
                Event::Request(None) => open = false,
                Event::Done(seq, carried) => self.on_done(seq, carried),
                Event::Wake => {}
            }
        }
        self.run.progress.pace_changed(self.controller.rate(), 0.0);
        KeyEnd {
            final_rate: self.controller.rate(),
            final_limit: self.lessons.limit(),
            races: self.lessons.races(),
        }
    }

    /// Everything that has arrived: replies first, so their records go ahead of the next send.
    fn take_in(
        &mut self,
        inbox: &mut UnboundedReceiver<Request>,
        done: &mut UnboundedReceiver<(u64, Carried)>,
        open: &mut bool,
    ) {
        while let Ok((seq, carried)) = done.try_recv() {
            self.on_done(seq, carried);
        }
        while *open {
            match inbox.try_recv() {
                Ok(request) => self.enqueue(request),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => *open = false,
            }
        }
    }

    fn stopped(&self) -> Option<StopCause> {
        if self.halt.is_halted() {
            Some(StopCause::Key)
        } else if self.run.shutdown.is_cancelled() || self.run.hard_stop.is_cancelled() {
            Some(StopCause::Signal)
        } else {
            None
        }
    }

    fn enqueue(&mut self, request: Request) {
        if let Some(stop) = self.stopped() {
            let _ = request.answer.send(Ok(AttemptResult::NotSent(stop)));
            return;
        }
        self.queue.push(request.call.priority, request);
    }

    fn refuse_queued(&mut self, stop: StopCause) {
        while let Some(request) = self.queue.pop() {
            let _ = request.answer.send(Ok(AttemptResult::NotSent(stop)));
        }
    }

    /// Whether the next request may leave now; takes its place in the pace if so.
    fn due(&mut self) -> Due {
        if self.queue.is_empty() || self.in_flight.len() >= self.lessons.limit() {
            return Due::Idle;
        }
        let now = Instant::now();
        match self.paused_until {
            Some(until) if until > now => return Due::At(until),
            _ => self.paused_until = None,
        }
        match self.throttle.take() {
            Ok(()) => Due::Now,
            Err(at) => Due::At(at),
        }
    }

    /// Sends the request that is due, and any others the pace and the limit let go with it:
    /// nonces in order, their write-ahead rows in one commit, then each handed over in order.
    async fn send_due(&mut self, done: &mut UnboundedReceiver<(u64, Carried)>) {
        let mut batch = Vec::new();
        while let Some(request) = self.queue.pop() {
            // A caller that has gone (its account was abandoned) would never read the answer;
            // its place in the pace goes to the next request.
            if request.answer.is_closed() {
                continue;
            }
            batch.push(request);
            let room = self.in_flight.len() + batch.len() < self.lessons.limit();
            if !room || self.queue.is_empty() || self.throttle.take().is_err() {
                break;
            }
        }
        if batch.is_empty() {
            return;
        }
        // Replies that came in meanwhile: their records go in ahead of these rows.
        while let Ok((seq, carried)) = done.try_recv() {
            self.on_done(seq, carried);
        }
        let starts: Vec<AttemptStart> = batch.iter().map(|r| self.start_of(&r.call)).collect();
        let rows = self.run.store.begin_attempts(starts).await;
        let sent = match rows {
            Ok(sent) => sent,
            Err(e) => {
                let why = format!("aborted: the audit trail could not be written ({e})");
                self.halt.trigger(KeyHalt::Aborted, why);
                // One caller carries the error to the run, which then ends aborted; the others
                // were simply not sent.
                let mut error = Some(e);
                for request in batch {
                    let answer = match error.take() {
                        Some(e) => Err(e.into()),
                        None => Ok(AttemptResult::NotSent(StopCause::Key)),
                    };
                    let _ = request.answer.send(answer);
                }
                return;
            }
        };
        for (request, sent) in batch.into_iter().zip(sent) {
            match self.stopped() {
                // Recorded, but it never left: it must not read as a request that may have acted.
                Some(stop) => {
                    self.run
                        .store
                        .never_sent(self.run.invocation_id, sent.attempt_id);
                    let _ = request.answer.send(Ok(AttemptResult::NotSent(stop)));
                }
                None => self.hand_over(request, sent).await,
            }
        }
    }

    fn start_of(&mut self, call: &Call) -> AttemptStart {
        AttemptStart {
            run_id: self.run.run_id,
            invocation_id: self.run.invocation_id,
            account: call.whom.recorded(),
            attempt_no: call.attempt_no,
            action: call.action,
            key_fingerprint: self.fingerprint.clone(),
            nonce: self.nonces.issue(),
        }
    }

    /// Gives the request to the HTTP client: its first poll happens here, before the next
    /// nonce's, and the rest in a task of its own.
    async fn hand_over(&mut self, request: Request, sent: Sent) {
        let Request { call, answer } = request;
        let seq = self.sent;
        self.sent += 1;
        self.run.progress.request_sent();
        // A group's own listing names no account; an account key's requests name none either.
        let target = match &call.whom {
            Whom::Account(account) if self.send_account => Some(account.clone()),
            _ => None,
        };
        let mut carry = Box::pin(carry(
            Carrier {
                client: self.client.clone(),
                store: self.run.store.clone(),
                run_id: self.run.run_id,
                hard_stop: self.run.hard_stop.clone(),
            },
            target,
            call.whom.recorded(),
            call.action,
            call.params,
            sent,
        ));
        let first = futures::poll!(carry.as_mut());
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let carried = match first {
                std::task::Poll::Ready(carried) => carried,
                std::task::Poll::Pending => carry.await,
            };
            let _ = done.send((seq, carried));
        });
        self.in_flight.insert(
            seq,
            InFlight {
                whom: call.whom,
                action: call.action,
                sent,
                generation: self.controller.generation(),
                others_at_send: self.in_flight.len(),
                answer,
            },
        );
    }

    /// A request's task ended: learn from its reply, queue its record, answer its caller.
    fn on_done(&mut self, seq: u64, carried: Carried) {
        let Some(flight) = self.in_flight.remove(&seq) else {
            return;
        };
        let answer = match carried {
            Carried::Abandoned => Ok(AttemptResult::Abandoned),
            Carried::Failed(e) => Err(e),
            Carried::Replied(exchanged) => {
                // Alone: nothing else of the key was in flight when it left, nor sent since.
                let alone = flight.others_at_send == 0 && self.sent == seq + 1;
                let learned = self.lessons.learn(
                    &exchanged,
                    flight.sent.nonce.value_us,
                    self.nonces.last_issued_us(),
                    alone,
                    self.nonces.mode(),
                );
                self.apply(learned, &exchanged, &flight);
                self.record(&flight, &exchanged)
                    .map(|()| AttemptResult::Replied(exchanged))
            }
        };
        let _ = flight.answer.send(answer);
    }

    /// Moves the pace and stops the key where a reply says so.
    fn apply(&mut self, learned: super::lessons::Learned, exchanged: &Exchanged, f: &InFlight) {
        let now = Instant::now();
        let before = self.controller.rate();
        if let Some(heard) = learned.heard
            && let Some(pace) = self.controller.on_reply(now, f.generation, heard)
        {
            self.run.progress.pace_changed(before, pace.per_second);
            self.throttle.set_rate(pace.per_second);
            if let Some(until) = pace.not_before {
                self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
            }
        }
        if let Some((kind, why)) = learned.halt {
            let on = match f.action {
                Action::Discover => "while listing the group's accounts".to_owned(),
                action => format!("on the {} of {}", action.as_str(), f.whom),
            };
            let message = match kind {
                KeyHalt::Refused if matches!(exchanged.verdict, Verdict::KeyRefused { .. }) => {
                    format!("the exchange refused the key ({why}) {on}")
                }
                KeyHalt::Unreachable => format!(
                    "cannot reach the exchange at {}: {why}",
                    self.client.base_url()
                ),
                _ => why,
            };
            self.halt.trigger(kind, message);
        }
    }

    fn record(&self, f: &InFlight, exchanged: &Exchanged) -> Result<(), Error> {
        let account = f.whom.recorded();
        let end = AttemptEnd::of(self.run.run_id, &account, f.action, f.sent, exchanged);
        Ok(self.run.store.finish_attempt(end)?)
    }
}

/// Waiting requests: the most urgent first, and first come, first served within a priority.
struct Queue<T> {
    waiting: BTreeMap<(Priority, u64), T>,
    arrivals: u64,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            waiting: BTreeMap::new(),
            arrivals: 0,
        }
    }
}

impl<T> Queue<T> {
    fn push(&mut self, priority: Priority, item: T) {
        self.arrivals += 1;
        self.waiting.insert((priority, self.arrivals), item);
    }

    fn pop(&mut self) -> Option<T> {
        self.waiting.pop_first().map(|(_, item)| item)
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

enum Due {
    Now,
    At(Instant),
    Idle,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a request's task needs of the key and the run.
struct Carrier {
    client: Arc<ExchangeClient>,
    store: Store,
    run_id: Option<i64>,
    hard_stop: CancellationToken,
}

/// One request from hand-over to reply: the exchange, and the ids of a large reply written as
/// they are read. The exchange is polled first, so the first poll of this hands it over.
async fn carry(
    carrier: Carrier,
    target: Option<Arc<str>>,
    account: Arc<str>,
    action: Action,
    params: Vec<(&'static str, serde_json::Value)>,
    sent: Sent,
) -> Carried {
    let Carrier {
        client,
        store,
        run_id,
        hard_stop,
    } = carrier;
    let (spill, mut chunks) = mpsc::channel::<Chunk>(4);
    let exchange = async move {
        client
            .exchange(
                action.endpoint(),
                target.as_deref(),
                &sent.nonce,
                &params,
                spill,
            )
            .await
    };
    let record = async {
        while let Some(chunk) = chunks.recv().await {
            store
                .spill(run_id, account.clone(), action, sent.attempt_id, chunk)
                .await?;
        }
        Ok::<(), Error>(())
    };
    tokio::select! {
        biased;
        (exchanged, recorded) = async { tokio::join!(exchange, record) } => match recorded {
            Ok(()) => Carried::Replied(exchanged),
            Err(e) => Carried::Failed(e),
        },
        // Dropping the request may leave it to complete at the exchange: the attempt stays in
        // flight, and a later listing finds out what it did.
        () = hard_stop.cancelled() => Carried::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_urgent_request_leaves_first_and_equals_in_the_order_they_came() {
        let mut queue = Queue::default();
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
