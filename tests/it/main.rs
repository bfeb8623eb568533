//! The one integration-test binary: every area of the suite is a module, so the crate and its
//! dependencies are linked once rather than once per file.

// Shared helpers.
mod common;
mod raw_exchange;
mod sim_support;

// One module per area.
mod audit_honesty;
mod bad_input;
mod code_shape;
mod config_safeguards;
mod discovery;
mod discovery_paging;
mod dispatcher;
mod docs;
mod files;
mod flat_first;
mod groups;
mod hold;
mod hostile_exchange;
mod input_files;
mod layering;
mod lost_replies;
mod metrics;
mod operator_mistakes;
mod outputs;
mod outside_text;
mod parsers_never_panic;
mod progress;
mod reconcile;
mod report_html;
mod report_runs;
mod run_record;
mod scheduling;
mod security;
mod shell;
mod sim_api;
mod sim_cli;
mod sim_faults;
mod sweep;
mod tls;

/// A reqwest builder for the tests' own HTTP clients, with the TLS provider the crate uses.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    gemini_sweep::client::install_crypto_provider();
    reqwest::Client::builder()
}
