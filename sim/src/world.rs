//! The exchange's state: accounts, their seeded order books, and the ledger of what happened.
//!
//! Sized for books of millions of orders: an order is 32 bytes of numbers (formatted only when a
//! reply is written), each account has its own lock, and cancellations are kept as one batch per
//! request (the nonce once, then the ids).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use super::body::{JsonItem, push_fixed, push_hex8, push_micros, push_u64};
use super::faults::{ENDPOINTS, stable_hash};
use super::{
    AccountKind, AccountLedger, AccountListPaging, AccountSpec, AccountStatus, AccountSummary,
    CancelRecord, Counters, RequoteWhen, SimConfig,
};

/// Ids start past u32::MAX so a client that squeezes them into 32 bits breaks visibly.
const FIRST_ORDER_ID: u64 = 7_000_000_000;
/// Mid-2017 in ms, the era of the published `account/list` example.
const FIRST_ACCOUNT_CREATED_MS: u64 = 1_495_127_793_000;
const BOOK_SPAN_MS: u32 = 30 * 86_400_000;

/// Order times count from here: the seeded books span the 30 days before the simulator's
/// process started, and an order placed while it runs carries the wall-clock time it was
/// placed, so a client can compare placement times with its own clock (as `/v1/orders/history`
/// readers must).
static BOOK_EPOCH_MS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now - u64::from(BOOK_SPAN_MS)
});

/// Milliseconds since [`BOOK_EPOCH_MS`] now (saturating after 19 days of uptime).
fn placed_now_ms() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    u32::try_from(now.saturating_sub(*BOOK_EPOCH_MS)).unwrap_or(u32::MAX)
}

/// (symbol, typical price, decimals of the price).
const SYMBOLS: [(&str, f64, u32); 5] = [
    ("btcusd", 60_000.0, 2),
    ("ethusd", 3_000.0, 2),
    ("solusd", 150.0, 3),
    ("ltcusd", 80.0, 2),
    ("dogeusd", 0.15, 5),
];

const SELL: u8 = 1 << 3;
const HAS_CLIENT_ID: u8 = 1 << 4;
const CANCELLABLE: u8 = 1 << 5;

/// One open order, as numbers. Its JSON is written by its [`JsonItem`] impl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Order {
    id: u64,
    /// In units of the symbol's last price digit.
    price: u32,
    /// Amounts in millionths, so their decimal strings are exact.
    original: u32,
    executed: u32,
    /// Milliseconds after `BOOK_EPOCH_MS`.
    placed_ms: u32,
    client_order_id: u32,
    /// Bits 0-2: symbol index; then `SELL`, `HAS_CLIENT_ID`, `CANCELLABLE`.
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Order>() == 32);

impl Order {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn cancellable(&self) -> bool {
        self.flags & CANCELLABLE != 0
    }

    fn draw(rng: &mut ChaCha8Rng, id: u64, reject_fraction: f64) -> Order {
        let symbol = rng.random_range(0..SYMBOLS.len());
        let (_, base, decimals) = SYMBOLS[symbol];
        let price = (base * rng.random_range(0.5..1.5) * 10f64.powi(decimals as i32)).round();
        let original = rng.random_range(1_000..5_000_000u32);
        let executed = if rng.random_bool(0.2) {
            rng.random_range(0..original)
        } else {
            0
        };
        let mut flags = symbol as u8;
        if rng.random_bool(0.5) {
            flags |= SELL;
        }
        let placed_ms = rng.random_range(0..BOOK_SPAN_MS);
        let mut client_order_id = 0;
        if !rng.random_bool(0.3) {
            flags |= HAS_CLIENT_ID;
            client_order_id = rng.random::<u32>();
        }
        if !rng.random_bool(reject_fraction) {
            flags |= CANCELLABLE;
        }
        Order {
            id,
            price: price as u32,
            original,
            executed,
            placed_ms,
            client_order_id,
            flags,
        }
    }
}

impl JsonItem for Order {
    /// The order as `/v1/orders` shows it (keys in alphabetical order, ids as strings).
    fn write_json(&self, buf: &mut Vec<u8>) {
        self.write_as(buf, false);
    }
}

/// An order as `/v1/orders/history` shows it once a cancel-all cancelled it.
pub(crate) struct Cancelled(pub(crate) Order);

impl JsonItem for Cancelled {
    fn write_json(&self, buf: &mut Vec<u8>) {
        self.0.write_as(buf, true);
    }
}

impl Order {
    fn write_as(&self, buf: &mut Vec<u8>, cancelled: bool) {
        let (symbol, _, decimals) = SYMBOLS[usize::from(self.flags & 7)];
        let price = |buf: &mut Vec<u8>| push_fixed(buf, u64::from(self.price), decimals);
        buf.extend_from_slice(br#"{"avg_execution_price":""#);
        if self.executed == 0 {
            buf.extend_from_slice(b"0.00");
        } else {
            price(buf);
        }
        buf.extend_from_slice(br#"","client_order_id":""#);
        if self.flags & HAS_CLIENT_ID != 0 {
            buf.extend_from_slice(b"cl-");
            push_hex8(buf, self.client_order_id);
        }
        buf.extend_from_slice(br#"","exchange":"gemini","executed_amount":""#);
        push_micros(buf, u64::from(self.executed));
        buf.extend_from_slice(br#"","id":""#);
        push_u64(buf, self.id);
        buf.extend_from_slice(if cancelled {
            br#"","is_cancelled":true,"is_hidden":false,"is_live":false,"options":[],"order_id":""#
        } else {
            br#"","is_cancelled":false,"is_hidden":false,"is_live":true,"options":[],"order_id":""#
        });
        push_u64(buf, self.id);
        buf.extend_from_slice(br#"","original_amount":""#);
        push_micros(buf, u64::from(self.original));
        buf.extend_from_slice(br#"","price":""#);
        price(buf);
        buf.extend_from_slice(br#"","remaining_amount":""#);
        push_micros(buf, u64::from(self.original - self.executed));
        buf.extend_from_slice(br#"","side":""#);
        buf.extend_from_slice(if self.flags & SELL != 0 {
            b"sell"
        } else {
            b"buy"
        });
        buf.extend_from_slice(br#"","symbol":""#);
        buf.extend_from_slice(symbol.as_bytes());
        let ms = *BOOK_EPOCH_MS + u64::from(self.placed_ms);
        buf.extend_from_slice(br#"","timestamp":""#);
        push_u64(buf, ms / 1000);
        buf.extend_from_slice(br#"","timestampms":"#);
        push_u64(buf, ms);
        buf.extend_from_slice(br#","type":"exchange limit","was_forced":false}"#);
    }
}

/// The orders one cancel-all cancelled, under the nonce of its request.
struct CancelBatch {
    nonce: Box<str>,
    ids: Arc<Vec<u64>>,
}

/// Where an account's running strategy stands.
struct Strategy {
    /// Cancel-alls it will still answer by quoting again (`None`: every one).
    rounds_left: Option<u32>,
    /// Quotes due at these times, placed once the clock has passed them.
    due: Vec<tokio::time::Instant>,
    /// Listings since the last cancel-all, while a quote waits for the n-th.
    listings: Option<u32>,
}

/// What changes over an account's life; behind the account's lock.
struct Book {
    /// Open orders in id order. Shared with replies still being written, so a change replaces
    /// the vector instead of editing it under a reader.
    open: Arc<Vec<Order>>,
    initial: Vec<u64>,
    cancelled: Vec<CancelBatch>,
    /// The orders cancel-alls cancelled, in the order they were cancelled: the history.
    closed: Vec<Order>,
    cancelled_count: u64,
    cancelled_sum: u64,
    cancelled_xor: u64,
    /// Reject events, one batch per cancel-all that refused something.
    rejects: Vec<Arc<Vec<u64>>>,
    reject_count: u64,
    filled: Vec<u64>,
    late: Vec<u64>,
    listed_once: bool,
    /// The account's strategy, if it keeps quoting after a cancel-all.
    strategy: Option<Strategy>,
    /// Drives everything that happens to this account, so it depends on the seed and the
    /// account name only.
    rng: ChaCha8Rng,
}

pub(crate) struct Account {
    pub(crate) spec: AccountSpec,
    created: u64,
    counterparty_id: String,
    /// Requests that named the account (or came with its account key) and passed authentication.
    pub(crate) requests: AtomicU64,
    /// Per endpoint: how many authenticated requests it has had for this account.
    pub(crate) ordinals: [AtomicU64; ENDPOINTS],
    book: Mutex<Book>,
}

impl Account {
    fn book(&self) -> MutexGuard<'_, Book> {
        // A handler that panicked mid-update (only the deliberate `drop` fault panics, and it
        // holds no lock) must not take the whole simulator down with it.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct World {
    reject_fraction: f64,
    fill_fraction: f64,
    late_orders: u32,
    account_list_paging: AccountListPaging,
    /// How many orders a running strategy places, and when.
    requote: Option<(u32, RequoteWhen)>,
    /// Config order, which is also creation order.
    accounts: Vec<Account>,
    index: HashMap<String, usize>,
    /// Account indexes in name order, for the ledger.
    by_name: Vec<usize>,
    /// The last id handed out; ids are unique across the exchange.
    last_id: AtomicU64,
}

impl World {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let mut accounts = Vec::with_capacity(config.accounts.len());
        let mut created = FIRST_ACCOUNT_CREATED_MS;
        for spec in &config.accounts {
            let h = stable_hash(config.seed, &["created", &spec.name]);
            // Between an hour and ~12 days apart, always strictly increasing.
            created += 3_600_000 + h % 1_000_000_000;
            let cp = stable_hash(config.seed, &["counterparty", &spec.name]);
            let counterparty_id = (0..8)
                .map(|i| char::from(b'A' + ((cp >> (i * 5)) % 26) as u8))
                .collect();
            let rng = ChaCha8Rng::seed_from_u64(stable_hash(config.seed, &["book", &spec.name]));
            accounts.push(Account {
                spec: spec.clone(),
                created,
                counterparty_id,
                requests: AtomicU64::new(0),
                ordinals: Default::default(),
                book: Mutex::new(Book {
                    open: Arc::new(Vec::new()),
                    initial: Vec::new(),
                    cancelled: Vec::new(),
                    closed: Vec::new(),
                    cancelled_count: 0,
                    cancelled_sum: 0,
                    cancelled_xor: 0,
                    rejects: Vec::new(),
                    reject_count: 0,
                    filled: Vec::new(),
                    late: Vec::new(),
                    listed_once: false,
                    strategy: config
                        .requote
                        .as_ref()
                        .filter(|r| r.accounts.contains(&spec.name))
                        .map(|r| Strategy {
                            rounds_left: r.rounds,
                            due: Vec::new(),
                            listings: None,
                        }),
                    rng,
                }),
            });
        }
        let index: HashMap<String, usize> = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.spec.name.clone(), i))
            .collect();
        let mut by_name: Vec<usize> = (0..accounts.len()).collect();
        by_name.sort_by(|a, b| accounts[*a].spec.name.cmp(&accounts[*b].spec.name));

        // Books are drawn in name order from per-account generators, so neither a book nor its
        // ids depend on the order the accounts were configured in.
        let mut last_id = FIRST_ORDER_ID;
        for &i in &by_name {
            let acct = &mut accounts[i];
            let book = acct.book.get_mut().unwrap_or_else(|e| e.into_inner());
            let count = if !acct.spec.holds_orders() {
                0
            } else if let Some(n) = config.orders_for.get(&acct.spec.name) {
                *n
            } else {
                book.rng.random_range(config.orders_per_account.clone())
            } as usize;
            let mut open = Vec::with_capacity(count);
            for _ in 0..count {
                last_id += book.rng.random_range(1..=97u64);
                open.push(Order::draw(&mut book.rng, last_id, config.reject_fraction));
            }
            book.initial = open.iter().map(Order::id).collect();
            book.open = Arc::new(open);
        }
        World {
            reject_fraction: config.reject_fraction,
            fill_fraction: config.fill_after_snapshot_fraction,
            late_orders: config.late_orders_after_snapshot,
            account_list_paging: config.account_list_paging,
            requote: config.requote.as_ref().map(|r| (r.orders, r.when)),
            accounts,
            index,
            by_name,
            last_id: AtomicU64::new(last_id),
        }
    }

    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(crate) fn account(&self, i: usize) -> &Account {
        &self.accounts[i]
    }

    /// A fresh order at the end of `book` with the next id of the exchange.
    fn new_order(&self, book: &mut Book) -> u64 {
        let gap = book.rng.random_range(1..=97u64);
        let id = self.last_id.fetch_add(gap, Ordering::Relaxed) + gap;
        let mut order = Order::draw(&mut book.rng, id, self.reject_fraction);
        order.placed_ms = placed_now_ms();
        Arc::make_mut(&mut book.open).push(order);
        book.late.push(id);
        id
    }

    pub(crate) fn place_order(&self, name: &str) -> Option<u64> {
        let acct = self.account(self.find(name)?);
        let mut book = self.book(acct);
        Some(self.new_order(&mut book))
    }

    /// The account's book, with the quotes its strategy had due by now placed.
    fn book<'a>(&self, acct: &'a Account) -> MutexGuard<'a, Book> {
        let mut book = acct.book();
        let now = tokio::time::Instant::now();
        let due = book.strategy.as_mut().map_or(0, |s| {
            let before = s.due.len();
            s.due.retain(|&at| at > now);
            before - s.due.len()
        });
        for _ in 0..due {
            self.quote(&mut book);
        }
        book
    }

    /// The strategy quotes again: its new orders go on the book.
    fn quote(&self, book: &mut Book) {
        for _ in 0..self.requote.map_or(0, |(orders, _)| orders) {
            self.new_order(book);
        }
    }

    /// A cancel-all reached an account whose strategy is running: it will quote again.
    fn strategy_after_cancel(&self, book: &mut Book) {
        let (Some((_, when)), Some(strategy)) = (self.requote, book.strategy.as_mut()) else {
            return;
        };
        match &mut strategy.rounds_left {
            Some(0) => return,
            Some(n) => *n -= 1,
            None => {}
        }
        match when {
            RequoteWhen::After(after) => strategy.due.push(tokio::time::Instant::now() + after),
            RequoteWhen::AfterListings(_) => strategy.listings = Some(0),
        }
    }

    /// A listing of an account whose strategy waits for its n-th listing to quote again.
    fn strategy_after_listing(&self, book: &mut Book) {
        let (Some((_, RequoteWhen::AfterListings(n))), Some(strategy)) =
            (self.requote, book.strategy.as_mut())
        else {
            return;
        };
        let Some(seen) = strategy.listings.as_mut() else {
            return;
        };
        *seen += 1;
        if *seen >= n {
            strategy.listings = None;
            self.quote(book);
        }
    }

    /// Cancels what can be cancelled; the rest is rejected and stays open.
    /// Returns (cancelled, rejected) ids in id order.
    pub(crate) fn cancel_all(&self, i: usize, nonce: &str) -> (Arc<Vec<u64>>, Arc<Vec<u64>>) {
        let mut book = self.book(self.account(i));
        let kept = book.open.iter().filter(|o| !o.cancellable()).count();
        let mut cancelled = Vec::with_capacity(book.open.len() - kept);
        let mut remaining = Vec::with_capacity(kept);
        let mut closed = Vec::with_capacity(book.open.len() - kept);
        for o in book.open.iter() {
            if o.cancellable() {
                cancelled.push(o.id);
                closed.push(*o);
            } else {
                remaining.push(*o);
            }
        }
        book.closed.extend(closed);
        let rejected: Vec<u64> = remaining.iter().map(Order::id).collect();
        book.open = Arc::new(remaining);
        let cancelled = Arc::new(cancelled);
        let rejected = Arc::new(rejected);
        if !cancelled.is_empty() {
            for id in cancelled.iter() {
                book.cancelled_sum = book.cancelled_sum.wrapping_add(*id);
                book.cancelled_xor ^= *id;
            }
            book.cancelled_count += cancelled.len() as u64;
            book.cancelled.push(CancelBatch {
                nonce: nonce.into(),
                ids: cancelled.clone(),
            });
        }
        if !rejected.is_empty() {
            book.reject_count += rejected.len() as u64;
            book.rejects.push(rejected.clone());
        }
        self.strategy_after_cancel(&mut book);
        (cancelled, rejected)
    }

    /// The `/v1/orders` reply; the first one per account is followed by the market moving on.
    pub(crate) fn list_orders(&self, i: usize) -> Arc<Vec<Order>> {
        let mut book = self.book(self.account(i));
        let reply = book.open.clone();
        self.strategy_after_listing(&mut book);
        if !book.listed_once {
            book.listed_once = true;
            let len = book.open.len();
            let n = ((self.fill_fraction * len as f64).round() as usize).min(len);
            if n > 0 {
                let mut fills = vec![false; len];
                for k in rand::seq::index::sample(&mut book.rng, len, n) {
                    fills[k] = true;
                }
                let mut open = Vec::with_capacity(len - n);
                let mut filled = Vec::with_capacity(n);
                for (o, fill) in book.open.iter().zip(&fills) {
                    if *fill {
                        filled.push(o.id);
                    } else {
                        open.push(*o);
                    }
                }
                book.open = Arc::new(open);
                book.filled.extend(filled);
                book.filled.sort_unstable();
            }
            for _ in 0..self.late_orders {
                self.new_order(&mut book);
            }
        }
        reply
    }

    /// `/v1/orders/history`: the account's cancelled orders placed at or after `from_ms`, oldest
    /// first (then by id), at most `limit`. Filled orders are not kept, so never listed.
    pub(crate) fn order_history(
        &self,
        i: usize,
        from_ms: Option<u64>,
        limit: usize,
    ) -> Vec<Cancelled> {
        let book = self.book(self.account(i));
        let from = from_ms.map_or(0, |ms| ms.saturating_sub(*BOOK_EPOCH_MS));
        let mut page: Vec<Order> = book
            .closed
            .iter()
            .filter(|o| u64::from(o.placed_ms) >= from)
            .copied()
            .collect();
        page.sort_unstable_by_key(|o| (o.placed_ms, o.id));
        page.truncate(limit);
        page.into_iter().map(Cancelled).collect()
    }

    /// One page of `group`'s accounts, at most `limit`, as the configured paging reads
    /// `timestamp` (`ms`).
    pub(crate) fn account_list(&self, group: &str, ms: Option<u64>, limit: usize) -> Vec<Value> {
        let in_group = self.accounts.iter().filter(|a| a.spec.group() == group);
        let page: Vec<&Account> = match (self.account_list_paging, ms) {
            (AccountListPaging::OnOrBefore, ms) => in_group
                .rev()
                .filter(|a| ms.is_none_or(|ms| a.created <= ms))
                .take(limit)
                .collect(),
            (AccountListPaging::OnOrAfter, ms) => in_group
                .filter(|a| ms.is_none_or(|ms| a.created >= ms))
                .take(limit)
                .collect(),
            (AccountListPaging::IgnoresTimestamp, _) => in_group.take(limit).collect(),
        };
        page.into_iter()
            .map(|a| {
                json!({
                    "name": display_name(&a.spec.name),
                    "account": a.spec.name,
                    "type": match a.spec.kind {
                        AccountKind::Exchange => "exchange",
                        AccountKind::Custody => "custody",
                    },
                    "counterparty_id": a.counterparty_id,
                    "created": a.created,
                    "status": match a.spec.status {
                        AccountStatus::Open => "open",
                        AccountStatus::Closed => "closed",
                    },
                })
            })
            .collect()
    }

    /// Every account's ledger, expanded; each account is read under its own lock.
    pub(crate) fn ledger_accounts(&self) -> BTreeMap<String, AccountLedger> {
        self.by_name
            .iter()
            .map(|&i| {
                let acct = &self.accounts[i];
                let book = self.book(acct);
                let ledger = AccountLedger {
                    initial_orders: book.initial.clone(),
                    cancelled: book
                        .cancelled
                        .iter()
                        .flat_map(|b| {
                            b.ids.iter().map(|id| CancelRecord {
                                order_id: *id,
                                nonce: b.nonce.to_string(),
                            })
                        })
                        .collect(),
                    rejects: book
                        .rejects
                        .iter()
                        .flat_map(|r| r.iter().copied())
                        .collect(),
                    filled: book.filled.clone(),
                    late: book.late.clone(),
                    open: book.open.iter().map(Order::id).collect(),
                    requests: acct.requests.load(Ordering::Relaxed),
                };
                (acct.spec.name.clone(), ledger)
            })
            .collect()
    }

    pub(crate) fn summaries(&self) -> BTreeMap<String, AccountSummary> {
        self.by_name
            .iter()
            .map(|&i| {
                let acct = &self.accounts[i];
                let book = self.book(acct);
                let summary = AccountSummary {
                    initial: book.initial.len() as u64,
                    cancelled: book.cancelled_count,
                    rejects: book.reject_count,
                    filled: book.filled.len() as u64,
                    late: book.late.len() as u64,
                    open: book.open.len() as u64,
                    requests: acct.requests.load(Ordering::Relaxed),
                    cancelled_id_sum: book.cancelled_sum,
                    cancelled_id_xor: book.cancelled_xor,
                };
                (acct.spec.name.clone(), summary)
            })
            .collect()
    }
}

/// The ledger JSON written from the compact state, in [`super::Ledger`]'s shape.
pub(crate) struct LedgerView<'a> {
    pub(crate) world: &'a World,
    pub(crate) counters: Counters,
}

impl Serialize for LedgerView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut ledger = s.serialize_struct("Ledger", 2)?;
        ledger.serialize_field("accounts", &AccountsView(self.world))?;
        ledger.serialize_field("counters", &self.counters)?;
        ledger.end()
    }
}

struct AccountsView<'a>(&'a World);

impl Serialize for AccountsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let world = self.0;
        let mut map = s.serialize_map(Some(world.by_name.len()))?;
        for &i in &world.by_name {
            let acct = &world.accounts[i];
            let book = world.book(acct);
            map.serialize_entry(
                &acct.spec.name,
                &AccountView {
                    book: &book,
                    requests: acct.requests.load(Ordering::Relaxed),
                },
            )?;
        }
        map.end()
    }
}

struct AccountView<'a> {
    book: &'a Book,
    requests: u64,
}

/// Serializes the items of an iterator as a JSON array.
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

#[derive(Serialize)]
struct CancelRecordRef<'a> {
    order_id: u64,
    nonce: &'a str,
}

impl Serialize for AccountView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.book;
        let mut l = s.serialize_struct("AccountLedger", 7)?;
        l.serialize_field("initial_orders", &b.initial)?;
        l.serialize_field(
            "cancelled",
            &Seq(|| {
                b.cancelled.iter().flat_map(|batch| {
                    batch.ids.iter().map(|id| CancelRecordRef {
                        order_id: *id,
                        nonce: &batch.nonce,
                    })
                })
            }),
        )?;
        l.serialize_field(
            "rejects",
            &Seq(|| b.rejects.iter().flat_map(|r| r.iter().copied())),
        )?;
        l.serialize_field("filled", &b.filled)?;
        l.serialize_field("late", &b.late)?;
        l.serialize_field("open", &Seq(|| b.open.iter().map(Order::id)))?;
        l.serialize_field("requests", &self.requests)?;
        l.end()
    }
}

/// "acct-0003" is listed as "Acct 0003": the nickname, not the display name, is what clients send.
fn display_name(nickname: &str) -> String {
    let mut out = String::with_capacity(nickname.len());
    let mut upper = true;
    for c in nickname.chars() {
        if c == '-' || c == '_' {
            out.push(' ');
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{OrderList, to_vec};

    fn world(orders: u32, reject_fraction: f64) -> World {
        World::new(&SimConfig {
            orders_per_account: orders..=orders,
            reject_fraction,
            ..SimConfig::default()
        })
    }

    /// The hand-written JSON is what serde_json makes of the same fields.
    #[test]
    fn order_json_matches_the_documented_shape() {
        let w = world(400, 0.1);
        let orders = w.list_orders(w.find("acct-0002").unwrap());
        let listed: Vec<Value> =
            serde_json::from_slice(&to_vec(OrderList::new(orders.clone()))).unwrap();
        assert_eq!(listed.len(), 400);
        let mut saw = (false, false, false);
        for (o, v) in orders.iter().zip(&listed) {
            let (symbol, _, decimals) = SYMBOLS[usize::from(o.flags & 7)];
            let price = format!(
                "{:.*}",
                decimals as usize,
                f64::from(o.price) / 10f64.powi(decimals as i32)
            );
            let micros = |u: u32| {
                let s = format!("{}.{:06}", u / 1_000_000, u % 1_000_000);
                s.trim_end_matches('0').trim_end_matches('.').to_owned()
            };
            let ms = *BOOK_EPOCH_MS + u64::from(o.placed_ms);
            let expected = json!({
                "order_id": o.id.to_string(),
                "id": o.id.to_string(),
                "symbol": symbol,
                "exchange": "gemini",
                "avg_execution_price": if o.executed == 0 { "0.00".to_owned() } else { price.clone() },
                "side": if o.flags & SELL != 0 { "sell" } else { "buy" },
                "type": "exchange limit",
                "timestamp": (ms / 1000).to_string(),
                "timestampms": ms,
                "is_live": true,
                "is_cancelled": false,
                "is_hidden": false,
                "was_forced": false,
                "executed_amount": micros(o.executed),
                "remaining_amount": micros(o.original - o.executed),
                "original_amount": micros(o.original),
                "price": price,
                "client_order_id": if o.flags & HAS_CLIENT_ID != 0 {
                    format!("cl-{:08x}", o.client_order_id)
                } else {
                    String::new()
                },
                "options": [],
            });
            assert_eq!(v, &expected);
            saw.0 |= o.executed > 0;
            saw.1 |= o.flags & HAS_CLIENT_ID == 0;
            saw.2 |= o.flags & 7 == 4;
        }
        assert!(
            saw.0 && saw.1 && saw.2,
            "partly executed, no client id, doge"
        );
    }

    #[test]
    fn ids_increase_across_the_exchange_and_books_do_not_depend_on_config_order() {
        let w = world(50, 0.0);
        let mut all: Vec<u64> = Vec::new();
        for &i in &w.by_name {
            let ids = w.account(i).book().initial.clone();
            assert!(ids.windows(2).all(|p| p[0] < p[1]));
            assert!(all.last().is_none_or(|last| *last < ids[0]));
            all.extend(ids);
        }
        assert!(all[0] > FIRST_ORDER_ID);
        let mut reversed = SimConfig {
            orders_per_account: 50..=50,
            ..SimConfig::default()
        };
        reversed.accounts.reverse();
        let r = World::new(&reversed);
        assert_eq!(r.ledger_accounts(), w.ledger_accounts());
    }

    #[test]
    fn the_ledger_view_serializes_like_the_ledger() {
        let w = world(30, 0.3);
        for name in ["acct-0001", "acct-0004"] {
            let i = w.find(name).unwrap();
            w.cancel_all(i, "17");
            w.cancel_all(i, "18");
        }
        let counters = Counters::default();
        let view = serde_json::to_value(LedgerView {
            world: &w,
            counters: counters.clone(),
        })
        .unwrap();
        let ledger = super::super::Ledger {
            accounts: w.ledger_accounts(),
            counters,
        };
        assert_eq!(view, serde_json::to_value(&ledger).unwrap());
        let a = &ledger.accounts["acct-0004"];
        assert!(!a.cancelled.is_empty() && a.cancelled.iter().all(|c| c.nonce == "17"));
        assert_eq!(a.rejects.len(), 2 * a.open.len());
        let s = &w.summaries()["acct-0004"];
        assert_eq!(s.cancelled, a.cancelled.len() as u64);
        assert_eq!(
            s.cancelled_id_sum,
            a.cancelled.iter().map(|c| c.order_id).sum::<u64>()
        );
    }
}
