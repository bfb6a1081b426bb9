//! Smarthost and SOCKS proxy host names resolve through the gateway's resolver
//! (`[dns]`), like direct delivery (issue 13; landed main used the system's
//! `getaddrinfo` for smarthosts, so a configured nameserver was silently bypassed, and
//! took proxies as IP:PORT only). IP literals and `/etc/hosts` names such as
//! `localhost` still work.

use anyhow::Result;
use relaygate_transports::testkit::TestDns;

use crate::support::deadline;
use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, submit};

async fn relay_via(host: &str, dns: &TestDns, sink: &Sink) -> Result<Gateway> {
    Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[dns]\nnameservers = [{}]\n\n\
             [transports.relay]\nkind = \"smtp\"\nhost = {}\nport = {}\nno_starttls = true\n\n\
             [[routes]]\ntransport = \"relay\"\n",
            toml_str(&dns.addr().to_string()),
            toml_str(host),
            sink.port()
        ),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_name_resolves_through_the_configured_nameserver() -> Result<()> {
    let dns = TestDns::start().await?;
    dns.add_a("relay.lab.test", std::net::Ipv4Addr::LOCALHOST);
    let sink = Sink::start().await?;
    let gw = relay_via("relay.lab.test", &dns, &sink).await?;
    submit(
        gw.submission_addr(),
        "a@src.test",
        &["b@dst.test"],
        &simple_message("a@src.test", "b@dst.test", "s", "dns-1"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt("b@dst.test")))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_still_works_with_a_configured_nameserver() -> Result<()> {
    // The test DNS server knows nothing about "localhost": /etc/hosts answers.
    let dns = TestDns::start().await?;
    let sink = Sink::start().await?;
    let gw = relay_via("localhost", &dns, &sink).await?;
    submit(
        gw.submission_addr(),
        "a@src.test",
        &["c@dst.test"],
        &simple_message("a@src.test", "c@dst.test", "s", "dns-2"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt("c@dst.test")))
        .await?;
    Ok(())
}

/// Through a SOCKS proxy too: the smarthost's name is resolved by the gateway through
/// `[dns]` and the proxy is asked for that address (landed main used `getaddrinfo`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_name_through_a_proxy_resolves_through_the_configured_nameserver() -> Result<()> {
    let dns = TestDns::start().await?;
    dns.add_a("relay.lab.test", std::net::Ipv4Addr::LOCALHOST);
    let sink = Sink::start().await?;
    let proxy = crate::support::microsocks::Microsocks::start(None)?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[dns]\nnameservers = [{}]\n\n\
             [transports.proxy]\nkind = \"socks\"\naddress = [{}]\n\n\
             [transports.relay]\nkind = \"smtp\"\nhost = \"relay.lab.test\"\nport = {}\n\
             no_starttls = true\nsocks_proxy = \"proxy\"\n\n\
             [[routes]]\ntransport = \"relay\"\n",
            toml_str(&dns.addr().to_string()),
            toml_str(&proxy.addr.to_string()),
            sink.port()
        ),
        ..Default::default()
    })
    .await?;
    submit(
        gw.submission_addr(),
        "a@src.test",
        &["d@dst.test"],
        &simple_message("a@src.test", "d@dst.test", "s", "dns-3"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt("d@dst.test")))
        .await?;
    Ok(())
}

/// A socks transport whose proxy is given by name: resolved through `[dns]` at each
/// dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_proxy_name_resolves_through_the_configured_nameserver() -> Result<()> {
    let dns = TestDns::start().await?;
    dns.add_a("proxy.lab.test", std::net::Ipv4Addr::LOCALHOST);
    dns.add_mx("dst.test", 10, "mx.dst.test");
    dns.add_a("mx.dst.test", std::net::Ipv4Addr::LOCALHOST);
    let sink = Sink::start().await?;
    let proxy = crate::support::microsocks::Microsocks::start(None)?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[dns]\nnameservers = [{}]\n\n\
             [direct]\nport_overrides = {{ \"mx.dst.test\" = {} }}\n\n\
             [transports.proxy]\nkind = \"socks\"\naddress = [\"proxy.lab.test:{}\"]\n\n\
             [[routes]]\nto_domain = [\"dst.test\"]\ntransport = \"proxy\"\n",
            toml_str(&dns.addr().to_string()),
            sink.port(),
            proxy.addr.port()
        ),
        ..Default::default()
    })
    .await?;
    submit(
        gw.submission_addr(),
        "a@src.test",
        &["e@dst.test"],
        &simple_message("a@src.test", "e@dst.test", "s", "dns-4"),
    )
    .await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt("e@dst.test")))
        .await?;
    Ok(())
}
