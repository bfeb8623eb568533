//! A scripted exchange for the tests the simulator cannot play: a raw HTTP/1.1 server on
//! loopback that answers each request as the test says and records every request it sees.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the raw server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request target: a path, or an absolute URL when sent to a proxy.
    pub target: String,
    pub api_key: Option<String>,
    pub account: Option<String>,
    pub at: Instant,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// Written one byte every `every`.
    Drip(Vec<u8>, Duration),
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: Body::Bytes(body.into()),
        }
    }

    pub fn empty_cancel_all() -> Reply {
        Reply::json(
            200,
            r#"{"result":"ok","details":{"cancelledOrders":[],"cancelRejects":[]}}"#,
        )
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

type Script = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

/// A scripted exchange: `script(request, ordinal)` answers each request (ordinal counts from 0).
pub struct RawExchange {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawExchange {
    pub async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(serve(socket, script.clone(), seen.clone()));
                }
            })
        };
        RawExchange { url, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RawExchange {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests on one connection until it closes (reqwest keeps connections alive).
async fn serve(mut socket: TcpStream, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_owned();
        let header = |name: &str| {
            head.split("\r\n").find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let account = header("x-gemini-payload").and_then(|p| {
            let json = base64::engine::general_purpose::STANDARD.decode(p).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
            v["account"].as_str().map(str::to_owned)
        });
        let request = Seen {
            target,
            api_key: header("x-gemini-apikey"),
            account,
            at: Instant::now(),
        };
        let ordinal = {
            let mut seen = seen.lock().unwrap();
            seen.push(request.clone());
            seen.len() - 1
        };
        let reply = script(&request, ordinal);
        let reason = match reply.status {
            200 => "OK",
            400 => "Bad Request",
            500 => "Internal Server Error",
            307 => "Temporary Redirect",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Whatever",
        };
        let len = match &reply.body {
            Body::Bytes(b) | Body::Drip(b, _) => b.len(),
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-length: {len}\r\n",
            reply.status
        );
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if socket.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        let written = match reply.body {
            Body::Bytes(bytes) => socket.write_all(&bytes).await,
            Body::Drip(bytes, every) => {
                let mut result = Ok(());
                for b in bytes {
                    tokio::time::sleep(every).await;
                    result = socket.write_all(&[b]).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
        };
        if written.is_err() {
            return;
        }
    }
}

pub fn is_listing(seen: &Seen) -> bool {
    seen.target.ends_with("/v1/orders")
}
