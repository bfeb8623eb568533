//! A key as its callers see it: they ask its dispatcher for requests ([`KeyHandle::attempt`]),
//! retry what is transient ([`KeyHandle::call`]), and read why the key stopped ([`KeyStop`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::Exchanged;
use crate::error::Error;
pub use crate::exit::KeyHalt;
use crate::store::Action;

/// The longest `Retry-After` a run waits out; a longer one stops the run (incomplete, reason kept).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct KeyStopReason {
    pub kind: KeyHalt,
    pub message: String,
}

/// The switch that stops every request of the key. The first reason wins.
#[derive(Default)]
pub struct KeyStop {
    token: CancellationToken,
    reason: OnceLock<KeyStopReason>,
}

impl KeyStop {
    pub fn trigger(&self, kind: KeyHalt, message: String) {
        if self.reason.set(KeyStopReason { kind, message }).is_ok() {
            let message = &self.reason.get().expect("just set").message;
            tracing::error!("{message}; no further request will be sent with this key");
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
        self.reason.get().cloned()
    }
}

/// Why a request was not sent, or its reply not waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT/SIGTERM (or the grace period after one ran out).
    Signal,
    /// The key's [`KeyStop`] was thrown.
    Key,
}

/// Which requests go first when several wait for the key: most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Cancel-alls (and what a run cannot start without: the group's listing, snapshots).
    Cancel,
    /// Cancel-alls again, for orders a reply or a listing still found open.
    Recancel,
    /// The listings that prove accounts flat.
    Prove,
    /// The listings that hold the group flat after its sweep.
    Hold,
}

/// Whom a request is for: one account, or the group itself (its account listing, for no account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whom {
    Group,
    Account(Arc<str>),
}

impl Whom {
    /// The name the audit trail's `account` column records it under: the account's nickname,
    /// or for the group the empty name, which no account can have (a nickname has a character).
    pub fn recorded(&self) -> Arc<str> {
        match self {
            Whom::Group => Arc::from(""),
            Whom::Account(account) => account.clone(),
        }
    }
}

impl std::fmt::Display for Whom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Whom::Group => f.write_str("the group"),
            Whom::Account(account) => f.write_str(account),
        }
    }
}

/// One request a caller asks of the key.
pub struct Call {
    pub whom: Whom,
    pub attempt_no: u32,
    pub action: Action,
    pub priority: Priority,
    pub params: Vec<(&'static str, serde_json::Value)>,
}

/// How one attempt ended.
pub enum AttemptResult {
    /// The exchange answered (or the transport failed), and the record is queued.
    Replied(Exchanged),
    /// Nothing was sent: the run is stopping (a signal) or the key is halted.
    NotSent(StopCause),
    /// Sent, but the run stopped waiting for the reply (grace period over, second signal). The
    /// attempt stays `in_flight` until the run is settled, then reads `abandoned`.
    Abandoned,
}

/// A request handed to the dispatcher, with where its answer goes.
pub struct Request {
    pub call: Call,
    pub answer: oneshot::Sender<Result<AttemptResult, Error>>,
}

/// What callers hold of a key: a line to its dispatcher.
#[derive(Clone)]
pub struct KeyHandle {
    pub(super) requests: mpsc::UnboundedSender<Request>,
    pub halt: Arc<KeyStop>,
    pub(super) shutdown: CancellationToken,
}

impl KeyHandle {
    /// A stop signal came: no new request will be sent.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// One request, sent when the dispatcher's queue, pace and in-flight limit let it.
    pub async fn attempt(&self, call: Call) -> Result<AttemptResult, Error> {
        let (answer, heard) = oneshot::channel();
        let gone = || Error::Bug("the key's dispatcher stopped without answering");
        let request = Request { call, answer };
        self.requests.send(request).map_err(|_| gone())?;
        heard.await.map_err(|_| gone())?
    }
}
