//! `gemini-sweep sim` arguments and the CLI run loop, in process.

use std::io::Write;
use std::time::Duration;

use crate::sim_support::{bounded, http, post_signed};
use clap::Parser;
use gemini_sim::cli::{self, SimArgs};
use gemini_sim::{AccountKind, AccountStatus, Ledger, NonceMode, RateLimitConfig, Role};
use serde_json::json;

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    sim: SimArgs,
}

fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
    Wrapper::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|w| w.sim)
}

#[test]
fn defaults_and_every_option_parse() {
    let d = parse(&[]).unwrap();
    let config = cli::config_from(&d).unwrap();
    assert_eq!((d.port, config.seed, config.accounts.len()), (0, 7, 50));
    assert_eq!(config.orders_per_account, 0..=20);
    assert!(config.keys.is_empty() && config.orders_for.is_empty());
    // Without --rate the simulator limits like the exchange; --rate 0 is unlimited.
    assert_eq!(config.rate_limit, Some(RateLimitConfig::exchange_default()));
    let unlimited = cli::config_from(&parse(&["--rate", "0"]).unwrap()).unwrap();
    assert_eq!(unlimited.rate_limit, None);

    let args = parse(&[
        "--port",
        "0",
        "--accounts",
        "3",
        "--seed",
        "9",
        "--key",
        "master-a:sec#roles=auditor",
        "--key",
        "account-b:sec2@acct-0003#time",
        "--orders",
        "2..=4",
        "--reject-fraction",
        "0.25",
        "--rate",
        "5",
        "--burst-queue",
        "2",
        "--retry-after",
        "--p-500",
        "0.1",
        "--p-502",
        "0.1",
        "--p-503",
        "0.1",
        "--p-stall",
        "0.1",
        "--stall-ms",
        "50",
        "--p-drop",
        "0.1",
        "--p-garbage",
        "0.1",
        "--p-lost-reply",
        "0.1",
        "--failing-account",
        "acct-0002",
        "--latency-ms",
        "3",
        "--jitter-ms",
        "4",
        "--fill-after-snapshot",
        "0.5",
        "--late-orders",
        "2",
        "--ledger",
        "/tmp/x.json",
    ])
    .unwrap();
    let c = cli::config_from(&args).unwrap();
    assert_eq!(
        (c.seed, c.accounts.len(), c.orders_per_account.clone()),
        (9, 3, 2..=4)
    );
    assert_eq!(c.keys[0].roles, vec![Role::Auditor]);
    assert_eq!(c.keys[1].account.as_deref(), Some("acct-0003"));
    assert_eq!(c.keys[1].nonce_mode, NonceMode::Time);
    let rl = c.rate_limit.unwrap();
    assert_eq!(
        (rl.per_second, rl.burst_queue, rl.send_retry_after),
        (5.0, 2, true)
    );
    assert_eq!(c.faults.stall_for, Duration::from_millis(50));
    assert!(c.faults.failing_accounts.contains("acct-0002"));
    assert_eq!(
        (c.fill_after_snapshot_fraction, c.late_orders_after_snapshot),
        (0.5, 2)
    );

    let more = parse(&[
        "--orders-for",
        "acct-0001=5000000",
        "--orders-for",
        "acct-0003=0",
        "--inbound-latency-ms",
        "7",
        "--inbound-jitter-ms",
        "30",
        "--rate",
        "0.5",
        "--key",
        "master-blue:s#group=blue#time",
        "--key",
        "account-desk:t@acct-0002#group=blue",
    ])
    .unwrap();
    let c = cli::config_from(&more).unwrap();
    assert_eq!(
        c.orders_for,
        [
            ("acct-0001".to_owned(), 5_000_000),
            ("acct-0003".to_owned(), 0)
        ]
        .into()
    );
    assert_eq!(c.faults.inbound_latency, Duration::from_millis(7));
    assert_eq!(c.faults.inbound_jitter, Duration::from_millis(30));
    assert_eq!(c.rate_limit.unwrap().per_second, 0.5);
    assert_eq!(c.keys[0].group.as_deref(), Some("blue"));
    assert_eq!(c.keys[0].nonce_mode, NonceMode::Time);
    assert_eq!(c.keys[1].group.as_deref(), Some("blue"));
    assert_eq!(c.keys[1].account.as_deref(), Some("acct-0002"));
    assert!(parse(&["--orders-for", "acct-0001"]).is_err());
    assert!(parse(&["--orders-for", "acct-0001=-1"]).is_err());
    assert!(parse(&["--key", "master-x:s#group="]).is_err());

    let split = parse(&["--min-orders", "1", "--max-orders", "3"]).unwrap();
    assert_eq!(cli::config_from(&split).unwrap().orders_per_account, 1..=3);
    assert!(parse(&["--orders", "1..=3", "--min-orders", "1"]).is_err());
    assert!(parse(&["--orders", "5..=3"]).is_err());
    assert!(parse(&["--key", "no-colon"]).is_err());
    assert!(
        parse(&["--key", "account-x:s"]).is_err(),
        "account keys need @ACCOUNT"
    );
    assert!(parse(&["--key", "master-x:s#bogus"]).is_err());
    assert!(parse(&["--accounts", "3", "--accounts-file", "a.csv"]).is_err());
}

#[test]
fn accounts_file_skips_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.csv");
    std::fs::write(
        &path,
        "# the group\naccount,type,status,group\nprimary,exchange,open\n\n# a vault\nvault,custody,open,\nold,,closed,blue\n",
    )
    .unwrap();
    let args = parse(&["--accounts-file", path.to_str().unwrap()]).unwrap();
    let accounts = cli::config_from(&args).unwrap().accounts;
    let seen: Vec<_> = accounts
        .iter()
        .map(|a| (a.name.as_str(), a.kind, a.status, a.group()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "primary",
                AccountKind::Exchange,
                AccountStatus::Open,
                "default"
            ),
            (
                "vault",
                AccountKind::Custody,
                AccountStatus::Open,
                "default"
            ),
            ("old", AccountKind::Exchange, AccountStatus::Closed, "blue"),
        ]
    );
    assert_eq!(accounts[0].group, None);
    std::fs::write(&path, "name\nx\n").unwrap();
    assert!(cli::config_from(&args).is_err());
}

/// Forwards stdout lines to the test while `run_until` is still running.
struct Lines(tokio::sync::mpsc::UnboundedSender<String>, Vec<u8>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(i) = self.1.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=i).collect();
            let _ = self
                .0
                .send(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn run_prints_address_and_key_and_keeps_the_ledger_file() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ledger_path = dir.path().join("ledger.json");
        let args = parse(&[
            "--accounts",
            "3",
            "--orders",
            "2..=2",
            "--ledger",
            ledger_path.to_str().unwrap(),
        ])
        .unwrap();
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(cli::run_until(
            args,
            async move {
                let _ = stop_rx.await;
            },
            Lines(lines_tx, Vec::new()),
        ));

        let first = lines_rx.recv().await.unwrap();
        let base = first
            .strip_prefix("listening on ")
            .expect(&first)
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{first}");
        let second = lines_rx.recv().await.unwrap();
        let rest = second.strip_prefix("key: ").expect(&second);
        let (key, secret) = rest.split_once(" secret: ").unwrap();
        assert!(key.starts_with("master-"));

        let payload =
            json!({"request": "/v1/order/cancel/all", "nonce": 1, "account": "acct-0002"});
        let reply = post_signed(
            &http(),
            &base,
            "/v1/order/cancel/all",
            key,
            secret,
            &payload.to_string(),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);

        // The file catches up: it is rewritten a debounce interval after a change.
        let read = || -> Option<Ledger> {
            serde_json::from_slice(&std::fs::read(&ledger_path).ok()?).ok()
        };
        crate::common::wait_until("the ledger file to show the cancellation", || {
            read().is_some_and(|l| l.accounts["acct-0002"].cancelled.len() == 2)
        })
        .await;

        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        let last = read().unwrap();
        assert_eq!(last.counters.ok, 1);
        assert!(last.accounts["acct-0002"].open.is_empty());
        // Only the ledger itself is left in the directory: no temp files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    })
    .await;
}
