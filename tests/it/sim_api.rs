//! The simulator's API over real HTTP: authentication, every error reason, nonces, the order
//! endpoints, account paging, determinism and the snapshot knobs.

use std::collections::BTreeSet;

use crate::sim_support::{Client, bounded, http, key, now_secs, post_raw, post_signed};
use gemini_sim::{
    self as sim, AccountKind, AccountListPaging, AccountSpec, AccountStatus, Ledger, NonceMode,
    Role, SimConfig,
};
use gemini_sweep::signing;
use serde_json::{Value, json};

fn config() -> SimConfig {
    SimConfig {
        orders_per_account: 3..=12,
        // These tests send many requests back to back on one key; the exchange's limit would
        // only slow them down (sim_faults tests the limit).
        rate_limit: None,
        // The account-list tests here page forwards; tests/it/discovery_paging.rs tests the
        // documented (default) reading and the one that ignores `timestamp`.
        account_list_paging: AccountListPaging::OnOrAfter,
        ..SimConfig::default()
    }
}

const HB: &str = "/v1/heartbeat";

/// The simulator's signature check (its own code: gemini-sim does not depend on this crate)
/// agrees with the client's signer and verifier, on the spec's vector and on anything altered.
#[test]
fn the_simulators_verifier_agrees_with_the_signing_module() {
    let signed = signing::sign(b"1234abcd", br#"{"request":"/v1/heartbeat","nonce":5}"#);
    let vector = (
        "eyJyZXF1ZXN0IjoiL3YxL29yZGVyL2NhbmNlbC9hbGwiLCJub25jZSI6MTcwMDAwMDAwMDAwMCwiYWNjb3VudCI6InN1YjEifQ==".to_owned(),
        "f8063edb9471ea7eb9bad611914e8f2d8045b012e9f3367b2affec7c4897060efa8ad02b3645925c7243382c8ca314a6".to_owned(),
    );
    let cases = [
        vector.clone(),
        (vector.0.clone(), vector.1.to_uppercase()),
        (signed.payload_b64.clone(), signed.signature_hex.clone()),
        (
            signed.payload_b64.clone(),
            signed.signature_hex[..94].to_owned(),
        ),
        (
            signed.payload_b64.clone(),
            format!("{}00", signed.signature_hex),
        ),
        (signed.payload_b64.clone(), "zz".repeat(48)),
        (
            format!("{} ", signed.payload_b64),
            signed.signature_hex.clone(),
        ),
        (String::new(), signing::signature_of(b"1234abcd", b"")),
    ];
    let mut accepted = 0;
    for (payload, sig) in &cases {
        let verdict = sim::signature_matches("1234abcd", payload, sig);
        assert_eq!(
            verdict,
            signing::verify(b"1234abcd", payload.as_bytes(), sig),
            "{payload} {sig}"
        );
        accepted += usize::from(verdict);
    }
    // The vector (both cases of hex), the fresh signature and the empty payload's: the cases
    // that must pass do, so the agreement above is not two verifiers refusing everything.
    assert_eq!(accepted, 4);
    assert!(!sim::signature_matches(
        "1234abce",
        &signed.payload_b64,
        &signed.signature_hex
    ));
}

#[tokio::test]
async fn signed_request_is_accepted_and_any_changed_byte_is_refused() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let (http, base) = (http(), server.base_url());
        let payload = r#"{"request":"/v1/heartbeat","nonce":1000}"#;
        let good = post_signed(&http, &base, HB, "master-demo", "demo-secret", payload)
            .await
            .unwrap();
        assert_eq!(good.status, 200);
        assert_eq!(good.json(), json!({"result": "ok"}));

        let signed = signing::sign(
            b"demo-secret",
            br#"{"request":"/v1/heartbeat","nonce":1001}"#,
        );
        // One byte of the JSON changed (nonce 1001 -> 1002), old signature kept.
        let altered = signing::sign(b"x", br#"{"request":"/v1/heartbeat","nonce":1002}"#);
        let mut bad_sig = signed.signature_hex.clone().into_bytes();
        bad_sig[10] = if bad_sig[10] == b'a' { b'b' } else { b'a' };
        let bad_sig = String::from_utf8(bad_sig).unwrap();
        let wrong_secret = signing::sign(
            b"demo-secreu",
            br#"{"request":"/v1/heartbeat","nonce":1001}"#,
        );
        let attempts = [
            (
                "master-demo",
                altered.payload_b64.as_str(),
                signed.signature_hex.as_str(),
            ),
            ("master-demo", signed.payload_b64.as_str(), bad_sig.as_str()),
            (
                "master-demo",
                wrong_secret.payload_b64.as_str(),
                wrong_secret.signature_hex.as_str(),
            ),
            (
                "master-nobody",
                signed.payload_b64.as_str(),
                signed.signature_hex.as_str(),
            ),
        ];
        for (k, p, sig) in attempts {
            let reply = post_raw(
                &http,
                &format!("{base}{HB}"),
                &[
                    ("X-GEMINI-APIKEY", k),
                    ("X-GEMINI-PAYLOAD", p),
                    ("X-GEMINI-SIGNATURE", sig),
                ],
            )
            .await
            .unwrap();
            reply.assert_error(400, "InvalidSignature", "InvalidSignature");
        }
        // Refused signatures do not consume the nonce: the genuine request still passes.
        let ok = post_raw(
            &http,
            &format!("{base}{HB}"),
            &[
                ("X-GEMINI-APIKEY", "master-demo"),
                ("X-GEMINI-PAYLOAD", &signed.payload_b64),
                ("X-GEMINI-SIGNATURE", &signed.signature_hex),
            ],
        )
        .await
        .unwrap();
        assert_eq!(ok.status, 200);
        let counters = server.ledger().counters;
        assert_eq!(counters.signature_errors, 4);
        assert_eq!(counters.ok, 2);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn missing_headers_are_named() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let (http, url) = (http(), format!("{}{HB}", server.base_url()));
        let all = [
            ("X-GEMINI-APIKEY", "master-demo"),
            ("X-GEMINI-PAYLOAD", "e30="),
            ("X-GEMINI-SIGNATURE", "00"),
        ];
        let reasons = [
            "MissingApikeyHeader",
            "MissingPayloadHeader",
            "MissingSignatureHeader",
        ];
        for (i, reason) in reasons.iter().enumerate() {
            let headers: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, h)| *h)
                .collect();
            let reply = post_raw(&http, &url, &headers).await.unwrap();
            let message = format!("Must provide '{}' header", all[i].0);
            reply.assert_error(400, reason, &message);
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let http = http();
        let reply = post_raw(&http, &format!("{}/v1/nope", server.base_url()), &[])
            .await
            .unwrap();
        reply.assert_error(
            404,
            "EndpointNotFound",
            "API entry point `/v1/nope` not found",
        );
        let response = http
            .get(format!("{}/v1/orders", server.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["result"], "error");
        assert_eq!(body["reason"], "MethodNotAllowed");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn payload_that_is_not_a_base64_json_object_is_invalid_json() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let (http, url) = (http(), format!("{}{HB}", server.base_url()));
        let array = signing::sign(b"demo-secret", b"[1,2]");
        for payload in ["%%% not base64", array.payload_b64.as_str()] {
            let sig = signing::signature_of(b"demo-secret", payload.as_bytes());
            let reply = post_raw(
                &http,
                &url,
                &[
                    ("X-GEMINI-APIKEY", "master-demo"),
                    ("X-GEMINI-PAYLOAD", payload),
                    ("X-GEMINI-SIGNATURE", &sig),
                ],
            )
            .await
            .unwrap();
            reply.assert_error(
                400,
                "InvalidJson",
                "Could not parse the X-GEMINI-PAYLOAD header as base64-encoded JSON object",
            );
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn request_field_must_match_the_path() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let c = Client::demo(&server);
        let reply = c
            .send(HB, &json!({"request": "/v1/orders", "nonce": 5}))
            .await
            .unwrap();
        reply.assert_error(
            400,
            "EndpointMismatch",
            "Payload request \"/v1/orders\" does not match the endpoint '/v1/heartbeat'",
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn increasing_nonce_is_shared_by_every_account_of_a_master_key() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let c = Client::demo(&server);
        let orders = |nonce: Value, account: &str| {
            json!({"request": "/v1/orders", "nonce": nonce, "account": account})
        };
        let send = async |p: Value| c.send("/v1/orders", &p).await;
        assert_eq!(send(orders(json!(100), "acct-0001")).await.unwrap().status, 200);
        for stale in [json!(100), json!("99")] {
            let reply = send(orders(stale.clone(), "acct-0002")).await.unwrap();
            let shown = stale.as_str().map_or(stale.to_string(), str::to_owned);
            reply.assert_error(
                400,
                "InvalidNonce",
                &format!("Nonce '{shown}' has not increased since your last call to the Gemini API."),
            );
        }
        // A numeric string counts as the number.
        assert_eq!(send(orders(json!("101"), "acct-0002")).await.unwrap().status, 200);

        let reply = send(orders(json!(""), "acct-0002")).await.unwrap();
        reply.assert_error(400, "InvalidNonce", "Nonce '\"\"' was not parseable as a number.");

        // A nonce that passed is spent even when a later check refuses the request.
        let reply = send(orders(json!(200), "no-such-account")).await.unwrap();
        assert_eq!(reply.reason(), "InvalidAccountName");
        let reply = send(orders(json!(200), "acct-0001")).await.unwrap();
        assert_eq!(reply.reason(), "InvalidNonce");
        assert_eq!(server.ledger().counters.nonce_errors, 4);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn time_nonces_must_be_fresh_and_unused() {
    bounded(async {
        let mut cfg = config();
        let mut k = key("master-time", "s3cret", &[Role::Trader], None);
        k.nonce_mode = NonceMode::Time;
        cfg.keys.push(k);
        let server = sim::start(cfg).await.unwrap();
        let c = Client::new(&server, "master-time", "s3cret");
        let hb = async |nonce: Value| c.send(HB, &json!({"request": HB, "nonce": nonce})).await;

        let stale = format!("{:.3}", now_secs() - 31.0);
        let reply = hb(json!(stale)).await.unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.reason(), "InvalidNonce");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        let prefix = format!("Nonce '{stale}' is not within 30 seconds of server time '");
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.ends_with("''"), "{message}");

        let ahead = (now_secs() + 31.0).floor() as u64;
        assert_eq!(hb(json!(ahead)).await.unwrap().reason(), "InvalidNonce");

        let fresh = now_secs().floor() as u64;
        assert_eq!(hb(json!(fresh)).await.unwrap().status, 200);
        let reused = hb(json!(fresh)).await.unwrap();
        reused.assert_error(
            400,
            "InvalidNonce",
            &format!("Nonce '{fresh}' has not increased since your last call to the Gemini API."),
        );
        // Order does not matter in time mode, only freshness and uniqueness.
        assert_eq!(
            hb(json!(format!("{}.5", fresh - 1))).await.unwrap().status,
            200
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn account_and_role_errors() {
    bounded(async {
        let mut cfg = config();
        cfg.accounts.push(AccountSpec {
            name: "shut".into(),
            kind: AccountKind::Exchange,
            status: AccountStatus::Closed,
            group: None,
        });
        cfg.accounts.push(AccountSpec {
            name: "vault".into(),
            kind: AccountKind::Custody,
            status: AccountStatus::Open,
            group: None,
        });
        cfg.keys
            .push(key("master-audit", "a", &[Role::Auditor], None));
        cfg.keys
            .push(key("account-one", "b", &[Role::Trader], Some("acct-0003")));
        let server = sim::start(cfg).await.unwrap();
        let master = Client::demo(&server);
        let auditor = Client::new(&server, "master-audit", "a");
        let account_key = Client::new(&server, "account-one", "b");
        let cancel = "/v1/order/cancel/all";

        master.call(cancel, json!({})).await.assert_error(
            400,
            "MissingAccounts",
            "Expected a JSON payload with accounts",
        );
        let r = master.cancel_all("acct-9999").await;
        r.assert_error(
            400,
            "InvalidAccountName",
            "Account 'acct-9999' does not exist in this group",
        );
        master.cancel_all("shut").await.assert_error(
            400,
            "AccountClosed",
            "Account 'shut' is closed",
        );
        master.cancel_all("vault").await.assert_error(
            400,
            "NotGroupApiCompatible",
            "Account 'vault' is a custody account and holds no orders",
        );
        account_key
            .call(cancel, json!({"account": "acct-0003"}))
            .await
            .assert_error(
                400,
                "AccountsOnGroupOnlyApi",
                "The 'account' field may only be sent with a master (group) API key",
            );
        account_key
            .call("/v1/account/list", json!({}))
            .await
            .assert_error(
                400,
                "NotGroupApiCompatible",
                "The endpoint '/v1/account/list' is only available to master (group) API keys",
            );
        auditor.cancel_all("acct-0001").await.assert_error(
            403,
            "MissingRole",
            "To access this endpoint, you need to log in to the website and go to the settings \
             page to assign one of these roles [Trader] to API key master-audit which currently \
             has roles [Auditor]",
        );
        // Auditors may look, and anyone on the group may list accounts.
        assert_eq!(auditor.orders("acct-0001").await.status, 200);
        assert_eq!(
            auditor.call("/v1/account/list", json!({})).await.status,
            200
        );

        // An account key acts on its own account without naming it.
        let before = server.ledger().accounts["acct-0003"].initial_orders.clone();
        let reply = account_key.call(cancel, json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.ids("cancelledOrders"), before);
        let ledger = server.ledger();
        assert!(ledger.accounts["acct-0003"].open.is_empty());
        assert_eq!(ledger.accounts["acct-0003"].requests, 1);
        assert_eq!(ledger.accounts["acct-0001"].requests, 1);
        assert_eq!(ledger.accounts["shut"].requests, 0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn cancel_all_cancels_the_cancellable_and_rejects_stay_open() {
    bounded(async {
        let cfg = SimConfig {
            orders_per_account: 8..=16,
            reject_fraction: 0.3,
            ..config()
        };
        let server = sim::start(cfg).await.unwrap();
        let c = Client::demo(&server);
        let mut saw_rejects = false;
        for account in SimConfig::numbered_accounts(10).iter().map(|a| &a.name) {
            let initial = server.ledger().accounts[account].initial_orders.clone();
            let listing = c.orders(account).await;
            assert_eq!(listing.listed_ids(), initial);
            for order in listing.json().as_array().unwrap() {
                assert!(order.get("account").is_none());
                assert_eq!(order["is_live"], true);
                assert_eq!(order["is_cancelled"], false);
                assert_eq!(order["type"], "exchange limit");
                assert!(order["price"].is_string() && order["remaining_amount"].is_string());
                assert!(order["timestampms"].is_u64() && order["client_order_id"].is_string());
            }
            assert!(initial.iter().all(|id| *id > u64::from(u32::MAX)));

            let nonce_before = c.next_nonce();
            let first = c.cancel_all(account).await;
            assert_eq!(first.status, 200);
            let (cancelled, rejects) = (first.ids("cancelledOrders"), first.ids("cancelRejects"));
            let mut union: Vec<u64> = cancelled.iter().chain(&rejects).copied().collect();
            union.sort_unstable();
            assert_eq!(union, initial);
            saw_rejects |= !rejects.is_empty();

            let ledger = server.ledger();
            let acct = &ledger.accounts[account];
            assert_eq!(acct.open, rejects);
            let recorded: Vec<u64> = acct.cancelled.iter().map(|r| r.order_id).collect();
            assert_eq!(recorded, cancelled);
            let sent_nonce = (nonce_before + 1).to_string();
            assert!(acct.cancelled.iter().all(|r| r.nonce == sent_nonce));

            let second = c.cancel_all(account).await;
            assert!(second.ids("cancelledOrders").is_empty());
            assert_eq!(second.ids("cancelRejects"), rejects);
            let twice: Vec<u64> = rejects.iter().chain(&rejects).copied().collect();
            assert_eq!(server.ledger().accounts[account].rejects, twice);
            assert_eq!(c.orders(account).await.listed_ids(), rejects);
        }
        assert!(
            saw_rejects,
            "seed 7 with 30% rejects should refuse something"
        );
        server.shutdown().await;
    })
    .await;
}

/// `/v1/orders/history` lists what cancel-alls cancelled (`is_cancelled: true`), oldest first,
/// from `timestamp` on, at most `limit_orders` (default 50); orders still open are not in it.
#[tokio::test]
async fn the_order_history_lists_cancelled_orders_by_time() {
    bounded(async {
        let cfg = SimConfig {
            orders_per_account: 60..=60,
            reject_fraction: 0.2,
            ..config()
        };
        let server = sim::start(cfg).await.unwrap();
        let c = Client::demo(&server);
        let account = "acct-0001";
        let history = |fields: Value| c.call("/v1/orders/history", fields);
        assert!(
            history(json!({"account": account}))
                .await
                .listed_ids()
                .is_empty()
        );
        let cancelled = c.cancel_all(account).await.ids("cancelledOrders");
        assert!(cancelled.len() > 40);

        let page = history(json!({"account": account, "limit_orders": 500})).await;
        let mut ids = page.listed_ids();
        let orders = page.json().as_array().unwrap().clone();
        assert!(
            orders
                .iter()
                .all(|o| o["is_cancelled"] == true && o["is_live"] == false)
        );
        let times: Vec<u64> = orders
            .iter()
            .map(|o| o["timestampms"].as_u64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
        ids.sort_unstable();
        assert_eq!(ids, cancelled, "every cancelled order, no open one");
        assert_eq!(
            history(json!({"account": account}))
                .await
                .listed_ids()
                .len(),
            50
        );

        let from = times[times.len() / 2];
        let later = history(json!({"account": account, "limit_orders": 500, "timestamp": from}));
        let later = later.await.json();
        let later = later.as_array().unwrap();
        assert!(!later.is_empty() && later.len() < orders.len());
        assert!(
            later
                .iter()
                .all(|o| o["timestampms"].as_u64().unwrap() >= from)
        );

        // Orders placed now carry the wall clock's time.
        for _ in 0..10 {
            server.place_order(account);
        }
        let now_ms = (now_secs() * 1000.0) as u64;
        let fresh = c.cancel_all(account).await.ids("cancelledOrders");
        assert!(!fresh.is_empty());
        let all = history(json!({"account": account, "limit_orders": 500}))
            .await
            .json();
        let placed_now: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| fresh.contains(&o["order_id"].as_str().unwrap().parse().unwrap()))
            .collect();
        assert_eq!(placed_now.len(), fresh.len());
        assert!(
            placed_now
                .iter()
                .all(|o| o["timestampms"].as_u64().unwrap().abs_diff(now_ms) < 60_000)
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn account_list_pages_by_creation_time() {
    bounded(async {
        let mut cfg = config();
        cfg.accounts.push(AccountSpec {
            name: "vault".into(),
            kind: AccountKind::Custody,
            status: AccountStatus::Open,
            group: None,
        });
        cfg.accounts.push(AccountSpec {
            name: "shut".into(),
            kind: AccountKind::Exchange,
            status: AccountStatus::Closed,
            group: None,
        });
        let server = sim::start(cfg).await.unwrap();
        let c = Client::demo(&server);
        let list = "/v1/account/list";

        let all = c.call(list, json!({"limit_accounts": 1000})).await.json();
        let all = all.as_array().unwrap().clone();
        assert_eq!(all.len(), 12);
        assert_eq!(all[0]["account"], "acct-0001");
        assert_eq!(all[0]["type"], "exchange");
        assert_eq!(all[0]["status"], "open");
        assert!(all[0]["counterparty_id"].as_str().unwrap().len() == 8);
        assert!(all[0]["name"].is_string());
        assert_eq!(all[10]["type"], "custody");
        assert_eq!(all[11]["status"], "closed");
        let created: Vec<u64> = all.iter().map(|a| a["created"].as_u64().unwrap()).collect();
        assert!(created.windows(2).all(|w| w[0] < w[1]));

        let mut paged = Vec::new();
        let mut since = 0u64;
        loop {
            let page = c
                .call(list, json!({"limit_accounts": 5, "timestamp": since}))
                .await
                .json();
            let page = page.as_array().unwrap().clone();
            assert!(page.len() <= 5);
            let Some(last) = page.last() else { break };
            since = last["created"].as_u64().unwrap() + 1;
            paged.extend(page);
        }
        assert_eq!(paged, all);

        // Without a limit the default (500) applies; with one in seconds, it still pages.
        assert_eq!(
            c.call(list, json!({}))
                .await
                .json()
                .as_array()
                .unwrap()
                .len(),
            12
        );
        let secs = created[6] / 1000 + 1;
        let later = c.call(list, json!({"timestamp": secs})).await.json();
        assert_eq!(later.as_array().unwrap().len(), 5);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn books_are_seeded() {
    bounded(async {
        let start = |seed: u64, reversed: bool| async move {
            let mut cfg = SimConfig {
                seed,
                reject_fraction: 0.2,
                orders_per_account: 0..=20,
                ..config()
            };
            if reversed {
                cfg.accounts.reverse();
            }
            sim::start(cfg).await.unwrap()
        };
        let (a, b, c, d) = (
            start(7, false).await,
            start(7, true).await,
            start(8, false).await,
            start(7, false).await,
        );
        let books = |s: &sim::SimServer| -> Vec<(String, Vec<u64>)> {
            s.ledger()
                .accounts
                .into_iter()
                .map(|(n, l)| (n, l.initial_orders))
                .collect()
        };
        assert_eq!(books(&a), books(&b), "account order must not matter");
        assert_ne!(books(&a), books(&c), "another seed, another book");
        // Same seed, same order details and the same reject decisions.
        let (ca, cd) = (Client::demo(&a), Client::demo(&d));
        for account in ["acct-0001", "acct-0005"] {
            assert_eq!(
                ca.orders(account).await.json(),
                cd.orders(account).await.json()
            );
            assert_eq!(
                ca.cancel_all(account).await.json(),
                cd.cancel_all(account).await.json()
            );
        }
        for s in [a, b, c, d] {
            s.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_market_moves_after_the_first_snapshot() {
    bounded(async {
        let cfg = SimConfig {
            orders_per_account: 10..=10,
            fill_after_snapshot_fraction: 0.5,
            late_orders_after_snapshot: 2,
            ..config()
        };
        let server = sim::start(cfg).await.unwrap();
        let c = Client::demo(&server);
        let snapshot = c.orders("acct-0002").await.listed_ids();
        assert_eq!(snapshot.len(), 10);
        let ledger = server.ledger();
        let acct = &ledger.accounts["acct-0002"];
        assert_eq!(snapshot, acct.initial_orders);
        assert_eq!(acct.filled.len(), 5);
        assert_eq!(acct.late.len(), 2);
        assert_eq!(acct.open.len(), 7);
        assert!(acct.filled.iter().all(|id| snapshot.contains(id)));
        assert!(
            acct.late
                .iter()
                .all(|id| acct.open.contains(id) && *id > snapshot[9])
        );

        // Only the first listing moves the market.
        assert_eq!(c.orders("acct-0002").await.listed_ids(), acct.open);
        assert_eq!(server.ledger().accounts["acct-0002"].open, acct.open);
        // Untouched accounts stay as they were.
        assert!(server.ledger().accounts["acct-0003"].filled.is_empty());

        let placed = server.place_order("acct-0002");
        let reply = c.cancel_all("acct-0002").await;
        let mut expected = acct.open.clone();
        expected.push(placed);
        assert_eq!(reply.ids("cancelledOrders"), expected);
        let ledger = server.ledger();
        assert_eq!(ledger.accounts["acct-0002"].late.len(), 3);
        assert!(ledger.accounts["acct-0002"].open.is_empty());
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn admin_ledger_and_counters() {
    bounded(async {
        let server = sim::start(config()).await.unwrap();
        let c = Client::demo(&server);
        c.cancel_all("acct-0001").await;
        c.call("/v1/orders", json!({})).await; // MissingAccounts
        let ledger: Ledger = http()
            .get(format!("{}/admin/ledger", server.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ledger.accounts, server.ledger().accounts);
        let counters = server.ledger().counters;
        assert_eq!(counters.requests, 3);
        assert_eq!(counters.ok, 1);
        assert_eq!(counters.other_errors, 1);
        let open: BTreeSet<u64> = ledger.accounts["acct-0001"].open.iter().copied().collect();
        assert!(open.is_empty());
        server.shutdown().await;
    })
    .await;
}

fn account(
    name: &str,
    kind: AccountKind,
    status: AccountStatus,
    group: Option<&str>,
) -> AccountSpec {
    AccountSpec {
        name: name.into(),
        kind,
        status,
        group: group.map(Into::into),
    }
}

#[tokio::test]
async fn account_list_pages_1200_accounts_in_three_calls() {
    bounded(async {
        let mut cfg = SimConfig {
            accounts: (1..=1200)
                .map(|i| {
                    let kind = if i % 7 == 0 {
                        AccountKind::Custody
                    } else {
                        AccountKind::Exchange
                    };
                    let status = if i % 11 == 0 {
                        AccountStatus::Closed
                    } else {
                        AccountStatus::Open
                    };
                    account(&format!("sub-{i:04}"), kind, status, None)
                })
                .collect(),
            orders_per_account: 0..=0,
            ..config()
        };
        // Another group's accounts, interleaved in creation order, are never listed.
        for i in 0..30 {
            cfg.accounts.insert(
                i * 40,
                account(
                    &format!("other-{i}"),
                    AccountKind::Exchange,
                    AccountStatus::Open,
                    Some("other"),
                ),
            );
        }
        let server = sim::start(cfg).await.unwrap();
        let c = Client::demo(&server);
        let list = "/v1/account/list";

        let mut seen: Vec<Value> = Vec::new();
        let mut calls = 0;
        let mut since = 0u64;
        loop {
            // Asking for more than 500 gets 500.
            let page = c
                .call(list, json!({"limit_accounts": 1000, "timestamp": since}))
                .await;
            assert_eq!(page.status, 200, "{}", page.body);
            let page = page.json().as_array().unwrap().clone();
            calls += 1;
            assert!(page.len() <= 500);
            let full = page.len() == 500;
            if let Some(last) = page.last() {
                since = last["created"].as_u64().unwrap() + 1;
            }
            seen.extend(page);
            if !full {
                break;
            }
        }
        assert_eq!(calls, 3);
        assert_eq!(seen.len(), 1200);
        for (i, a) in seen.iter().enumerate() {
            let n = i + 1;
            assert_eq!(a["account"], format!("sub-{n:04}"));
            let kind = if n % 7 == 0 { "custody" } else { "exchange" };
            let status = if n % 11 == 0 { "closed" } else { "open" };
            assert_eq!(
                (a["type"].as_str(), a["status"].as_str()),
                (Some(kind), Some(status))
            );
        }
        let created: Vec<u64> = seen
            .iter()
            .map(|a| a["created"].as_u64().unwrap())
            .collect();
        assert!(created.windows(2).all(|w| w[0] < w[1]));
        // The default limit is the maximum.
        let first = c.call(list, json!({})).await.json();
        assert_eq!(first.as_array().unwrap().len(), 500);
        assert_eq!(first.as_array().unwrap()[..], seen[..500]);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_master_key_sees_only_its_own_group() {
    bounded(async {
        let mut cfg = config();
        cfg.accounts.push(account(
            "blue-1",
            AccountKind::Exchange,
            AccountStatus::Open,
            Some("blue"),
        ));
        cfg.accounts.push(account(
            "blue-2",
            AccountKind::Exchange,
            AccountStatus::Open,
            Some("blue"),
        ));
        let mut blue = key("master-blue", "b", &[Role::Trader, Role::Auditor], None);
        blue.group = Some("blue".into());
        let mut blue_desk = key("account-blue", "d", &[Role::Trader], Some("blue-2"));
        blue_desk.group = Some("blue".into());
        cfg.keys.extend([blue, blue_desk]);
        let server = sim::start(cfg.clone()).await.unwrap();
        let (default, blue) = (
            Client::demo(&server),
            Client::new(&server, "master-blue", "b"),
        );
        let names = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|a| a["account"].as_str().unwrap().to_owned())
                .collect()
        };
        let list = "/v1/account/list";
        assert_eq!(
            names(blue.call(list, json!({})).await.json()),
            ["blue-1", "blue-2"]
        );
        let mine = names(default.call(list, json!({})).await.json());
        assert_eq!(mine.len(), 10);
        assert!(mine.iter().all(|n| n.starts_with("acct-")));

        for (c, other) in [(&blue, "acct-0001"), (&default, "blue-1")] {
            c.cancel_all(other).await.assert_error(
                400,
                "InvalidAccountName",
                &format!("Account '{other}' does not exist in this group"),
            );
            c.orders(other).await.assert_error(
                400,
                "InvalidAccountName",
                &format!("Account '{other}' does not exist in this group"),
            );
        }
        let initial = server.ledger().accounts["blue-1"].initial_orders.clone();
        assert_eq!(
            blue.cancel_all("blue-1").await.ids("cancelledOrders"),
            initial
        );
        let desk = Client::new(&server, "account-blue", "d");
        assert_eq!(desk.call("/v1/orders", json!({})).await.status, 200);
        let ledger = server.ledger();
        assert_eq!(ledger.accounts["acct-0001"].requests, 0);
        assert_eq!(ledger.accounts["blue-1"].requests, 1);

        // An account key must act on an account of its own group.
        let mut wrong = cfg.clone();
        wrong
            .keys
            .push(key("account-x", "x", &[Role::Trader], Some("blue-1")));
        let err = sim::start(wrong).await.err().expect("refused");
        assert!(err.to_string().contains("of group"), "{err}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn each_group_key_has_its_own_nonce_and_rate_limit() {
    bounded(async {
        let mut cfg = config();
        cfg.accounts.push(account(
            "blue-1",
            AccountKind::Exchange,
            AccountStatus::Open,
            Some("blue"),
        ));
        let mut blue = key("master-blue", "b", &[Role::Trader], None);
        blue.group = Some("blue".into());
        cfg.keys.push(blue);
        // One request per key every 1000 s: a key's second request is refused however slowly
        // the machine sends it.
        cfg.rate_limit = Some(sim::RateLimitConfig {
            per_second: 0.001,
            burst_queue: 0,
            send_retry_after: false,
        });
        let server = sim::start(cfg).await.unwrap();
        let (default, blue) = (
            Client::demo(&server),
            Client::new(&server, "master-blue", "b"),
        );
        // Both clients start at nonce 1: nonces are per key.
        assert_eq!(default.call(HB, json!({})).await.status, 200);
        assert_eq!(blue.call(HB, json!({})).await.status, 200);
        // Each key spent its budget on its own.
        assert_eq!(default.call(HB, json!({})).await.status, 429);
        assert_eq!(blue.call(HB, json!({})).await.status, 429);
        assert_eq!(server.ledger().counters.rate_limited, 2);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn big_books_are_streamed_and_summarised() {
    bounded(async {
        let cfg = SimConfig {
            accounts: SimConfig::numbered_accounts(3),
            orders_per_account: 2..=2,
            orders_for: [("acct-0002".to_owned(), 3000)].into(),
            reject_fraction: 0.01,
            ..config()
        };
        let server = sim::start(cfg).await.unwrap();
        let c = Client::demo(&server);
        let ledger = server.ledger();
        let initial = ledger.accounts["acct-0002"].initial_orders.clone();
        assert_eq!(initial.len(), 3000);
        assert_eq!(ledger.accounts["acct-0001"].initial_orders.len(), 2);

        let small = c.orders("acct-0001").await;
        assert!(small.headers.contains_key("content-length"));
        let big = c.orders("acct-0002").await;
        assert_eq!(big.status, 200);
        assert!(big.body.len() > 64 * 1024);
        assert_eq!(big.headers["transfer-encoding"], "chunked");
        assert_eq!(big.headers["content-type"], "application/json");
        assert_eq!(big.listed_ids(), initial);

        let reply = c.cancel_all("acct-0002").await;
        let (cancelled, rejects) = (reply.ids("cancelledOrders"), reply.ids("cancelRejects"));
        assert!(!rejects.is_empty() && cancelled.len() > 2900);
        let mut union: Vec<u64> = cancelled.iter().chain(&rejects).copied().collect();
        union.sort_unstable();
        assert_eq!(union, initial);

        let summary = server.summary();
        let s = &summary.accounts["acct-0002"];
        assert_eq!(
            (s.initial, s.cancelled, s.rejects),
            (3000, cancelled.len() as u64, rejects.len() as u64)
        );
        assert_eq!(
            (s.open, s.filled, s.late, s.requests),
            (rejects.len() as u64, 0, 0, 2)
        );
        assert_eq!(s.cancelled_id_sum, cancelled.iter().sum::<u64>());
        assert_eq!(s.cancelled_id_xor, cancelled.iter().fold(0, |x, id| x ^ id));
        assert_eq!(summary.total.initial, 3004);
        assert_eq!(summary.total.cancelled_id_sum, s.cancelled_id_sum);
        assert_eq!(summary.counters.ok, 3);

        // The same over HTTP, and the ledger agrees with it.
        let served: sim::Summary = http()
            .get(format!("{}/admin/summary", server.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(served.accounts, summary.accounts);
        assert_eq!(served.counters.requests, summary.counters.requests + 1);
        let ledger = server.ledger();
        let recorded: Vec<u64> = ledger.accounts["acct-0002"]
            .cancelled
            .iter()
            .map(|r| r.order_id)
            .collect();
        assert_eq!(recorded, cancelled);
        assert_eq!(ledger.accounts["acct-0002"].open, rejects);
        server.shutdown().await;

        // Overrides must name an account that can hold orders.
        for name in ["nope", "vault"] {
            let mut cfg = config();
            cfg.accounts.push(account(
                "vault",
                AccountKind::Custody,
                AccountStatus::Open,
                None,
            ));
            cfg.orders_for.insert(name.into(), 1);
            let err = sim::start(cfg).await.err().expect("refused");
            assert!(err.to_string().contains(name), "{err}");
        }
    })
    .await;
}
