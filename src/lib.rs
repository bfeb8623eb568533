//! gemini-sweep: cancel every open order on every subaccount of a Gemini group, under one rate
//! limit, and keep an SQLite audit trail of every attempt and every order id.
//!
//! Data flows one way: [`cli`] (flags in) → [`config`] → [`engine`] (plan, fan-out, rate limit,
//! retries) → [`client`] (signing, nonces, HTTP) → the exchange; [`engine`] → [`store`]
//! (SQLite) → [`report`]. The modules, listed from the edge down: each imports only modules
//! listed below it, so the imports form no loop.
//!
//! - [`cli`]: the edge: the command line's grammar, logging, signals, stdout, the exit code.
//! - [`demo`]: `gemini-sweep demo`, the real sweep against an in-process simulator (the
//!   `gemini-sim` crate, which only the edge, `cli` and `demo`, may name).
//! - [`display`]: what the operator sees while a job runs: logs and progress.
//! - [`report`]: runs read back from the database: table, CSV, JSON, HTML, metrics.
//! - [`engine`]: the sweep itself: plan, sessions, pacing, retries, resume, settling the run.
//! - [`error`]: the engine's and the edge's error: one of the typed errors below, or what went
//!   wrong above them, and the exit code it ends the process with.
//! - [`config`]: the configuration a sweep is given: URL rules, credentials, group files.
//! - [`lock`]: one run at a time per database and per API key.
//! - [`accounts`]: the accounts CSV and the nickname rule, read and written.
//! - [`store`]: the SQLite audit trail: every run, attempt and order id.
//! - [`client`]: one signed request to the exchange, and what its reply means.
//! - [`exit`]: how a process ends: outcomes and their exit codes.
//! - [`atomic_file`]: files other programs read (reports, metrics, the CSV): whole or not at all.
//! - [`input_file`]: files the user names (CSV, config, secret, excludes): regular, bounded.
//! - [`output_file`]: every path the tool writes: absent or a regular file, never a device, a
//!   FIFO, a socket or a symlink.
//! - [`safe_text`]: outside text made safe for a terminal, a log line, JSON or a spreadsheet.
//! - [`signing`]: Gemini's request signature, shared by the client and the simulator.

pub mod accounts;
pub mod atomic_file;
#[cfg(test)]
mod captured_log;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod display;
pub mod engine;
pub mod error;
pub mod exit;
pub mod input_file;
pub mod lock;
pub mod output_file;
pub mod report;
pub mod safe_text;
pub mod signing;
pub mod store;
