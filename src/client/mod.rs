//! Talking to the exchange: signed private calls over reqwest, and what each reply means.
//!
//! The client knows HTTP, signing and the wire format; it does not retry, pace or record (the
//! engine does). One call is [`ExchangeClient::exchange`]: it signs the payload with the nonce it
//! is given, sends it, reads the reply within its deadline and returns an [`Exchanged`] that says
//! exactly what came back, whatever happened.
//!
//! - this file: the credentials, the HTTP client and one signed exchange.
//! - [`nonce`]: one nonce source per key, in the key's mode, never below its stored mark.
//! - [`reply`]: the verdict on one reply, and the order ids and accounts it carries.

pub mod nonce;
pub mod reply;

use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::signing;
pub use nonce::{Clock, Nonce, NonceMode, NonceSource, SystemClock};
pub use reply::{
    AccountState, AccountType, Chunk, Collected, Expect, ListedAccount, NonceRefusal, OpenOrder,
    Pause, Reason, RecorderGone, Verdict,
};

/// The private endpoints gemini-sweep calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    CancelAll,
    ListOrders,
    /// The group's accounts (master keys only).
    AccountList,
    /// An account's closed orders, read after a cancel-all whose reply was lost.
    OrderHistory,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::CancelAll => "/v1/order/cancel/all",
            Endpoint::ListOrders => "/v1/orders",
            Endpoint::AccountList => "/v1/account/list",
            Endpoint::OrderHistory => "/v1/orders/history",
        }
    }

    fn expect(self) -> Expect {
        match self {
            Endpoint::CancelAll => Expect::CancelAll,
            Endpoint::ListOrders | Endpoint::OrderHistory => Expect::Orders,
            Endpoint::AccountList => Expect::Accounts,
        }
    }
}

/// How much of a reply is kept for the audit trail.
pub const RECORDED_BODY_BYTES: usize = 4 * 1024;
/// How much of a reply is read for it: more than is kept, so that a key quoted across the cut
/// is whole when it is redacted.
const HEAD_BYTES: usize = 2 * RECORDED_BODY_BYTES;
/// Successful replies up to this size are parsed in memory; larger ones are streamed.
const IN_MEMORY_BYTES: usize = 1024 * 1024;
/// Error replies are read this far (the JSON error is small; an HTML page is not worth more).
const ERROR_BODY_BYTES: usize = 64 * 1024;
/// Once the headers are in, a reply may take `--timeout` plus one second per this many bytes:
/// a 5 GB listing can finish, a reply dripping a byte at a time cannot hold a request hostage.
const BYTES_PER_EXTRA_SECOND: u64 = 1024 * 1024;

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

    /// What logs, lock files and the database show instead of the key: its kind and a short
    /// hash. The kind is one of three fixed words, never text taken from the key: a key variable
    /// holding something else (the secret pasted in its place) must not reach the audit trail.
    pub fn fingerprint(&self) -> String {
        let kind = if self.key.starts_with("master-") {
            "master"
        } else if self.key.starts_with("account-") {
            "account"
        } else {
            "key"
        };
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
    /// The only proxy requests may go through; without it, none (the environment's HTTP_PROXY
    /// and friends are ignored, so the signed key never goes anywhere the user did not name).
    pub proxy: Option<reqwest::Url>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(#[source] reqwest::Error);

/// One HTTP exchange, as it is recorded.
#[derive(Debug, Clone)]
pub struct Exchanged {
    pub latency: Duration,
    pub http_status: Option<u16>,
    /// The start of the reply as it came, for the audit trail (lossy UTF-8, key redacted).
    pub body: Option<String>,
    pub body_truncated: bool,
    pub verdict: Verdict,
    /// Set when no connection to the exchange could be made: the request never reached it.
    pub unreached: Option<Unreached>,
}

/// Why no connection to the exchange could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreached {
    Refused,
    Dns,
    Tls,
    Timeout,
    Other,
}

impl Unreached {
    fn of(e: &reqwest::Error, chain: &str) -> Option<Unreached> {
        if !e.is_connect() {
            return None;
        }
        let chain = chain.to_ascii_lowercase();
        Some(if e.is_timeout() || chain.contains("timed out") {
            Unreached::Timeout
        } else if chain.contains("dns error") || chain.contains("failed to lookup") {
            Unreached::Dns
        } else if chain.contains("certificate") || chain.contains("tls") {
            Unreached::Tls
        } else if chain.contains("connection refused") {
            Unreached::Refused
        } else {
            Unreached::Other
        })
    }
}

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unreached::Refused => "connection refused",
            Unreached::Dns => "the host name does not resolve (DNS)",
            Unreached::Tls => "the TLS handshake failed (certificate or protocol)",
            Unreached::Timeout => "connecting timed out",
            Unreached::Other => "no connection could be made",
        })
    }
}

/// reqwest is built without a default TLS provider (Cargo.toml says why); every client in the
/// process, ours and the tests', takes rustls' ring provider from here. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct ExchangeClient {
    http: reqwest::Client,
    base_url: reqwest::Url,
    timeout: Duration,
    credentials: Credentials,
    /// Computed once: every reply is scrubbed with it.
    key_fingerprint: String,
}

impl ExchangeClient {
    pub fn new(options: &ClientOptions, credentials: Credentials) -> Result<Self, ClientError> {
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            // A pooled connection kept longer than the server's keep-alive fails on reuse.
            .pool_idle_timeout(Duration::from_secs(20))
            .tcp_nodelay(true)
            .user_agent(concat!("gemini-sweep/", env!("CARGO_PKG_VERSION")))
            .https_only(options.base_url.scheme() == "https")
            // A redirect would carry the signed headers to wherever it points.
            .redirect(reqwest::redirect::Policy::none());
        let builder = match &options.proxy {
            Some(url) => builder.proxy(reqwest::Proxy::all(url.as_str()).map_err(ClientError)?),
            None => builder.no_proxy(),
        };
        let http = builder.build().map_err(ClientError)?;
        Ok(ExchangeClient {
            http,
            base_url: options.base_url.clone(),
            timeout: options.timeout,
            key_fingerprint: credentials.fingerprint(),
            credentials,
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn base_url(&self) -> &reqwest::Url {
        &self.base_url
    }

    /// Some replies quote the key (MissingRole: "...roles [Trader] to API key master-..."); the
    /// audit trail and the logs get its fingerprint instead.
    fn redact(&self, text: &str) -> String {
        redact_key(text, &self.credentials.key, &self.key_fingerprint)
    }

    fn redact_verdict(&self, verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::Transient {
                reason,
                message,
                pause,
            } => Verdict::Transient {
                reason: reason.map_text(|text| self.redact(text)),
                message: self.redact(&message),
                pause,
            },
            Verdict::NonceRefused { refusal, message } => Verdict::NonceRefused {
                refusal,
                message: self.redact(&message),
            },
            Verdict::AccountRefused { reason, message } => Verdict::AccountRefused {
                reason: reason.map_text(|text| self.redact(text)),
                message: self.redact(&message),
            },
            Verdict::KeyRefused { reason, message } => Verdict::KeyRefused {
                reason: reason.map_text(|text| self.redact(text)),
                message: self.redact(&message),
            },
            ok => ok,
        }
    }

    /// Signs and sends one call with `nonce`, for `account` (`None`: the account key's own, or
    /// the group), with the endpoint's own `params`, and reads the reply. Ids of a reply too large
    /// to hold go to `spill` while it is read.
    pub async fn exchange(
        &self,
        endpoint: Endpoint,
        account: Option<&str>,
        nonce: &Nonce,
        params: &[(&'static str, serde_json::Value)],
        spill: mpsc::Sender<Chunk>,
    ) -> Exchanged {
        let mut payload = serde_json::Map::new();
        payload.insert("request".into(), endpoint.path().into());
        payload.insert("nonce".into(), nonce.to_json());
        if let Some(account) = account {
            payload.insert("account".into(), account.into());
        }
        for (name, value) in params {
            payload.insert((*name).into(), value.clone());
        }
        let payload = serde_json::Value::Object(payload).to_string();
        let signed = signing::sign(
            self.credentials.secret.expose_secret().as_bytes(),
            payload.as_bytes(),
        );
        let mut url = self.base_url.clone();
        url.set_path(endpoint.path());

        let started = Instant::now();
        let request = self
            .http
            .post(url)
            .header("X-GEMINI-APIKEY", &self.credentials.key)
            .header("X-GEMINI-PAYLOAD", &signed.payload_b64)
            .header("X-GEMINI-SIGNATURE", &signed.signature_hex)
            .header("Content-Type", "text/plain")
            .header("Content-Length", "0")
            .header("Cache-Control", "no-cache")
            .send();
        let no_reply = |reason: Reason, message: String, unreached| Exchanged {
            latency: started.elapsed(),
            http_status: None,
            body: None,
            body_truncated: false,
            verdict: Verdict::Transient {
                reason,
                message,
                pause: None,
            },
            unreached,
        };
        let response = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => {
                return no_reply(
                    Reason::Timeout,
                    format!("no reply within {:?}", self.timeout),
                    None,
                );
            }
            Ok(Err(e)) => {
                let chain = error_chain(&e);
                let unreached = Unreached::of(&e, &chain);
                return no_reply(transport_reason(&e), self.redact(&chain), unreached);
            }
            Ok(Ok(r)) => r,
        };

        let status = response.status().as_u16();
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .and_then(|v| reply::parse_retry_after(&v, SystemTime::now()));
        let location = header(reqwest::header::LOCATION);
        let deadline = Deadline::new(started, self.timeout);

        let read = if status == 200 {
            read_ok(response, endpoint.expect(), deadline, spill).await
        } else {
            drop(spill);
            read_error(response, deadline, status, retry_after, location.as_deref()).await
        };
        let head = &read.head[..read.head.len().min(HEAD_BYTES)];
        let (body, body_truncated) = recorded_body(
            head,
            !read.more && head.len() == read.head.len(),
            &self.credentials.key,
            &self.key_fingerprint,
        );
        Exchanged {
            latency: started.elapsed(),
            http_status: Some(status),
            body: Some(body),
            body_truncated,
            verdict: self.redact_verdict(read.verdict),
            unreached: None,
        }
    }
}

fn redact_key(text: &str, key: &str, fingerprint: &str) -> String {
    if key.is_empty() {
        return text.to_owned();
    }
    text.replace(key, fingerprint)
}

/// What the audit trail keeps of a reply whose first bytes are `head` (`complete`: the whole
/// reply), and whether that is less than the reply: the key redacted, then the text cut to
/// [`RECORDED_BODY_BYTES`] on a character boundary. Cut first, a key quoted across the cut
/// would keep its first characters; and a head that ends inside a quoted key (the rest was not
/// read) loses that start of the key too.
fn recorded_body(head: &[u8], complete: bool, key: &str, fingerprint: &str) -> (String, bool) {
    let mut text = redact_key(&String::from_utf8_lossy(head), key, fingerprint);
    if !complete {
        let partial = (1..key.len())
            .rev()
            .filter(|&i| key.is_char_boundary(i))
            .find(|&i| text.ends_with(&key[..i]));
        if let Some(i) = partial {
            text.truncate(text.len() - i);
        }
    }
    let mut cut = text.len().min(RECORDED_BODY_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let truncated = !complete || cut < text.len();
    text.truncate(cut);
    (text, truncated)
}

/// When a reply must be complete: `timeout` after sending, plus a second per MiB received.
#[derive(Clone, Copy)]
struct Deadline {
    started: Instant,
    timeout: Duration,
}

impl Deadline {
    fn new(started: Instant, timeout: Duration) -> Self {
        Deadline { started, timeout }
    }

    fn after(&self, received: u64) -> tokio::time::Instant {
        let extra = Duration::from_secs(received / BYTES_PER_EXTRA_SECOND);
        tokio::time::Instant::from_std(self.started + self.timeout + extra)
    }
}

struct Read {
    /// The reply's first bytes (at least what the audit trail keeps).
    head: Vec<u8>,
    /// `head` is not the whole reply: more followed, or the rest never came.
    more: bool,
    verdict: Verdict,
}

fn timed_out(received: u64) -> Verdict {
    Verdict::Transient {
        reason: Reason::Timeout,
        message: format!("the reply did not finish in time ({received} bytes received)"),
        pause: None,
    }
}

fn broken(e: &reqwest::Error) -> Verdict {
    Verdict::Transient {
        reason: transport_reason(e),
        message: error_chain(e),
        pause: None,
    }
}

fn unparseable(detail: &str) -> Verdict {
    Verdict::Transient {
        reason: Reason::UnparseableBody,
        message: format!("HTTP 200 whose body is not the expected JSON ({detail})"),
        pause: None,
    }
}

async fn read_error(
    mut response: reqwest::Response,
    deadline: Deadline,
    status: u16,
    retry_after: Option<Duration>,
    location: Option<&str>,
) -> Read {
    let mut body = Vec::new();
    let mut more = false;
    loop {
        match tokio::time::timeout_at(deadline.after(body.len() as u64), response.chunk()).await {
            Ok(Ok(None)) => break,
            Err(_) | Ok(Err(_)) => {
                more = true;
                break;
            }
            Ok(Ok(Some(chunk))) => {
                let room = ERROR_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() >= room {
                    more = true;
                    break;
                }
            }
        }
    }
    let verdict = reply::classify_error(status, &body, retry_after, location);
    Read {
        head: body,
        more,
        verdict,
    }
}

async fn read_ok(
    mut response: reqwest::Response,
    expect: Expect,
    deadline: Deadline,
    spill: mpsc::Sender<Chunk>,
) -> Read {
    let mut buffer = Vec::new();
    loop {
        let next =
            tokio::time::timeout_at(deadline.after(buffer.len() as u64), response.chunk()).await;
        match next {
            Err(_) => {
                let verdict = timed_out(buffer.len() as u64);
                return buffer_head(buffer, true, verdict);
            }
            Ok(Err(e)) => {
                let verdict = broken(&e);
                return buffer_head(buffer, true, verdict);
            }
            Ok(Ok(None)) => {
                let verdict = reply::parse_ok(expect, &buffer)
                    .map_or_else(|| unparseable("not the documented shape"), Verdict::Ok);
                return Read {
                    head: buffer,
                    more: false,
                    verdict,
                };
            }
            Ok(Ok(Some(chunk))) => {
                buffer.extend_from_slice(&chunk);
                if buffer.len() > IN_MEMORY_BYTES {
                    return stream_ok(response, expect, deadline, buffer, spill).await;
                }
            }
        }
    }
}

fn buffer_head(mut buffer: Vec<u8>, more: bool, verdict: Verdict) -> Read {
    buffer.truncate(HEAD_BYTES);
    Read {
        head: buffer,
        more,
        verdict,
    }
}

/// A successful reply too large to hold: the body is pumped into a parser on a blocking thread,
/// whose ids leave through `spill` in chunks as they are parsed.
async fn stream_ok(
    mut response: reqwest::Response,
    expect: Expect,
    deadline: Deadline,
    first: Vec<u8>,
    spill: mpsc::Sender<Chunk>,
) -> Read {
    let (bytes_tx, bytes_rx) = mpsc::channel::<bytes::Bytes>(16);
    let parser = tokio::task::spawn_blocking(move || {
        let mut spill = |chunk: Chunk| spill.blocking_send(chunk).map_err(|_| RecorderGone);
        reply::parse_streaming(expect, ChannelReader::new(bytes_rx), &mut spill)
    });
    let mut received = first.len() as u64;
    let head = first[..HEAD_BYTES].to_vec();
    let mut failure = None;
    if bytes_tx.send(first.into()).await.is_ok() {
        loop {
            match tokio::time::timeout_at(deadline.after(received), response.chunk()).await {
                Err(_) => {
                    failure = Some(timed_out(received));
                    break;
                }
                Ok(Err(e)) => {
                    failure = Some(broken(&e));
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    received += chunk.len() as u64;
                    // The parser stopped early (malformed JSON): its verdict says why.
                    if bytes_tx.send(chunk).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    // End of input: the parser finishes (or fails on a truncated document).
    drop(bytes_tx);
    let verdict = match (failure, parser.await) {
        (Some(failure), _) => failure,
        (None, Ok(Ok(collected))) => Verdict::Ok(collected),
        (None, Ok(Err(e))) => unparseable(&e.to_string()),
        (None, Err(e)) => unparseable(&format!("the parser failed: {e}")),
    };
    Read {
        head,
        more: true,
        verdict,
    }
}

/// A blocking `Read` over body chunks sent from the async side.
struct ChannelReader {
    chunks: mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            chunks,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn transport_reason(e: &reqwest::Error) -> Reason {
    if e.is_timeout() {
        Reason::Timeout
    } else {
        Reason::ConnectionError
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_key_quoted_across_the_cut_is_redacted_whole() {
        let key = "master-AbCdEf1234567890xyz";
        let fingerprint = "master:0011223344556677";
        for start in RECORDED_BODY_BYTES - key.len()..=RECORDED_BODY_BYTES {
            let mut body = "é".repeat(start / 2);
            body.push_str(&"x".repeat(start - body.len()));
            body.push_str(key);
            body.push_str(&"y".repeat(100));
            let (kept, truncated) = recorded_body(body.as_bytes(), true, key, fingerprint);
            assert!(truncated, "{start}");
            assert!(kept.len() <= RECORDED_BODY_BYTES, "{start}");
            assert!(!kept.contains("master-"), "key start kept at {start}");
            assert!(kept.starts_with("é"), "{start}");
        }
        // A reply read only in part may end inside the key: that start of it goes too.
        let head = format!("{{\"message\":\"{}", &key[..12]);
        let (kept, truncated) = recorded_body(head.as_bytes(), false, key, fingerprint);
        assert_eq!(kept, "{\"message\":\"");
        assert!(truncated);
        // A whole short reply is kept whole, redacted.
        let whole = format!("{{\"message\":\"{key} lacks a role\"}}");
        let (kept, truncated) = recorded_body(whole.as_bytes(), true, key, fingerprint);
        assert_eq!(
            kept,
            format!("{{\"message\":\"{fingerprint} lacks a role\"}}")
        );
        assert!(!truncated);
    }

    #[test]
    fn the_reply_deadline_grows_with_what_arrived() {
        let started = Instant::now();
        let d = Deadline::new(started, Duration::from_secs(10));
        assert_eq!(d.after(0).into_std(), started + Duration::from_secs(10));
        assert_eq!(
            d.after(5 * 1024 * 1024 * 1024).into_std(),
            started + Duration::from_secs(10 + 5 * 1024)
        );
        assert_eq!(
            d.after(1000).into_std(),
            started + Duration::from_secs(10),
            "a trickle earns nothing"
        );
    }
}
