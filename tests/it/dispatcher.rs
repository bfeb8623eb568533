//! The key's dispatcher as an operator meets it through the real binary: an exchange that cannot
//! be reached stops the key early and says why (issue 27, item 2).

use crate::common::*;

/// A port on loopback with nothing listening: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Issue 27, item 2: against a closed port the run retried for a minute (100 attempts, every log
/// line `reason="ConnectionError"`) and exited 1 with `stop_reason: null`. Now the key stops
/// after its first five requests fail to connect, before any reply, and says where and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_cannot_be_reached_stops_the_key_and_says_why() {
    let ws = Workspace::new();
    let names: Vec<String> = (1..=20).map(|i| format!("acct-{i:04}")).collect();
    let csv = ws.accounts_csv(&names);
    let url = format!("http://127.0.0.1:{}", closed_port());
    let args = run_args(&url, &csv, &ws.db());
    let output = run_binary(&args, &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(5), "{err}");
    let summary = stdout_json(&output);
    let reason = summary["stop_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with(&format!(
            "cannot reach the exchange at {url}/: connection refused"
        )),
        "{reason}"
    );
    assert_eq!(summary["attempts"], 5, "five tries, not a minute of them");
    // The accounts whose cancel-all was tried read failed (run halted), the rest not attempted.
    let failed = summary["accounts_failed"].as_u64().unwrap();
    let not_attempted = summary["accounts_not_attempted"].as_u64().unwrap();
    assert_eq!(
        (failed + not_attempted, summary["accounts_ok"].as_u64()),
        (20, Some(0))
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&reason), "{err}");
}
