//! The `socks` transport (issue 7): direct MX delivery with every connection through a
//! real SOCKS5 proxy (microsocks), the EHLO name of the proxy's egress, optional proxy
//! credentials, several proxies tried in order, and never a direct connection when the
//! proxy is down. Also a smarthost reached through a proxy with implicit TLS and AUTH.

use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};
use relaygate_transports::testkit::TestDns;

use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::microsocks::{free_port, Microsocks, EGRESS_IP};
use crate::support::pki::Pki;
use crate::support::sink::Sink;
use crate::support::smtp_client::{simple_message, submit};
use crate::support::{deadline, wait_until_async};

const SENDER: &str = "sender@src.test";

/// DNS: dst.test's MX is mx.dst.test at 127.0.0.1, reached on the sink's port. The
/// sender's domain has an MX at another sink, so DSNs can be delivered too.
async fn lab(sink: &Sink, dsn: &Sink) -> Result<(TestDns, String)> {
    let dns = TestDns::start().await.context("test DNS")?;
    dns.add_mx("dst.test", 10, "mx.dst.test");
    dns.add_a("mx.dst.test", Ipv4Addr::LOCALHOST);
    dns.add_mx("src.test", 10, "mx.src.test");
    dns.add_a("mx.src.test", Ipv4Addr::LOCALHOST);
    let toml = format!(
        "[dns]\nnameservers = [{}]\n\n[direct]\nport = {}\nport_overrides = {{ \"mx.dst.test\" = {}, \"mx.src.test\" = {} }}\n",
        toml_str(&dns.addr().to_string()),
        free_port()?,
        sink.port(),
        dsn.port()
    );
    Ok((dns, toml))
}

fn socks_toml(addresses: &[String], auth: Option<(&str, &std::path::Path)>) -> String {
    let list: Vec<String> = addresses.iter().map(|a| toml_str(a)).collect();
    let mut s = format!(
        "\n[transports.proxy]\nkind = \"socks\"\naddress = [{}]\nremote_ips = [\"{EGRESS_IP}\"]\nremote_hostname = \"out.relay.test\"\n",
        list.join(", ")
    );
    if let Some((user, pw)) = auth {
        s.push_str(&format!(
            "username = {}\npassword_file = {}\n",
            toml_str(user),
            toml_str(&pw.to_string_lossy())
        ));
    }
    s.push_str("\n[[routes]]\nto_domain = [\"dst.test\"]\ntransport = \"proxy\"\n");
    s
}

async fn send(gw: &Gateway, to: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        SENDER,
        &[to],
        &simple_message(SENDER, to, to, to),
    )
    .await
}

#[tokio::test]
async fn delivers_through_the_proxy_with_its_ehlo_name() -> Result<()> {
    let (sink, dsn) = (Sink::start().await?, Sink::start().await?);
    let (_dns, toml) = lab(&sink, &dsn).await?;
    let proxy = Microsocks::start(None)?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: toml + &socks_toml(&[proxy.addr.to_string()], None),
        ..Default::default()
    })
    .await?;
    send(&gw, "r@dst.test").await?;
    let msgs = sink.wait_for(deadline(30), |m| !m.is_empty()).await?;
    ensure!(
        msgs[0].peer.ip().to_string() == EGRESS_IP,
        "came from {} (not through the proxy)",
        msgs[0].peer
    );
    ensure!(msgs[0].ehlo == "out.relay.test", "EHLO {}", msgs[0].ehlo);
    // The attempt's log line names the proxy it went through (issue 16 item 3).
    let want = format!("via=\"socks proxy ({})\"", proxy.addr);
    crate::support::wait_until(deadline(10), "delivery logged", || {
        std::fs::read_to_string(gw.dir().join("stderr.log")).is_ok_and(|l| {
            l.lines()
                .any(|l| l.contains("delivery attempt") && l.contains(&want))
        })
    })
    .await
    .with_context(|| gw.log_tails())?;
    Ok(())
}

#[tokio::test]
async fn proxy_credentials_right_and_wrong() -> Result<()> {
    let (sink, dsn) = (Sink::start().await?, Sink::start().await?);
    let (_dns, toml) = lab(&sink, &dsn).await?;
    let proxy = Microsocks::start(Some(("relay", "s0cks")))?;
    let dir = crate::support::temp_dir("relaygate-socks-")?;
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s0cks\n")?;
    std::fs::write(&bad, "nope\n")?;

    let gw = Gateway::start(GatewayOptions {
        extra_toml: toml.clone() + &socks_toml(&[proxy.addr.to_string()], Some(("relay", &good))),
        ..Default::default()
    })
    .await?;
    send(&gw, "ok@dst.test").await?;
    let msgs = sink.wait_for(deadline(30), |m| !m.is_empty()).await?;
    ensure!(msgs[0].peer.ip().to_string() == EGRESS_IP);

    let gw2 = Gateway::start(GatewayOptions {
        extra_toml: toml + &socks_toml(&[proxy.addr.to_string()], Some(("relay", &bad))),
        first_retry: "1h".into(),
        ..Default::default()
    })
    .await?;
    send(&gw2, "bad@dst.test").await?;
    wait_until_async(
        deadline(30),
        "a failed attempt naming the SOCKS problem",
        || async {
            let msgs = gw2.queue_messages().await?;
            let r = &msgs
                .first()
                .map(|m| m["rcpts"][0].clone())
                .unwrap_or_default();
            let reply = r["last_reply"].as_str().unwrap_or("");
            Ok(r["status"] == "pending"
                && reply.contains("SOCKS5")
                && reply.contains("username/password"))
        },
    )
    .await?;
    ensure!(
        sink.messages().len() == 1,
        "the wrong password still delivered"
    );
    Ok(())
}

#[tokio::test]
async fn proxy_down_keeps_the_message_and_never_connects_directly() -> Result<()> {
    let (sink, dsn) = (Sink::start().await?, Sink::start().await?);
    let (_dns, toml) = lab(&sink, &dsn).await?;
    let dead = format!("127.0.0.1:{}", free_port()?);
    let gw = Gateway::start(GatewayOptions {
        extra_toml: toml + &socks_toml(&[dead], None),
        first_retry: "100ms".into(),
        ..Default::default()
    })
    .await?;
    send(&gw, "wait@dst.test").await?;
    wait_until_async(deadline(30), "three failed attempts", || async {
        let msgs = gw.queue_messages().await?;
        Ok(msgs
            .first()
            .is_some_and(|m| m["rcpts"][0]["attempts"].as_u64().unwrap_or(0) >= 3))
    })
    .await?;
    let msgs = gw.queue_messages().await?;
    ensure!(msgs[0]["rcpts"][0]["status"] == "pending", "{msgs:?}");
    ensure!(
        sink.connections() == 0,
        "the sink was reached without the proxy"
    );
    Ok(())
}

#[tokio::test]
async fn second_proxy_used_when_the_first_is_dead() -> Result<()> {
    let (sink, dsn) = (Sink::start().await?, Sink::start().await?);
    let (_dns, toml) = lab(&sink, &dsn).await?;
    let proxy = Microsocks::start(None)?;
    let dead = format!("127.0.0.1:{}", free_port()?);
    let gw = Gateway::start(GatewayOptions {
        extra_toml: toml + &socks_toml(&[dead, proxy.addr.to_string()], None),
        ..Default::default()
    })
    .await?;
    send(&gw, "two@dst.test").await?;
    let msgs = sink.wait_for(deadline(30), |m| !m.is_empty()).await?;
    ensure!(msgs[0].peer.ip().to_string() == EGRESS_IP);
    Ok(())
}

#[tokio::test]
async fn submissions_smarthost_through_the_proxy_with_auth() -> Result<()> {
    // Gateway A: an implicit-TLS submission service with an account; loopback untrusted.
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let dir = crate::support::temp_dir("relaygate-socks-")?;
    let (a, tls_port, pw) = submissions_service(&pki, &sink, dir.path()).await?;

    // Gateway B: a submissions transport to A, reached through the proxy.
    let proxy = Microsocks::start(None)?;
    let b = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[tls]\nextra_ca_file = {}\n\n[transports.proxy]\nkind = \"socks\"\naddress = {}\n\n\
             [transports.provider]\nkind = \"submissions\"\nhost = \"localhost\"\nport = {tls_port}\n\
             username = \"app\"\npassword_file = {}\nsocks_proxy = \"proxy\"\n\n[[routes]]\ntransport = \"provider\"\n",
            toml_str(&pki.ca_pem.to_string_lossy()),
            toml_str(&proxy.addr.to_string()),
            toml_str(&pw.to_string_lossy())
        ),
        ..Default::default()
    })
    .await?;
    send(&b, "p@dst.test").await?;
    sink.wait_for(deadline(30), |m| m.iter().any(|x| x.has_rcpt("p@dst.test")))
        .await?;
    let a_log = std::fs::read_to_string(a.dir().join("stderr.log"))?;
    ensure!(
        a_log
            .lines()
            .any(|l| l.contains("authenticated") && l.contains(EGRESS_IP)),
        "A did not see an authenticated session from the proxy's egress IP:\n{a_log}"
    );
    Ok(())
}

/// `auth-test` goes the way delivery goes (issue 16 item 3): through the transport's
/// `socks_proxy`. With a wrong proxy password it fails and says the proxy refused (it
/// used to connect directly and report success); with the right one it logs in through
/// the proxy and says so.
#[tokio::test]
async fn auth_test_goes_through_the_proxy() -> Result<()> {
    let pki = Pki::new()?;
    let sink = Sink::start().await?;
    let dir = crate::support::temp_dir("relaygate-socks-")?;
    let (_a, tls_port, pw) = submissions_service(&pki, &sink, dir.path()).await?;
    let proxy = Microsocks::start(Some(("relay", "s0cks")))?;
    let b_with = |proxy_pw: &str| -> Result<GatewayOptions> {
        let ppw = dir.path().join(format!("proxy-{proxy_pw}"));
        std::fs::write(&ppw, format!("{proxy_pw}\n"))?;
        Ok(GatewayOptions {
            extra_toml: format!(
                "[tls]\nextra_ca_file = {}\n\n[transports.proxy]\nkind = \"socks\"\naddress = {}\n\
                 username = \"relay\"\npassword_file = {}\n\n\
                 [transports.provider]\nkind = \"submissions\"\nhost = \"localhost\"\nport = {tls_port}\n\
                 username = \"app\"\npassword_file = {}\nsocks_proxy = \"proxy\"\n\n[[routes]]\ntransport = \"provider\"\n",
                toml_str(&pki.ca_pem.to_string_lossy()),
                toml_str(&proxy.addr.to_string()),
                toml_str(&ppw.to_string_lossy()),
                toml_str(&pw.to_string_lossy())
            ),
            ..Default::default()
        })
    };
    let bad = Gateway::start(b_with("wrong")?).await?;
    let out = bad.run_cli(&["auth-test", "provider"]).await?;
    ensure!(
        out.code == Some(1),
        "auth-test passed with a wrong proxy password:\n{out}"
    );
    let text = format!("{}{}", out.stdout, out.stderr).to_ascii_lowercase();
    ensure!(
        text.contains("proxy") && !text.contains("authentication succeeded"),
        "{out}"
    );
    let good = Gateway::start(b_with("s0cks")?).await?;
    let out = good.run_cli(&["auth-test", "provider"]).await?;
    ensure!(out.code == Some(0), "{out}");
    ensure!(
        out.stdout
            .contains("through the SOCKS proxy of transport \"proxy\"")
            && out.stdout.contains("authentication succeeded"),
        "{out}"
    );
    Ok(())
}

/// Gateway A: an implicit-TLS submission service relaying to `sink`, with an account
/// `app` whose password is in `dir`/pw; loopback is not trusted. Returns it, its
/// implicit-TLS port and the password file.
async fn submissions_service(
    pki: &Pki,
    sink: &Sink,
    dir: &std::path::Path,
) -> Result<(Gateway, u16, std::path::PathBuf)> {
    let pw = dir.join("pw");
    std::fs::write(&pw, "via proxy\n")?;
    let mut a_opts = GatewayOptions::relay_to(sink.port());
    a_opts.trusted_networks = Some(vec!["192.0.2.0/24".into()]);
    a_opts.submission_toml = format!(
        "listen_tls = [\"127.0.0.1:0\"]\ntls_cert = {}\ntls_key = {}\n",
        toml_str(&pki.chain_pem.to_string_lossy()),
        toml_str(&pki.key_pem.to_string_lossy())
    );
    a_opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\n",
        toml_str(&pw.to_string_lossy())
    ));
    let a = Gateway::start(a_opts).await?;
    let tls_port = a
        .ready()
        .submission_tls
        .first()
        .context("A's implicit TLS listener")?
        .port();
    Ok((a, tls_port, pw))
}
