//! An "exchange" that misbehaves, or behaves in ways the simulator does not: replies too large to
//! hold, replies that drip, Retry-After in its date form or beyond what a run waits, maintenance,
//! redirects, proxies. A raw HTTP server on loopback plays the exchange, scripted per test, and
//! records every request it sees.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use crate::raw_exchange::*;

/// Runs a sweep of `accounts` against `url` with `extra` flags and `envs`.
async fn sweep(
    url: &str,
    accounts: &[&str],
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Output, Workspace) {
    let ws = Workspace::new();
    let names: Vec<String> = accounts.iter().map(|s| s.to_string()).collect();
    let csv = ws.accounts_csv(&names);
    let mut args = run_args(url, &csv, &ws.db());
    if extra.contains(&"--timeout") {
        let at = args.iter().position(|a| a == "--timeout").unwrap();
        args.drain(at..at + 2);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = run_binary(&args, envs).await;
    (output, ws)
}

/// `n` ids from 7,000,000,000, joined for a JSON array.
fn ids(n: u64) -> String {
    let mut out = String::with_capacity(n as usize * 11);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&(7_000_000_000 + i).to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_all_reply_of_millions_of_ids_is_recorded_in_full() {
    // 3,200,000 ids: 35 MB, beyond the 32 MiB the reader used to drop (and record as swept).
    const N: u64 = 3_200_000;
    let body = Arc::new(format!(
        r#"{{"result":"ok","details":{{"cancelledOrders":[{}],"cancelRejects":[]}}}}"#,
        ids(N)
    ));
    assert!(body.len() > 33_554_432);
    let exchange = RawExchange::start(move |_, _| Reply::json(200, body.as_bytes())).await;
    let (output, ws) = sweep(
        &exchange.url,
        &["acct-0001"],
        &["--no-verify", "--timeout", "30"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout_json(&output)["orders_cancelled"], N);
    let conn = db(&ws.db());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM cancelled_orders") as u64,
        N
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM cancelled_orders WHERE order_id BETWEEN 7000000000 AND 7003199999"
        ) as u64,
        N
    );
    assert_eq!(
        count(&conn, "SELECT items FROM attempts WHERE outcome = 'ok'") as u64,
        N
    );
    assert_eq!(exchange.seen().len(), 1, "one request: nothing retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_too_large_to_hold_is_streamed_and_reconciled() {
    // 80,000 open orders: a 34 MB listing, before and (empty) after the cancel-all.
    const N: u64 = 80_000;
    let mut listing = String::from("[");
    for i in 0..N {
        if i > 0 {
            listing.push(',');
        }
        let id = 7_000_000_000 + i;
        listing.push_str(&format!(
            r#"{{"order_id":"{id}","id":"{id}","symbol":"btcusd","exchange":"gemini","avg_execution_price":"0.00","side":"buy","type":"exchange limit","timestamp":"1700000000","timestampms":1700000000000,"is_live":true,"is_cancelled":false,"is_hidden":false,"was_forced":false,"executed_amount":"0","remaining_amount":"1.25","client_order_id":"cl-{id:012}-padding-to-make-it-long","options":[],"price":"60000.00","original_amount":"1.25"}}"#
        ));
    }
    listing.push(']');
    assert!(listing.len() > 33_554_432, "{}", listing.len());
    let listing = Arc::new(listing);
    let cancel = Arc::new(format!(
        r#"{{"result":"ok","details":{{"cancelledOrders":[{}],"cancelRejects":[]}}}}"#,
        ids(N)
    ));
    let listed = Arc::new(Mutex::new(0));
    let exchange = RawExchange::start(move |seen, _| {
        if is_listing(seen) {
            let mut n = listed.lock().unwrap();
            *n += 1;
            if *n == 1 {
                return Reply::json(200, listing.as_bytes());
            }
            return Reply::json(200, "[]");
        }
        Reply::json(200, cancel.as_bytes())
    })
    .await;
    let (output, ws) = sweep(
        &exchange.url,
        &["acct-0001"],
        &["--timeout", "30", "--snapshot"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    let (before, cancelled, after, clean): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT open_before, cancelled, open_after, clean FROM account_reconciliation",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (before, cancelled, after, clean),
        (N as i64, N as i64, 0, 1)
    );
    assert_eq!(
        exchange.seen().len(),
        3,
        "listed once, cancelled once, listed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_all_ids_as_strings_and_missing_arrays_are_read() {
    let exchange = RawExchange::start(|_, _| {
        Reply::json(
            200,
            r#"{"result":"ok","details":{"cancelledOrders":["7000000001", 7000000002]}}"#,
        )
    })
    .await;
    let (output, ws) = sweep(&exchange.url, &["acct-0001"], &["--no-verify"], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    assert_eq!(
        order_rows(&conn, "cancelled_orders", 1),
        vec![
            ("acct-0001".to_string(), 7_000_000_001),
            ("acct-0001".to_string(), 7_000_000_002)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reply_that_is_not_json_counts_nothing() {
    // 40 MiB of blanks and a stray '[1,2': read to the end, found invalid, recorded as a failed
    // attempt; the ids it seemed to start do not count.
    let mut body = vec![b' '; 40 * 1024 * 1024];
    body.extend_from_slice(br#"{"result":"ok","details":{"cancelledOrders":[1,2"#);
    let body = Arc::new(body);
    let exchange = RawExchange::start(move |_, _| Reply::json(200, body.to_vec())).await;
    let (output, ws) = sweep(
        &exchange.url,
        &["acct-0001", "acct-0002"],
        &["--no-verify", "--max-attempts", "2", "--timeout", "30"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE error_reason = 'UnparseableBody' AND body_truncated = 1 AND length(body) <= 4096"
        ),
        4,
        "two accounts, two attempts each"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM cancelled_orders"), 0);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE status = 'failed' AND failure = 'out_of_attempts'"
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_reply_times_out_instead_of_hanging() {
    // A byte every 200 ms never leaves a read idle for the 2 s --timeout; padded with JSON
    // whitespace, the body would take 300 s per attempt to arrive.
    let mut body =
        br#"{"result":"ok","details":{"cancelledOrders":[],"cancelRejects":[]}}"#.to_vec();
    body.resize(1500, b' ');
    let exchange = RawExchange::start(move |_, _| Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: Body::Drip(body.clone(), Duration::from_millis(200)),
    })
    .await;
    let started = Instant::now();
    let (output, ws) = sweep(
        &exchange.url,
        &["acct-0001", "acct-0002"],
        &["--no-verify", "--max-attempts", "2"],
        &[],
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE error_reason = 'Timeout'"
        ),
        4
    );
    // --timeout 2 bounds each attempt, so the run takes seconds; a hang guard, not a speed claim:
    // four attempts waiting for their bodies would take 20 minutes.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_is_followed_to_the_second() {
    let exchange = RawExchange::start(|_, ordinal| {
        if ordinal == 0 {
            let when = SystemTime::now() + Duration::from_secs(3);
            return Reply::json(
                429,
                r#"{"result":"error","reason":"RateLimit","message":"slow down"}"#,
            )
            .header("retry-after", httpdate::fmt_http_date(when));
        }
        Reply::empty_cancel_all()
    })
    .await;
    let (output, _ws) = sweep(&exchange.url, &["acct-0001"], &["--no-verify"], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let seen = exchange.seen();
    assert_eq!(seen.len(), 2);
    // An HTTP date has whole seconds: three seconds ahead is between two and three from now,
    // and the retry cannot come sooner. (The upper bound is a hang guard: a loaded machine may
    // retry late, and a date misread by an hour stops the run instead, exit 1.)
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(60), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_what_a_run_waits_stops_it_loudly() {
    let exchange = RawExchange::start(|_, _| {
        Reply::json(
            429,
            r#"{"result":"error","reason":"RateLimit","message":"slow down"}"#,
        )
        .header("retry-after", "3600")
    })
    .await;
    let (output, ws) = sweep(
        &exchange.url,
        &["acct-0001", "acct-0002", "acct-0003"],
        &["--no-verify", "--concurrency", "1"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = stdout_json(&output);
    let reason = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("3600 s"), "{reason}");
    assert_eq!(summary["accounts_not_attempted"], 2);
    assert_eq!(exchange.seen().len(), 1, "nothing more was sent");
    let conn = db(&ws.db());
    let status: String = conn
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "incomplete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_pauses_the_whole_key() {
    let exchange = RawExchange::start(|_, ordinal| {
        if ordinal == 0 {
            return Reply::json(
                503,
                r#"{"result":"error","reason":"Maintenance","message":"maintenance"}"#,
            )
            .header("retry-after", "2");
        }
        Reply::empty_cancel_all()
    })
    .await;
    let accounts = ["acct-0001", "acct-0002", "acct-0003", "acct-0004"];
    // Four accounts in parallel at 5/s: without a key-wide pause the next one would leave
    // 200 ms after the first, while the 503 only paused the account that heard it.
    let (output, _ws) = sweep(
        &exchange.url,
        &accounts,
        &["--no-verify", "--concurrency", "4", "--rate", "5"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let seen = exchange.seen();
    assert_eq!(seen.len(), accounts.len() + 1, "{seen:?}");
    for later in &seen[1..] {
        let after = later.at - seen[0].at;
        assert!(
            after >= Duration::from_millis(1900),
            "{:?} left {after:?} after the 503",
            later.account
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_stops_the_run() {
    let elsewhere = RawExchange::start(|_, _| Reply::empty_cancel_all()).await;
    let target = format!("{}/v1/order/cancel/all", elsewhere.url);
    let exchange =
        RawExchange::start(move |_, _| Reply::json(307, "").header("location", target.clone()))
            .await;
    let (output, _ws) = sweep(
        &exchange.url,
        &["acct-0001", "acct-0002", "acct-0003"],
        &["--no-verify", "--concurrency", "1"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert!(
        summary["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Redirect"),
        "{summary}"
    );
    assert_eq!(exchange.seen().len(), 1);
    assert!(
        elsewhere.seen().is_empty(),
        "the signed request went nowhere else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environments_proxy_is_ignored_and_only_an_explicit_one_is_used() {
    let exchange = RawExchange::start(|_, _| Reply::empty_cancel_all()).await;
    let proxy = RawExchange::start(|_, _| Reply::empty_cancel_all()).await;
    let (output, _ws) = sweep(
        &exchange.url,
        &["acct-0001"],
        &["--no-verify"],
        &[
            ("HTTP_PROXY", &proxy.url),
            ("http_proxy", &proxy.url),
            ("HTTPS_PROXY", &proxy.url),
            ("ALL_PROXY", &proxy.url),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(proxy.seen().is_empty(), "no request went to HTTP_PROXY");
    assert_eq!(exchange.seen().len(), 1);

    let (output, _ws) = sweep(
        &exchange.url,
        &["acct-0001"],
        &["--no-verify", "--proxy", &proxy.url],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let through = proxy.seen();
    assert_eq!(through.len(), 1, "the request went through --proxy");
    assert!(
        through[0].target.starts_with(&exchange.url),
        "{}",
        through[0].target
    );
    assert_eq!(through[0].api_key.as_deref(), Some(KEY));
    assert_eq!(exchange.seen().len(), 1, "and not directly");
}
