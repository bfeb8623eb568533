//! The two parsers that read bytes from outside (the accounts CSV and the exchange's replies)
//! never panic, whatever they are given. Bounded property tests, so they run in CI.

use gemini_sweep::accounts;
use gemini_sweep::client::{self, Outcome};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

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
    fn the_reply_classifier_never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = client::classify(status, &body, None, client::parse_cancel_all);
        let _ = client::classify(status, &body, None, client::parse_orders);
    }

    #[test]
    fn json_shaped_replies_are_classified_without_panics(
        ids in proptest::collection::vec(any::<u64>(), 0..20),
        cut in 0usize..200,
    ) {
        let body = format!(
            r#"{{"result":"ok","details":{{"cancelledOrders":{ids:?},"cancelRejects":[]}}}}"#
        );
        let full = client::classify(200, body.as_bytes(), None, client::parse_cancel_all);
        prop_assert_eq!(full, Outcome::CancelAll { cancelled: ids.clone(), rejected: vec![] });
        let truncated = &body.as_bytes()[..cut.min(body.len())];
        let outcome = client::classify(200, truncated, None, client::parse_cancel_all);
        if truncated.len() < body.len() {
            let is_transient = matches!(outcome, Outcome::Transient { .. });
            prop_assert!(is_transient);
        }
    }
}
