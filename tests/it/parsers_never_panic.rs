//! Everything that reads bytes or text from outside (the accounts CSV, the exchange's replies,
//! the command line) never panics, whatever it is given. Bounded property tests, so they run in
//! CI.

use clap::Parser;
use gemini_sweep::accounts;
use gemini_sweep::cli::args::{Cli, Command};
use gemini_sweep::client::reply::{self, Chunk, Expect};
use proptest::prelude::*;

/// (cancelled ids, rejected ids, orders listed) as the streaming reader hands them over.
fn streamed(expect: Expect, body: &[u8]) -> Result<(Vec<u64>, Vec<u64>, u64), serde_json::Error> {
    let (mut cancelled, mut rejected) = (Vec::new(), Vec::new());
    let mut spill = |chunk: Chunk| {
        match chunk {
            Chunk::Cancelled(ids) => cancelled.extend(ids),
            Chunk::Rejected(ids) => rejected.extend(ids),
            Chunk::Orders(_) => {}
        }
        Ok(())
    };
    let collected = reply::parse_streaming(expect, body, &mut spill)?;
    Ok((cancelled, rejected, collected.orders_count))
}

/// Numeric flags of `run`, with the bounds `--help` states.
const BOUNDED_FLAGS: &[(&str, f64, f64)] = &[
    ("--rate", 0.1, 100_000.0),
    ("--timeout", 0.1, 600.0),
    ("--grace", 0.0, 600.0),
    ("--burst", 1.0, 100.0),
    ("--concurrency", 1.0, 1024.0),
    ("--max-attempts", 1.0, 100.0),
    ("--reject-retries", 0.0, 10.0),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_csv_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = accounts::parse(&bytes);
    }

    #[test]
    fn the_csv_reader_never_panics_on_csv_like_text(text in "(account|enabled|note|[a-z0-9,;\"#\\r\\n \\t-]){0,80}") {
        if let Ok(entries) = accounts::parse(text.as_bytes()) {
            // Whatever it accepts is non-empty, unique and well-formed.
            prop_assert!(!entries.is_empty());
            let mut names: Vec<_> = entries.iter().map(|e| e.account.clone()).collect();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), entries.len());
            prop_assert!(entries.iter().all(|e| e.line >= 2));
        }
    }

    #[test]
    fn the_reply_readers_never_panic(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = reply::classify_error(status, &body, None, None);
        for expect in [Expect::CancelAll, Expect::Orders] {
            let in_memory = reply::parse_ok(expect, &body);
            let streaming = streamed(expect, &body);
            // Both readers agree on what is acceptable.
            prop_assert_eq!(in_memory.is_some(), streaming.is_ok());
        }
    }

    #[test]
    fn json_shaped_replies_are_read_whole_or_not_at_all(
        ids in proptest::collection::vec(any::<u64>(), 0..20),
        as_strings in any::<bool>(),
        cut in 0usize..200,
    ) {
        let list = if as_strings {
            format!("[{}]", ids.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(","))
        } else {
            format!("{ids:?}")
        };
        let body = format!(r#"{{"result":"ok","details":{{"cancelledOrders":{list},"cancelRejects":[]}}}}"#);
        let full = reply::parse_ok(Expect::CancelAll, body.as_bytes()).expect("the full reply is read");
        prop_assert_eq!(&full.cancelled, &ids);
        let (cancelled, rejected, _) = streamed(Expect::CancelAll, body.as_bytes()).expect("streamed too");
        prop_assert_eq!(&cancelled, &ids);
        prop_assert!(rejected.is_empty());
        let truncated = &body.as_bytes()[..cut.min(body.len())];
        if truncated.len() < body.len() {
            prop_assert!(reply::parse_ok(Expect::CancelAll, truncated).is_none());
            prop_assert!(streamed(Expect::CancelAll, truncated).is_err());
        }
    }

    /// Any text given to a numeric flag is either refused with a message naming the flag, or
    /// accepted within the bounds `--help` states; never a panic.
    #[test]
    fn numeric_flags_accept_only_their_bounds(
        which in 0..BOUNDED_FLAGS.len(),
        value in prop_oneof![
            "-?[0-9]{0,12}(\\.[0-9]{0,8})?(e-?[0-9]{1,3})?",
            any::<f64>().prop_map(|f| f.to_string()),
            ".{0,12}",
        ],
    ) {
        let (flag, min, max) = BOUNDED_FLAGS[which];
        // `--flag=VALUE`, so the value is the flag's whatever it looks like.
        let given = format!("{flag}={value}");
        let args = ["gemini-sweep", "run", "--accounts", "a.csv", &given];
        match Cli::try_parse_from(args) {
            Ok(cli) => {
                let Command::Run(run) = cli.command else { panic!("not run") };
                let got = match flag {
                    "--rate" => run.exchange.rate,
                    "--timeout" => run.exchange.timeout,
                    "--grace" => run.grace,
                    "--burst" => run.burst.map(f64::from),
                    "--concurrency" => run.concurrency.map(f64::from),
                    "--max-attempts" => run.max_attempts.map(f64::from),
                    "--reject-retries" => run.reject_retries.map(f64::from),
                    _ => unreachable!(),
                }
                .expect("the flag was given");
                prop_assert!((min..=max).contains(&got), "{flag} {value} accepted as {got}");
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(flag), "{message}");
            }
        }
    }
}
