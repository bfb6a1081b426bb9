//! Route selection cost per delivery attempt, with 1,000 routes across the three levels
//! (accounts, sender domains, global), and what a store reload costs on top.
//!
//! Run: `cargo run --release --example route_select` (a debug build prints numbers too,
//! but they are not the ones to quote). Figures go to `docs/benchmarks.md` by hand.
//!
//! The table is 100 accounts × 3 routes, 100 sender domains × 4 routes and 300 global
//! routes; each route has two recipient domains (one with subdomains) so that every
//! evaluation compares domains, as real tables do.

use std::hint::black_box;
use std::time::Instant;

use relaygate::routes::{select, RouteQuery, RouteTable};
use relaygate::store::raw::RawStore;
use relaygate::store::{RouteSpec, StoreData};

fn route(to: &[String], min: u32, transport: &str) -> RouteSpec {
    RouteSpec {
        from_domain: Vec::new(),
        to_domain: to.to_vec(),
        minimum_attempts: min,
        transport: transport.to_string(),
        fallback: Vec::new(),
    }
}

/// 1,000 routes: 300 account, 400 sender-domain, 300 global.
fn data(global: usize) -> StoreData {
    let mut d = StoreData::default();
    let t =
        serde_json::from_str(r#"{"kind":"smtp","host":"smarthost.example"}"#).expect("a transport");
    d.transports.insert("t".to_string(), t);
    let to = |i: usize| vec![format!("dest{i}.example"), format!(".sub{i}.example")];
    for a in 0..100 {
        let routes = (0..3)
            .map(|i| route(&to(a * 3 + i), i as u32, "t"))
            .collect();
        d.accounts_routes.insert(format!("app{a}"), routes);
    }
    for s in 0..100 {
        let routes = (0..4).map(|i| route(&to(s * 4 + i), 0, "t")).collect();
        d.domains.insert(format!("sender{s}.example"), routes);
    }
    d.global = (0..global)
        .map(|i| route(&to(10_000 + i), 0, "t"))
        .collect();
    d
}

/// Mean nanoseconds per `select` over `n` runs of `queries` (cycled).
fn time(table: &RouteTable, queries: &[RouteQuery<'_>], n: usize) -> (f64, usize) {
    let mut matched = 0;
    let start = Instant::now();
    for i in 0..n {
        let q = &queries[i % queries.len()];
        if black_box(select(black_box(table), q)).is_some() {
            matched += 1;
        }
    }
    (start.elapsed().as_nanos() as f64 / n as f64, matched)
}

fn main() {
    const N: usize = 2_000_000;
    let d = data(300);
    let table = d.route_table().expect("valid table");
    println!(
        "routes: {} ({} account, {} domain, {} global)",
        d.route_count(),
        d.accounts_routes.values().map(Vec::len).sum::<usize>(),
        d.domains.values().map(Vec::len).sum::<usize>(),
        d.global.len()
    );
    let accounts: Vec<String> = (0..100).map(|a| format!("app{a}")).collect();
    let senders: Vec<String> = (0..100).map(|s| format!("sender{s}.example")).collect();

    // First account route matches.
    let early_targets: Vec<String> = (0..100).map(|a| format!("dest{}.example", a * 3)).collect();
    let early: Vec<RouteQuery<'_>> = (0..100)
        .map(|a| RouteQuery {
            account: Some(accounts[a].as_str()),
            from_domain: senders[a].as_str(),
            to_domain: early_targets[a].as_str(),
            attempts: 0,
        })
        .collect();
    // The last global route matches: 3 + 4 + 300 routes looked at.
    let last = "x.sub10299.example";
    let late: Vec<RouteQuery<'_>> = (0..100)
        .map(|a| RouteQuery {
            account: Some(accounts[a].as_str()),
            from_domain: senders[a].as_str(),
            to_domain: last,
            attempts: 5,
        })
        .collect();
    // Nothing matches: every consulted route is looked at, then direct delivery.
    let none: Vec<RouteQuery<'_>> = (0..100)
        .map(|a| RouteQuery {
            account: Some(accounts[a].as_str()),
            from_domain: senders[a].as_str(),
            to_domain: "nowhere.example",
            attempts: 5,
        })
        .collect();
    // No account, unknown sender domain: global list only, last route matches.
    let global_only = [RouteQuery {
        account: None,
        from_domain: "other.example",
        to_domain: last,
        attempts: 0,
    }];

    println!("| case | routes looked at | ns per evaluation |");
    println!("|---|---|---|");
    for (name, looked, queries) in [
        ("first account route matches", "1", &early[..]),
        ("last global route matches", "307", &late[..]),
        ("no route matches (direct)", "307", &none[..]),
        (
            "no account/domain list, last global matches",
            "300",
            &global_only[..],
        ),
    ] {
        let (ns, matched) = time(&table, queries, N);
        assert!(
            matched > 0 || name.starts_with("no route"),
            "{name}: nothing matched"
        );
        println!("| {name} | {looked} | {ns:.0} |");
    }

    let big = data(1000);
    let big = StoreData {
        accounts_routes: Default::default(),
        domains: Default::default(),
        ..big
    };
    let big_table = big.route_table().expect("valid table");
    let worst = [RouteQuery {
        account: None,
        from_domain: "other.example",
        to_domain: "x.sub10999.example",
        attempts: 0,
    }];
    let (ns, _) = time(&big_table, &worst, N / 4);
    println!("| 1,000 global routes, last matches | 1000 | {ns:.0} |");

    // What a reload costs (once per change, not per attempt).
    let raw = RawStore::encode(&d);
    let reps = 200;
    let start = Instant::now();
    for _ in 0..reps {
        let decoded = black_box(&raw).decode().expect("decodes");
        decoded.validate().expect("valid");
        black_box(decoded.route_table().expect("table"));
    }
    let us = start.elapsed().as_micros() as f64 / reps as f64;
    println!("\nreload of 1,000 routes (decode JSON + validate + build table): {us:.0} µs");
}
