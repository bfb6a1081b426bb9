//! `relaygate sendmail`: the sendmail-compatible front end, with its own config file.

use std::path::Path;
use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use tokio::io::AsyncWriteExt;

use crate::support::deadline;
use crate::support::gateway::{binary, toml_str, Gateway, GatewayOptions};
use crate::support::sink::Sink;
use crate::support::temp_dir;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program args` with `input` on stdin, HOME in `home` and the given sendmail config.
async fn run(
    program: &Path,
    args: &[&str],
    input: &[u8],
    home: &Path,
    config: &Path,
) -> Result<Run> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("HOME", home)
        .env("RELAYGATE_SENDMAIL_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).await?;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    })
}

#[tokio::test]
async fn dash_t_delivers_to_to_and_bcc_without_the_bcc_header() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let dir = temp_dir("relaygate-sendmail-")?;
    let cfg = dir.path().join("sendmail.toml");
    std::fs::write(
        &cfg,
        format!(
            "server = \"127.0.0.1\"\nport = {}\n",
            gw.submission_addr().port()
        ),
    )?;
    let r = run(
        Path::new(binary()),
        &["sendmail", "-t", "-oi", "-f", "app@src.test"],
        b"To: a@b\nBcc: c@d\nSubject: hi\n\nhi\n",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(r.code == Some(0), "sendmail failed: {}", r.stderr);
    let msgs = sink.wait_for(deadline(30), |m| !m.is_empty()).await?;
    ensure!(msgs.len() == 1, "{} messages", msgs.len());
    let m = &msgs[0];
    ensure!(
        m.has_rcpt("a@b") && m.has_rcpt("c@d"),
        "recipients {:?}",
        m.rcpts
    );
    ensure!(m.mail_from == "app@src.test", "sender {}", m.mail_from);
    ensure!(
        !m.text().to_ascii_lowercase().contains("bcc:"),
        "Bcc header kept:\n{}",
        m.text()
    );
    ensure!(
        m.header("From").is_some_and(|f| f.contains("app@src.test")),
        "no From added"
    );

    // Invoked as `sendmail` through a symlink, recipients on the command line.
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(binary(), &link)?;
    let r = run(
        &link,
        &["-i", "x@y.test"],
        b"Subject: via link\n\nbody\n",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(
        r.code == Some(0),
        "sendmail via symlink failed: {}",
        r.stderr
    );
    sink.wait_for(deadline(30), |m| m.iter().any(|x| x.has_rcpt("x@y.test")))
        .await?;
    Ok(())
}

#[tokio::test]
async fn gateway_down_exits_75_and_saves_the_message() -> Result<()> {
    let dir = temp_dir("relaygate-sendmail-")?;
    // A port nobody listens on: bind one and drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = dir.path().join("sendmail.toml");
    std::fs::write(&cfg, format!("server = \"127.0.0.1\"\nport = {port}\n"))?;
    let r = run(
        Path::new(binary()),
        &["sendmail", "-t"],
        b"To: a@b\nSubject: keep me\n\nprecious\n",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(
        r.code == Some(75),
        "expected EX_TEMPFAIL (75): {:?} {}",
        r.code,
        r.stderr
    );
    let path = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("sendmail: message saved to "))
        .and_then(|l| l.split(" (").next())
        .context(format!("no saved path in: {}", r.stderr))?;
    let saved = std::fs::read_to_string(path.trim())?;
    ensure!(
        saved.contains("precious") && saved.contains("Subject: keep me"),
        "{saved}"
    );

    // -bp lists it with its envelope; so does `mailq` (the binary under that name).
    let bp = run(
        Path::new(binary()),
        &["sendmail", "-bp"],
        b"",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(bp.code == Some(0), "{}", bp.stderr);
    ensure!(
        bp.stdout.contains("1 message(s) saved") && bp.stdout.contains("<a@b>"),
        "{}",
        bp.stdout
    );
    let mailq = dir.path().join("mailq");
    std::os::unix::fs::symlink(binary(), &mailq)?;
    let q = run(&mailq, &[], b"", dir.path(), &cfg).await?;
    ensure!(
        q.code == Some(0) && q.stdout == bp.stdout,
        "mailq: {}{}",
        q.stdout,
        q.stderr
    );

    // The gateway is up now: -q sends it and forgets it.
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    std::fs::write(
        &cfg,
        format!(
            "server = \"127.0.0.1\"\nport = {}\n",
            gw.submission_addr().port()
        ),
    )?;
    let sent = run(
        Path::new(binary()),
        &["sendmail", "-q"],
        b"",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(sent.code == Some(0), "sendmail -q: {}", sent.stderr);
    let msgs = sink
        .wait_for(deadline(30), |m| m.iter().any(|m| m.has_rcpt("a@b")))
        .await?;
    ensure!(
        msgs.iter().any(|m| m.text().contains("precious")),
        "{}",
        sink.summary()
    );
    let bp = run(
        Path::new(binary()),
        &["sendmail", "-bp"],
        b"",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(bp.stdout.contains("mail queue is empty"), "{}", bp.stdout);
    Ok(())
}

/// `from` in the config is the envelope sender without `-f` (cron mail); `-f` that is
/// not an address is refused (64) instead of becoming another sender; `--help` works.
#[tokio::test]
async fn config_from_bad_dash_f_and_help() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let dir = temp_dir("relaygate-sendmail-")?;
    let cfg = dir.path().join("sendmail.toml");
    std::fs::write(
        &cfg,
        format!(
            "server = \"127.0.0.1\"\nport = {}\nfrom = \"cron@example.org\"\n",
            gw.submission_addr().port()
        ),
    )?;
    let r = run(
        Path::new(binary()),
        &["sendmail", "x@dst.test"],
        b"Subject: cron\n\nran\n",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(r.code == Some(0), "{}", r.stderr);
    let msgs = sink.wait_for(deadline(30), |m| !m.is_empty()).await?;
    ensure!(
        msgs[0].mail_from == "cron@example.org",
        "sender {}",
        msgs[0].mail_from
    );
    ensure!(
        msgs[0].text().contains("From: <cron@example.org>"),
        "{}",
        msgs[0].text()
    );

    let bad = run(
        Path::new(binary()),
        &["sendmail", "-f", "bad", "x@dst.test"],
        b"Subject: x\n\nx\n",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(
        bad.code == Some(64) && bad.stderr.contains("not an address"),
        "{:?} {}",
        bad.code,
        bad.stderr
    );

    let help = run(
        Path::new(binary()),
        &["sendmail", "--help"],
        b"",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(
        help.code == Some(0) && help.stdout.contains("usage: sendmail"),
        "{}",
        help.stdout
    );
    Ok(())
}

#[tokio::test]
async fn authenticates_with_its_own_config() -> Result<()> {
    let sink = Sink::start().await?;
    let dir = temp_dir("relaygate-sendmail-")?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n")?;
    let mut opts = GatewayOptions::relay_to(sink.port());
    opts.trusted_networks = Some(vec!["192.0.2.0/24".into()]);
    opts.extra_toml.push_str(&format!(
        "\n[accounts.app]\npassword_file = {}\n",
        toml_str(&pw.to_string_lossy())
    ));
    let gw = Gateway::start(opts).await?;
    let cfg = dir.path().join("sendmail.toml");
    std::fs::write(
        &cfg,
        format!(
            "server = \"127.0.0.1\"\nport = {}\nusername = \"app\"\npassword_file = {}\nmechanism = \"SCRAM-SHA-256\"\n",
            gw.submission_addr().port(),
            toml_str(&pw.to_string_lossy())
        ),
    )?;
    // Our client refuses to send credentials without TLS unless told; loopback servers
    // without TLS are the plain-text case the gateway accepts for local apps.
    let r = run(
        Path::new(binary()),
        &["sendmail", "z@dst.test"],
        b"Subject: auth\n\nx\n",
        dir.path(),
        &cfg,
    )
    .await?;
    ensure!(r.code == Some(0), "sendmail with AUTH failed: {}", r.stderr);
    sink.wait_for(deadline(30), |m| m.iter().any(|x| x.has_rcpt("z@dst.test")))
        .await?;
    Ok(())
}

#[tokio::test]
async fn dash_bs_speaks_smtp_on_stdin_and_stdout() -> Result<()> {
    let sink = Sink::start().await?;
    let gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let dir = temp_dir("relaygate-sendmail-")?;
    let cfg = dir.path().join("sendmail.toml");
    std::fs::write(&cfg, format!("port = {}\n", gw.submission_addr().port()))?;
    let session = b"EHLO app.test\r\nMAIL FROM:<bs@src.test>\r\nRCPT TO:<bs@dst.test>\r\nDATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n";
    let mut child = tokio::process::Command::new(binary())
        .args(["sendmail", "-bs"])
        .env("HOME", dir.path())
        .env("RELAYGATE_SENDMAIL_CONFIG", &cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(session).await?;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "sendmail -bs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(stdout.starts_with("220 "), "no greeting: {stdout}");
    ensure!(stdout.contains("250 2.0.0 OK queued as"), "{stdout}");
    ensure!(stdout.contains("221 "), "{stdout}");
    sink.wait_for(deadline(30), |m| {
        m.iter().any(|x| x.has_rcpt("bs@dst.test"))
    })
    .await?;
    Ok(())
}
