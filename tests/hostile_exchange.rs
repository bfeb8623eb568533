//! An "exchange" that misbehaves at the HTTP level (a huge reply, a reply that drips a byte at a
//! time): the sweep records a failed attempt, gives the account up, and neither hangs, panics
//! nor runs out of memory. A raw TCP server plays the exchange, since the simulator is too
//! well-behaved for this.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// A 200 announcing and sending 40 MiB.
    Huge,
    /// A 200 whose body arrives one byte every 200 ms.
    Drip,
}

async fn serve(listener: TcpListener, how: Misbehaviour) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            // The request has an empty body; its headers fit in one read on loopback.
            if socket.read(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            match how {
                Misbehaviour::Huge => {
                    let len = 40 * 1024 * 1024;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
                    );
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 1024 * 1024];
                    for _ in 0..40 {
                        if socket.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                }
                Misbehaviour::Drip => {
                    let body =
                        br#"{"result":"ok","details":{"cancelledOrders":[],"cancelRejects":[]}}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for b in body {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if socket.write_all(&[*b]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn sweep_against(how: Misbehaviour) -> (std::process::Output, Workspace, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(listener, how));
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string(), "acct-0002".to_string()]);
    let mut args = run_args(&url, &csv, &ws.db());
    args.extend(
        ["--no-verify", "--max-attempts", "2", "--rate", "100"]
            .iter()
            .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = run_binary(&args, &[]).await;
    server.abort();
    (output, ws, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reply_is_cut_off_and_recorded_as_a_failed_attempt() {
    let (output, ws, _) = sweep_against(Misbehaviour::Huge).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE error_reason = 'ResponseTooLarge' AND body_truncated = 1 AND length(body) <= 4096"
        ),
        4,
        "two accounts, two attempts each"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE status = 'failed'"
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_reply_times_out_instead_of_hanging() {
    let (output, ws, elapsed) = sweep_against(Misbehaviour::Drip).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE error_reason = 'Timeout'"
        ),
        4
    );
    // --timeout 2 bounds each attempt; the whole body would take 14 s per attempt to drip.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}
