//! What a reply means: the verdict on one HTTP exchange, and the order ids it carries.
//!
//! Parsing is one serde visitor that hands ids and orders to a [`Sink`] as it meets them. A small
//! reply is parsed from memory and its ids are kept; a large one is parsed from a stream on a
//! blocking thread and its ids leave in chunks as they are read, so no book is too large to audit
//! and memory stays bounded whatever the book size.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Which successful reply a call expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `{"result":"ok","details":{"cancelledOrders":[...],"cancelRejects":[...]}}`
    CancelAll,
    /// `[{"order_id":"...", ...}, ...]`
    Orders,
    /// `[{"name":..., "account":..., "type":..., "status":..., "created":...}, ...]`
    Accounts,
}

/// One account of the group as `/v1/account/list` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ListedAccount {
    /// The display name.
    #[serde(default)]
    pub name: String,
    /// The nickname: what the `account` field of a request names.
    pub account: String,
    /// `exchange` (holds orders) or `custody`.
    #[serde(rename = "type", default)]
    pub kind: AccountType,
    /// `open` or `closed`.
    #[serde(default)]
    pub status: AccountState,
    /// Creation time, in milliseconds since the epoch.
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default)]
    pub counterparty_id: Option<String>,
    /// Set by discovery when `account` broke the nickname rule: why it is never sent. `account`
    /// then holds the raw text escaped, which no nickname can equal.
    #[serde(skip)]
    pub unusable: Option<String>,
}

impl ListedAccount {
    /// An open exchange account: the only kind that holds orders.
    pub fn may_hold_orders(&self) -> bool {
        self.kind == AccountType::Exchange && self.status == AccountState::Open
    }
}

/// Defines an enum for a word of the account listing: the words gemini-sweep acts on, `Unknown`
/// when the exchange wrote none, and `Other` for any other word. An unknown word is kept, never
/// refused: refusing it would lose the account from the listing. It is outside text, escaped
/// wherever it is shown.
macro_rules! listed_word {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($variant,)+
            /// The exchange wrote no word.
            #[default]
            Unknown,
            /// A word this table does not name, as the exchange wrote it.
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $word,)+
                    $name::Unknown => "",
                    $name::Other(text) => text,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> $name {
                match text.as_str() {
                    $($word => $name::$variant,)+
                    "" => $name::Unknown,
                    _ => $name::Other(text),
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name::from(text.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(word: $name) -> String {
                match word {
                    $name::Other(text) => text,
                    known => known.as_str().to_owned(),
                }
            }
        }
    };
}

listed_word!(
    /// An account's `type` in the listing.
    AccountType {
        Exchange = "exchange",
        Custody = "custody",
    }
);

listed_word!(
    /// An account's `status` in the listing.
    AccountState {
        Open = "open",
        Closed = "closed",
    }
);

/// One active order as `/v1/orders` lists it (the fields the audit trail keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    pub order_id: u64,
    pub symbol: String,
    pub side: String,
    pub price: String,
    pub remaining_amount: String,
    pub client_order_id: Option<String>,
    pub timestampms: Option<i64>,
    /// `is_cancelled: true`: how `/v1/orders/history` marks an order a cancel closed.
    pub is_cancelled: bool,
}

/// Ids or orders handed over while a large reply is still being read.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Cancelled(Vec<u64>),
    Rejected(Vec<u64>),
    Orders(Vec<OpenOrder>),
}

/// What a successful reply carried. When `streamed`, the ids already left as [`Chunk`]s and the
/// vectors are empty; the counts are always complete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub cancelled: Vec<u64>,
    pub rejected: Vec<u64>,
    pub orders: Vec<OpenOrder>,
    /// The accounts of an `/v1/account/list` page (at most 500: always kept in memory).
    pub accounts: Vec<ListedAccount>,
    pub cancelled_count: u64,
    pub rejected_count: u64,
    pub orders_count: u64,
    pub streamed: bool,
}

impl Collected {
    /// Ids (cancel-all) or orders (listing) the reply reported.
    pub fn items(&self) -> u64 {
        self.cancelled_count + self.rejected_count + self.orders_count
    }
}

/// How a listing-related nonce refusal reads: it says what is wrong with the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRefusal {
    /// "has not increased since your last call": a race between our own requests, or another
    /// user of the key, or a key that has seen larger nonces.
    NotIncreased,
    /// "is not within 30 seconds of server time": a time-based key and a nonce off the clock.
    OutsideWindow,
    /// "was not parseable as a number": a nonce in the other mode's format.
    Unparseable,
}

/// The exchange asked the whole key to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// 429: too many requests for the key.
    RateLimited(Option<Duration>),
    /// 503: maintenance.
    Maintenance(Option<Duration>),
}

impl Pause {
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Pause::RateLimited(d) | Pause::Maintenance(d) => d,
        }
    }
}

/// What one exchange amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok(Collected),
    /// Worth another attempt with a fresh nonce after a pause.
    Transient {
        reason: Reason,
        message: String,
        /// Set when the exchange pushed back on the whole key, not just this request.
        pause: Option<Pause>,
    },
    /// `InvalidNonce`: the engine decides whether it was a race or a key that cannot work.
    NonceRefused {
        refusal: NonceRefusal,
        message: String,
    },
    /// Repeating the call for this account cannot succeed (unknown, closed, custody account...).
    AccountRefused {
        reason: Reason,
        message: String,
    },
    /// The exchange refused the key or the request as configured (signature, role, IP allow-list,
    /// a redirect, an endpoint it does not know): every further request would fail the same way.
    KeyRefused {
        reason: Reason,
        message: String,
    },
}

impl Verdict {
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Verdict::Ok(_) => None,
            Verdict::NonceRefused { .. } => Some(&Reason::InvalidNonce),
            Verdict::Transient { reason, .. }
            | Verdict::AccountRefused { reason, .. }
            | Verdict::KeyRefused { reason, .. } => Some(reason),
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Verdict::Ok(_) => None,
            Verdict::Transient { message, .. }
            | Verdict::NonceRefused { message, .. }
            | Verdict::AccountRefused { message, .. }
            | Verdict::KeyRefused { message, .. } => Some(message),
        }
    }
}

/// Defines [`Reason`]: the reasons gemini-sweep acts on, each spelled as its variant, and
/// `Other` for the rest.
macro_rules! reasons {
    ($($(#[$meta:meta])* $variant:ident,)+) => {
        /// The `reason` of an error reply (or the client's own name for a failure that brought
        /// no JSON error): the ones gemini-sweep acts on by name, and any other as the exchange
        /// wrote it, which is outside text (escaped wherever it is shown).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Reason {
            $($(#[$meta])* $variant,)+
            /// A reason this table does not name (`HTTP502` for an error without a JSON body).
            Other(String),
        }

        impl Reason {
            const NAMED: &[Reason] = &[$(Reason::$variant),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$variant => stringify!($variant),)+
                    Reason::Other(text) => text,
                }
            }
        }
    };
}

reasons!(
    // What the exchange says of the whole key.
    RateLimit,
    Maintenance,
    System,
    InvalidNonce,
    // About the key or the request's form, not the account named: the first one stops the
    // run. (`MissingAccounts`, `EndpointMismatch` and the missing headers can only come from a
    // request built wrong, which every other request would repeat.)
    InvalidSignature,
    InvalidApiKey,
    MissingRole,
    ApiKeyIpFilteringFailure,
    RemoteAddressForbidden,
    MissingApikeyHeader,
    MissingPayloadHeader,
    MissingSignatureHeader,
    InvalidJson,
    EndpointMismatch,
    MissingAccounts,
    AccountsOnGroupOnlyApi,
    EndpointNotFound,
    MethodNotAllowed,
    // The client's own, for failures that never reached a JSON error body.
    Timeout,
    ConnectionError,
    UnparseableBody,
    Redirect,
);

impl Reason {
    /// The reason the exchange (or the client) wrote: a named one, or `Other`.
    pub fn parse(text: &str) -> Reason {
        Self::NAMED
            .iter()
            .find(|r| r.as_str() == text)
            .cloned()
            .unwrap_or_else(|| Reason::Other(text.to_owned()))
    }

    /// About the key or the request's form: every further request would be refused the same
    /// way, whatever account it names.
    pub fn refuses_the_key(&self) -> bool {
        use Reason::*;
        matches!(
            self,
            InvalidSignature
                | InvalidApiKey
                | MissingRole
                | ApiKeyIpFilteringFailure
                | RemoteAddressForbidden
                | MissingApikeyHeader
                | MissingPayloadHeader
                | MissingSignatureHeader
                | InvalidJson
                | EndpointMismatch
                | MissingAccounts
                | AccountsOnGroupOnlyApi
                | EndpointNotFound
                | MethodNotAllowed
        )
    }

    /// The same reason with an unnamed one's text passed through `f` (the client redacts the
    /// key from it); a named reason is no outside text.
    pub fn map_text(self, f: impl FnOnce(&str) -> String) -> Reason {
        match self {
            Reason::Other(text) => Reason::Other(f(&text)),
            named => named,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    reason: Option<String>,
    message: Option<String>,
}

/// What a complete non-200 reply means. Pure, so that every status and body shape can be tested
/// (and fuzzed) without a server.
pub fn classify_error(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    location: Option<&str>,
) -> Verdict {
    if (300..400).contains(&status) {
        return Verdict::KeyRefused {
            reason: Reason::Redirect,
            message: format!(
                "HTTP {status} redirecting to {}; gemini-sweep follows no redirects (a redirect could carry the signed request elsewhere): check --base-url",
                location.unwrap_or("(no Location)")
            ),
        };
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let reason = parsed
        .as_ref()
        .and_then(|b| b.reason.as_deref())
        .map_or_else(|| Reason::Other(format!("HTTP{status}")), Reason::parse);
    let message = parsed
        .and_then(|b| b.message)
        .unwrap_or_else(|| format!("HTTP {status} without a JSON error body"));
    if status == 429 {
        // The docs say `RateLimit`, an OpenAPI example says `Too Many Requests`: one name here.
        return Verdict::Transient {
            reason: Reason::RateLimit,
            message,
            pause: Some(Pause::RateLimited(retry_after)),
        };
    }
    if status == 503 || reason == Reason::Maintenance {
        return Verdict::Transient {
            reason,
            message,
            pause: Some(Pause::Maintenance(retry_after)),
        };
    }
    if reason == Reason::InvalidNonce {
        let refusal = if message.contains("not within") {
            NonceRefusal::OutsideWindow
        } else if message.contains("not parseable") {
            NonceRefusal::Unparseable
        } else {
            NonceRefusal::NotIncreased
        };
        return Verdict::NonceRefused { refusal, message };
    }
    if status >= 500 || reason == Reason::System {
        return Verdict::Transient {
            reason,
            message,
            pause: None,
        };
    }
    if reason.refuses_the_key() || matches!(status, 401 | 403 | 404 | 405) {
        return Verdict::KeyRefused { reason, message };
    }
    Verdict::AccountRefused { reason, message }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3), as a delay from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a complete successful reply held in memory.
pub fn parse_ok(expect: Expect, body: &[u8]) -> Option<Collected> {
    let mut sink = Sink::in_memory();
    let mut de = serde_json::Deserializer::from_slice(body);
    Seed::new(expect, &mut sink).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(sink.finish())
}

/// Parses a successful reply read from `reader`, handing ids to `spill` in chunks as it goes.
/// Returns the counts, or why the reply is not the expected JSON (ids already spilled then
/// belong to a reply that turned out invalid; the caller discards them).
pub fn parse_streaming(
    expect: Expect,
    reader: impl std::io::Read,
    spill: &mut dyn FnMut(Chunk) -> Result<(), RecorderGone>,
) -> Result<Collected, serde_json::Error> {
    let mut sink = Sink::streaming(spill);
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
        256 * 1024,
        reader,
    ));
    Seed::new(expect, &mut sink).deserialize(&mut de)?;
    de.end()?;
    sink.flush().map_err(de::Error::custom)?;
    Ok(sink.finish())
}

/// The ids of a streamed reply could not be handed on: whoever records them has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the recorder stopped")]
pub struct RecorderGone;

/// Ids per chunk of a streamed reply: big enough that a 5,000,000-id reply is ~80 commits.
const IDS_PER_CHUNK: usize = 65_536;
const ORDERS_PER_CHUNK: usize = 8_192;

/// Where the visitor puts what it reads: kept in memory, or spilled in chunks.
pub(crate) struct Sink<'a> {
    collected: Collected,
    spill: Option<&'a mut dyn FnMut(Chunk) -> Result<(), RecorderGone>>,
}

impl<'a> Sink<'a> {
    fn in_memory() -> Self {
        Sink {
            collected: Collected::default(),
            spill: None,
        }
    }

    fn streaming(spill: &'a mut dyn FnMut(Chunk) -> Result<(), RecorderGone>) -> Self {
        Sink {
            collected: Collected {
                streamed: true,
                ..Collected::default()
            },
            spill: Some(spill),
        }
    }

    fn id(&mut self, list: IdList, id: u64) -> Result<(), RecorderGone> {
        let c = &mut self.collected;
        let (vec, count) = match list {
            IdList::Cancelled => (&mut c.cancelled, &mut c.cancelled_count),
            IdList::Rejected => (&mut c.rejected, &mut c.rejected_count),
        };
        vec.push(id);
        *count += 1;
        if self.spill.is_some() && vec.len() >= IDS_PER_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn order(&mut self, order: OpenOrder) -> Result<(), RecorderGone> {
        self.collected.orders.push(order);
        self.collected.orders_count += 1;
        if self.spill.is_some() && self.collected.orders.len() >= ORDERS_PER_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecorderGone> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let c = &mut self.collected;
        if !c.cancelled.is_empty() {
            spill(Chunk::Cancelled(std::mem::take(&mut c.cancelled)))?;
        }
        if !c.rejected.is_empty() {
            spill(Chunk::Rejected(std::mem::take(&mut c.rejected)))?;
        }
        if !c.orders.is_empty() {
            spill(Chunk::Orders(std::mem::take(&mut c.orders)))?;
        }
        Ok(())
    }

    fn finish(self) -> Collected {
        self.collected
    }
}

#[derive(Clone, Copy)]
enum IdList {
    Cancelled,
    Rejected,
}

struct Seed<'s, 'a> {
    expect: Expect,
    sink: &'s mut Sink<'a>,
}

impl<'s, 'a> Seed<'s, 'a> {
    fn new(expect: Expect, sink: &'s mut Sink<'a>) -> Self {
        Seed { expect, sink }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        match self.expect {
            Expect::CancelAll => de.deserialize_map(CancelAllVisitor(self.sink)),
            Expect::Orders => de.deserialize_seq(OrdersVisitor(self.sink)),
            Expect::Accounts => {
                self.sink.collected.accounts = serde::Deserialize::deserialize(de)?;
                Ok(())
            }
        }
    }
}

struct CancelAllVisitor<'s, 'a>(&'s mut Sink<'a>);

impl<'de> Visitor<'de> for CancelAllVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"{"result":"ok","details":{...}}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut result_ok = None;
        let mut details = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "result" => result_ok = Some(map.next_value::<String>()? == "ok"),
                "details" => {
                    map.next_value_seed(DetailsSeed(&mut *self.0))?;
                    details = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match (result_ok, details) {
            (Some(true), true) => Ok(()),
            (Some(true), false) => Err(de::Error::custom("no `details` in the reply")),
            _ => Err(de::Error::custom("`result` is not \"ok\"")),
        }
    }
}

struct DetailsSeed<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for DetailsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DetailsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with cancelledOrders and cancelRejects")
    }

    /// A missing array is an empty one.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let list = match key.as_str() {
                "cancelledOrders" => IdList::Cancelled,
                "cancelRejects" => IdList::Rejected,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            map.next_value_seed(IdsSeed {
                sink: &mut *self.0,
                list,
            })?;
        }
        Ok(())
    }
}

struct IdsSeed<'s, 'a> {
    sink: &'s mut Sink<'a>,
    list: IdList,
}

impl<'de> DeserializeSeed<'de> for IdsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of order ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(OrderId(id)) = seq.next_element::<OrderId>()? {
            self.sink.id(self.list, id).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// An order id as a JSON number or a string of digits (the API documents numbers in cancel-all
/// replies and strings in listings; clients have seen both).
struct OrderId(u64);

impl<'de> serde::Deserialize<'de> for OrderId {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(OrderIdVisitor)
    }
}

struct OrderIdVisitor;

impl Visitor<'_> for OrderIdVisitor {
    type Value = OrderId;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an order id (a non-negative integer or a string of digits)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OrderId, E> {
        Ok(OrderId(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OrderId, E> {
        u64::try_from(v)
            .map(OrderId)
            .map_err(|_| E::custom("negative order id"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OrderId, E> {
        v.trim()
            .parse()
            .map(OrderId)
            .map_err(|_| E::custom(format!("order id {v:?} is not a number")))
    }
}

struct OrdersVisitor<'s, 'a>(&'s mut Sink<'a>);

impl<'de> Visitor<'de> for OrdersVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of orders")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(o) = seq.next_element::<OrderWire>()? {
            self.0
                .order(OpenOrder {
                    order_id: o.order_id.0,
                    symbol: o.symbol,
                    side: o.side,
                    price: decimal_text(o.price),
                    remaining_amount: decimal_text(o.remaining_amount),
                    client_order_id: o.client_order_id.filter(|c| !c.is_empty()),
                    timestampms: o.timestampms,
                    is_cancelled: o.is_cancelled.0,
                })
                .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct OrderWire {
    order_id: OrderId,
    #[serde(default)]
    symbol: String,
    #[serde(default)]
    side: String,
    #[serde(default)]
    price: Option<Decimal>,
    #[serde(default)]
    remaining_amount: Option<Decimal>,
    #[serde(default)]
    client_order_id: Option<String>,
    #[serde(default)]
    timestampms: Option<i64>,
    #[serde(default)]
    is_cancelled: Flag,
}

/// A JSON `true`; any other value (a string, a number, an object) reads as false, so a strange
/// flag never costs the rest of the reply.
#[derive(Default)]
struct Flag(bool);

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Flag, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Flag, E> {
                Ok(Flag(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Flag, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Flag(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Flag, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Flag(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// A decimal as the exchange sent it: a string (kept as is) or a number, kept as its JSON text
/// character for character (read raw, never through an f64: `3633.00` stays `3633.00`).
struct Decimal(String);

impl<'de> serde::Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('"') {
            return serde_json::from_str::<String>(text)
                .map(Decimal)
                .map_err(de::Error::custom);
        }
        if serde_json::from_str::<serde_json::Number>(text).is_ok() {
            return Ok(Decimal(text.to_owned()));
        }
        Err(de::Error::custom("a decimal is a string or a number"))
    }
}

fn decimal_text(v: Option<Decimal>) -> String {
    v.map(|d| d.0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel(status: u16, body: &str) -> Verdict {
        if status == 200 {
            return parse_ok(Expect::CancelAll, body.as_bytes()).map_or_else(
                || Verdict::Transient {
                    reason: Reason::UnparseableBody,
                    message: String::new(),
                    pause: None,
                },
                Verdict::Ok,
            );
        }
        classify_error(status, body.as_bytes(), None, None)
    }

    fn ids(v: Verdict) -> (Vec<u64>, Vec<u64>) {
        match v {
            Verdict::Ok(c) => (c.cancelled, c.rejected),
            other => panic!("not ok: {other:?}"),
        }
    }

    #[test]
    fn reads_the_documented_cancel_all_reply_and_its_variants() {
        let body = r#"{"result":"ok","details":{"cancelledOrders":[330429106,330429079],"cancelRejects":[18446744073709551615]}}"#;
        assert_eq!(
            ids(cancel(200, body)),
            (vec![330429106, 330429079], vec![u64::MAX])
        );
        // Ids as strings, arrays missing, unknown fields, details before result.
        let body =
            r#"{"details":{"cancelRejects":["7"],"extra":{"a":[1]}},"result":"ok","x":null}"#;
        assert_eq!(ids(cancel(200, body)), (vec![], vec![7]));
        let body = r#"{"result":"ok","details":{}}"#;
        assert_eq!(ids(cancel(200, body)), (vec![], vec![]));
    }

    #[test]
    fn reads_the_documented_orders_listing() {
        let body = r#"[{"order_id":"106817811","id":"106817811","symbol":"btcusd","exchange":"gemini","avg_execution_price":"0.00","side":"buy","type":"exchange limit","timestamp":"1547220404","timestampms":1547220404836,"is_live":true,"is_cancelled":false,"is_hidden":false,"was_forced":false,"executed_amount":"0","remaining_amount":"1","client_order_id":"20190110-4738721","options":[],"price":"3633.00","original_amount":"1"}]"#;
        let collected = parse_ok(Expect::Orders, body.as_bytes()).expect("parsed");
        assert_eq!(
            collected.orders,
            vec![OpenOrder {
                order_id: 106817811,
                symbol: "btcusd".into(),
                side: "buy".into(),
                price: "3633.00".into(),
                remaining_amount: "1".into(),
                client_order_id: Some("20190110-4738721".into()),
                timestampms: Some(1547220404836),
                is_cancelled: false,
            }]
        );
        assert_eq!(collected.items(), 1);
        assert_eq!(parse_ok(Expect::Orders, b"[]").unwrap().items(), 0);
        assert!(parse_ok(Expect::Orders, br#"[{"order_id":"12x"}]"#).is_none());
        assert!(parse_ok(Expect::Orders, br#"{"result":"ok"}"#).is_none());
        let numeric = br#"[{"order_id":5,"price":1.5,"remaining_amount":2}]"#;
        let o = &parse_ok(Expect::Orders, numeric).unwrap().orders[0];
        assert_eq!((o.order_id, o.price.as_str()), (5, "1.5"));
        assert!(parse_ok(Expect::Orders, br#"[{"order_id":5,"price":{"a":1}}]"#).is_none());
        assert!(parse_ok(Expect::Orders, br#"[{"order_id":5,"price":true}]"#).is_none());
        let null = &parse_ok(Expect::Orders, br#"[{"order_id":5,"price":null}]"#)
            .unwrap()
            .orders[0];
        assert_eq!(null.price, "");
    }

    /// An audit record quotes the exchange: a number keeps its exact text, trailing zeros,
    /// exponent and digits past an f64's included, from memory and from a stream alike.
    #[test]
    fn a_numeric_price_is_stored_as_the_exchange_wrote_it() {
        let body = br#"[{"order_id":7,"price":3633.00,"remaining_amount":1E-8},{"order_id":8,"price":0.123456789012345678901,"remaining_amount":"1.50"}]"#;
        let orders = parse_ok(Expect::Orders, body).unwrap().orders;
        let texts: Vec<(&str, &str)> = orders
            .iter()
            .map(|o| (o.price.as_str(), o.remaining_amount.as_str()))
            .collect();
        let exact = [("3633.00", "1E-8"), ("0.123456789012345678901", "1.50")];
        assert_eq!(texts, exact);

        let mut streamed = Vec::new();
        let mut spill = |c: Chunk| {
            if let Chunk::Orders(orders) = c {
                streamed.extend(orders);
            }
            Ok(())
        };
        parse_streaming(Expect::Orders, &body[..], &mut spill).unwrap();
        let texts: Vec<(&str, &str)> = streamed
            .iter()
            .map(|o| (o.price.as_str(), o.remaining_amount.as_str()))
            .collect();
        assert_eq!(texts, exact);
    }

    #[test]
    fn reads_the_documented_account_list() {
        let body = br#"[{"name":"Primary","account":"primary","type":"exchange","counterparty_id":"EMONNYXH","created":1495127793000,"status":"open"}]"#;
        let accounts = parse_ok(Expect::Accounts, body).unwrap().accounts;
        assert_eq!(accounts[0].account, "primary");
        assert_eq!(
            (accounts[0].kind.as_str(), accounts[0].status.as_str()),
            ("exchange", "open")
        );
        assert_eq!(accounts[0].created, Some(1_495_127_793_000));
        assert!(parse_ok(Expect::Accounts, br#"[{"name":"no nickname"}]"#).is_none());
    }

    #[test]
    fn a_200_that_is_not_the_json_is_not_ok() {
        for body in [
            r#"{"result":"ok","details":{"cancelledOrders":[1,2"#,
            "<html><body>502 Bad Gateway</body></html>",
            "",
            r#"{"result":"error","details":{"cancelledOrders":[],"cancelRejects":[]}}"#,
            r#"{"result":"ok"}"#,
            r#"{"result":"ok","details":{"cancelledOrders":[-1]}}"#,
            r#"{"result":"ok","details":{"cancelledOrders":[]}} trailing"#,
        ] {
            assert!(
                parse_ok(Expect::CancelAll, body.as_bytes()).is_none(),
                "{body}"
            );
        }
    }

    #[test]
    fn streaming_spills_in_chunks_and_counts_everything() {
        let n = IDS_PER_CHUNK * 2 + 5;
        let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let body = format!(
            r#"{{"result":"ok","details":{{"cancelledOrders":[{}],"cancelRejects":[9]}}}}"#,
            ids.join(",")
        );
        let mut chunks = Vec::new();
        let mut spill = |c: Chunk| {
            chunks.push(c);
            Ok(())
        };
        let collected = parse_streaming(Expect::CancelAll, body.as_bytes(), &mut spill).unwrap();
        assert_eq!(collected.cancelled_count as usize, n);
        assert_eq!(collected.rejected_count, 1);
        assert!(collected.cancelled.is_empty() && collected.streamed);
        let spilled: usize = chunks
            .iter()
            .map(|c| match c {
                Chunk::Cancelled(v) | Chunk::Rejected(v) => v.len(),
                Chunk::Orders(v) => v.len(),
            })
            .sum();
        assert_eq!(spilled, n + 1);
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());

        let mut spill = |_: Chunk| Ok(());
        let truncated = &body[..body.len() / 2];
        assert!(parse_streaming(Expect::CancelAll, truncated.as_bytes(), &mut spill).is_err());
    }

    #[test]
    fn sorts_errors_by_who_they_are_about() {
        let err =
            |reason: &str| format!(r#"{{"result":"error","reason":"{reason}","message":"m"}}"#);
        for (status, reason) in [(429, "RateLimit"), (429, "Too Many Requests")] {
            assert!(
                matches!(
                    cancel(status, &err(reason)),
                    Verdict::Transient {
                        pause: Some(Pause::RateLimited(None)),
                        reason: Reason::RateLimit,
                        ..
                    }
                ),
                "{status} {reason}"
            );
        }
        assert!(matches!(
            cancel(503, &err("Maintenance")),
            Verdict::Transient {
                pause: Some(Pause::Maintenance(None)),
                ..
            }
        ));
        for (status, reason) in [(500, "System"), (504, "Whatever")] {
            assert!(matches!(
                cancel(status, &err(reason)),
                Verdict::Transient { pause: None, .. }
            ));
        }
        for (status, reason) in [
            (400, "InvalidSignature"),
            (400, "MissingAccounts"),
            (400, "EndpointMismatch"),
            (403, "MissingRole"),
            (403, "ApiKeyIpFilteringFailure"),
            (404, "EndpointNotFound"),
            (403, "SomethingNew"),
        ] {
            assert!(
                matches!(cancel(status, &err(reason)), Verdict::KeyRefused { .. }),
                "{status} {reason}"
            );
        }
        for (status, reason) in [
            (400, "InvalidAccountName"),
            (400, "AccountClosed"),
            (400, "NotGroupApiCompatible"),
            (418, "Teapot"),
        ] {
            assert!(
                matches!(cancel(status, &err(reason)), Verdict::AccountRefused { .. }),
                "{status} {reason}"
            );
        }
        assert!(
            matches!(cancel(502, "<html>bad gateway</html>"), Verdict::Transient { ref reason, .. } if reason.as_str() == "HTTP502")
        );
        assert!(matches!(
            classify_error(302, b"", None, Some("https://elsewhere.example/")),
            Verdict::KeyRefused { ref message, .. } if message.contains("elsewhere.example")
        ));
    }

    #[test]
    fn a_reason_reads_back_as_written_and_an_unknown_one_is_kept() {
        for reason in Reason::NAMED {
            assert_eq!(&Reason::parse(reason.as_str()), reason);
        }
        assert_eq!(Reason::parse("Whatever"), Reason::Other("Whatever".into()));
        let key: Vec<&str> = Reason::NAMED
            .iter()
            .filter(|r| r.refuses_the_key())
            .map(Reason::as_str)
            .collect();
        assert_eq!(key.len(), 14, "{key:?}");
        assert!(!Reason::parse("InvalidAccountName").refuses_the_key());
        let redacted = Reason::parse("key master-abc").map_text(|t| t.replace("master-abc", "K"));
        assert_eq!(redacted.as_str(), "key K");
        assert_eq!(
            Reason::MissingRole.map_text(|_| String::new()),
            Reason::MissingRole
        );
    }

    #[test]
    fn a_listed_word_nobody_knows_is_kept_not_refused() {
        let page = r#"[{"account":"a","type":"exchange","status":"open"},
            {"account":"b","type":"Vault\u001b[2J","status":"frozen"},{"account":"c"}]"#;
        let listed = parse_ok(Expect::Accounts, page.as_bytes())
            .expect("parsed")
            .accounts;
        assert_eq!(listed.len(), 3);
        assert!(listed[0].may_hold_orders());
        assert_eq!(listed[1].kind, AccountType::Other("Vault\u{1b}[2J".into()));
        assert_eq!(listed[1].status, AccountState::Other("frozen".into()));
        assert!(!listed[1].may_hold_orders());
        assert_eq!(
            (&listed[2].kind, &listed[2].status),
            (&AccountType::Unknown, &AccountState::Unknown)
        );
        let written = serde_json::to_value(&listed[1]).unwrap();
        assert_eq!(written["type"], "Vault\u{1b}[2J");
        assert_eq!(written["status"], "frozen");
    }

    #[test]
    fn reads_what_an_invalid_nonce_says() {
        let nonce = |message: &str| {
            classify_error(
                400,
                format!(r#"{{"result":"error","reason":"InvalidNonce","message":"{message}"}}"#)
                    .as_bytes(),
                None,
                None,
            )
        };
        let refusal = |v: Verdict| match v {
            Verdict::NonceRefused { refusal, .. } => refusal,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refusal(nonce(
                "Nonce '1533831705' has not increased since your last call to the Gemini API."
            )),
            NonceRefusal::NotIncreased
        );
        assert_eq!(
            refusal(nonce(
                "Nonce '1695066299324' is not within 30 seconds of server time '1695066301''"
            )),
            NonceRefusal::OutsideWindow
        );
        assert_eq!(
            refusal(nonce(r#"Nonce '\"\"' was not parseable as a number."#)),
            NonceRefusal::Unparseable
        );
    }

    #[test]
    fn retry_after_is_read_in_both_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("3600", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:45 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
