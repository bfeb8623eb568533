//! The exchange's state: accounts, their seeded order books, and the ledger of what happened.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::faults::stable_hash;
use super::{AccountKind, AccountLedger, AccountSpec, AccountStatus, Counters, Ledger, SimConfig};

/// Ids start past u32::MAX so a client that squeezes them into 32 bits breaks visibly.
const FIRST_ORDER_ID: u64 = 7_000_000_000;
/// Mid-2017 in ms, the era of the published `account/list` example.
const FIRST_ACCOUNT_CREATED_MS: u64 = 1_495_127_793_000;
const BOOK_EPOCH_MS: u64 = 1_700_000_000_000;

const SYMBOLS: [(&str, f64, usize); 5] = [
    ("btcusd", 60_000.0, 2),
    ("ethusd", 3_000.0, 2),
    ("solusd", 150.0, 3),
    ("ltcusd", 80.0, 2),
    ("dogeusd", 0.15, 5),
];

pub(crate) struct Order {
    id: u64,
    symbol: &'static str,
    side: &'static str,
    price: String,
    original: String,
    remaining: String,
    executed: String,
    timestampms: u64,
    client_order_id: String,
    cancellable: bool,
}

pub(crate) struct Account {
    pub(crate) spec: AccountSpec,
    created: u64,
    counterparty_id: String,
    orders: BTreeMap<u64, Order>,
    ledger: AccountLedger,
    listed_once: bool,
    /// Drives everything that happens to this account after start, so it depends on the seed
    /// and the account name only.
    rng: ChaCha8Rng,
}

pub(crate) struct World {
    reject_fraction: f64,
    fill_fraction: f64,
    late_orders: u32,
    /// Config order, which is also creation order.
    names: Vec<String>,
    accounts: BTreeMap<String, Account>,
    next_id: u64,
    pub(crate) counters: Counters,
}

impl World {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let mut world = World {
            reject_fraction: config.reject_fraction,
            fill_fraction: config.fill_after_snapshot_fraction,
            late_orders: config.late_orders_after_snapshot,
            names: config.accounts.iter().map(|a| a.name.clone()).collect(),
            accounts: BTreeMap::new(),
            next_id: FIRST_ORDER_ID,
            counters: Counters::default(),
        };
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
            world.accounts.insert(
                spec.name.clone(),
                Account {
                    spec: spec.clone(),
                    created,
                    counterparty_id,
                    orders: BTreeMap::new(),
                    ledger: AccountLedger::default(),
                    listed_once: false,
                    rng,
                },
            );
        }
        // Books are drawn in name order from per-account generators, so neither a book nor its
        // ids depend on the order the accounts were configured in.
        let names: Vec<String> = world.accounts.keys().cloned().collect();
        for name in names {
            let acct = world.accounts.get_mut(&name).expect("just inserted");
            let holds_orders =
                acct.spec.kind == AccountKind::Exchange && acct.spec.status == AccountStatus::Open;
            let count = if holds_orders {
                acct.rng.random_range(config.orders_per_account.clone())
            } else {
                0
            };
            for _ in 0..count {
                let id = new_order(&mut world.next_id, acct, world.reject_fraction);
                acct.ledger.initial_orders.push(id);
            }
        }
        world
    }

    pub(crate) fn ledger(&self) -> Ledger {
        let accounts = self
            .accounts
            .iter()
            .map(|(name, a)| {
                let mut l = a.ledger.clone();
                l.open = a.orders.keys().copied().collect();
                (name.clone(), l)
            })
            .collect();
        Ledger {
            accounts,
            counters: self.counters.clone(),
        }
    }

    pub(crate) fn account(&mut self, name: &str) -> Option<&mut Account> {
        self.accounts.get_mut(name)
    }

    /// Custody accounts hold no orders and refuse the order endpoints.
    pub(crate) fn is_custody(&self, name: &str) -> bool {
        self.accounts
            .get(name)
            .is_some_and(|a| a.spec.kind == AccountKind::Custody)
    }

    pub(crate) fn place_order(&mut self, name: &str) -> Option<u64> {
        let acct = self.accounts.get_mut(name)?;
        let id = new_order(&mut self.next_id, acct, self.reject_fraction);
        acct.ledger.late.push(id);
        Some(id)
    }

    /// Cancels what can be cancelled; the rest is rejected and stays open.
    pub(crate) fn cancel_all(&mut self, name: &str, nonce: &str) -> (Vec<u64>, Vec<u64>) {
        let Some(acct) = self.accounts.get_mut(name) else {
            return (Vec::new(), Vec::new());
        };
        let (mut cancelled, mut rejected) = (Vec::new(), Vec::new());
        for o in acct.orders.values() {
            if o.cancellable {
                cancelled.push(o.id);
            } else {
                rejected.push(o.id);
            }
        }
        for id in &cancelled {
            acct.orders.remove(id);
            acct.ledger.cancelled.push(super::CancelRecord {
                order_id: *id,
                nonce: nonce.to_owned(),
            });
        }
        acct.ledger.rejects.extend(&rejected);
        (cancelled, rejected)
    }

    /// The `/v1/orders` reply; the first one per account is followed by the market moving on.
    pub(crate) fn list_orders(&mut self, name: &str) -> Vec<Value> {
        let fill_fraction = self.fill_fraction;
        let late_orders = self.late_orders;
        let reject_fraction = self.reject_fraction;
        let Some(acct) = self.accounts.get_mut(name) else {
            return Vec::new();
        };
        let reply = acct.orders.values().map(order_json).collect();
        if !acct.listed_once {
            acct.listed_once = true;
            let open: Vec<u64> = acct.orders.keys().copied().collect();
            let n = (fill_fraction * open.len() as f64).round() as usize;
            for i in
                rand::seq::index::sample(&mut acct.rng, open.len(), n.min(open.len())).into_vec()
            {
                acct.orders.remove(&open[i]);
                acct.ledger.filled.push(open[i]);
            }
            acct.ledger.filled.sort_unstable();
            for _ in 0..late_orders {
                let id = new_order(&mut self.next_id, acct, reject_fraction);
                acct.ledger.late.push(id);
            }
        }
        reply
    }

    /// Accounts created at or after `since_ms`, oldest first, at most `limit`.
    pub(crate) fn account_list(&self, since_ms: u64, limit: usize) -> Vec<Value> {
        self.names
            .iter()
            .filter_map(|n| self.accounts.get(n))
            .filter(|a| a.created >= since_ms)
            .take(limit)
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
}

impl Account {
    pub(crate) fn count_request(&mut self) {
        self.ledger.requests += 1;
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

fn new_order(next_id: &mut u64, acct: &mut Account, reject_fraction: f64) -> u64 {
    let rng = &mut acct.rng;
    *next_id += rng.random_range(1..=97u64);
    let id = *next_id;
    let (symbol, base, decimals) = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
    let price = base * rng.random_range(0.5..1.5);
    // Amounts in millionths, so the decimal strings are exact.
    let original = rng.random_range(1_000..5_000_000u64);
    let executed = if rng.random_bool(0.2) {
        rng.random_range(0..original)
    } else {
        0
    };
    let order = Order {
        id,
        symbol,
        side: if rng.random_bool(0.5) { "buy" } else { "sell" },
        price: format!("{price:.decimals$}"),
        original: micros(original),
        remaining: micros(original - executed),
        executed: micros(executed),
        timestampms: BOOK_EPOCH_MS + rng.random_range(0..30 * 86_400_000u64),
        client_order_id: if rng.random_bool(0.3) {
            String::new()
        } else {
            format!("cl-{:08x}", rng.random::<u32>())
        },
        cancellable: !rng.random_bool(reject_fraction),
    };
    acct.orders.insert(id, order);
    id
}

fn micros(units: u64) -> String {
    let s = format!("{}.{:06}", units / 1_000_000, units % 1_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn order_json(o: &Order) -> Value {
    json!({
        "order_id": o.id.to_string(),
        "id": o.id.to_string(),
        "symbol": o.symbol,
        "exchange": "gemini",
        "avg_execution_price": if o.executed == "0" { "0.00".to_owned() } else { o.price.clone() },
        "side": o.side,
        "type": "exchange limit",
        "timestamp": (o.timestampms / 1000).to_string(),
        "timestampms": o.timestampms,
        "is_live": true,
        "is_cancelled": false,
        "is_hidden": false,
        "was_forced": false,
        "executed_amount": o.executed,
        "remaining_amount": o.remaining,
        "original_amount": o.original,
        "price": o.price,
        "client_order_id": o.client_order_id,
        "options": [],
    })
}
