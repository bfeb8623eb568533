//! Fault injection and the rate limit, observed from the client side and checked in the ledger.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sim_support::{Client, bounded, key, now_secs};
use gemini_sim::{
    self as sim, FaultConfig, NonceMode, RateLimitConfig, Role, SimConfig, SimServer,
};
use serde_json::json;

fn with_faults(faults: FaultConfig) -> SimConfig {
    SimConfig {
        orders_per_account: 4..=10,
        faults,
        // Faults are the subject here; the limit has tests of its own below.
        rate_limit: None,
        ..SimConfig::default()
    }
}

fn cancelled(server: &SimServer, account: &str) -> usize {
    server.ledger().accounts[account].cancelled.len()
}

fn fault_count(server: &SimServer, kind: &str) -> u64 {
    server
        .ledger()
        .counters
        .faults
        .get(kind)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn status_faults_stop_the_request_before_it_acts() {
    bounded(async {
        type Case = (fn(&mut FaultConfig), u16, &'static str);
        let cases: [Case; 3] = [
            (|f| f.p_500 = 1.0, 500, "500"),
            (|f| f.p_502 = 1.0, 502, "502"),
            (|f| f.p_503 = 1.0, 503, "503"),
        ];
        for (set, status, kind) in cases {
            let mut faults = FaultConfig::default();
            set(&mut faults);
            let server = sim::start(with_faults(faults)).await.unwrap();
            let c = Client::demo(&server);
            let reply = c.cancel_all("acct-0001").await;
            assert_eq!(reply.status, status);
            match status {
                500 => reply.assert_error(
                    500,
                    "System",
                    "We are experiencing technical issues. Please try again later.",
                ),
                503 => assert_eq!(reply.reason(), "Maintenance"),
                _ => {
                    assert!(reply.body.contains("502 Bad Gateway"));
                    assert_eq!(reply.headers["content-type"], "text/html");
                }
            }
            assert_eq!(cancelled(&server, "acct-0001"), 0);
            assert_eq!(fault_count(&server, kind), 1);
            // The nonce was consumed all the same.
            assert_eq!(server.ledger().accounts["acct-0001"].requests, 1);
            server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn stall_outlasts_the_client_timeout() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            p_stall: 1.0,
            stall_for: Duration::from_secs(3600),
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let mut c = Client::demo(&server);
        c.http = crate::http_client_builder()
            .no_proxy()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let err = c
            .try_call("/v1/order/cancel/all", json!({"account": "acct-0001"}))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(cancelled(&server, "acct-0001"), 0);
        assert_eq!(fault_count(&server, "stall"), 1);
        // Shutdown wakes the stalled handler instead of waiting out its hour. (A hang guard: it
        // takes milliseconds; a minute is far beyond any loaded machine and far short of an hour.)
        let started = std::time::Instant::now();
        server.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(60));
    })
    .await;
}

#[tokio::test]
async fn drop_closes_the_connection_without_a_reply() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            p_drop: 1.0,
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        for _ in 0..3 {
            let err = c
                .try_call("/v1/order/cancel/all", json!({"account": "acct-0001"}))
                .await
                .unwrap_err();
            assert!(!err.is_timeout() && !err.is_status(), "{err}");
        }
        assert_eq!(cancelled(&server, "acct-0001"), 0);
        assert_eq!(fault_count(&server, "drop"), 3);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn garbage_is_a_200_that_is_not_json() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            p_garbage: 1.0,
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        let (mut html, mut truncated) = (0, 0);
        for _ in 0..16 {
            let reply = c.cancel_all("acct-0001").await;
            assert_eq!(reply.status, 200);
            assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_err());
            if reply.headers["content-type"] == "text/html" {
                html += 1;
            } else {
                assert!(reply.body.starts_with("{\"result\":\"ok\""));
                truncated += 1;
            }
        }
        assert!(
            html > 0 && truncated > 0,
            "both forms: {html} html, {truncated} truncated"
        );
        assert_eq!(cancelled(&server, "acct-0001"), 0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn lost_reply_cancels_but_the_client_never_hears() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            p_lost_reply: 1.0,
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        let (mut dropped, mut bad_gateway) = (0, 0);
        for account in SimConfig::numbered_accounts(10).iter().map(|a| &a.name) {
            let initial = server.ledger().accounts[account].initial_orders.len();
            match c
                .try_call("/v1/order/cancel/all", json!({"account": account}))
                .await
            {
                Err(_) => dropped += 1,
                Ok(reply) => {
                    assert_eq!(reply.status, 502, "{reply:?}");
                    bad_gateway += 1;
                }
            }
            assert_eq!(cancelled(&server, account), initial);
            assert!(server.ledger().accounts[account].open.is_empty());
        }
        assert!(
            dropped > 0 && bad_gateway > 0,
            "{dropped} dropped, {bad_gateway} 502"
        );
        assert_eq!(fault_count(&server, "lost_reply"), 10);
        // Listing is not cancel-all: it is answered normally.
        assert_eq!(c.orders("acct-0001").await.status, 200);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn failing_accounts_always_get_500() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            failing_accounts: ["acct-0002".to_owned()].into(),
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        for _ in 0..2 {
            assert_eq!(c.cancel_all("acct-0002").await.reason(), "System");
            assert_eq!(c.orders("acct-0002").await.status, 500);
        }
        assert_eq!(c.cancel_all("acct-0001").await.status, 200);
        assert_eq!(cancelled(&server, "acct-0002"), 0);
        assert_eq!(fault_count(&server, "failing_account"), 4);
        server.shutdown().await;
    })
    .await;
}

/// Per-account status sequences must not depend on how accounts interleave.
#[tokio::test]
async fn faults_are_reproducible_per_account() {
    bounded(async {
        let config = || {
            let mut cfg = with_faults(FaultConfig {
                p_500: 0.25,
                p_503: 0.15,
                p_garbage: 0.1,
                p_lost_reply: 0.3,
                ..FaultConfig::default()
            });
            cfg.keys = (1..=6)
                .map(|i| {
                    let name = format!("acct-{i:04}");
                    key(&format!("account-{i}"), "s", &[Role::Trader], Some(&name))
                })
                .collect();
            cfg
        };
        async fn script(server: &SimServer, i: u32) -> Vec<u16> {
            let c = Client::new(server, &format!("account-{i}"), "s");
            let mut statuses = Vec::new();
            for _ in 0..4 {
                for path in ["/v1/orders", "/v1/order/cancel/all"] {
                    statuses.push(match c.try_call(path, json!({})).await {
                        Ok(r) => r.status,
                        Err(_) => 0,
                    });
                }
            }
            statuses
        }
        let (a, b) = (
            sim::start(config()).await.unwrap(),
            sim::start(config()).await.unwrap(),
        );
        let mut sequential = BTreeMap::new();
        for i in (1..=6).rev() {
            sequential.insert(i, script(&a, i).await);
        }
        let b_ref = &b;
        let concurrent: BTreeMap<u32, Vec<u16>> =
            futures::future::join_all((1..=6).map(|i| async move { (i, script(b_ref, i).await) }))
                .await
                .into_iter()
                .collect();
        assert_eq!(sequential, concurrent);
        let all: Vec<u16> = sequential.values().flatten().copied().collect();
        assert!(all.contains(&200) && all.contains(&500), "{all:?}");
        let (la, lb) = (a.ledger(), b.ledger());
        assert_eq!(la.accounts, lb.accounts);
        assert_eq!(la.counters.faults, lb.counters.faults);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// One request every 2 s, one queued: a burst is refused after its first two requests as long as
/// it arrives within 2 s, a hundred times what a loopback burst takes even on a loaded machine.
const LIMIT_INTERVAL: Duration = Duration::from_secs(2);

fn time_key_config(retry_after: bool) -> SimConfig {
    let mut cfg = SimConfig {
        orders_per_account: 2..=5,
        rate_limit: Some(RateLimitConfig {
            per_second: 1.0 / LIMIT_INTERVAL.as_secs_f64(),
            burst_queue: 1,
            send_retry_after: retry_after,
        }),
        ..SimConfig::default()
    };
    // Time nonces let concurrent requests arrive in any order without InvalidNonce.
    let mut k = key("master-fast", "f", &[Role::Trader], None);
    k.nonce_mode = NonceMode::Time;
    cfg.keys = vec![k];
    cfg
}

async fn burst(server: &SimServer, accounts: u32) -> Vec<(String, crate::sim_support::Reply)> {
    let c = Client::new(server, "master-fast", "f");
    let base = now_secs();
    let c = &c;
    futures::future::join_all((1..=accounts).map(|i| async move {
        let account = format!("acct-{i:04}");
        let payload = json!({
            "request": "/v1/order/cancel/all",
            "nonce": format!("{:.3}", base + f64::from(i) / 1000.0),
            "account": account,
        });
        let reply = c.send("/v1/order/cancel/all", &payload).await.unwrap();
        (account, reply)
    }))
    .await
}

#[tokio::test]
async fn rate_limit_queues_a_little_then_refuses_then_recovers() {
    bounded(async {
        let server = sim::start(time_key_config(true)).await.unwrap();
        let replies = burst(&server, 10).await;
        let refused: Vec<_> = replies.iter().filter(|(_, r)| r.status == 429).collect();
        let served: Vec<_> = replies.iter().filter(|(_, r)| r.status == 200).collect();
        assert_eq!(served.len() + refused.len(), 10);
        assert!(
            refused.len() >= 7,
            "one served, one queued, the rest refused"
        );
        assert!(served.len() >= 2, "the queued request is served, late");
        let ledger = server.ledger();
        for (account, reply) in &refused {
            reply.assert_error(
                429,
                "RateLimit",
                "Requests were made too frequently. Please wait before retrying.",
            );
            let retry: u64 = reply.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert!(ledger.accounts[account].cancelled.is_empty());
            assert_eq!(ledger.accounts[account].requests, 0);
        }
        for (account, _) in &served {
            assert!(ledger.accounts[account].open.is_empty());
        }
        assert_eq!(ledger.counters.rate_limited, refused.len() as u64);

        // Idle until the queue drains; then the budget is back. Every admitted request has had
        // its reply, so none is slotted later than now: one interval from now, the limiter has
        // nothing reserved. (Derived from the limiter's rule, not a guess; a slow machine only
        // idles longer.)
        tokio::time::sleep(LIMIT_INTERVAL).await;
        let again = burst(&server, 2).await;
        assert!(again.iter().all(|(_, r)| r.status == 200), "{again:?}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn retry_after_is_only_sent_when_enabled() {
    bounded(async {
        let server = sim::start(time_key_config(false)).await.unwrap();
        let replies = burst(&server, 6).await;
        let refused: Vec<_> = replies.iter().filter(|(_, r)| r.status == 429).collect();
        assert!(!refused.is_empty());
        assert!(
            refused
                .iter()
                .all(|(_, r)| !r.headers.contains_key("retry-after"))
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn latency_delays_every_answer() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            latency: Duration::from_millis(150),
            jitter: Duration::from_millis(50),
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        let started = std::time::Instant::now();
        assert_eq!(c.call("/v1/heartbeat", json!({})).await.status, 200);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        server.shutdown().await;
    })
    .await;
}

const NOT_INCREASED: &str = "has not increased since your last call to the Gemini API.";

/// A request sent first but held longer on the way in reaches the nonce check after a later
/// one, and is refused, as on a real network path.
#[tokio::test]
async fn inbound_delay_reorders_requests_before_the_nonce_check() {
    bounded(async {
        let faults = FaultConfig {
            inbound_jitter: Duration::from_secs(20),
            ..FaultConfig::default()
        };
        // A seed that holds the first request 10 s or more and lets the second through at once;
        // the test never waits for the long hold: shutdown cuts it short.
        let seed = (0..10_000u64)
            .find(|s| {
                faults.inbound_delay(*s, 1) >= Duration::from_secs(10)
                    && faults.inbound_delay(*s, 2) <= Duration::from_millis(200)
            })
            .expect("such a seed exists");
        let server = sim::start(SimConfig {
            seed,
            ..with_faults(faults)
        })
        .await
        .unwrap();
        let c = std::sync::Arc::new(Client::demo(&server));
        let first = {
            let c = c.clone();
            tokio::spawn(async move {
                let payload = json!({"request": "/v1/heartbeat", "nonce": 10});
                c.send("/v1/heartbeat", &payload).await.unwrap()
            })
        };
        // Wait until the first request has arrived (it is then held on its way in).
        while server.ledger().counters.requests < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = c
            .send(
                "/v1/heartbeat",
                &json!({"request": "/v1/heartbeat", "nonce": 11}),
            )
            .await
            .unwrap();
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(server.ledger().counters.nonce_errors, 0);
        server.shutdown().await;
        let first = first.await.unwrap();
        first.assert_error(400, "InvalidNonce", &format!("Nonce '10' {NOT_INCREASED}"));
    })
    .await;
}

#[tokio::test]
async fn concurrent_increasing_nonces_are_refused_with_inbound_jitter() {
    bounded(async {
        let server = sim::start(with_faults(FaultConfig {
            inbound_latency: Duration::from_millis(5),
            inbound_jitter: Duration::from_millis(400),
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        // Nonces are assigned in order as the requests leave, all at once.
        let replies =
            futures::future::join_all((0..40).map(|_| c.call("/v1/heartbeat", json!({})))).await;
        let refused: Vec<_> = replies.iter().filter(|r| r.status == 400).collect();
        assert_eq!(
            replies.iter().filter(|r| r.status == 200).count() + refused.len(),
            40
        );
        // 40 requests held for independent random times essentially never stay in order.
        assert!(!refused.is_empty(), "no request was reordered");
        for r in &refused {
            assert_eq!(r.reason(), "InvalidNonce");
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap()
                    .ends_with(NOT_INCREASED)
            );
        }
        assert_eq!(server.ledger().counters.nonce_errors, refused.len() as u64);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sequential_nonces_are_never_refused_without_inbound_jitter() {
    bounded(async {
        // Answers are delayed and jittered, but only after the nonce check.
        let server = sim::start(with_faults(FaultConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(5),
            ..FaultConfig::default()
        }))
        .await
        .unwrap();
        let c = Client::demo(&server);
        for _ in 0..50 {
            assert_eq!(c.call("/v1/heartbeat", json!({})).await.status, 200);
        }
        assert_eq!(server.ledger().counters.nonce_errors, 0);
        server.shutdown().await;
    })
    .await;
}

/// `SimConfig::default()` limits like the exchange: 10 per second, 5 queued, then 429s.
#[tokio::test]
async fn the_default_config_limits_like_the_exchange() {
    bounded(async {
        assert_eq!(
            SimConfig::default().rate_limit,
            Some(RateLimitConfig::exchange_default())
        );
        let mut cfg = time_key_config(false);
        cfg.accounts = SimConfig::numbered_accounts(100);
        cfg.rate_limit = SimConfig::default().rate_limit;
        let server = sim::start(cfg).await.unwrap();
        let replies = burst(&server, 100).await;
        let served = replies.iter().filter(|(_, r)| r.status == 200).count();
        let refused = replies.iter().filter(|(_, r)| r.status == 429).count();
        assert_eq!(served + refused, 100);
        assert!(served >= 6, "one at once and five queued: {served}");
        // A hundred sent at once exceed one plus five queued unless they take 9.4 s to arrive.
        assert!(refused >= 1, "{served} served");
        server.shutdown().await;
    })
    .await;
}
