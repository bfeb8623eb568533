//! Certificate verification is always on: an https "exchange" on loopback with a self-signed
//! certificate gets no request through, and there is no flag to make it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_exchange_is_refused_before_any_request_is_sent() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Per connection: accepted, then its TLS handshake refused, or completed and then carrying
    // request bytes. Each connection's outcome is counted only once it is known, so the test can
    // wait until every connection has one instead of reading the counts while one is pending.
    let connections = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let server = {
        let counts = (
            connections.clone(),
            refused.clone(),
            completed.clone(),
            requests.clone(),
        );
        tokio::spawn(async move {
            let (connections, refused, completed, requests) = counts;
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let (refused, completed, requests) =
                    (refused.clone(), completed.clone(), requests.clone());
                tokio::spawn(async move {
                    // The client aborts the handshake; were it to finish, a request would follow.
                    match acceptor.accept(socket).await {
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(mut tls) => {
                            let mut buf = [0u8; 1024];
                            if tls.read(&mut buf).await.unwrap_or(0) > 0 {
                                requests.fetch_add(1, Ordering::SeqCst);
                            }
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        })
    };

    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    let url = format!("https://localhost:{port}");
    let mut args = run_args(&url, &csv, &ws.db());
    args.extend(["--max-attempts", "2", "--no-verify"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    // The client has exited, so every connection it opened is closed: each one's outcome comes,
    // and a request sent late would be counted before the wait ends.
    let settled = || {
        refused.load(Ordering::SeqCst) + completed.load(Ordering::SeqCst)
            == connections.load(Ordering::SeqCst)
    };
    wait_until("every TLS connection to end", settled).await;
    server.abort();
    let connections = connections.load(Ordering::SeqCst);
    assert!(connections > 0, "the client did connect");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "no request crossed an unverified TLS session"
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        connections,
        "every handshake was refused"
    );
    let conn = db(&ws.db());
    let message: String = conn
        .query_row(
            "SELECT error_message FROM attempts WHERE error_reason = 'ConnectionError' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    let help = run_binary(&["run", "--help"], &[]).await;
    let help = String::from_utf8_lossy(&help.stdout).to_lowercase();
    assert!(
        !help.contains("insecure") && !help.contains("verify-cert") && !help.contains("no-tls")
    );
}
