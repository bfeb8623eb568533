//! `gemini-sweep demo`: the real sweep against the simulator started in-process, with a throwaway
//! key. It shows what a run does and leaves a database to query, without keys or network.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::accounts::AccountEntry;
use crate::client::{Credentials, NonceMode, SystemClock};
use crate::config::SweepConfig;
use crate::engine::{self, SweepSummary, Target};
use crate::error::Error;
use gemini_sim::{
    self as sim, FaultConfig, KeySpec, NonceMode as SimNonceMode, RateLimitConfig, Requote,
    RequoteWhen, Role, SimConfig,
};

const DEMO_KEY: &str = "master-demo";
/// The demo's exchange and sweep both run at this rate, so it finishes in seconds.
const DEMO_RATE: f64 = 20.0;

/// With a hold, this many of the demo's first accounts run a strategy that quotes again, two
/// orders this long after each cancel-all, for the hold to catch.
const DEMO_STRATEGIES: usize = 2;
const DEMO_REQUOTE_AFTER: Duration = Duration::from_millis(1500);

/// Sweeps a simulated group of `accounts`; with a `hold`, some of its accounts keep quoting
/// after their cancel-all and the run holds the group flat that long.
pub async fn run(db: &Path, accounts: u32, hold: Duration) -> Result<SweepSummary, Error> {
    // Throwaway: the simulator and this process are the only ones who ever see it.
    let secret = format!("demo-{:016x}", rand::random::<u64>());
    let sim_config = SimConfig {
        seed: 7,
        accounts: SimConfig::numbered_accounts(accounts),
        keys: vec![KeySpec {
            key: DEMO_KEY.into(),
            secret: secret.clone(),
            nonce_mode: SimNonceMode::Increasing,
            roles: vec![Role::Trader, Role::Auditor],
            account: None,
            group: None,
        }],
        orders_per_account: 0..=160,
        reject_fraction: 0.004,
        rate_limit: Some(RateLimitConfig {
            per_second: DEMO_RATE,
            burst_queue: 5,
            send_retry_after: false,
        }),
        faults: FaultConfig {
            p_500: 0.03,
            p_503: 0.01,
            p_drop: 0.01,
            p_garbage: 0.01,
            ..FaultConfig::default()
        },
        requote: (!hold.is_zero()).then(|| Requote {
            accounts: SimConfig::numbered_accounts(accounts)
                .into_iter()
                .take(DEMO_STRATEGIES)
                .map(|a| a.name)
                .collect(),
            orders: 2,
            when: RequoteWhen::After(DEMO_REQUOTE_AFTER),
            rounds: None,
        }),
        ..SimConfig::default()
    };
    let entries: Vec<AccountEntry> = sim_config
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| AccountEntry {
            account: a.name.clone(),
            enabled: true,
            note: None,
            line: i as u64 + 2,
        })
        .collect();
    let server = sim::start(sim_config)
        .await
        .map_err(|e| Error::internal("start the simulated exchange", e))?;
    tracing::info!(url = %server.base_url(), "simulated exchange listening");

    let config = SweepConfig {
        accounts_file: "(demo accounts)".into(),
        base_url: server.base_url(),
        rate: DEMO_RATE,
        burst: 1,
        concurrency: 8,
        timeout: Duration::from_secs(2),
        max_attempts: 5,
        reject_retries: 1,
        verify: true,
        snapshot: false,
        nonce_mode: NonceMode::Increasing,
        db: db.to_path_buf(),
        lock_dir: None,
        proxy: None,
        group: crate::config::DEFAULT_GROUP.to_string(),
        retry_base: Duration::from_millis(100),
        grace: Duration::from_secs(5),
        hold,
    };
    let credentials = Credentials {
        key: DEMO_KEY.into(),
        secret: SecretString::from(secret),
    };
    let summary = engine::run(
        config,
        credentials,
        Target::New(entries),
        Arc::new(SystemClock),
        engine::StopTokens::default(),
        || None,
    )
    .await;
    server.shutdown().await;
    summary
}
