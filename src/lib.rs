//! gemini-sweep: cancel every open order on every subaccount of a Gemini group, under one rate
//! limit, and keep an SQLite audit trail of every attempt and every order id.
//!
//! Data flows one way: [`accounts`] (CSV in) → [`engine`] (plan, fan-out, rate limit, retries) →
//! [`client`] (signing, nonces, HTTP) → the exchange; [`engine`] → [`store`] (SQLite) →
//! [`report`]. [`display`] shows a job's progress as it runs. [`sim`] is the exchange simulator used by `demo` and the tests, never by the engine.

pub mod accounts;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod display;
pub mod engine;
pub mod error;
pub mod exit;
pub mod lock;
pub mod report;
pub mod signing;
pub mod sim;
pub mod store;
