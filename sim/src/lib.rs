//! An in-process simulator of Gemini's private REST API (../docs/gemini-api.md), served over real
//! HTTP on loopback so the sweeper can be exercised end to end: signing, nonces, roles, the
//! per-key rate limit, seeded order books and reproducible faults, with a ledger of what really
//! happened to compare the client's story against.
//!
//! A crate of its own, which gemini-sweep's `demo`, `sim` and tests use, so that the sweeper's
//! engine cannot use it; it depends on nothing of gemini-sweep (the signature algorithm is
//! written here again, and the root's tests hold the two against each other).
//!
//! - this file: the simulator's configuration, its handle, and serving it.
//! - [`cli`]: `gemini-sweep sim`, the simulator as a standalone process.
//! - `routes`: one handler for every path, in one visible order.
//! - `auth`: payload, signature, nonce, account and role checks, in the exchange's order.
//! - `ratelimit`: the exchange's per-key limit.
//! - `world`: accounts, their seeded order books and the ledger of what happened.
//! - `faults`: reproducible faults, a hash per request rather than a shared draw.
//! - `body`: large reply bodies, formatted and streamed a chunk at a time.

mod auth;
mod body;
pub mod cli;
mod faults;
mod ratelimit;
mod routes;
mod world;

pub use auth::signature_matches;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::world::World;

/// Everything that shapes one simulated exchange. Two servers with equal configs behave alike.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimConfig {
    pub seed: u64,
    pub accounts: Vec<AccountSpec>,
    pub keys: Vec<KeySpec>,
    pub orders_per_account: RangeInclusive<u32>,
    /// Per-account order counts that override `orders_per_account` (open exchange accounts only).
    #[serde(default)]
    pub orders_for: BTreeMap<String, u32>,
    /// Fraction of orders that refuse cancellation, forever.
    pub reject_fraction: f64,
    /// The per-key limit; `None` is unlimited. The default is the exchange's
    /// ([`RateLimitConfig::exchange_default`]).
    pub rate_limit: Option<RateLimitConfig>,
    pub faults: FaultConfig,
    /// Share of an account's open orders that fill right after its first `/v1/orders` reply.
    pub fill_after_snapshot_fraction: f64,
    /// Orders placed on an account right after its first `/v1/orders` reply.
    pub late_orders_after_snapshot: u32,
    /// How `/v1/account/list` reads `timestamp`.
    #[serde(default)]
    pub account_list_paging: AccountListPaging,
    /// Accounts whose trading strategy has not stopped: it quotes again after a cancel-all.
    #[serde(default)]
    pub requote: Option<Requote>,
}

/// A strategy that keeps running on some accounts: after a cancel-all it places new orders,
/// as a desk's strategy that was never switched off would.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requote {
    pub accounts: BTreeSet<String>,
    /// New orders each time it quotes again.
    pub orders: u32,
    pub when: RequoteWhen,
    /// The cancel-alls it answers by quoting again; `None`: every one.
    #[serde(default)]
    pub rounds: Option<u32>,
}

/// When a strategy quotes again after a cancel-all.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequoteWhen {
    /// This long after it.
    After(Duration),
    /// Right after the account's n-th `/v1/orders` reply since it: tied to the client's own
    /// requests rather than the clock, so a test can know the orders exist.
    AfterListings(u32),
}

/// How `/v1/account/list` reads `timestamp`: the exchange's documentation is silent, so the
/// simulator offers each reading a client must survive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AccountListPaging {
    /// As Gemini's earlier reference documents it: accounts created on or before `timestamp`,
    /// newest first.
    #[default]
    OnOrBefore,
    /// The other reading: accounts created on or after `timestamp`, oldest first.
    OnOrAfter,
    /// `timestamp` ignored: always the oldest accounts, oldest first. No client can page past
    /// the first page of such an exchange.
    IgnoresTimestamp,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 7,
            accounts: SimConfig::numbered_accounts(10),
            keys: vec![KeySpec {
                key: "master-demo".into(),
                secret: "demo-secret".into(),
                nonce_mode: NonceMode::Increasing,
                roles: vec![Role::Trader, Role::Auditor],
                account: None,
                group: None,
            }],
            orders_per_account: 0..=20,
            orders_for: BTreeMap::new(),
            reject_fraction: 0.0,
            rate_limit: Some(RateLimitConfig::exchange_default()),
            faults: FaultConfig::default(),
            fill_after_snapshot_fraction: 0.0,
            late_orders_after_snapshot: 0,
            account_list_paging: AccountListPaging::default(),
            requote: None,
        }
    }
}

impl SimConfig {
    /// Open exchange accounts `acct-0001` ..= `acct-N`.
    pub fn numbered_accounts(n: u32) -> Vec<AccountSpec> {
        (1..=n)
            .map(|i| AccountSpec {
                name: format!("acct-{i:04}"),
                kind: AccountKind::Exchange,
                status: AccountStatus::Open,
                group: None,
            })
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = BTreeMap::new();
        for a in &self.accounts {
            if names.insert(a.name.as_str(), a).is_some() {
                return Err(format!("account {:?} is configured twice", a.name));
            }
        }
        let mut keys = BTreeSet::new();
        for k in &self.keys {
            if !keys.insert(k.key.as_str()) {
                return Err(format!("key {:?} is configured twice", k.key));
            }
            match &k.account {
                Some(a) if !names.contains_key(a.as_str()) => {
                    return Err(format!("key {:?} acts on unknown account {a:?}", k.key));
                }
                Some(a) if names[a.as_str()].group() != k.group() => {
                    return Err(format!(
                        "key {:?} of group {:?} acts on account {a:?} of group {:?}",
                        k.key,
                        k.group(),
                        names[a.as_str()].group()
                    ));
                }
                None if k.key.starts_with("account-") => {
                    return Err(format!("account key {:?} needs an account", k.key));
                }
                _ => {}
            }
        }
        if let Some(r) = &self.requote
            && let Some(unknown) = r.accounts.iter().find(|a| !names.contains_key(a.as_str()))
        {
            return Err(format!("requote: no account {unknown:?} is configured"));
        }
        if self.orders_per_account.is_empty() {
            return Err("orders_per_account is an empty range".into());
        }
        for name in self.orders_for.keys() {
            match names.get(name.as_str()) {
                None => return Err(format!("orders_for names unknown account {name:?}")),
                Some(a) if !a.holds_orders() => {
                    return Err(format!(
                        "orders_for names account {name:?}, which holds no orders (custody or closed)"
                    ));
                }
                Some(_) => {}
            }
        }
        let fractions = [
            ("reject_fraction", self.reject_fraction),
            (
                "fill_after_snapshot_fraction",
                self.fill_after_snapshot_fraction,
            ),
            ("p_500", self.faults.p_500),
            ("p_502", self.faults.p_502),
            ("p_503", self.faults.p_503),
            ("p_stall", self.faults.p_stall),
            ("p_drop", self.faults.p_drop),
            ("p_garbage", self.faults.p_garbage),
            ("p_lost_reply", self.faults.p_lost_reply),
        ];
        for (name, p) in fractions {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be within 0..=1, got {p}"));
            }
        }
        if let Some(rl) = &self.rate_limit
            && !(rl.per_second.is_finite() && rl.per_second > 0.0)
        {
            return Err(format!(
                "rate per_second must be positive, got {}",
                rl.per_second
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub name: String,
    pub kind: AccountKind,
    pub status: AccountStatus,
    /// The group (master key) the account belongs to; `None` is [`DEFAULT_GROUP`].
    #[serde(default)]
    pub group: Option<String>,
}

/// The group of accounts and keys that name none.
pub const DEFAULT_GROUP: &str = "default";

impl AccountSpec {
    /// The account's group name, [`DEFAULT_GROUP`] when unset.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(DEFAULT_GROUP)
    }

    /// Open exchange accounts hold orders; custody and closed accounts hold none.
    pub fn holds_orders(&self) -> bool {
        self.kind == AccountKind::Exchange && self.status == AccountStatus::Open
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Exchange,
    Custody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Open,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    pub key: String,
    pub secret: String,
    pub nonce_mode: NonceMode,
    pub roles: Vec<Role>,
    /// Set for account keys: the one account the key acts on. `None` makes it a group key.
    pub account: Option<String>,
    /// The group the key belongs to; `None` is [`DEFAULT_GROUP`]. A key sees only its group.
    #[serde(default)]
    pub group: Option<String>,
}

impl KeySpec {
    /// The key's group name, [`DEFAULT_GROUP`] when unset.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(DEFAULT_GROUP)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonceMode {
    Increasing,
    Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Trader,
    Auditor,
    Fundmanager,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimitConfig {
    pub per_second: f64,
    /// Requests over the rate that are delayed rather than refused.
    pub burst_queue: u32,
    pub send_retry_after: bool,
}

impl RateLimitConfig {
    /// The documented exchange limit: 600 per minute, 5 extra requests queued.
    pub fn exchange_default() -> Self {
        RateLimitConfig {
            per_second: 10.0,
            burst_queue: 5,
            send_retry_after: false,
        }
    }
}

/// Per-request fault probabilities; see faults.rs for what each one does on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultConfig {
    pub p_500: f64,
    pub p_502: f64,
    pub p_503: f64,
    pub p_stall: f64,
    pub stall_for: Duration,
    pub p_drop: f64,
    pub p_garbage: f64,
    pub p_lost_reply: f64,
    pub failing_accounts: BTreeSet<String>,
    /// Added to every answer, after the request was handled: `latency + U[0,1) * jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    /// Added to every request on its way in, before the rate limiter and the nonce check:
    /// `inbound_latency + U[0,1) * inbound_jitter`, so requests sent in nonce order can reach
    /// the check out of order, as over a jittery network path.
    #[serde(default)]
    pub inbound_latency: Duration,
    #[serde(default)]
    pub inbound_jitter: Duration,
}

impl FaultConfig {
    /// The inbound delay of the request with this serial (1 for the first HTTP request the
    /// server received, 2 for the second, ...), under `seed`.
    pub fn inbound_delay(&self, seed: u64, serial: u64) -> Duration {
        faults::inbound_delay(seed, self, serial)
    }
}

/// The simulator's truth, for comparing against what a client believes happened.
///
/// Built on demand from the compact internal state (see [`SimServer::ledger`]); for books of
/// millions of orders prefer [`SimServer::summary`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub accounts: BTreeMap<String, AccountLedger>,
    pub counters: Counters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLedger {
    pub initial_orders: Vec<u64>,
    pub cancelled: Vec<CancelRecord>,
    /// Every reject event in order; an order refused twice appears twice.
    pub rejects: Vec<u64>,
    pub filled: Vec<u64>,
    pub late: Vec<u64>,
    pub open: Vec<u64>,
    pub requests: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRecord {
    pub order_id: u64,
    /// The nonce of the cancelling request, as sent (a JSON string's content, or a number's text).
    pub nonce: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub ok: u64,
    pub rate_limited: u64,
    pub nonce_errors: u64,
    pub signature_errors: u64,
    pub other_errors: u64,
    pub faults: BTreeMap<String, u64>,
}

/// Counts and checksums of the ledger, cheap at any book size (`GET /admin/summary`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub accounts: BTreeMap<String, AccountSummary>,
    /// Every account added up; the checksums cover every cancelled id of the exchange.
    pub total: AccountSummary,
    pub counters: Counters,
}

/// One account's ledger as counts: the lengths of the [`AccountLedger`] lists, plus two
/// checksums of the cancelled ids so they can be compared without listing them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSummary {
    pub initial: u64,
    pub cancelled: u64,
    /// Reject events, as `AccountLedger::rejects` counts them.
    pub rejects: u64,
    pub filled: u64,
    pub late: u64,
    pub open: u64,
    pub requests: u64,
    /// Sum of the cancelled order ids, wrapping at 2^64 (equal to SQL `sum(order_id)` while the
    /// true sum stays below 2^63).
    pub cancelled_id_sum: u64,
    /// Bitwise xor of the cancelled order ids.
    pub cancelled_id_xor: u64,
}

impl AccountSummary {
    fn add(&mut self, other: &AccountSummary) {
        self.initial += other.initial;
        self.cancelled += other.cancelled;
        self.rejects += other.rejects;
        self.filled += other.filled;
        self.late += other.late;
        self.open += other.open;
        self.requests += other.requests;
        self.cancelled_id_sum = self.cancelled_id_sum.wrapping_add(other.cancelled_id_sum);
        self.cancelled_id_xor ^= other.cancelled_id_xor;
    }
}

/// State shared by every request handler.
pub(crate) struct Shared {
    pub(crate) world: World,
    pub(crate) auth: auth::Auth,
    pub(crate) limiter: Option<ratelimit::Limiter>,
    pub(crate) faults: faults::Faults,
    pub(crate) tallies: routes::Tallies,
    pub(crate) changed: Notify,
    pub(crate) stopping: watch::Receiver<bool>,
    /// While true, every request is handled but its reply waits (see [`SimServer::hold_replies`]).
    pub(crate) replies_held: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn ledger(&self) -> Ledger {
        Ledger {
            accounts: self.world.ledger_accounts(),
            counters: self.tallies.counters(),
        }
    }

    pub(crate) fn summary(&self) -> Summary {
        let accounts = self.world.summaries();
        let mut total = AccountSummary::default();
        for a in accounts.values() {
            total.add(a);
        }
        Summary {
            accounts,
            total,
            counters: self.tallies.counters(),
        }
    }

    /// The ledger JSON, written straight from the compact state (no [`Ledger`] is built).
    pub(crate) fn write_ledger_json(
        &self,
        out: impl std::io::Write,
        pretty: bool,
    ) -> serde_json::Result<()> {
        let view = world::LedgerView {
            world: &self.world,
            counters: self.tallies.counters(),
        };
        if pretty {
            serde_json::to_writer_pretty(out, &view)
        } else {
            serde_json::to_writer(out, &view)
        }
    }
}

/// A running simulator. Dropping it leaves the server running until the runtime stops.
pub struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts a simulator on an ephemeral loopback port.
pub async fn start(config: SimConfig) -> std::io::Result<SimServer> {
    start_on(config, 0).await
}

/// Starts a simulator on `127.0.0.1:port` (0 picks a free port).
pub async fn start_on(config: SimConfig, port: u16) -> std::io::Result<SimServer> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        world: World::new(&config),
        auth: auth::Auth::new(&config.keys),
        limiter: config.rate_limit.clone().map(ratelimit::Limiter::new),
        faults: faults::Faults::new(config.seed, config.faults.clone()),
        tallies: routes::Tallies::default(),
        changed: Notify::new(),
        stopping,
        replies_held: watch::Sender::new(false),
    });
    let app = routes::router(shared.clone());
    let mut stop_signal = stop.subscribe();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_signal.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok(SimServer {
        addr,
        shared,
        stop,
        task,
    })
}

impl SimServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the truth as of now: each account's part is consistent in itself (accounts
    /// are locked one at a time). For huge books this is big; [`SimServer::summary`] is not.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger()
    }

    /// Counts and checksums per account and in total, as served by `GET /admin/summary`.
    pub fn summary(&self) -> Summary {
        self.shared.summary()
    }

    /// Places a fresh open order on `account`, as another session would; returns its id.
    ///
    /// # Panics
    /// If the account does not exist: that is a bug in the calling test.
    pub fn place_order(&self, account: &str) -> u64 {
        let id = self
            .shared
            .world
            .place_order(account)
            .unwrap_or_else(|| panic!("place_order: no account named {account:?}"));
        self.shared.changed.notify_one();
        id
    }

    /// While `held`, requests are handled (a cancel-all cancels) but their replies wait, as if
    /// the network had not delivered them yet; releasing sends the replies still waiting.
    pub fn hold_replies(&self, held: bool) {
        self.shared.replies_held.send_replace(held);
    }

    /// Resolves after the ledger changed since the last call returned (or since start).
    /// Lets a caller persist the ledger without polling.
    pub async fn ledger_changed(&self) {
        self.shared.changed.notified().await;
    }

    /// Stops accepting connections, wakes stalled requests, and waits briefly for in-flight
    /// replies; connections still open after that are cut.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// [`SimServer::shutdown`], returning the state, to read the ledger once the server is down.
    pub(crate) async fn stop(self) -> Arc<Shared> {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        self.shared
    }
}
