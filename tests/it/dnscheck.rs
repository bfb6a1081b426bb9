//! `relaygate dnscheck` and `relaygate socks-test` (issue 7, build items 3 and 4), run as
//! the real binary.
//!
//! dnscheck resolves through the in-process DNS server (`TestDns`): the config points
//! `dns.nameservers` at it and has a socks transport whose proxy leaves from 192.0.2.10
//! as `out.example.org`. socks-test talks to real `microsocks` processes (Debian package
//! `microsocks`), with and without RFC 1929 authentication, and CONNECTs to the loopback
//! listener the command opens itself.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use relaygate_transports::testkit::TestDns;
use serde_json::Value;

use crate::support::gateway::{run_relaygate, toml_str, CliOutput};
use crate::support::microsocks::{free_port, Microsocks};
use crate::support::temp_dir;

const DOMAIN: &str = "example.org";
const SOCKS_IP: &str = "192.0.2.10";
const REMOTE_HOSTNAME: &str = "out.example.org";
/// The host's own public IP, given with `--ip` (EHLO `hostname`).
const HOST_IP: &str = "198.51.100.7";
const HOSTNAME: &str = "relay.example.org";

/// A lab DNS and a config file that uses it.
struct Lab {
    dns: TestDns,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Lab {
    /// Everything in order: SPF of the domain and of both EHLO names covers the IPs, PTRs
    /// forward-confirm, MX, MTA-STS and TLSA published.
    async fn good() -> Result<Lab> {
        Lab::with_dns_toml("").await
    }

    /// [`Lab::good`] with extra lines in `[dns]`.
    async fn with_dns_toml(dns_toml: &str) -> Result<Lab> {
        let dns = TestDns::start()
            .await
            .context("starting the test DNS server")?;
        // The SOCKS IP via an include, the host IP via `mx`.
        dns.add_txt(DOMAIN, "v=spf1 mx include:_spf.example.org -all");
        dns.add_txt(DOMAIN, "google-site-verification=not-spf");
        dns.add_txt("_spf.example.org", &format!("v=spf1 ip4:{SOCKS_IP} -all"));
        dns.add_mx(DOMAIN, 10, "mx.example.org");
        dns.add_a("mx.example.org", HOST_IP.parse()?);
        dns.add_txt("_mta-sts.example.org", "v=STSv1; id=20261129T000000");
        dns.add_tlsa("_25._tcp.mx.example.org", 3, 1, 1, &[7; 32]);
        // HELO identities: `a` mechanisms.
        dns.add_txt(REMOTE_HOSTNAME, "v=spf1 a -all");
        dns.add_a(REMOTE_HOSTNAME, SOCKS_IP.parse()?);
        dns.add_txt(HOSTNAME, "v=spf1 a -all");
        dns.add_a(HOSTNAME, HOST_IP.parse()?);
        dns.add_ptr(SOCKS_IP.parse()?, REMOTE_HOSTNAME);
        dns.add_ptr(HOST_IP.parse()?, HOSTNAME);

        let dir = temp_dir("relaygate-dnscheck")?;
        // A DKIM key made by `dkim keygen` and published.
        let dkim = crate::support::dkim::keygen(dir.path(), &dns, DOMAIN, "ed1", "ed25519", true)
            .await?
            .toml();
        let config = dir.path().join("relaygate.toml");
        let text = format!(
            r#"hostname = "{HOSTNAME}"
data_dir = "data"

[dns]
nameservers = [{ns}]
{dns_toml}

[transports.proxy]
kind = "socks"
address = "127.0.0.1:1"
remote_ips = ["{SOCKS_IP}"]
remote_hostname = "{REMOTE_HOSTNAME}"

{dkim}"#,
            ns = toml_str(&dns.addr().to_string()),
        );
        std::fs::write(&config, text).context("writing the config")?;
        Ok(Lab { dns, dir, config })
    }

    async fn run(&self, extra: &[&str]) -> Result<CliOutput> {
        let config = self.config.to_string_lossy().to_string();
        let mut args = vec!["dnscheck", DOMAIN, "-c", config.as_str()];
        args.extend_from_slice(extra);
        run_relaygate(&args, self.dir.path()).await
    }

    /// `--json`, parsed; also returns the exit code.
    async fn json(&self, extra: &[&str]) -> Result<(Option<i32>, Value)> {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args).await?;
        let doc: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("dnscheck --json printed no JSON:\n{out}"))?;
        Ok((out.code, doc))
    }
}

/// The checks of one id, as (subject, verdict, detail).
fn checks(doc: &Value, id: &str) -> Vec<(String, String, String)> {
    doc["checks"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|c| c["check"] == id)
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (s("subject"), s("verdict"), s("detail"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The one check of `id` whose subject starts with `subject`.
fn check_of(doc: &Value, id: &str, subject: &str) -> Result<(String, String)> {
    let found: Vec<_> = checks(doc, id)
        .into_iter()
        .filter(|(s, _, _)| s.starts_with(subject))
        .collect();
    ensure!(
        found.len() == 1,
        "expected one {id} check about {subject}, got {found:?} in {doc:#}"
    );
    let (_, verdict, detail) = found.into_iter().next().unwrap_or_default();
    Ok((verdict, detail))
}

#[tokio::test]
async fn dnscheck_spf_lacking_the_socks_ip_fails_with_a_suggested_record() -> Result<()> {
    let lab = Lab::good().await?;
    lab.dns.remove(DOMAIN);
    lab.dns.add_mx(DOMAIN, 10, "mx.example.org");
    lab.dns.add_txt(DOMAIN, "v=spf1 ip4:198.51.100.0/24 ~all");

    let out = lab.run(&[]).await?;
    ensure!(
        out.code == Some(1),
        "SPF lacking the SOCKS IP must exit 1:\n{out}"
    );
    let fail_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("spf.mail_from") && l.contains(SOCKS_IP));
    ensure!(
        fail_line.is_some(),
        "no failing SPF line for {SOCKS_IP}:\n{out}"
    );
    ensure!(
        out.stdout
            .contains("v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.10 ~all"),
        "the suggested record adds ip4:{SOCKS_IP} before the all term:\n{out}"
    );

    let (code, doc) = lab.json(&["--ip", HOST_IP]).await?;
    ensure!(code == Some(1), "{doc:#}");
    assert_eq!(doc["verdict"], "fail");
    let (verdict, detail) = check_of(&doc, "spf.mail_from", SOCKS_IP)?;
    assert_eq!(verdict, "fail");
    assert!(detail.starts_with("softfail"), "{detail}");
    let (verdict, _) = check_of(&doc, "spf.mail_from", HOST_IP)?;
    assert_eq!(verdict, "ok", "the host IP is in 198.51.100.0/24");
    let suggested = &doc["suggested_records"][0];
    assert_eq!(suggested["name"], DOMAIN);
    let value = suggested["value"].as_str().unwrap_or_default();
    assert!(value.contains("ip4:192.0.2.10"), "{value}");
    assert!(
        !value.contains("ip4:198.51.100.7"),
        "only the missing IP is added: {value}"
    );
    // Everything else is in order: only SPF failed.
    let (verdict, _) = check_of(&doc, "ptr", SOCKS_IP)?;
    assert_eq!(verdict, "ok");
    assert_eq!(doc["summary"]["fail"], 1, "{doc:#}");
    Ok(())
}

#[tokio::test]
async fn dnscheck_reports_a_ptr_naming_another_host() -> Result<()> {
    let lab = Lab::good().await?;
    lab.dns
        .remove(&relaygate_transports::dns::reverse_name(SOCKS_IP.parse()?));
    lab.dns
        .add_ptr(SOCKS_IP.parse()?, "host-10.isp.example.net");

    let out = lab.run(&[]).await?;
    ensure!(out.code == Some(1), "a PTR mismatch must exit 1:\n{out}");
    ensure!(
        out.stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains("ptr")
            && l.contains("host-10.isp.example.net")
            && l.contains(REMOTE_HOSTNAME)),
        "the PTR line names both hosts:\n{out}"
    );
    let (_, doc) = lab.json(&[]).await?;
    let (verdict, _) = check_of(&doc, "spf.mail_from", SOCKS_IP)?;
    assert_eq!(verdict, "ok", "SPF is fine here");
    assert_eq!(doc["summary"]["fail"], 1, "{doc:#}");
    Ok(())
}

#[tokio::test]
async fn dnscheck_reports_a_ptr_that_is_not_forward_confirmed() -> Result<()> {
    let lab = Lab::good().await?;
    // The PTR names out.example.org, but out.example.org points elsewhere (and its SPF
    // `a` then no longer covers the IP either).
    lab.dns.remove(REMOTE_HOSTNAME);
    lab.dns.add_a(REMOTE_HOSTNAME, "192.0.2.99".parse()?);
    lab.dns
        .add_txt(REMOTE_HOSTNAME, "v=spf1 ip4:192.0.2.10 -all");

    let (code, doc) = lab.json(&[]).await?;
    ensure!(code == Some(1), "{doc:#}");
    let (verdict, detail) = check_of(&doc, "ptr", SOCKS_IP)?;
    assert_eq!(verdict, "fail");
    assert!(detail.contains("not forward-confirmed"), "{detail}");
    assert!(detail.contains("192.0.2.99"), "{detail}");
    assert_eq!(doc["summary"]["fail"], 1, "{doc:#}");
    Ok(())
}

#[tokio::test]
async fn dnscheck_all_good_exits_zero_with_a_verdict_per_check() -> Result<()> {
    let lab = Lab::good().await?;
    let (code, doc) = lab.json(&["--ip", HOST_IP]).await?;
    ensure!(code == Some(0), "all good must exit 0: {doc:#}");
    assert_eq!(doc["domain"], DOMAIN);
    assert_eq!(doc["verdict"], "ok", "{doc:#}");
    assert_eq!(doc["dnssec"], "plain");
    let ips: Vec<&str> = doc["egress_ips"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["ip"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ips, [SOCKS_IP, HOST_IP]);
    for (id, n) in [
        ("spf.record", 1),
        ("spf.mail_from", 2),
        ("spf.helo", 2),
        ("ptr", 2),
        ("mx", 1),
        ("mta_sts", 1),
        ("tlsa", 1),
        ("dkim", 1),
    ] {
        let found = checks(&doc, id);
        assert_eq!(found.len(), n, "{id}: {found:?}");
        for (subject, verdict, detail) in found {
            assert_eq!(verdict, "ok", "{id} {subject}: {detail}");
        }
    }
    let (_, detail) = check_of(&doc, "spf.mail_from", SOCKS_IP)?;
    assert!(detail.starts_with("pass"), "{detail}");
    assert_eq!(doc["suggested_records"], serde_json::json!([]));

    // Human output: the same verdicts; optional features missing are warnings only.
    lab.dns.remove("_mta-sts.example.org");
    let out = lab.run(&["--ip", HOST_IP]).await?;
    ensure!(out.code == Some(0), "warnings alone must exit 0:\n{out}");
    ensure!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("mta_sts")),
        "{out}"
    );
    ensure!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("OK") && l.contains("ptr") && l.contains(SOCKS_IP)),
        "{out}"
    );
    ensure!(out.stdout.contains("result: WARN"), "{out}");
    Ok(())
}

#[tokio::test]
async fn dnscheck_tlsa_says_whether_it_is_dnssec_authentic() -> Result<()> {
    let lab = Lab::with_dns_toml("trust_ad = true").await?;
    lab.dns.set_authentic(DOMAIN, true);
    lab.dns.set_authentic("_25._tcp.mx.example.org", true);
    let (code, doc) = lab.json(&[]).await?;
    ensure!(code == Some(0), "{doc:#}");
    assert_eq!(doc["dnssec"], "trust_ad");
    let (verdict, detail) = check_of(&doc, "tlsa", "_25._tcp.mx.example.org")?;
    assert_eq!(verdict, "ok");
    assert!(detail.ends_with("DNSSEC-authentic"), "{detail}");
    let (_, detail) = check_of(&doc, "mx", DOMAIN)?;
    assert!(detail.ends_with("(DNSSEC-authentic)"), "{detail}");

    // TLSA without the AD bit: DANE senders ignore it.
    lab.dns.set_authentic("_25._tcp.mx.example.org", false);
    let (code, doc) = lab.json(&[]).await?;
    ensure!(code == Some(0), "a warning only: {doc:#}");
    let (verdict, detail) = check_of(&doc, "tlsa", "_25._tcp.mx.example.org")?;
    assert_eq!(verdict, "warn");
    assert!(detail.contains("not DNSSEC-authentic"), "{detail}");
    Ok(())
}

#[tokio::test]
async fn dnscheck_two_spf_records_are_a_permerror() -> Result<()> {
    let lab = Lab::good().await?;
    lab.dns
        .add_txt(DOMAIN, &format!("v=spf1 ip4:{SOCKS_IP} ~all"));
    let (code, doc) = lab.json(&[]).await?;
    ensure!(code == Some(1), "{doc:#}");
    let (verdict, detail) = check_of(&doc, "spf.record", DOMAIN)?;
    assert_eq!(verdict, "fail");
    assert!(
        detail.contains("2 SPF records") && detail.contains("permerror"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn dnscheck_null_mx_fails() -> Result<()> {
    let lab = Lab::good().await?;
    lab.dns.remove(DOMAIN);
    lab.dns
        .add_txt(DOMAIN, &format!("v=spf1 ip4:{SOCKS_IP} -all"));
    lab.dns.add_mx(DOMAIN, 0, ".");
    let (code, doc) = lab.json(&[]).await?;
    ensure!(code == Some(1), "{doc:#}");
    let (verdict, detail) = check_of(&doc, "mx", DOMAIN)?;
    assert_eq!(verdict, "fail");
    assert!(detail.contains("null MX"), "{detail}");
    Ok(())
}

// ---- socks-test against a real microsocks ----

async fn microsocks(auth: Option<(&str, &str)>) -> Result<Microsocks> {
    Ok(Microsocks::start(auth)?)
}

/// A config with socks transport "proxy" at `addresses`, with credentials if given.
fn socks_config(
    dir: &Path,
    addresses: &[SocketAddr],
    auth: Option<(&str, &str)>,
) -> Result<PathBuf> {
    let list: Vec<String> = addresses.iter().map(|a| toml_str(&a.to_string())).collect();
    let mut text = format!(
        "hostname = \"{HOSTNAME}\"\n\n[transports.proxy]\nkind = \"socks\"\naddress = [{}]\nremote_ips = [\"{SOCKS_IP}\"]\nremote_hostname = \"{REMOTE_HOSTNAME}\"\n",
        list.join(", ")
    );
    if let Some((user, password)) = auth {
        let file = dir.join("socks-password");
        std::fs::write(&file, format!("{password}\n"))?;
        text.push_str(&format!(
            "username = {}\npassword_file = {}\n",
            toml_str(user),
            toml_str(&file.to_string_lossy())
        ));
    }
    let path = dir.join("relaygate.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn socks_test(config: &Path, dir: &Path) -> Result<CliOutput> {
    socks_test_with(config, dir, &[]).await
}

async fn socks_test_with(config: &Path, dir: &Path, extra: &[&str]) -> Result<CliOutput> {
    let config = config.to_string_lossy().to_string();
    let mut args = vec!["socks-test", "proxy", "-c", config.as_str()];
    args.extend_from_slice(extra);
    run_relaygate(&args, dir).await
}

fn line_of(out: &CliOutput, proxy: SocketAddr) -> &str {
    let needle = format!("  {proxy}  ");
    out.stdout
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_default()
}

#[tokio::test]
async fn socks_test_without_credentials() -> Result<()> {
    let proxy = microsocks(None).await?;
    let dir = temp_dir("relaygate-socks-test")?;
    let config = socks_config(dir.path(), &[proxy.addr], None)?;
    let out = socks_test(&config, dir.path()).await?;
    ensure!(out.code == Some(0), "a working proxy must exit 0:\n{out}");
    let line = line_of(&out, proxy.addr);
    ensure!(
        line.starts_with("OK") && line.contains("data flows through the tunnel"),
        "{out}"
    );
    ensure!(out.stdout.contains("no authentication"), "{out}");
    Ok(())
}

#[tokio::test]
async fn socks_test_with_credentials_right_and_wrong() -> Result<()> {
    let proxy = microsocks(Some(("relay", "pa55"))).await?;
    let dir = temp_dir("relaygate-socks-test")?;

    let config = socks_config(dir.path(), &[proxy.addr], Some(("relay", "pa55")))?;
    let out = socks_test(&config, dir.path()).await?;
    ensure!(out.code == Some(0), "the right password must work:\n{out}");
    ensure!(line_of(&out, proxy.addr).starts_with("OK"), "{out}");
    ensure!(
        out.stdout.contains("username/password as \"relay\""),
        "{out}"
    );
    ensure!(
        !out.stdout.contains("pa55"),
        "the password is never printed:\n{out}"
    );

    let config = socks_config(dir.path(), &[proxy.addr], Some(("relay", "wrong")))?;
    let out = socks_test(&config, dir.path()).await?;
    ensure!(out.code == Some(1), "a wrong password must exit 1:\n{out}");
    let line = line_of(&out, proxy.addr);
    ensure!(
        line.starts_with("FAIL") && line.contains("refused our username/password (status"),
        "the RFC 1929 refusal is reported:\n{out}"
    );
    ensure!(
        out.stdout
            .contains(&format!("1 of 1 proxies failed: {}", proxy.addr)),
        "{out}"
    );

    // No credentials configured, but the proxy wants them: no common method.
    let config = socks_config(dir.path(), &[proxy.addr], None)?;
    let out = socks_test(&config, dir.path()).await?;
    ensure!(out.code == Some(1), "{out}");
    ensure!(
        line_of(&out, proxy.addr).contains("accepts none of our authentication methods"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn socks_test_names_the_proxy_that_failed() -> Result<()> {
    let live = microsocks(None).await?;
    let dead = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), free_port()?);
    let dir = temp_dir("relaygate-socks-test")?;
    let config = socks_config(dir.path(), &[dead, live.addr], None)?;
    let out = socks_test(&config, dir.path()).await?;
    ensure!(
        out.code == Some(1),
        "one dead proxy of two must exit 1:\n{out}"
    );
    ensure!(line_of(&out, live.addr).starts_with("OK"), "{out}");
    let line = line_of(&out, dead);
    ensure!(
        line.starts_with("FAIL") && line.contains("proxy unreachable"),
        "{out}"
    );
    ensure!(
        out.stdout
            .contains(&format!("1 of 2 proxies failed: {dead}")),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn socks_test_connects_to_the_first_mx_or_a_named_target() -> Result<()> {
    let proxy = microsocks(None).await?;
    let dns = TestDns::start().await?;
    dns.add_mx(DOMAIN, 20, "backup.example.org");
    dns.add_mx(DOMAIN, 10, "mx.example.org");
    dns.add_a("mx.example.org", "127.0.0.1".parse()?);
    dns.add_a("backup.example.org", "127.0.0.1".parse()?);
    // The "MX": a listener whose accepted connections prove the CONNECT reached it.
    let mx = std::net::TcpListener::bind("127.0.0.1:0")?;
    mx.set_nonblocking(true)?;
    let port = mx.local_addr()?.port();

    // The real MX for --domain: an SMTP peer (socks-test greets it with EHLO).
    let smtp = crate::support::sink::Sink::start().await?;

    let dir = temp_dir("relaygate-socks-test")?;
    let config = socks_config(dir.path(), &[proxy.addr], None)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "\n[dns]\nnameservers = [{}]\n\n[direct]\nport = {port}\n\
         port_overrides = {{ \"mx.example.org\" = {} }}\n",
        toml_str(&dns.addr().to_string()),
        smtp.port()
    ));
    std::fs::write(&config, text)?;

    // --domain goes the whole way: proxy, first MX, greeting, EHLO as the proxy's name.
    let out = socks_test_with(&config, dir.path(), &["--domain", DOMAIN]).await?;
    ensure!(out.code == Some(0), "{out}");
    ensure!(
        out.stdout.contains(&format!(
            "CONNECT to 127.0.0.1:{} (first MX host mx.example.org of {DOMAIN})",
            smtp.port()
        )) && out
            .stdout
            .contains(&format!("EHLO {REMOTE_HOSTNAME} answered")),
        "{out}"
    );
    // An MX that refuses the proxy's egress fails the test, with its reply.
    smtp.set_mode(crate::support::sink::Mode::Greeting(
        "554 5.7.1 your IP is listed".into(),
    ));
    let out = socks_test_with(&config, dir.path(), &["--domain", DOMAIN]).await?;
    ensure!(
        out.code == Some(1) && out.stdout.contains("554 5.7.1 your IP is listed"),
        "{out}"
    );

    let target = format!("mx.example.org:{port}");
    let out = socks_test_with(&config, dir.path(), &["--target", &target]).await?;
    ensure!(out.code == Some(0), "{out}");
    ensure!(line_of(&out, proxy.addr).starts_with("OK"), "{out}");
    ensure!(mx.accept().is_ok(), "the target saw no connection:\n{out}");

    // Nothing listens there: the proxy's CONNECT reply code is reported.
    drop(mx);
    let out = socks_test_with(&config, dir.path(), &["--target", &target]).await?;
    ensure!(out.code == Some(1), "{out}");
    ensure!(
        line_of(&out, proxy.addr).contains("proxy reply"),
        "the RFC 1928 reply is reported:\n{out}"
    );
    Ok(())
}

/// DKIM selectors: one configured but not published, one whose published record holds
/// another key; both fail (exit 1) and name the record to publish, the good one stays ok.
#[tokio::test]
async fn dnscheck_reports_missing_and_mismatched_dkim_selectors() -> Result<()> {
    use crate::support::dkim::keygen;
    let lab = Lab::good().await?;
    let missing = keygen(
        lab.dir.path(),
        &lab.dns,
        DOMAIN,
        "missing",
        "ed25519",
        false,
    )
    .await?;
    let mismatched = keygen(lab.dir.path(), &lab.dns, DOMAIN, "mm", "ed25519", false).await?;
    let other = lab.dir.path().join("other");
    std::fs::create_dir(&other)?;
    keygen(&other, &lab.dns, DOMAIN, "mm", "rsa", true).await?;
    let mut text = std::fs::read_to_string(&lab.config)?;
    text.push_str(&missing.toml());
    text.push_str(&mismatched.toml());
    std::fs::write(&lab.config, text)?;
    let (code, doc) = lab.json(&["--ip", HOST_IP]).await?;
    ensure!(code == Some(1), "a DKIM failure must exit 1: {doc:#}");
    let (verdict, detail) = check_of(&doc, "dkim", "ed1._domainkey")?;
    ensure!(verdict == "ok", "{detail}");
    let (verdict, detail) = check_of(&doc, "dkim", "missing._domainkey")?;
    ensure!(
        verdict == "fail"
            && detail.contains("not published")
            && detail.contains("v=DKIM1; k=ed25519; p="),
        "{detail}"
    );
    let (verdict, detail) = check_of(&doc, "dkim", "mm._domainkey")?;
    ensure!(
        verdict == "fail" && detail.contains("does not match"),
        "{detail}"
    );
    Ok(())
}
