//! OAuth2 smarthosts (issue 15), end to end with the real binary: `submission`
//! transports logging in with XOAUTH2 or OAUTHBEARER to a sink that checks the bearer
//! token (STARTTLS verified with `tls.extra_ca_file`), the token coming from
//!
//! - a `token_file` (read again at every login: a replaced token is used at once),
//! - the client-credentials grant at a local HTTPS token endpoint (the token cached
//!   across logins),
//! - the refresh-token grant (a token that lives less than the refresh margin is
//!   fetched again for the next login, and the sink accepts only the new one);
//!
//! and the failures an operator must be able to read: a token the provider refuses (its
//! JSON error's status and scope in the recipient's `last_reply`, via `queue list
//! --json` and `GET /api/queue/ID`), a token endpoint answering `invalid_grant` (a
//! temporary `auth` failure naming the endpoint), and `auth-test` saying which step
//! failed. The sink closes each connection after one message, so every message is a
//! new login. No token ever appears in the gateway's log.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::support::gateway::{toml_str, Gateway, GatewayOptions};
use crate::support::oauth_server::OAuthServer;
use crate::support::pki::Pki;
use crate::support::sink::{Login, Sink};
use crate::support::smtp_client::{simple_message, submit};
use crate::support::{deadline, wait_until_async};

const USER: &str = "relay@example.org";
const SCOPE: &str = "https://outlook.office365.test/.default";
const CLIENT_SECRET: &str = "client-s3cret-value";

/// A sink with STARTTLS that requires a bearer login as [`USER`], one message per
/// connection.
async fn bearer_sink(pki: &Pki, accepted: &[&str]) -> Result<Sink> {
    let sink = Sink::start_tls(pki).await?;
    sink.set_bearer_auth(USER, accepted, SCOPE);
    sink.set_one_message_per_connection(true);
    Ok(sink)
}

/// A `submission` transport `name` to the sink with `mechanism`, its `oauth2` table,
/// and a route for recipient domain `domain`.
fn transport(name: &str, sink: &Sink, mechanism: &str, domain: &str, oauth2: &str) -> String {
    format!(
        "[transports.{name}]\nkind = \"submission\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         username = {user}\nmechanisms = [{mechanism}]\n\n\
         [transports.{name}.oauth2]\n{oauth2}\n\
         [[routes]]\nto_domain = [{domain}]\ntransport = {name_str}\n\n",
        port = sink.port(),
        user = toml_str(USER),
        mechanism = toml_str(mechanism),
        domain = toml_str(domain),
        name_str = toml_str(name),
    )
}

/// `token_file = PATH`.
fn token_file(path: &Path) -> String {
    format!("token_file = {}\n", toml_str(&path.to_string_lossy()))
}

/// The built-in client for `server`: client credentials, or the refresh-token grant
/// when `refresh_file` is given.
fn token_client(server: &OAuthServer, secret_file: &Path, refresh_file: Option<&Path>) -> String {
    let mut s = format!(
        "token_url = {}\nclient_id = \"relay-app\"\nclient_secret_file = {}\nscope = {}\n",
        toml_str(&server.url()),
        toml_str(&secret_file.to_string_lossy()),
        toml_str(SCOPE),
    );
    if let Some(r) = refresh_file {
        s.push_str(&format!(
            "refresh_token_file = {}\n",
            toml_str(&r.to_string_lossy())
        ));
    }
    s
}

/// A gateway trusting the test CA, with `transports`, debug logs.
async fn gateway(pki: &Pki, transports: &str, first_retry: &str) -> Result<Gateway> {
    Gateway::start(GatewayOptions {
        first_retry: first_retry.to_string(),
        extra_toml: format!(
            "[tls]\nextra_ca_file = {}\n\n{transports}",
            toml_str(&pki.ca_pem.to_string_lossy())
        ),
        log_filter: Some("debug".into()),
        ..Default::default()
    })
    .await
}

/// A file under `dir` holding `value` and a line end.
fn secret_file(dir: &Path, name: &str, value: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n"))?;
    Ok(path)
}

async fn send(gw: &Gateway, to: &str, id: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        "app@src.test",
        &[to],
        &simple_message("app@src.test", to, "oauth", id),
    )
    .await
}

/// Waits until the sink holds `n` messages.
async fn delivered(sink: &Sink, n: usize) -> Result<()> {
    sink.wait_for(deadline(30), |m| m.len() >= n).await?;
    Ok(())
}

fn stderr_log(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.dir().join("stderr.log")).unwrap_or_default()
}

/// No token (nor `secrets`) in the gateway's log.
fn ensure_not_logged(gw: &Gateway, secrets: &[String]) -> Result<()> {
    let log = stderr_log(gw);
    ensure!(!log.is_empty(), "the gateway wrote no log");
    for s in secrets {
        ensure!(!log.contains(s.as_str()), "{s:?} is in the gateway's log");
    }
    Ok(())
}

fn accepted_logins(sink: &Sink) -> Vec<Login> {
    sink.logins().into_iter().filter(|l| l.accepted).collect()
}

#[tokio::test]
async fn token_file_logs_in_with_each_mechanism_and_is_read_at_every_login() -> Result<()> {
    let pki = Pki::new()?;
    let sink = bearer_sink(&pki, &["file-token-1"]).await?;
    let token = secret_file(pki.dir.path(), "token", "file-token-1")?;
    let transports = transport("x", &sink, "XOAUTH2", "x.test", &token_file(&token))
        + &transport("o", &sink, "OAUTHBEARER", "o.test", &token_file(&token));
    let gw = gateway(&pki, &transports, "200ms").await?;

    send(&gw, "r@x.test", "tf-1").await?;
    send(&gw, "r@o.test", "tf-2").await?;
    delivered(&sink, 2).await?;
    let logins = accepted_logins(&sink);
    let mut mechanisms: Vec<&str> = logins.iter().map(|l| l.mechanism.as_str()).collect();
    mechanisms.sort();
    ensure!(mechanisms == ["OAUTHBEARER", "XOAUTH2"], "{logins:?}");
    for l in &logins {
        ensure!(
            l.tls && l.user == USER && l.token == "file-token-1",
            "{l:?}"
        );
    }
    // RFC 7628 §3.1: OAUTHBEARER names the host and port connected to.
    let bearer = logins.iter().find(|l| l.mechanism == "OAUTHBEARER");
    ensure!(
        bearer.is_some_and(|l| l.host.as_deref() == Some("127.0.0.1")
            && l.port.as_deref() == Some(sink.port().to_string().as_str())),
        "{bearer:?}"
    );

    // Another tool replaces the token; the next login (a new connection) uses it.
    std::fs::write(&token, "file-token-2\n")?;
    sink.accept_tokens(&["file-token-2"]);
    send(&gw, "r2@x.test", "tf-3").await?;
    delivered(&sink, 3).await?;
    let last = sink.logins().last().cloned().context("no login")?;
    ensure!(last.accepted && last.token == "file-token-2", "{last:?}");
    gw.wait_queue_empty(deadline(30)).await?;
    ensure_not_logged(&gw, &["file-token-1".into(), "file-token-2".into()])
}

#[tokio::test]
async fn client_credentials_grant_with_each_mechanism_and_the_token_cached() -> Result<()> {
    let pki = Pki::new()?;
    let server = OAuthServer::start(&pki).await?;
    server.issue("cc", 3600);
    let sink = bearer_sink(&pki, &["cc-1", "cc-2"]).await?;
    let secret = secret_file(pki.dir.path(), "client-secret", CLIENT_SECRET)?;
    let client = token_client(&server, &secret, None);
    let transports = transport("x", &sink, "XOAUTH2", "x.test", &client)
        + &transport("o", &sink, "OAUTHBEARER", "o.test", &client);
    let gw = gateway(&pki, &transports, "200ms").await?;

    send(&gw, "r@x.test", "cc-1").await?;
    send(&gw, "r@o.test", "cc-2").await?;
    delivered(&sink, 2).await?;
    // One token per transport (each has its own client).
    let requests = server.requests();
    ensure!(requests.len() == 2, "{requests:?}");
    for r in &requests {
        ensure!(r.request_line.starts_with("POST /token "), "{r:?}");
        ensure!(
            r.content_type == "application/x-www-form-urlencoded",
            "{r:?}"
        );
        ensure!(r.field("grant_type") == "client_credentials", "{r:?}");
        ensure!(r.field("client_id") == "relay-app", "{r:?}");
        ensure!(r.field("client_secret") == CLIENT_SECRET, "{r:?}");
        ensure!(r.field("scope") == SCOPE, "{r:?}");
        ensure!(r.field("refresh_token").is_empty(), "{r:?}");
    }
    let mut mechanisms: Vec<String> = accepted_logins(&sink)
        .into_iter()
        .map(|l| l.mechanism)
        .collect();
    mechanisms.sort();
    ensure!(mechanisms == ["OAUTHBEARER", "XOAUTH2"], "{mechanisms:?}");

    // New connections, new logins, the same cached tokens: no further request.
    send(&gw, "r2@x.test", "cc-3").await?;
    send(&gw, "r2@o.test", "cc-4").await?;
    delivered(&sink, 4).await?;
    let logins = accepted_logins(&sink);
    ensure!(logins.len() == 4, "{logins:?}");
    ensure!(server.requests().len() == 2, "{:?}", server.requests());
    let issued = server.issued();
    ensure!(
        logins.iter().all(|l| issued.contains(&l.token)),
        "{logins:?} vs {issued:?}"
    );
    gw.wait_queue_empty(deadline(30)).await?;
    let mut secrets = issued;
    secrets.push(CLIENT_SECRET.into());
    ensure_not_logged(&gw, &secrets)
}

#[tokio::test]
async fn refresh_token_grant_and_a_short_lived_token_refreshed_before_reuse() -> Result<()> {
    let pki = Pki::new()?;
    let server = OAuthServer::start(&pki).await?;
    // 30 s is inside the 60 s refresh margin: no login reuses such a token.
    server.issue("rt", 30);
    let sink = bearer_sink(&pki, &["rt-1"]).await?;
    let secret = secret_file(pki.dir.path(), "client-secret", CLIENT_SECRET)?;
    let refresh = secret_file(pki.dir.path(), "refresh-token", "1//refresh-abc")?;
    let client = token_client(&server, &secret, Some(&refresh));
    let transports = transport("x", &sink, "XOAUTH2", "x.test", &client)
        + &transport("o", &sink, "OAUTHBEARER", "o.test", &client);
    let gw = gateway(&pki, &transports, "200ms").await?;

    send(&gw, "r@x.test", "rt-1").await?;
    delivered(&sink, 1).await?;
    let requests = server.requests();
    ensure!(requests.len() == 1, "{requests:?}");
    ensure!(requests[0].field("grant_type") == "refresh_token");
    ensure!(requests[0].field("refresh_token") == "1//refresh-abc");
    ensure!(requests[0].field("client_id") == "relay-app");
    ensure!(requests[0].field("scope") == SCOPE);

    // The first token would still be valid for a while, but not past the margin: the
    // next login asks the endpoint again, and only the new token is accepted.
    sink.accept_tokens(&["rt-2"]);
    send(&gw, "r2@x.test", "rt-2").await?;
    delivered(&sink, 2).await?;
    ensure!(server.requests().len() == 2, "{:?}", server.requests());
    let logins = accepted_logins(&sink);
    ensure!(
        logins.iter().map(|l| l.token.as_str()).collect::<Vec<_>>() == ["rt-1", "rt-2"],
        "{logins:?}"
    );
    ensure!(
        sink.logins().iter().all(|l| l.accepted),
        "{:?}",
        sink.logins()
    );

    // OAUTHBEARER with the same grant.
    sink.accept_tokens(&["rt-3"]);
    send(&gw, "r@o.test", "rt-3").await?;
    delivered(&sink, 3).await?;
    let last = sink.logins().last().cloned().context("no login")?;
    ensure!(
        last.accepted && last.mechanism == "OAUTHBEARER" && last.token == "rt-3",
        "{last:?}"
    );
    gw.wait_queue_empty(deadline(30)).await?;
    let mut secrets = server.issued();
    secrets.extend(["1//refresh-abc".to_string(), CLIENT_SECRET.to_string()]);
    ensure_not_logged(&gw, &secrets)
}

/// The first recipient of the message to `to` in the gateway's queue.
async fn rcpt_of(gw: &Gateway, to: &str) -> Result<Option<(String, Value)>> {
    for m in gw.queue_messages().await? {
        if let Some(r) = m["rcpts"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["address"] == to))
        {
            return Ok(Some((
                m["id"].as_str().unwrap_or_default().to_string(),
                r.clone(),
            )));
        }
    }
    Ok(None)
}

/// Waits until the recipient `to` has had one attempt; returns the message id and
/// the recipient's JSON.
async fn after_first_attempt(gw: &Gateway, to: &str) -> Result<(String, Value)> {
    wait_until_async(
        deadline(30),
        &format!("a first attempt for {to}"),
        || async {
            Ok(rcpt_of(gw, to)
                .await?
                .is_some_and(|(_, r)| r["attempts"].as_u64() == Some(1)))
        },
    )
    .await?;
    rcpt_of(gw, to).await?.context("the message left the queue")
}

#[tokio::test]
async fn a_refused_token_leaves_the_json_error_in_the_queue_record() -> Result<()> {
    let pki = Pki::new()?;
    let sink = bearer_sink(&pki, &["fresh-token"]).await?;
    let token = secret_file(pki.dir.path(), "token", "stale-token")?;
    let transports = transport("x", &sink, "XOAUTH2", "x.test", &token_file(&token))
        + &transport("o", &sink, "OAUTHBEARER", "o.test", &token_file(&token));
    // One attempt within the test: the retry is an hour away.
    let gw = gateway(&pki, &transports, "1h").await?;
    send(&gw, "r@x.test", "refused-1").await?;
    send(&gw, "r@o.test", "refused-2").await?;

    let want = format!("status 401, schemes bearer, scope {SCOPE}");
    for (to, mechanism) in [("r@x.test", "XOAUTH2"), ("r@o.test", "OAUTHBEARER")] {
        let (id, rcpt) = after_first_attempt(&gw, to).await?;
        ensure!(rcpt["status"] == "pending", "{rcpt}");
        ensure!(rcpt["last_reason"] == "auth", "{rcpt}");
        let reply = rcpt["last_reply"].as_str().unwrap_or_default();
        ensure!(
            reply.contains("535 5.7.8")
                && reply.contains(&format!("AUTH {mechanism} refused"))
                && reply.contains(&want),
            "last_reply of {to}: {reply}"
        );
        // The same through GET /api/queue/ID.
        let resp = gw.http_get(&format!("/api/queue/{id}")).await?;
        ensure!(resp.status == 200, "GET /api/queue/{id}: {}", resp.status);
        let detail: Value = serde_json::from_slice(&resp.body)?;
        let shown = detail["rcpts"][0]["last_reply"]
            .as_str()
            .unwrap_or_default();
        ensure!(shown.contains(&want), "{detail}");
    }
    // And through `queue list --json`.
    let out = gw.run_cli(&["queue", "list", "--json"]).await?;
    ensure!(out.code == Some(0), "{out}");
    let listed: Value = serde_json::from_str(&out.stdout).context("queue list --json")?;
    let replies: Vec<&str> = listed["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["rcpts"][0]["last_reply"].as_str())
        .collect();
    ensure!(
        replies.len() == 2 && replies.iter().all(|r| r.contains(&want)),
        "{}",
        out.stdout
    );
    // The sink sent the JSON challenge once per login, and each client answered it the
    // way its mechanism prescribes (%x01 for OAUTHBEARER, an empty line for XOAUTH2).
    let logins = sink.logins();
    ensure!(logins.len() == 2, "{logins:?}");
    for l in &logins {
        ensure!(!l.accepted && l.dummy_ok == Some(true), "{l:?}");
        ensure!(l.token == "stale-token", "{l:?}");
    }
    ensure!(sink.messages().is_empty(), "{}", sink.summary());
    ensure_not_logged(&gw, &["stale-token".into()])
}

#[tokio::test]
async fn a_token_endpoint_error_is_a_clear_temporary_failure() -> Result<()> {
    let pki = Pki::new()?;
    let server = OAuthServer::start(&pki).await?;
    server.refuse(
        400,
        "invalid_grant",
        "AADSTS70000: The provided grant has expired",
    );
    let sink = bearer_sink(&pki, &["never"]).await?;
    let secret = secret_file(pki.dir.path(), "client-secret", CLIENT_SECRET)?;
    let refresh = secret_file(pki.dir.path(), "refresh-token", "1//old")?;
    let transports = transport(
        "x",
        &sink,
        "XOAUTH2",
        "x.test",
        &token_client(&server, &secret, Some(&refresh)),
    );
    let gw = gateway(&pki, &transports, "1h").await?;
    send(&gw, "r@x.test", "grant-1").await?;

    let (_, rcpt) = after_first_attempt(&gw, "r@x.test").await?;
    ensure!(
        rcpt["status"] == "pending",
        "temporary, so still queued: {rcpt}"
    );
    ensure!(rcpt["last_reason"] == "auth", "{rcpt}");
    ensure!(rcpt["last_enhanced"] == "4.7.0", "{rcpt}");
    let reply = rcpt["last_reply"].as_str().unwrap_or_default();
    for part in [
        "no OAuth2 access token",
        &format!(
            "token endpoint {} refused the request (HTTP 400)",
            server.url()
        ),
        "invalid_grant: AADSTS70000: The provided grant has expired",
    ] {
        ensure!(reply.contains(part), "{part:?} not in last_reply: {reply}");
    }
    ensure!(server.requests().len() == 1, "{:?}", server.requests());
    // No token, no AUTH.
    ensure!(sink.logins().is_empty(), "{:?}", sink.logins());
    ensure_not_logged(&gw, &["1//old".into(), CLIENT_SECRET.into()])
}

#[tokio::test]
async fn auth_test_reports_the_token_step_and_the_auth_step() -> Result<()> {
    let pki = Pki::new()?;
    let server = OAuthServer::start(&pki).await?;
    server.issue("at", 3600);
    let sink = bearer_sink(&pki, &["at-1"]).await?;
    let secret = secret_file(pki.dir.path(), "client-secret", CLIENT_SECRET)?;
    let transports = transport(
        "x",
        &sink,
        "XOAUTH2",
        "x.test",
        &token_client(&server, &secret, None),
    );
    let gw = gateway(&pki, &transports, "1h").await?;

    let out = gw.run_cli(&["auth-test", "x"]).await?;
    ensure!(out.code == Some(0), "auth-test:\n{out}");
    for line in [
        &format!(
            "token source: token endpoint {} (client_credentials grant)",
            server.url()
        ),
        "token step: OK, access token fetched from the token endpoint (valid for 3600 s)",
        "chosen mechanism: XOAUTH2",
        "AUTH step: authentication succeeded",
    ] {
        ensure!(out.stdout.contains(line), "{line:?} missing:\n{out}");
    }
    ensure!(
        !out.stdout.contains("at-1") && !out.stderr.contains("at-1"),
        "the token is printed:\n{out}"
    );

    // The provider refuses the token: the token step worked, AUTH did not.
    sink.accept_tokens(&[]);
    let out = gw.run_cli(&["auth-test", "x"]).await?;
    ensure!(out.code == Some(1), "auth-test:\n{out}");
    ensure!(out.stdout.contains("token step: OK"), "{out}");
    ensure!(
        out.stdout.contains("AUTH step: authentication failed")
            && out.stdout.contains("status 401")
            && out.stdout.contains(SCOPE),
        "{out}"
    );
    ensure!(!out.stdout.contains("at-2"), "{out}");

    // The endpoint refuses: the token step failed, AUTH was not tried.
    server.refuse(
        401,
        "invalid_client",
        "AADSTS7000215: Invalid client secret",
    );
    let logins_before = sink.logins().len();
    let out = gw.run_cli(&["auth-test", "x"]).await?;
    ensure!(out.code == Some(1), "auth-test:\n{out}");
    ensure!(
        out.stdout.contains("token step FAILED")
            && out
                .stdout
                .contains("invalid_client: AADSTS7000215: Invalid client secret")
            && out.stdout.contains("AUTH step: not attempted"),
        "{out}"
    );
    ensure!(sink.logins().len() == logins_before, "{:?}", sink.logins());
    ensure!(
        !out.stdout.contains(CLIENT_SECRET) && !out.stderr.contains(CLIENT_SECRET),
        "{out}"
    );
    Ok(())
}
