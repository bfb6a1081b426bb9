//! DSNs for international mail (RFC 6533, issue 13): a UTF-8 recipient that bounces
//! gets a `message/global-delivery-status` report with a `utf-8` address type, sent with
//! SMTPUTF8; when the sender's path lacks SMTPUTF8 the report arrives downgraded to the
//! ASCII form. Landed main sent `Final-Recipient: rfc822;` with the raw UTF-8 address in
//! a `message/delivery-status` part, without SMTPUTF8.

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::deadline;
use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::Sink;

const SENDER: &str = "sender@src.test";
const RCPT: &str = "用户+550@dst.test";

/// Recipients at dst.test go to `dst`, everything else (the DSN to src.test) to `src`.
async fn gateway(dst: &Sink, src: &Sink) -> Result<Gateway> {
    let opts = GatewayOptions {
        extra_toml: format!(
        "[transports.dst]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
         [transports.src]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nno_starttls = true\n\n\
         [[routes]]\nto_domain = [\"dst.test\"]\ntransport = \"dst\"\n\n\
         [[routes]]\ntransport = \"src\"\n",
            dst.port(),
            src.port()
        ),
        ..Default::default()
    };
    Gateway::start(opts).await
}

/// Submits a message with SMTPUTF8 to the UTF-8 recipient.
async fn submit_intl(gw: &Gateway) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(gw.submission_addr()).await?;
    let mut c = BufReader::new(stream);
    let mut line = String::new();
    let mut expect =
        async |c: &mut BufReader<tokio::net::TcpStream>, send: &str, code: &str| -> Result<()> {
            if !send.is_empty() {
                c.get_mut().write_all(send.as_bytes()).await?;
            }
            loop {
                line.clear();
                c.read_line(&mut line).await?;
                ensure!(line.starts_with(code), "{send:?}: {line}");
                if line.as_bytes().get(3) == Some(&b' ') {
                    return Ok(());
                }
            }
        };
    expect(&mut c, "", "220").await?;
    expect(&mut c, "EHLO app.test\r\n", "250").await?;
    expect(&mut c, &format!("MAIL FROM:<{SENDER}> SMTPUTF8\r\n"), "250").await?;
    expect(&mut c, &format!("RCPT TO:<{RCPT}>\r\n"), "250").await?;
    expect(&mut c, "DATA\r\n", "354").await?;
    let body = format!(
        "From: {SENDER}\r\nTo: {RCPT}\r\nSubject: 你好\r\nMessage-ID: <intl-1@src.test>\r\n\r\nhello\r\n.\r\n"
    );
    expect(&mut c, &body, "250").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn international_dsn_goes_with_smtputf8() -> Result<()> {
    let (dst, src) = (Sink::start().await?, Sink::start().await?);
    let gw = gateway(&dst, &src).await?;
    submit_intl(&gw).await?;
    let msgs = src.wait_for(deadline(30), |m| !m.is_empty()).await?;
    let dsn = msgs.first().context("dsn")?;
    ensure!(dsn.mail_from.is_empty(), "{}", dsn.mail_from);
    ensure!(
        dsn.mail_params.contains("SMTPUTF8"),
        "params: {}",
        dsn.mail_params
    );
    let text = dsn.text();
    ensure!(
        text.contains("Content-Type: message/global-delivery-status\r\n"),
        "{text}"
    );
    ensure!(
        text.contains(&format!("Final-Recipient: utf-8; {RCPT}\r\n")),
        "{text}"
    );
    ensure!(text.contains("Content-Type: message/global\r\n"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn international_dsn_is_downgraded_for_a_path_without_smtputf8() -> Result<()> {
    let (dst, src) = (Sink::start().await?, Sink::start().await?);
    src.set_smtputf8(false);
    let gw = gateway(&dst, &src).await?;
    submit_intl(&gw).await?;
    let msgs = src.wait_for(deadline(30), |m| !m.is_empty()).await?;
    let dsn = msgs.first().context("dsn")?;
    ensure!(
        !dsn.mail_params.contains("SMTPUTF8"),
        "params: {}",
        dsn.mail_params
    );
    let text = dsn.text();
    ensure!(
        text.contains("Content-Type: message/delivery-status\r\n"),
        "{text}"
    );
    ensure!(
        text.contains("Final-Recipient: utf-8; \\x{7528}\\x{6237}\\x{2B}550@dst.test\r\n"),
        "{text}"
    );
    ensure!(!text.contains("message/global"), "{text}");
    gw.wait_queue_empty(deadline(10)).await?;
    Ok(())
}
