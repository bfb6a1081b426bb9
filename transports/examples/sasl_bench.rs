//! SCRAM-SHA-256 login cost, in process (no network): how many complete logins per
//! second our server side verifies, and what a client login costs with and without the
//! SaltedPassword cache. Run: `cargo run --release -p relaygate-transports --example sasl_bench`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use relaygate_transports::sasl::{
    new_client, new_server, ChannelBinding, CredentialStore, Mechanism, SaltedCache, ServerChannel,
    ServerSettings, ServerStep, Step, StoredCredentials,
};

const ITERATIONS: u32 = 4096;

fn login(
    store: &Arc<dyn CredentialStore>,
    settings: &Arc<ServerSettings>,
    cache: Option<Arc<SaltedCache>>,
) -> bool {
    let channel = ServerChannel {
        tls_exporter: None,
        plus_advertised: false,
    };
    let Ok(mut client) = new_client(
        Mechanism::ScramSha256,
        "app",
        "password",
        ChannelBinding::None,
        cache,
    ) else {
        return false;
    };
    let mut server = new_server(
        Mechanism::ScramSha256,
        Arc::clone(store),
        Arc::clone(settings),
        &channel,
    );
    let mut step = server.start(client.initial().as_deref());
    loop {
        match step {
            ServerStep::Challenge(c) => match client.step(&c) {
                Ok(Step::Continue(r)) | Ok(Step::Done(r)) => step = server.step(&r),
                Err(_) => return false,
            },
            ServerStep::Success(_) => return client.finish(None).is_ok(),
            ServerStep::Failure(_) => return false,
        }
    }
}

fn main() {
    let mut accounts = HashMap::new();
    let Ok(creds) = StoredCredentials::from_password("password", ITERATIONS) else {
        eprintln!("cannot derive credentials");
        return;
    };
    accounts.insert("app".to_string(), creds);
    let store: Arc<dyn CredentialStore> = Arc::new(accounts);
    let settings = Arc::new(ServerSettings::with_random_secret("bench"));
    let n = 300;

    let t = Instant::now();
    let ok = (0..n).filter(|_| login(&store, &settings, None)).count();
    let uncached = t.elapsed();
    let cache = Arc::new(SaltedCache::new(64));
    let t = Instant::now();
    let ok2 = (0..n)
        .filter(|_| login(&store, &settings, Some(Arc::clone(&cache))))
        .count();
    let cached = t.elapsed();
    assert_eq!((ok, ok2), (n, n), "every login must succeed");

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!("SCRAM-SHA-256, {ITERATIONS} iterations, {n} logins each, one core");
    println!(
        "  client uncached + server: {:8.0} us/login  ({:6.0} logins/s)",
        per(uncached),
        n as f64 / uncached.as_secs_f64()
    );
    println!(
        "  client cached   + server: {:8.0} us/login  ({:6.0} logins/s)",
        per(cached),
        n as f64 / cached.as_secs_f64()
    );
    println!(
        "  client PBKDF2 saved by the cache: {:8.0} us/login",
        per(uncached) - per(cached)
    );
}
