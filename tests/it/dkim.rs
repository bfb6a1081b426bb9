//! DKIM signing (issue 15 items 1 and 2): keys made by `relaygate dkim keygen` and
//! published in the test DNS zone; mail relayed through direct delivery, a SOCKS proxy
//! (microsocks) and an `smtp` smarthost carries an rsa-sha256 and an ed25519-sha256
//! signature that dkimpy (Debian's python3-dkim) verifies; changes after signing break
//! them; `dkim = false` and a From domain without a key send unsigned.

use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};
use relaygate_transports::testkit::TestDns;

use crate::support::dkim::{keygen, verify, KeyFile};
use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::microsocks::{free_port, Microsocks, EGRESS_IP};
use crate::support::sink::{Received, Sink};
use crate::support::smtp_client::{simple_message, submit};
use crate::support::{deadline, temp_dir};

const SENDER: &str = "sender@src.test";

struct Lab {
    dns: TestDns,
    sink: Sink,
    _dsn: Sink,
    _proxy: Microsocks,
    _dir: tempfile::TempDir,
    gw: Gateway,
}

/// DNS: dst.test and proxied.test have their MX at the sink; src.test's at another.
/// Routes: proxied.test through a socks transport, relay.test through an `smtp`
/// smarthost, nosign.test through one with `dkim = false`, the rest direct. Keys for
/// src.test: `ed1` (Ed25519) and `rsa1` (RSA), both published.
async fn lab() -> Result<Lab> {
    let dns = TestDns::start().await.context("test DNS")?;
    let sink = Sink::start().await?;
    let dsn = Sink::start().await?;
    for (domain, mx) in [
        ("dst.test", "mx.dst.test"),
        ("proxied.test", "mx.proxied.test"),
        ("src.test", "mx.src.test"),
    ] {
        dns.add_mx(domain, 10, mx);
        dns.add_a(mx, Ipv4Addr::LOCALHOST);
    }
    let dir = temp_dir("relaygate-dkim-")?;
    let ed = keygen(dir.path(), &dns, "src.test", "ed1", "ed25519", true).await?;
    let rsa = keygen(dir.path(), &dns, "src.test", "rsa1", "rsa", true).await?;
    let proxy = Microsocks::start(None)?;
    let toml = format!(
        "[dns]\nnameservers = [{dns}]\n\n[direct]\nport = {free}\n\
         port_overrides = {{ \"mx.dst.test\" = {s}, \"mx.proxied.test\" = {s}, \"mx.src.test\" = {d} }}\n\n\
         [transports.proxy]\nkind = \"socks\"\naddress = [{proxy}]\nremote_ips = [\"{EGRESS_IP}\"]\n\
         remote_hostname = \"out.relay.test\"\n\n\
         [transports.relay]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {s}\nno_starttls = true\n\n\
         [transports.nosign]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {s}\nno_starttls = true\ndkim = false\n\n\
         [[routes]]\nto_domain = [\"proxied.test\"]\ntransport = \"proxy\"\n\n\
         [[routes]]\nto_domain = [\"relay.test\"]\ntransport = \"relay\"\n\n\
         [[routes]]\nto_domain = [\"nosign.test\"]\ntransport = \"nosign\"\n\n{}{}",
        ed.toml(),
        rsa.toml(),
        dns = toml_str(&dns.addr().to_string()),
        free = free_port()?,
        s = sink.port(),
        d = dsn.port(),
        proxy = toml_str(&proxy.addr.to_string()),
    );
    let gw = Gateway::start(GatewayOptions {
        extra_toml: toml,
        ..Default::default()
    })
    .await?;
    Ok(Lab {
        dns,
        sink,
        _dsn: dsn,
        _proxy: proxy,
        _dir: dir,
        gw,
    })
}

impl Lab {
    async fn send(&self, from: &str, to: &str) -> Result<Received> {
        submit(
            self.gw.submission_addr(),
            SENDER,
            &[to],
            &simple_message(from, to, "dkim test", to),
        )
        .await?;
        let msgs = self
            .sink
            .wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt(to)))
            .await
            .with_context(|| self.gw.log_tails())?;
        msgs.into_iter()
            .find(|m| m.has_rcpt(to))
            .context("message vanished")
    }
}

/// Both signatures of `data` verify, one per algorithm, for d=src.test.
async fn both_verify(data: &[u8], dns: &TestDns, what: &str) -> Result<()> {
    let sigs = verify(data, dns).await?;
    ensure!(
        sigs.len() == 2,
        "{what}: {} signatures: {sigs:?}",
        sigs.len()
    );
    ensure!(
        sigs.iter().all(|(d, _, ok)| *ok && d == "src.test"),
        "{what}: {sigs:?}"
    );
    let mut algs: Vec<&str> = sigs.iter().map(|(_, a, _)| a.as_str()).collect();
    algs.sort();
    ensure!(algs == ["ed25519-sha256", "rsa-sha256"], "{what}: {algs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_through_direct_socks_and_smtp() -> Result<()> {
    let lab = lab().await?;
    for to in ["a@dst.test", "b@proxied.test", "c@relay.test"] {
        let m = lab.send(SENDER, to).await?;
        both_verify(&m.data, &lab.dns, to).await?;
    }
    // The proxied one really went through the proxy's EHLO name.
    let proxied = lab.sink.messages();
    ensure!(
        proxied
            .iter()
            .any(|m| m.has_rcpt("b@proxied.test") && m.ehlo == "out.relay.test"),
        "{}",
        lab.sink.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_after_signing_break_the_signatures() -> Result<()> {
    let lab = lab().await?;
    let m = lab.send(SENDER, "d@relay.test").await?;
    let text = m.text();
    both_verify(text.as_bytes(), &lab.dns, "as received").await?;
    let changed_body = text.replace("Hello from", "Hello From");
    let changed_subject = text.replace("Subject: dkim test", "Subject: dkim tests");
    // From, To, Subject and Date are over-signed: one more cannot be added.
    let added_from = text.replacen("From: ", "From: <evil@attacker.test>\r\nFrom: ", 1);
    let added_to = format!("To: <extra@dst.test>\r\n{text}");
    for (what, data) in [
        ("body", changed_body),
        ("subject", changed_subject),
        ("added From", added_from),
        ("added To", added_to),
    ] {
        ensure!(data != text, "{what}: nothing changed");
        let sigs = verify(data.as_bytes(), &lab.dns).await?;
        ensure!(
            !sigs.is_empty() && sigs.iter().all(|(_, _, ok)| !ok),
            "{what}: a signature still verifies: {sigs:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_false_and_a_domain_without_key_send_unsigned() -> Result<()> {
    let lab = lab().await?;
    let m = lab.send(SENDER, "e@nosign.test").await?;
    ensure!(m.header("DKIM-Signature").is_none(), "signed: {}", m.text());
    let m = lab.send("someone@other.test", "f@relay.test").await?;
    ensure!(m.header("DKIM-Signature").is_none(), "signed: {}", m.text());
    let logs = lab.gw.log_tails();
    ensure!(
        logs.contains("no key for the header From domain") && logs.contains("other.test"),
        "not logged:\n{logs}"
    );
    Ok(())
}

/// `dkim keygen` never overwrites an existing key file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_refuses_to_overwrite_a_key() -> Result<()> {
    let dns = TestDns::start().await?;
    let dir = temp_dir("relaygate-dkim-")?;
    let k: KeyFile = keygen(dir.path(), &dns, "src.test", "k1", "ed25519", false).await?;
    let before = std::fs::read(&k.path)?;
    let again =
        crate::support::gateway::run_relaygate(&["dkim", "keygen", "src.test", "k1"], dir.path())
            .await?;
    ensure!(again.code == Some(1), "{again}");
    ensure!(std::fs::read(&k.path)? == before, "the key was overwritten");
    Ok(())
}

/// With the Redis store, DKIM keys come from `{prefix}dkim:{domain}` (entries naming the
/// key files, written by `routes import`), listed in the store's index: the gateway signs
/// with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_redis_store_sign() -> Result<()> {
    use crate::support::redis::{store_toml, RedisServer, StoreCli};
    let redis = RedisServer::start().await?;
    let dns = TestDns::start().await?;
    let sink = Sink::start().await?;
    let dir = temp_dir("relaygate-dkim-")?;
    let ed = keygen(dir.path(), &dns, "src.test", "fleet1", "ed25519", true).await?;
    let rsa = keygen(dir.path(), &dns, "src.test", "fleet2", "rsa", true).await?;
    let cli = StoreCli::new(&store_toml(&redis.url()))?;
    let out = cli
        .import(&format!(
            "{}[[routes]]\ntransport = \"relay\"\n\n{}{}",
            crate::support::redis::sink_transport("relay", sink.port()),
            ed.toml(),
            rsa.toml()
        ))
        .await?;
    ensure!(out.contains("2 DKIM key(s)"), "{out}");
    let members = format!(
        "{:?}",
        redis.cmd(&["SMEMBERS", "relaygate:routes:index"]).await?
    );
    ensure!(members.contains("relaygate:dkim:src.test"), "{members}");
    let gw = Gateway::start(GatewayOptions {
        extra_toml: store_toml(&redis.url()),
        ..Default::default()
    })
    .await?;
    let to = "r@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[to],
        &simple_message(SENDER, to, "fleet keys", "fleet"),
    )
    .await?;
    let msgs = sink
        .wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt(to)))
        .await
        .with_context(|| gw.log_tails())?;
    let m = msgs.iter().find(|m| m.has_rcpt(to)).context("vanished")?;
    both_verify(&m.data, &dns, "redis keys").await
}
