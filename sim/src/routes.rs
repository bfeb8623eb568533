//! One handler for every path, so that routing, counting and faults happen in one visible order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{AccountRule, ApiError, Authed, ErrorClass, Rules};
use super::body::{CancelReply, OrderList, json_response};
use super::faults::{Decision, Fault, LostReply};
use super::ratelimit::Admission;
use super::{AccountKind, Counters, Role, Shared};

const API_KEY: &str = "X-GEMINI-APIKEY";
const PAYLOAD: &str = "X-GEMINI-PAYLOAD";
const SIGNATURE: &str = "X-GEMINI-SIGNATURE";

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
    <center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
const HTML_504: &str = "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n\
    <center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n";
const TRUNCATED_JSON: &str = r#"{"result":"ok","details":{"cancelledOrders":[1,2"#;

/// The number of each endpoint is its index in per-endpoint counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    CancelAll,
    Orders,
    AccountList,
    Heartbeat,
    OrderHistory,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Self> {
        Some(match path {
            "/v1/order/cancel/all" => Endpoint::CancelAll,
            "/v1/orders" => Endpoint::Orders,
            "/v1/account/list" => Endpoint::AccountList,
            "/v1/heartbeat" => Endpoint::Heartbeat,
            "/v1/orders/history" => Endpoint::OrderHistory,
            _ => return None,
        })
    }

    fn rules(self) -> Rules {
        match self {
            Endpoint::CancelAll => Rules {
                path: "/v1/order/cancel/all",
                account: AccountRule::Required,
                roles: &[Role::Trader],
            },
            Endpoint::Orders => Rules {
                path: "/v1/orders",
                account: AccountRule::Required,
                roles: &[Role::Trader, Role::Auditor],
            },
            Endpoint::AccountList => Rules {
                path: "/v1/account/list",
                account: AccountRule::GroupOnly,
                roles: &[],
            },
            Endpoint::Heartbeat => Rules {
                path: "/v1/heartbeat",
                account: AccountRule::Optional,
                roles: &[Role::Trader],
            },
            Endpoint::OrderHistory => Rules {
                path: "/v1/orders/history",
                account: AccountRule::Required,
                roles: &[Role::Trader, Role::Auditor],
            },
        }
    }
}

/// The fault kinds, by ledger key; a [`Tally::Fault`] names one of them.
const FAULT_KINDS: [&str; 8] = [
    "500",
    "502",
    "503",
    "stall",
    "drop",
    "garbage",
    "lost_reply",
    "failing_account",
];

/// The counters, as atomics: requests for different accounts never wait on each other here.
#[derive(Default)]
pub(crate) struct Tallies {
    pub(crate) requests: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    nonce_errors: AtomicU64,
    signature_errors: AtomicU64,
    other_errors: AtomicU64,
    faults: [AtomicU64; FAULT_KINDS.len()],
}

impl Tallies {
    fn count(&self, tally: &Tally) {
        let counter = match tally {
            Tally::Ok => &self.ok,
            Tally::Error(ErrorClass::Nonce) => &self.nonce_errors,
            Tally::Error(ErrorClass::Signature) => &self.signature_errors,
            Tally::Error(ErrorClass::RateLimit) => &self.rate_limited,
            Tally::Error(ErrorClass::Other) => &self.other_errors,
            Tally::Fault(kind) => self.fault(kind),
            Tally::Recorded => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn fault(&self, kind: &str) -> &AtomicU64 {
        let i = FAULT_KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("a known fault kind");
        &self.faults[i]
    }

    pub(crate) fn counters(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            requests: get(&self.requests),
            ok: get(&self.ok),
            rate_limited: get(&self.rate_limited),
            nonce_errors: get(&self.nonce_errors),
            signature_errors: get(&self.signature_errors),
            other_errors: get(&self.other_errors),
            faults: FAULT_KINDS
                .iter()
                .zip(&self.faults)
                .filter(|(_, n)| get(n) > 0)
                .map(|(k, n)| ((*k).to_owned(), get(n)))
                .collect(),
        }
    }
}

/// What a request amounted to, for the counters.
enum Tally {
    Ok,
    Error(ErrorClass),
    Fault(&'static str),
    /// Already counted, because the request may be abandoned before it finishes.
    Recorded,
}

/// `None` as the response means: close the connection without answering.
struct Outcome {
    response: Option<Response>,
    tally: Tally,
    delay: Option<Duration>,
}

impl Outcome {
    fn reply(response: Response, tally: Tally) -> Self {
        Outcome {
            response: Some(response),
            tally,
            delay: None,
        }
    }

    fn error(e: ApiError) -> Self {
        let class = e.class;
        Outcome::reply(
            error_response(e.status, e.reason, &e.message),
            Tally::Error(class),
        )
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

const ADMIN_LEDGER: &str = "/admin/ledger";
const ADMIN_SUMMARY: &str = "/admin/summary";

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let serial = s.tallies.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let path = uri.path();
    let admin = path == ADMIN_LEDGER || path == ADMIN_SUMMARY;
    if admin && method == Method::GET {
        return admin_reply(&s, path);
    }
    if !admin {
        // The way in: requests sent in order may reach the checks below out of order.
        let delay = s.faults.inbound_delay(serial);
        if !delay.is_zero() {
            stoppable_sleep(&s, delay).await;
        }
    }
    let outcome = match Endpoint::from_path(path) {
        _ if admin => Outcome::error(method_not_allowed(path, "GET")),
        None => Outcome::error(ApiError::new(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("API entry point `{path}` not found"),
        )),
        Some(_) if method != Method::POST => Outcome::error(method_not_allowed(path, "POST")),
        Some(endpoint) => serve(&s, endpoint, &headers).await,
    };

    s.tallies.count(&outcome.tally);
    s.changed.notify_one();

    let delay = outcome.delay.unwrap_or_else(|| s.faults.delay_for(serial));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // Handled, its reply not yet sent: a test can kill the client in this window.
    let _ = s.replies_held.subscribe().wait_for(|held| !*held).await;
    match outcome.response {
        Some(response) => response,
        // Unwinding out of the connection task makes hyper drop the socket without writing a
        // byte; `resume_unwind` skips the panic hook, so nothing is printed either.
        None => std::panic::resume_unwind(Box::new(())),
    }
}

/// `GET /admin/ledger` and `GET /admin/summary`: the simulator's truth, never faulted or delayed.
fn admin_reply(s: &Shared, path: &str) -> Response {
    let json = if path == ADMIN_LEDGER {
        let mut out = Vec::new();
        s.write_ledger_json(&mut out, false).map(|()| out)
    } else {
        serde_json::to_vec(&s.summary())
    };
    match json {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "System",
            &format!("cannot serialize: {e}"),
        ),
    }
}

async fn serve(s: &Shared, endpoint: Endpoint, headers: &HeaderMap) -> Outcome {
    let header = |name: &str, reason: &'static str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    reason,
                    format!("Must provide '{name}' header"),
                )
            })
    };
    let (key, payload, signature) = match (
        header(API_KEY, "MissingApikeyHeader"),
        header(PAYLOAD, "MissingPayloadHeader"),
        header(SIGNATURE, "MissingSignatureHeader"),
    ) {
        (Ok(k), Ok(p), Ok(sig)) => (k, p, sig),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Outcome::error(e),
    };

    if let Some(limiter) = &s.limiter {
        match limiter.admit(&key) {
            Admission::Now => {}
            Admission::After(wait) => stoppable_sleep(s, wait).await,
            Admission::Refused { retry_after_secs } => {
                let mut response = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RateLimit",
                    "Requests were made too frequently. Please wait before retrying.",
                );
                if limiter.config.send_retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                }
                return Outcome::reply(response, Tally::Error(ErrorClass::RateLimit));
            }
        }
    }

    let rules = endpoint.rules();
    let authed = match s.auth.check(&key, &payload, &signature, &rules, &s.world) {
        Ok(a) => a,
        Err(e) => return Outcome::error(e),
    };

    let (account_label, ordinal) = match authed.account {
        Some(i) => {
            let acct = s.world.account(i);
            acct.requests.fetch_add(1, Ordering::Relaxed);
            if acct.spec.kind == AccountKind::Custody
                && matches!(
                    endpoint,
                    Endpoint::CancelAll | Endpoint::Orders | Endpoint::OrderHistory
                )
            {
                return Outcome::error(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "NotGroupApiCompatible",
                    format!(
                        "Account '{}' is a custody account and holds no orders",
                        acct.spec.name
                    ),
                ));
            }
            let n = acct.ordinals[endpoint as usize].fetch_add(1, Ordering::Relaxed) + 1;
            (acct.spec.name.as_str(), n)
        }
        None => ("-", s.faults.next_unnamed(endpoint as usize)),
    };

    let decision = s.faults.decide(account_label, rules.path, ordinal);
    let mut outcome = answer(s, endpoint, &authed, decision).await;
    outcome.delay = Some(decision.delay);
    outcome
}

/// Faults first (they stop the request before it acts), then the endpoint itself.
async fn answer(
    s: &Shared,
    endpoint: Endpoint,
    authed: &Authed<'_>,
    decision: Decision,
) -> Outcome {
    if let Some(i) = authed.account
        && !s.faults.config.failing_accounts.is_empty()
        && s.faults
            .config
            .failing_accounts
            .contains(&s.world.account(i).spec.name)
    {
        return Outcome::reply(system_error(), Tally::Fault("failing_account"));
    }
    if let Some(fault) = decision.before {
        let mut tally = Tally::Fault(fault.label());
        let response = match fault {
            Fault::Http500 => Some(system_error()),
            Fault::Http502 => Some(html(StatusCode::BAD_GATEWAY, HTML_502)),
            Fault::Http503 => Some(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Maintenance",
                "The Gemini Exchange is currently undergoing maintenance. Please try again later.",
            )),
            Fault::Stall => {
                // Clients give up on a stall and hang up, which abandons this handler.
                s.tallies.count(&tally);
                s.changed.notify_one();
                tally = Tally::Recorded;
                stoppable_sleep(s, s.faults.config.stall_for).await;
                Some(html(StatusCode::GATEWAY_TIMEOUT, HTML_504))
            }
            Fault::Drop => None,
            Fault::Garbage { html: true } => Some(html(StatusCode::OK, HTML_502)),
            Fault::Garbage { html: false } => Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    TRUNCATED_JSON,
                )
                    .into_response(),
            ),
        };
        return Outcome {
            response,
            tally,
            delay: None,
        };
    }

    let response = match (endpoint, authed.account) {
        (Endpoint::CancelAll, Some(i)) => {
            let (cancelled, rejects) = s.world.cancel_all(i, &authed.nonce);
            match decision.lost_reply {
                Some(LostReply::Drop) => {
                    return Outcome {
                        response: None,
                        tally: Tally::Fault("lost_reply"),
                        delay: None,
                    };
                }
                Some(LostReply::Http502) => {
                    return Outcome::reply(
                        html(StatusCode::BAD_GATEWAY, HTML_502),
                        Tally::Fault("lost_reply"),
                    );
                }
                None => json_response(CancelReply::new(cancelled, rejects)),
            }
        }
        (Endpoint::Orders, Some(i)) => json_response(OrderList::new(s.world.list_orders(i))),
        (Endpoint::OrderHistory, Some(i)) => {
            let (timestamp, limit) = paging(&authed.payload, "limit_orders", 50);
            json_response(OrderList::new(Arc::new(
                s.world.order_history(i, timestamp, limit),
            )))
        }
        (Endpoint::AccountList, _) => {
            let (timestamp, limit) = paging(&authed.payload, "limit_accounts", 500);
            axum::Json(Value::Array(s.world.account_list(
                authed.key.group(),
                timestamp,
                limit,
            )))
            .into_response()
        }
        (Endpoint::Heartbeat, _) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"result":"ok"}"#,
        )
            .into_response(),
        // Authentication makes the order endpoints name an account.
        (Endpoint::CancelAll | Endpoint::Orders | Endpoint::OrderHistory, None) => system_error(),
    };
    Outcome::reply(response, Tally::Ok)
}

/// The page size (`limit_field`, at most 500) and `timestamp` (seconds or milliseconds).
fn paging(
    payload: &serde_json::Map<String, Value>,
    limit_field: &str,
    default: u64,
) -> (Option<u64>, usize) {
    let number = |field: &str| {
        payload.get(field).and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
    };
    let limit = number(limit_field).unwrap_or(default).clamp(1, 500) as usize;
    // Ten-digit values are seconds; the exchange accepts both forms elsewhere.
    let timestamp = number("timestamp").map(|t| if t < 100_000_000_000 { t * 1000 } else { t });
    (timestamp, limit)
}

/// Sleeps, but wakes early when the server is shutting down so it can stop promptly.
async fn stoppable_sleep(s: &Shared, d: Duration) {
    let mut stopping = s.stopping.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopping.wait_for(|v| *v) => {}
    }
}

fn method_not_allowed(path: &str, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("API entry point `{path}` only accepts {allowed}"),
    )
}

fn system_error() -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "System",
        "We are experiencing technical issues. Please try again later.",
    )
}

fn error_response(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"result": "error", "reason": reason, "message": message})),
    )
        .into_response()
}

fn html(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}
