//! Integration tests of relaygate: one test binary, one module per area.
//!
//! Every test runs the real binary (see `support::gateway`) against in-process
//! peers (see `support::sink`), binds only 127.0.0.1:0 and uses its own temp dir,
//! so tests run in parallel. Waiting is always polling with a deadline.

mod support;

mod admin;
mod auth_client;
mod auth_server;
mod cli_output;
mod config_check;
mod dane;
mod dashboard;
mod defaults;
mod delivery;
mod direct;
mod diskfull;
mod dkim;
mod dnscheck;
mod durability;
mod failover;
mod fleet_cache;
mod fleet_failover;
mod harness;
mod hostile;
mod intl_dsn;
mod mtasts;
mod oauth;
mod operations;
mod redis;
mod redis_layout;
mod requiretls;
mod results;
mod sendmail;
mod smarthost_dns;
mod socks;
mod spool;
mod submission;
mod tls;
