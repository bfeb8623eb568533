//! `run --dry-run`: what a run would do, on stderr for the operator and as one JSON line for
//! the scheduler; nothing is sent.

use crate::client;
use crate::config::SweepConfig;
use crate::engine::Target;
use crate::safe_text::escape;

/// Shows the plan on stderr and returns its JSON summary.
pub(super) fn print_plan(
    config: &SweepConfig,
    target: &Target,
    credentials: &client::Credentials,
) -> serde_json::Value {
    let names: Vec<(&str, bool)> = match target {
        Target::New(entries) => entries
            .iter()
            .map(|a| (a.account.as_str(), a.enabled))
            .collect(),
        Target::Resume { accounts, .. } => accounts.iter().map(|a| (a.as_str(), true)).collect(),
        Target::Discover { excluded } => {
            eprintln!(
                "dry run: every open exchange account of the group, as /v1/account/list lists them at run time ({} excluded by name), with key {} at {} requests/s on {}; nothing sent",
                excluded.len(),
                credentials.fingerprint(),
                config.rate,
                config.base_url
            );
            return serde_json::json!({
                "dry_run": true,
                "group": config.group,
                "accounts": "discovered at run time (--all-accounts)",
                "excluded": excluded,
                "base_url": config.base_url,
                "key_fingerprint": credentials.fingerprint(),
            });
        }
    };
    let listed = names.len();
    let enabled = names.iter().filter(|(_, e)| *e).count();
    let requests = enabled * config.calls_per_account();
    let seconds = requests.saturating_sub(config.burst as usize) as f64 / config.rate;
    for (account, enabled) in &names {
        eprintln!(
            "  {:<24} {}",
            escape(account),
            if *enabled {
                "sweep"
            } else {
                "skip (enabled=false)"
            }
        );
    }
    eprintln!(
        "dry run: {enabled} of {listed} accounts, {requests} requests to {} with key {}, at least {seconds:.1} s at {} requests/s; nothing sent",
        config.base_url,
        credentials.fingerprint(),
        config.rate
    );
    let mut plan = serde_json::json!({
        "dry_run": true,
        "group": config.group,
        "accounts_total": listed,
        "accounts_enabled": enabled,
        "requests": requests,
        "expected_seconds": (seconds * 10.0).round() / 10.0,
        "base_url": config.base_url,
        "key_fingerprint": credentials.fingerprint(),
    });
    if !config.hold.is_zero() {
        let cycle = crate::engine::hold_cycle_secs(enabled, config.rate);
        eprintln!(
            "then a hold of {}: each account listed at least every {cycle:.1} s (one cycle, {enabled} accounts at {} requests/s), so an order placed meanwhile stands at most about {cycle:.1} s before it is cancelled",
            humantime::format_duration(config.hold),
            config.rate
        );
        plan["hold_s"] = config.hold.as_secs_f64().into();
        plan["hold_cycle_s"] = ((cycle * 10.0).round() / 10.0).into();
    }
    plan
}
