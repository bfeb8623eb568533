//! Talking to the exchange: signed private calls over reqwest, and what each reply means.
//!
//! The client knows HTTP, signing and nonces; it does not retry or rate-limit (the engine does).
//! Every call returns an [`Attempt`] describing exactly what was sent and what came back, so the
//! engine can record it whatever happened.

pub mod nonce;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::signing;
pub use nonce::{Clock, Nonce, NonceMode, NonceSource, SystemClock};

pub const CANCEL_ALL: &str = "/v1/order/cancel/all";
pub const LIST_ORDERS: &str = "/v1/orders";

/// Replies larger than this are not read further: no legitimate cancel-all answer comes close,
/// and an unbounded read is how a broken proxy exhausts memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How much of a reply is kept for the audit trail.
pub const RECORDED_BODY_BYTES: usize = 4 * 1024;

/// The API key and its secret. The secret is only exposed to the signer.
pub struct Credentials {
    pub key: String,
    pub secret: SecretString,
}

impl Credentials {
    /// Group keys act on subaccounts named in the payload; account keys act on themselves.
    pub fn is_master(&self) -> bool {
        self.key.starts_with("master-")
    }

    /// What logs and the database show instead of the key: its kind and a short hash.
    pub fn fingerprint(&self) -> String {
        let kind = self.key.split('-').next().unwrap_or("key");
        let digest = Sha256::digest(self.key.as_bytes());
        format!("{kind}:{}", hex::encode(&digest[..8]))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.fingerprint())
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: reqwest::Url,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    #[error(transparent)]
    Nonce(#[from] nonce::NonceError),
}

/// What the exchange's answer to one call means for the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    CancelAll {
        cancelled: Vec<u64>,
        rejected: Vec<u64>,
    },
    /// The account's active orders.
    Orders(Vec<OpenOrder>),
    /// Worth another attempt with a fresh nonce after a pause.
    Transient {
        reason: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Repeating the call cannot succeed.
    Permanent { reason: String, message: String },
}

impl Outcome {
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::CancelAll { .. } | Outcome::Orders(_) => None,
            Outcome::Transient { reason, .. } | Outcome::Permanent { reason, .. } => Some(reason),
        }
    }

    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Outcome::Transient { reason, .. } if reason == REASON_RATE_LIMIT)
    }
}

/// Reasons the client gives to failures that never reached a JSON error body.
pub const REASON_RATE_LIMIT: &str = "RateLimit";
pub const REASON_TIMEOUT: &str = "Timeout";
pub const REASON_CONNECTION: &str = "ConnectionError";
pub const REASON_UNPARSEABLE: &str = "UnparseableBody";
pub const REASON_TOO_LARGE: &str = "ResponseTooLarge";

/// One HTTP exchange, as it is recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub endpoint: &'static str,
    pub nonce: String,
    pub sent_at: SystemTime,
    pub latency: Duration,
    pub http_status: Option<u16>,
    /// The start of the reply as it came, for the audit trail (lossy UTF-8).
    pub body: String,
    pub body_truncated: bool,
    pub outcome: Outcome,
}

pub struct ExchangeClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    credentials: Credentials,
    /// Computed once: every reply is scrubbed with it.
    key_fingerprint: String,
    nonces: Arc<NonceSource>,
}

impl ExchangeClient {
    pub fn new(
        options: &ClientOptions,
        credentials: Credentials,
        nonces: Arc<NonceSource>,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            // A pooled connection kept longer than the server's keep-alive fails on reuse.
            .pool_idle_timeout(Duration::from_secs(20))
            .user_agent(concat!("gemini-sweep/", env!("CARGO_PKG_VERSION")))
            .https_only(options.base_url.scheme() == "https")
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(ExchangeClient {
            http,
            base_url: options.base_url.clone(),
            key_fingerprint: credentials.fingerprint(),
            credentials,
            nonces,
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn nonces(&self) -> &NonceSource {
        &self.nonces
    }

    /// Some replies quote the key (MissingRole: "...roles [Trader] to API key master-..."); the
    /// audit trail and the logs get its fingerprint instead.
    fn redact(&self, text: &str) -> String {
        text.replace(&self.credentials.key, &self.key_fingerprint)
    }

    fn redact_outcome(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Transient {
                reason,
                message,
                retry_after,
            } => Outcome::Transient {
                reason: self.redact(&reason),
                message: self.redact(&message),
                retry_after,
            },
            Outcome::Permanent { reason, message } => Outcome::Permanent {
                reason: self.redact(&reason),
                message: self.redact(&message),
            },
            ok => ok,
        }
    }

    /// `POST /v1/order/cancel/all` for one account (`None`: the account key's own account).
    pub async fn cancel_all(&self, account: Option<&str>) -> Result<Attempt, ClientError> {
        self.call(CANCEL_ALL, account, parse_cancel_all).await
    }

    /// `POST /v1/orders`: the account's active orders.
    pub async fn list_orders(&self, account: Option<&str>) -> Result<Attempt, ClientError> {
        self.call(LIST_ORDERS, account, parse_orders).await
    }

    async fn call(
        &self,
        endpoint: &'static str,
        account: Option<&str>,
        parse_ok: fn(&[u8]) -> Option<Outcome>,
    ) -> Result<Attempt, ClientError> {
        // The nonce is taken at the last moment so that calls leave in nonce order as far as
        // the network allows.
        let nonce = self.nonces.next().await?;
        let mut payload = serde_json::Map::new();
        payload.insert("request".into(), endpoint.into());
        payload.insert("nonce".into(), nonce.to_json());
        if let Some(account) = account {
            payload.insert("account".into(), account.into());
        }
        let payload = serde_json::Value::Object(payload).to_string();
        let signed = signing::sign(
            self.credentials.secret.expose_secret().as_bytes(),
            payload.as_bytes(),
        );
        let url = self
            .base_url
            .join(endpoint)
            .map_err(|e| ClientError::Build(e.to_string()))?;

        let sent_at = SystemTime::now();
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .header("X-GEMINI-APIKEY", &self.credentials.key)
            .header("X-GEMINI-PAYLOAD", &signed.payload_b64)
            .header("X-GEMINI-SIGNATURE", &signed.signature_hex)
            .header("Content-Type", "text/plain")
            .header("Content-Length", "0")
            .header("Cache-Control", "no-cache")
            .send()
            .await;

        let mut attempt = Attempt {
            endpoint,
            nonce: nonce.to_string(),
            sent_at,
            latency: Duration::ZERO,
            http_status: None,
            body: String::new(),
            body_truncated: false,
            outcome: Outcome::Transient {
                reason: String::new(),
                message: String::new(),
                retry_after: None,
            },
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                attempt.latency = started.elapsed();
                attempt.outcome = transport_failure(&e);
                return Ok(attempt);
            }
        };
        let status = response.status().as_u16();
        attempt.http_status = Some(status);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_capped(response).await;
        attempt.latency = started.elapsed();
        let (bytes, complete) = match body {
            Ok(b) => b,
            Err(e) => {
                attempt.outcome = transport_failure(&e);
                return Ok(attempt);
            }
        };
        attempt.body_truncated = bytes.len() > RECORDED_BODY_BYTES || !complete;
        attempt.body = self.redact(&String::from_utf8_lossy(
            &bytes[..bytes.len().min(RECORDED_BODY_BYTES)],
        ));
        attempt.outcome = if complete {
            self.redact_outcome(classify(status, &bytes, retry_after, parse_ok))
        } else {
            Outcome::Transient {
                reason: REASON_TOO_LARGE.into(),
                message: format!("reply longer than {MAX_BODY_BYTES} bytes; not read further"),
                retry_after: None,
            }
        };
        Ok(attempt)
    }
}

/// Reads at most `MAX_BODY_BYTES`; the flag says whether the whole body fitted.
async fn read_capped(mut response: reqwest::Response) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn transport_failure(e: &reqwest::Error) -> Outcome {
    let reason = if e.is_timeout() {
        REASON_TIMEOUT
    } else {
        REASON_CONNECTION
    };
    Outcome::Transient {
        reason: reason.into(),
        message: error_chain(e),
        retry_after: None,
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); the chain names it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
    message: Option<String>,
}

/// Exchange reasons worth another attempt. Everything else with a 4xx status is permanent.
fn is_transient_reason(reason: &str) -> bool {
    matches!(
        reason,
        "InvalidNonce" | "RateLimit" | "Too Many Requests" | "System" | "Maintenance"
    )
}

/// What a complete reply means. Pure, so that every status and body shape can be tested (and
/// fuzzed) without a server.
pub fn classify(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    parse_ok: fn(&[u8]) -> Option<Outcome>,
) -> Outcome {
    if status == 200 {
        return parse_ok(body).unwrap_or_else(|| Outcome::Transient {
            reason: REASON_UNPARSEABLE.into(),
            message: "HTTP 200 whose body is not the expected JSON".into(),
            retry_after: None,
        });
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let reason = parsed
        .as_ref()
        .and_then(|b| b.reason.clone())
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = parsed
        .and_then(|b| b.message)
        .unwrap_or_else(|| format!("HTTP {status} without a JSON error body"));
    let reason = if status == 429 {
        // The docs say `RateLimit`, an OpenAPI example says `Too Many Requests`: one name here.
        REASON_RATE_LIMIT.to_string()
    } else {
        reason
    };
    if status == 429 || status >= 500 || is_transient_reason(&reason) {
        Outcome::Transient {
            reason,
            message,
            retry_after,
        }
    } else {
        Outcome::Permanent { reason, message }
    }
}

#[derive(Deserialize)]
struct CancelAllReply {
    result: String,
    details: CancelAllDetails,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelAllDetails {
    cancelled_orders: Vec<u64>,
    cancel_rejects: Vec<u64>,
}

pub fn parse_cancel_all(body: &[u8]) -> Option<Outcome> {
    let reply: CancelAllReply = serde_json::from_slice(body).ok()?;
    (reply.result == "ok").then_some(Outcome::CancelAll {
        cancelled: reply.details.cancelled_orders,
        rejected: reply.details.cancel_rejects,
    })
}

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
}

#[derive(Deserialize)]
struct OrderWire {
    /// A string on the wire; some clients have seen numbers, so both are read.
    order_id: IdWire,
    #[serde(default)]
    symbol: String,
    #[serde(default)]
    side: String,
    #[serde(default)]
    price: Option<serde_json::Value>,
    #[serde(default)]
    remaining_amount: Option<serde_json::Value>,
    #[serde(default)]
    client_order_id: Option<String>,
    #[serde(default)]
    timestampms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdWire {
    Text(String),
    Number(u64),
}

fn decimal_text(v: Option<serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

pub fn parse_orders(body: &[u8]) -> Option<Outcome> {
    let wire: Vec<OrderWire> = serde_json::from_slice(body).ok()?;
    let mut orders = Vec::with_capacity(wire.len());
    for o in wire {
        let order_id = match o.order_id {
            IdWire::Text(t) => t.trim().parse().ok()?,
            IdWire::Number(n) => n,
        };
        orders.push(OpenOrder {
            order_id,
            symbol: o.symbol,
            side: o.side,
            price: decimal_text(o.price),
            remaining_amount: decimal_text(o.remaining_amount),
            client_order_id: o.client_order_id.filter(|c| !c.is_empty()),
            timestampms: o.timestampms,
        });
    }
    Some(Outcome::Orders(orders))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel(status: u16, body: &str) -> Outcome {
        classify(status, body.as_bytes(), None, parse_cancel_all)
    }

    #[test]
    fn reads_the_documented_cancel_all_reply() {
        let body = r#"{"result":"ok","details":{"cancelledOrders":[330429106,330429079],"cancelRejects":[18446744073709551615]}}"#;
        assert_eq!(
            cancel(200, body),
            Outcome::CancelAll {
                cancelled: vec![330429106, 330429079],
                rejected: vec![u64::MAX]
            }
        );
    }

    #[test]
    fn reads_the_documented_orders_listing() {
        let body = r#"[{"order_id":"106817811","id":"106817811","symbol":"btcusd","exchange":"gemini","avg_execution_price":"0.00","side":"buy","type":"exchange limit","timestamp":"1547220404","timestampms":1547220404836,"is_live":true,"is_cancelled":false,"is_hidden":false,"was_forced":false,"executed_amount":"0","remaining_amount":"1","client_order_id":"20190110-4738721","options":[],"price":"3633.00","original_amount":"1"}]"#;
        let Some(Outcome::Orders(orders)) = parse_orders(body.as_bytes()) else {
            panic!("not parsed");
        };
        assert_eq!(
            orders,
            vec![OpenOrder {
                order_id: 106817811,
                symbol: "btcusd".into(),
                side: "buy".into(),
                price: "3633.00".into(),
                remaining_amount: "1".into(),
                client_order_id: Some("20190110-4738721".into()),
                timestampms: Some(1547220404836),
            }]
        );
        assert_eq!(parse_orders(b"[]"), Some(Outcome::Orders(vec![])));
        assert_eq!(parse_orders(br#"[{"order_id":"12x"}]"#), None);
        assert_eq!(parse_orders(br#"{"result":"ok"}"#), None);
    }

    #[test]
    fn a_200_that_is_not_the_json_is_transient() {
        for body in [
            r#"{"result":"ok","details":{"cancelledOrders":[1,2"#,
            "<html><body>502 Bad Gateway</body></html>",
            "",
            r#"{"result":"error","details":{"cancelledOrders":[],"cancelRejects":[]}}"#,
        ] {
            assert!(
                matches!(cancel(200, body), Outcome::Transient { ref reason, .. } if reason == REASON_UNPARSEABLE),
                "{body}"
            );
        }
    }

    #[test]
    fn sorts_errors_into_transient_and_permanent() {
        let err =
            |reason: &str| format!(r#"{{"result":"error","reason":"{reason}","message":"m"}}"#);
        for (status, reason) in [
            (400, "InvalidNonce"),
            (429, "RateLimit"),
            (429, "Too Many Requests"),
            (500, "System"),
            (503, "Maintenance"),
            (504, "Whatever"),
        ] {
            assert!(
                matches!(cancel(status, &err(reason)), Outcome::Transient { .. }),
                "{status} {reason}"
            );
        }
        for (status, reason) in [
            (400, "InvalidSignature"),
            (400, "InvalidAccountName"),
            (400, "MissingAccounts"),
            (400, "AccountClosed"),
            (403, "MissingRole"),
            (404, "EndpointNotFound"),
        ] {
            assert_eq!(
                cancel(status, &err(reason)),
                Outcome::Permanent {
                    reason: reason.into(),
                    message: "m".into()
                }
            );
        }
        assert!(cancel(429, &err("Too Many Requests")).is_rate_limited());
        assert!(
            matches!(cancel(502, "<html>bad gateway</html>"), Outcome::Transient { ref reason, .. } if reason == "HTTP502")
        );
        assert!(
            matches!(cancel(418, "teapot"), Outcome::Permanent { ref reason, .. } if reason == "HTTP418")
        );
    }

    #[test]
    fn honours_numeric_retry_after_only() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("1e9"), Some(Duration::from_secs(300)));
    }

    #[test]
    fn credentials_never_print_the_secret_or_the_key() {
        let creds = Credentials {
            key: "master-AbCdEf123".into(),
            secret: SecretString::from("s3cr3t-value"),
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("s3cr3t-value"));
        assert!(!shown.contains("AbCdEf123"));
        assert!(creds.fingerprint().starts_with("master:"));
        assert!(creds.is_master());
    }
}
