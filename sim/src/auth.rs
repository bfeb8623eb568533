//! Who may do what: payload, signature, endpoint, nonce, account and role checks, in the
//! exchange's order. A nonce that passes is consumed even if a later check refuses the request,
//! because that is what makes a rejected-but-signed request unreplayable on the real exchange.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha384;

use super::world::World;
use super::{AccountStatus, KeySpec, NonceMode, Role};

const TIME_WINDOW_SECS: f64 = 30.0;

/// Which counter an error feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    Nonce,
    Signature,
    RateLimit,
    Other,
}

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) class: ErrorClass,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            reason,
            message: message.into(),
            class: ErrorClass::Other,
        }
    }

    fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    fn class(mut self, class: ErrorClass) -> Self {
        self.class = class;
        self
    }
}

/// How an endpoint treats the `account` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccountRule {
    /// Master keys must name an account.
    Required,
    /// An account is optional; named ones are still checked.
    Optional,
    /// Master keys only; the group is the subject, no account is named.
    GroupOnly,
}

pub(crate) struct Rules {
    pub(crate) path: &'static str,
    pub(crate) account: AccountRule,
    /// Any one of these suffices; empty means any role.
    pub(crate) roles: &'static [Role],
}

pub(crate) struct Authed<'a> {
    pub(crate) key: &'a KeySpec,
    /// The account acted on, as an index into the world.
    pub(crate) account: Option<usize>,
    /// The nonce as sent: a JSON string's content or a number's text.
    pub(crate) nonce: String,
    pub(crate) payload: Map<String, Value>,
}

struct KeyState {
    spec: KeySpec,
    /// HMAC-SHA384 already keyed with the secret (gemini-sweep's signing algorithm, with the key
    /// schedule done once instead of per request).
    mac: Hmac<Sha384>,
    nonce: Mutex<NonceState>,
}

impl KeyState {
    /// True when `signature_hex` is the signature of `payload_b64` (compared in constant time).
    fn verify(&self, payload_b64: &str, signature_hex: &str) -> bool {
        let mut claimed = [0u8; 48];
        if hex::decode_to_slice(signature_hex, &mut claimed).is_err() {
            return false;
        }
        let mut mac = self.mac.clone();
        mac.update(payload_b64.as_bytes());
        mac.verify_slice(&claimed).is_ok()
    }
}

enum NonceState {
    Increasing {
        last: Option<u64>,
    },
    /// Nonces seen inside the window, by bit pattern, with their value in seconds.
    Time {
        seen: HashMap<u64, f64>,
    },
}

pub(crate) struct Auth {
    keys: HashMap<String, KeyState>,
}

impl Auth {
    pub(crate) fn new(keys: &[KeySpec]) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let nonce = match k.nonce_mode {
                    NonceMode::Increasing => NonceState::Increasing { last: None },
                    NonceMode::Time => NonceState::Time {
                        seen: HashMap::new(),
                    },
                };
                (
                    k.key.clone(),
                    KeyState {
                        spec: k.clone(),
                        mac: Hmac::new_from_slice(k.secret.as_bytes())
                            .expect("HMAC takes keys of any length"),
                        nonce: Mutex::new(nonce),
                    },
                )
            })
            .collect();
        Auth { keys }
    }

    /// Runs every check after the headers are known to be present and the rate limiter has
    /// admitted the request. Accounts are looked up in `world`, within the key's group.
    pub(crate) fn check<'a>(
        &'a self,
        key: &str,
        payload_b64: &str,
        signature: &str,
        rules: &Rules,
        world: &World,
    ) -> Result<Authed<'a>, ApiError> {
        let payload = decode_payload(payload_b64)?;

        let state = self
            .keys
            .get(key)
            .filter(|k| k.verify(payload_b64, signature))
            .ok_or_else(|| {
                ApiError::bad("InvalidSignature", "InvalidSignature").class(ErrorClass::Signature)
            })?;

        match payload.get("request") {
            Some(Value::String(r)) if r == rules.path => {}
            other => {
                let sent = other.map_or("null".to_owned(), Value::to_string);
                return Err(ApiError::bad(
                    "EndpointMismatch",
                    format!(
                        "Payload request {sent} does not match the endpoint '{}'",
                        rules.path
                    ),
                ));
            }
        }

        let nonce = state.consume_nonce(payload.get("nonce"))?;

        let named = payload.get("account");
        let account = match (&state.spec.account, rules.account) {
            (Some(_), AccountRule::GroupOnly) => {
                return Err(ApiError::bad(
                    "NotGroupApiCompatible",
                    format!(
                        "The endpoint '{}' is only available to master (group) API keys",
                        rules.path
                    ),
                ));
            }
            (Some(_), _) if named.is_some() => {
                return Err(ApiError::bad(
                    "AccountsOnGroupOnlyApi",
                    "The 'account' field may only be sent with a master (group) API key",
                ));
            }
            (Some(own), _) => Some(own.as_str()),
            (None, AccountRule::GroupOnly) => None,
            (None, rule) => match named {
                None if rule == AccountRule::Required => {
                    return Err(ApiError::bad(
                        "MissingAccounts",
                        "Expected a JSON payload with accounts",
                    ));
                }
                None => None,
                Some(Value::String(name)) => Some(name.as_str()),
                Some(other) => {
                    return Err(ApiError::bad(
                        "InvalidAccountName",
                        format!("Account name {other} is not a string"),
                    ));
                }
            },
        };

        let account = match account {
            None => None,
            Some(name) => {
                let group = state.spec.group();
                let Some(i) = world
                    .find(name)
                    .filter(|i| world.account(*i).spec.group() == group)
                else {
                    return Err(ApiError::bad(
                        "InvalidAccountName",
                        format!("Account '{name}' does not exist in this group"),
                    ));
                };
                if world.account(i).spec.status == AccountStatus::Closed {
                    return Err(ApiError::bad(
                        "AccountClosed",
                        format!("Account '{name}' is closed"),
                    ));
                }
                Some(i)
            }
        };

        let roles = &state.spec.roles;
        if !rules.roles.is_empty() && !rules.roles.iter().any(|r| roles.contains(r)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "MissingRole",
                format!(
                    "To access this endpoint, you need to log in to the website and go to the \
                     settings page to assign one of these roles [{}] to API key {key} which \
                     currently has roles [{}]",
                    role_names(rules.roles),
                    role_names(roles)
                ),
            ));
        }

        Ok(Authed {
            key: &state.spec,
            account,
            nonce,
            payload,
        })
    }
}

impl KeyState {
    fn consume_nonce(&self, sent: Option<&Value>) -> Result<String, ApiError> {
        let sent = sent.cloned().unwrap_or(Value::Null);
        let text = match &sent {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let unparseable = || {
            ApiError::bad(
                "InvalidNonce",
                format!("Nonce '{sent}' was not parseable as a number."),
            )
            .class(ErrorClass::Nonce)
        };
        let not_increased = || {
            ApiError::bad(
                "InvalidNonce",
                format!("Nonce '{text}' has not increased since your last call to the Gemini API."),
            )
            .class(ErrorClass::Nonce)
        };
        let mut state = self.nonce.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            NonceState::Increasing { last } => {
                let n = match &sent {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                        s.parse().ok()
                    }
                    _ => None,
                }
                .ok_or_else(unparseable)?;
                if last.is_some_and(|l| n <= l) {
                    return Err(not_increased());
                }
                *last = Some(n);
            }
            NonceState::Time { seen } => {
                let n = match &sent {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.parse::<f64>().ok(),
                    _ => None,
                }
                .filter(|n| n.is_finite())
                .ok_or_else(unparseable)?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                if (n - now).abs() > TIME_WINDOW_SECS {
                    return Err(ApiError::bad(
                        "InvalidNonce",
                        format!(
                            "Nonce '{text}' is not within 30 seconds of server time '{}''",
                            now.floor() as u64
                        ),
                    )
                    .class(ErrorClass::Nonce));
                }
                // Anything older than the window can no longer pass the check above.
                seen.retain(|_, v| *v >= now - TIME_WINDOW_SECS - 1.0);
                if seen.insert(n.to_bits(), n).is_some() {
                    return Err(not_increased());
                }
            }
        }
        Ok(text)
    }
}

fn decode_payload(payload_b64: &str) -> Result<Map<String, Value>, ApiError> {
    let invalid = || {
        ApiError::bad(
            "InvalidJson",
            "Could not parse the X-GEMINI-PAYLOAD header as base64-encoded JSON object",
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload_b64)
        .map_err(|_| invalid())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid()),
    }
}

fn role_names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| match r {
            Role::Trader => "Trader",
            Role::Auditor => "Auditor",
            Role::Fundmanager => "FundManager",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The check the simulator runs on every request's signature, for a key with `secret`. Public so
/// that gemini-sweep's tests can hold it against the client's own signer, which this crate does
/// not depend on.
pub fn signature_matches(secret: &str, payload_b64: &str, signature_hex: &str) -> bool {
    let spec = KeySpec {
        key: "master-k".into(),
        secret: secret.into(),
        nonce_mode: NonceMode::Increasing,
        roles: vec![],
        account: None,
        group: None,
    };
    Auth::new(std::slice::from_ref(&spec)).keys["master-k"].verify(payload_b64, signature_hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's vector passes (hex in either case); the same with one byte of the secret
    /// changed does not.
    #[test]
    fn verify_accepts_the_spec_vector_and_nothing_else() {
        let vector = (
            "eyJyZXF1ZXN0IjoiL3YxL29yZGVyL2NhbmNlbC9hbGwiLCJub25jZSI6MTcwMDAwMDAwMDAwMCwiYWNjb3VudCI6InN1YjEifQ==",
            "f8063edb9471ea7eb9bad611914e8f2d8045b012e9f3367b2affec7c4897060efa8ad02b3645925c7243382c8ca314a6",
        );
        assert!(signature_matches("1234abcd", vector.0, vector.1));
        assert!(signature_matches(
            "1234abcd",
            vector.0,
            &vector.1.to_uppercase()
        ));
        assert!(!signature_matches("1234abce", vector.0, vector.1));
        assert!(!signature_matches("1234abcd", vector.0, &vector.1[..94]));
    }
}
