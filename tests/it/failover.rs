//! Failover (issue 14): a smarthost transport with several hosts tries them in order
//! within one attempt when a host cannot be used (no connection, a 421 greeting);
//! the retry interval here is an hour, so delivery within the test's deadline means the
//! first attempt did it.

use anyhow::{ensure, Result};

use crate::support::deadline;
use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::{Mode, Sink};
use crate::support::smtp_client::{simple_message, submit};

const SENDER: &str = "sender@src.test";

async fn gateway_with_hosts(hosts: &[String]) -> Result<Gateway> {
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.relay]\nkind = \"smtp\"\nhosts = [{}]\nno_starttls = true\n\n\
             [[routes]]\ntransport = \"relay\"\n",
            list.join(", ")
        ),
        first_retry: "1h".into(),
        ..Default::default()
    })
    .await
}

async fn send_and_expect(gw: &Gateway, sink: &Sink, rcpt: &str) -> Result<()> {
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", rcpt),
    )
    .await?;
    sink.wait_for(deadline(20), |m| m.iter().any(|m| m.has_rcpt(rcpt)))
        .await?;
    gw.wait_queue_empty(deadline(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_host_dead_second_used_in_the_same_attempt() -> Result<()> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let sink = Sink::start().await?;
    let gw = gateway_with_hosts(&[
        format!("127.0.0.1:{dead}"),
        format!("127.0.0.1:{}", sink.port()),
    ])
    .await?;
    send_and_expect(&gw, &sink, "a@dst.test").await?;
    // The attempt record names the host that took it.
    let msgs = gw.queue_messages().await?;
    ensure!(msgs.is_empty(), "{msgs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_greeting_moves_on_to_the_next_host() -> Result<()> {
    let busy = Sink::start().await?;
    busy.set_mode(Mode::Greeting("421 4.3.2 too busy".into()));
    let sink = Sink::start().await?;
    let gw = gateway_with_hosts(&[
        format!("127.0.0.1:{}", busy.port()),
        format!("127.0.0.1:{}", sink.port()),
    ])
    .await?;
    send_and_expect(&gw, &sink, "b@dst.test").await?;
    ensure!(busy.messages().is_empty(), "the busy host took mail");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_does_not_move_on() -> Result<()> {
    // The first host answers and refuses the recipient: that is the answer; the second
    // host is not asked.
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let gw = gateway_with_hosts(&[
        format!("127.0.0.1:{}", first.port()),
        format!("127.0.0.1:{}", second.port()),
    ])
    .await?;
    let rcpt = "x+550@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "r"),
    )
    .await?;
    // The DSN for the refused recipient goes through the transport too (first host).
    first
        .wait_for(deadline(20), |m| m.iter().any(|m| m.is_bounce()))
        .await?;
    ensure!(second.rcpt_attempts(rcpt) == 0, "the second host was asked");
    Ok(())
}

/// `queue.retry_schedule`: a recipient refused with 451 is retried after the delays the
/// schedule gives (short here), not after `first_retry` (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_schedule_sets_the_delays() -> Result<()> {
    let sink = Sink::start().await?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.first_retry = "1h".into();
    opts.queue_toml = "retry_schedule = [\"300ms\", \"300ms\"]\n".into();
    let gw = Gateway::start(opts).await?;
    // Refused twice with 451, then accepted: three attempts within seconds.
    let rcpt = "x+451x2@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "sched"),
    )
    .await?;
    sink.wait_for(deadline(20), |m| m.iter().any(|m| m.has_rcpt(rcpt)))
        .await?;
    ensure!(
        sink.rcpt_attempts(rcpt) == 3,
        "{} attempts",
        sink.rcpt_attempts(rcpt)
    );
    Ok(())
}

/// The issue's scenario: the primary smarthost's port is closed, the route lists
/// `fallback = ["backup"]`, everything else is the default config (the first retry would
/// be 7m30s away): the message goes through the backup in the first attempt, within 5 s
/// of submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_primary_falls_back_within_the_first_attempt() -> Result<()> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let backup = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.primary]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {dead}\nno_starttls = true\n\n\
             [transports.backup]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [[routes]]\ntransport = \"primary\"\nfallback = [\"backup\"]\n",
            backup.port()
        ),
        first_retry: "7m30s".into(),
        ..Default::default()
    })
    .await?;
    let started = std::time::Instant::now();
    let rcpt = "fb@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "fb"),
    )
    .await?;
    backup
        .wait_for(deadline(5), |m| m.iter().any(|m| m.has_rcpt(rcpt)))
        .await?;
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    gw.wait_queue_empty(deadline(10)).await?;
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("relaygate_fallback_total{")
                && l.contains("from=\"primary\"")
                && l.contains("to=\"backup\"")),
        "fallback not counted"
    );
    Ok(())
}

/// A recipient the primary refuses (550) is that recipient's answer: no fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_never_falls_back() -> Result<()> {
    let primary = Sink::start().await?;
    let backup = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.primary]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [transports.backup]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [[routes]]\ntransport = \"primary\"\nfallback = [\"backup\"]\n",
            primary.port(),
            backup.port()
        ),
        ..Default::default()
    })
    .await?;
    let rcpt = "x+550@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "nofb"),
    )
    .await?;
    primary
        .wait_for(deadline(20), |m| m.iter().any(|m| m.is_bounce()))
        .await?;
    ensure!(backup.rcpt_attempts(rcpt) == 0, "the backup was asked");
    Ok(())
}

/// Amazon SES's throttling reply (here at MAIL) is classified throttle: the attempts are
/// recorded but none counts against the recipient, so with `max_attempts = 2` the
/// message is still queued after more tries than that, and goes out once the provider
/// takes mail again (landed main failed it after two attempts and bounced it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_attempts_do_not_count_against_the_recipient() -> Result<()> {
    let sink = Sink::start().await?;
    sink.set_mode(Mode::RejectAll(
        "454 Throttling failure: Maximum sending rate exceeded".into(),
    ));
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.max_attempts = 2;
    opts.first_retry = "100ms".into();
    let gw = Gateway::start(opts).await?;
    let rcpt = "t@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", "thr"),
    )
    .await?;
    // Wait for at least four recorded tries.
    let end = deadline(30);
    let attempt = loop {
        let msgs = gw.queue_messages().await?;
        let id = msgs
            .first()
            .and_then(|m| m["id"].as_str())
            .map(str::to_string);
        if let Some(id) = id {
            let v: serde_json::Value =
                serde_json::from_slice(&gw.http_get(&format!("/api/queue/{id}")).await?.body)?;
            let r = &v["rcpts"][0];
            if r["history"].as_array().is_some_and(|h| h.len() >= 4) {
                break r.clone();
            }
        } else {
            anyhow::bail!("the message left the queue: {}", sink.summary());
        }
        ensure!(
            std::time::Instant::now() < end,
            "fewer than four tries recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    ensure!(attempt["attempts"] == 0, "attempts counted: {attempt}");
    ensure!(attempt["status"] == "pending", "{attempt}");
    let last = attempt["history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned();
    ensure!(
        last.as_ref().is_some_and(|a| a["reason"] == "throttle"),
        "{last:?}"
    );
    sink.set_mode(Mode::Normal);
    sink.wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt(rcpt)))
        .await?;
    ensure!(
        !sink.messages().iter().any(|m| m.is_bounce()),
        "a DSN went out"
    );
    Ok(())
}

/// The circuit breaker: after `down_after` attempts that failed before the handover the
/// primary is down; routes naming it stop matching, so the queued message moves to the
/// next route at once and new mail never connects to the primary while it is down. The
/// state shows in `/api/transports`, `transports status` and
/// `relaygate_transport_up{transport}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_transport_is_skipped_by_routes() -> Result<()> {
    let primary = Sink::start().await?;
    primary.set_mode(Mode::CloseConnections);
    let backup = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.primary]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\
             down_after = 2\ndown_for = \"1h\"\n\n\
             [transports.backup]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [[routes]]\ntransport = \"primary\"\n\n[[routes]]\ntransport = \"backup\"\n",
            primary.port(),
            backup.port()
        ),
        first_retry: "200ms".into(),
        ..Default::default()
    })
    .await?;
    let send = |rcpt: &'static str| {
        let addr = gw.submission_addr();
        async move {
            submit(
                addr,
                SENDER,
                &[rcpt],
                &simple_message(SENDER, rcpt, "s", rcpt),
            )
            .await
        }
    };
    send("one@dst.test").await?;
    backup
        .wait_for(deadline(20), |m| {
            m.iter().any(|m| m.has_rcpt("one@dst.test"))
        })
        .await?;
    let tried = primary.connections();
    ensure!(tried >= 2, "the primary was tried {tried} times");
    // While down, new mail goes to the backup without touching the primary.
    send("two@dst.test").await?;
    backup
        .wait_for(deadline(20), |m| {
            m.iter().any(|m| m.has_rcpt("two@dst.test"))
        })
        .await?;
    ensure!(
        primary.connections() == tried,
        "the down primary was contacted again"
    );
    let v: serde_json::Value = serde_json::from_slice(&gw.http_get("/api/transports").await?.body)?;
    let p = v["transports"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["transport"] == "primary"))
        .cloned()
        .unwrap_or_default();
    ensure!(p["state"] == "down", "{v}");
    let status = gw.run_cli(&["transports", "status"]).await?;
    ensure!(
        status.code == Some(0)
            && status.stdout.contains("primary")
            && status.stdout.contains("down"),
        "{status}"
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("relaygate_transport_up{transport=\"primary\"} 0")),
        "relaygate_transport_up not 0 for the primary"
    );
    Ok(())
}

/// `rate_limit = "20/s"`: 200 messages take at least nine seconds to go out (a burst of
/// one second's worth, then 20 per second), and none of them has a failed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_deliveries_without_failing_attempts() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.relay]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\
             rate_limit = \"20/s\"\n\n[[routes]]\ntransport = \"relay\"\n",
            sink.port()
        ),
        ..Default::default()
    })
    .await?;
    let started = std::time::Instant::now();
    let mut c = crate::support::smtp_client::SmtpClient::connect(gw.submission_addr()).await?;
    c.ehlo("app.test").await?;
    for i in 0..200 {
        let rcpt = format!("r{i}@dst.test");
        let r = c
            .send_message(SENDER, &[&rcpt], &simple_message(SENDER, &rcpt, "s", &rcpt))
            .await?;
        ensure!(r.code == 250, "message {i}: {r:?}");
    }
    sink.wait_for(deadline(60), |m| m.len() >= 200).await?;
    let took = started.elapsed();
    ensure!(
        took >= std::time::Duration::from_millis(8_900),
        "200 messages at 20/s went out in {took:?}"
    );
    ensure!(sink.messages().len() == 200, "{}", sink.summary());
    let metrics = gw.metrics_text().await?;
    ensure!(
        !metrics
            .lines()
            .any(|l| l.starts_with("relaygate_delivery_attempts_total{")
                && !l.contains("result=\"delivered\"")
                && !l.ends_with(" 0")),
        "failed attempts counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("relaygate_delivery_attempts_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// `max_recipients = 2` on a transport (a provider's per-message recipient limit): a
/// message to five recipients goes out as three transactions of at most two, and every
/// recipient gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_recipients_splits_the_transactions() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.relay]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\
             max_recipients = 2\n\n[[routes]]\ntransport = \"relay\"\n",
            sink.port()
        ),
        ..Default::default()
    })
    .await?;
    let rcpts: Vec<String> = (0..5).map(|i| format!("m{i}@dst.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    submit(
        gw.submission_addr(),
        SENDER,
        &refs,
        &simple_message(SENDER, "m0@dst.test", "s", "split"),
    )
    .await?;
    sink.wait_for(deadline(20), |m| {
        m.iter().map(|m| m.rcpts.len()).sum::<usize>() >= 5
    })
    .await?;
    gw.wait_queue_empty(deadline(10)).await?;
    let msgs = sink.messages();
    ensure!(
        msgs.len() == 3 && msgs.iter().all(|m| m.rcpts.len() <= 2),
        "{}",
        sink.summary()
    );
    for r in &rcpts {
        let n = msgs.iter().filter(|m| m.has_rcpt(r)).count();
        ensure!(n == 1, "{r} received {n} times");
    }
    Ok(())
}

/// Failover by `minimum_attempts` (no `fallback`) still works when the primary throttles:
/// throttled attempts do not count against `max_attempts`, but they are attempts made, so
/// the "from the second attempt on" route takes the message. (Before this, the message
/// waited for the throttling primary forever.) Metrics and logs name the transport that
/// took each attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_attempts_routes_count_throttled_attempts() -> Result<()> {
    let primary = Sink::start().await?;
    primary.set_mode(Mode::RejectAll(
        "454 Throttling failure: Maximum sending rate exceeded.".into(),
    ));
    let backup = Sink::start().await?;
    let mut opts = GatewayOptions {
        extra_toml: format!(
            "[transports.primary]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [transports.backup]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [[routes]]\nminimum_attempts = 1\ntransport = \"backup\"\n\n\
             [[routes]]\ntransport = \"primary\"\n",
            primary.port(),
            backup.port()
        ),
        first_retry: "200ms".into(),
        ..Default::default()
    };
    opts.max_attempts = 3;
    let gw = Gateway::start(opts).await?;
    let rcpt = "late@dst.test";
    submit(
        gw.submission_addr(),
        SENDER,
        &[rcpt],
        &simple_message(SENDER, rcpt, "s", rcpt),
    )
    .await?;
    backup
        .wait_for(deadline(20), |m| m.iter().any(|m| m.has_rcpt(rcpt)))
        .await?;
    gw.wait_queue_empty(deadline(10)).await?;
    ensure!(
        !backup.messages().iter().any(|m| m.is_bounce()),
        "a DSN went out"
    );
    let metrics = gw.metrics_text().await?;
    ensure!(
        metrics.lines().any(|l| l.starts_with(
            "relaygate_delivery_attempts_total{result=\"delivered\",transport=\"backup\"}"
        ) || l.starts_with(
            "relaygate_delivery_attempts_total{transport=\"backup\",result=\"delivered\"}"
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("relaygate_delivery_attempts_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// With `fallback`, the attempt the backup took is counted and logged under the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_attempt_is_counted_under_the_transport_that_took_it() -> Result<()> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let backup = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!(
            "[transports.primary]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {dead}\nno_starttls = true\n\n\
             [transports.backup]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
             [[routes]]\ntransport = \"primary\"\nfallback = [\"backup\"]\n",
            backup.port()
        ),
        first_retry: "1h".into(),
        ..Default::default()
    })
    .await?;
    send_and_expect(&gw, &backup, "fb@dst.test").await?;
    let metrics = gw.metrics_text().await?;
    let attempts: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("relaygate_delivery_attempts_total{"))
        .collect();
    ensure!(
        attempts.iter().any(|l| l.contains("transport=\"backup\"")
            && l.contains("delivered")
            && l.ends_with(" 1"))
            && !attempts.iter().any(|l| l.contains("transport=\"primary\"")
                && l.contains("delivered")
                && !l.ends_with(" 0")),
        "{attempts:?}"
    );
    Ok(())
}
