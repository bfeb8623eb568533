//! A tiny signing HTTP client for the simulator tests, shared by the `sim_*` test crates.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use gemini_sim::SimServer;
use gemini_sweep::signing;
use serde_json::{Value, json};

pub use crate::common::{TEST_TIMEOUT, key};

pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time bound")
}

pub fn http() -> reqwest::Client {
    crate::http_client_builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a Gemini error body with this status, reason and message.
    pub fn assert_error(&self, status: u16, reason: &str, message: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        let body = self.json();
        assert_eq!(body["result"], "error", "{body}");
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["message"], message, "{body}");
    }

    pub fn reason(&self) -> String {
        self.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn ids(&self, field: &str) -> Vec<u64> {
        self.json()["details"][field]
            .as_array()
            .unwrap_or_else(|| panic!("no {field} in {}", self.body))
            .iter()
            .map(|v| v.as_u64().expect("bare integer id"))
            .collect()
    }

    /// Order ids of a `/v1/orders` reply, which sends them as strings.
    pub fn listed_ids(&self) -> Vec<u64> {
        self.json()
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", self.body))
            .iter()
            .map(|o| {
                o["order_id"]
                    .as_str()
                    .expect("order_id is a string")
                    .parse()
                    .unwrap()
            })
            .collect()
    }
}

/// Posts with exactly these headers and an empty body.
pub async fn post_raw(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, reqwest::Error> {
    let mut request = http
        .post(url)
        .header("Content-Type", "text/plain")
        .header("Content-Length", "0")
        .header("Cache-Control", "no-cache");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Posts `payload_json` signed with `secret` under `key`.
pub async fn post_signed(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    secret: &str,
    payload_json: &str,
) -> Result<Reply, reqwest::Error> {
    let signed = signing::sign(secret.as_bytes(), payload_json.as_bytes());
    post_raw(
        http,
        &format!("{base}{path}"),
        &[
            ("X-GEMINI-APIKEY", key),
            ("X-GEMINI-PAYLOAD", &signed.payload_b64),
            ("X-GEMINI-SIGNATURE", &signed.signature_hex),
        ],
    )
    .await
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A client bound to one key with its own increasing nonce.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
    pub secret: String,
    nonce: AtomicU64,
}

impl Client {
    /// The default config's master key.
    pub fn demo(server: &SimServer) -> Self {
        Client::new(server, "master-demo", "demo-secret")
    }

    pub fn new(server: &SimServer, key: &str, secret: &str) -> Self {
        Client {
            http: http(),
            base: server.base_url(),
            key: key.into(),
            secret: secret.into(),
            nonce: AtomicU64::new(1),
        }
    }

    pub fn next_nonce(&self) -> u64 {
        self.nonce.fetch_add(1, Ordering::SeqCst)
    }

    /// Adds `request` and a fresh `nonce` to `fields` and posts it.
    pub async fn try_call(&self, path: &str, fields: Value) -> Result<Reply, reqwest::Error> {
        let mut payload = json!({"request": path, "nonce": self.next_nonce()});
        if let Value::Object(extra) = fields {
            payload.as_object_mut().unwrap().extend(extra);
        }
        self.send(path, &payload).await
    }

    pub async fn call(&self, path: &str, fields: Value) -> Reply {
        self.try_call(path, fields).await.expect("HTTP exchange")
    }

    pub async fn send(&self, path: &str, payload: &Value) -> Result<Reply, reqwest::Error> {
        post_signed(
            &self.http,
            &self.base,
            path,
            &self.key,
            &self.secret,
            &payload.to_string(),
        )
        .await
    }

    pub async fn cancel_all(&self, account: &str) -> Reply {
        self.call("/v1/order/cancel/all", json!({"account": account}))
            .await
    }

    pub async fn orders(&self, account: &str) -> Reply {
        self.call("/v1/orders", json!({"account": account})).await
    }
}
