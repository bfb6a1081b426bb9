//! A small HTTP client for the admin API of a running gateway, and the `queue`
//! commands built on it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::app::{ready_path, Ready};
use crate::config::Config;

/// Where the admin API is and how to authenticate.
pub struct AdminTarget {
    pub addr: String,
    pub token: Option<String>,
}

/// Finds the admin API: `--admin URL` wins; else the running gateway's `ready.json`
/// under the config's data_dir; else the configured `admin.listen`.
pub fn admin_target(config_path: &Path, admin: Option<&str>) -> anyhow::Result<AdminTarget> {
    let config = Config::load(config_path).ok();
    let token = match &config {
        Some(c) if !c.admin.token_file.is_empty() => Some(
            std::fs::read_to_string(&c.admin.token_file)
                .with_context(|| format!("reading admin.token_file {}", c.admin.token_file))?
                .trim()
                .to_string(),
        ),
        _ => None,
    };
    if let Some(url) = admin {
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        return Ok(AdminTarget { addr, token });
    }
    let config = config.ok_or_else(|| {
        anyhow!(
            "cannot load {}; pass --admin http://HOST:PORT",
            config_path.display()
        )
    })?;
    if let Ok(text) = std::fs::read(ready_path(&config.data_dir)) {
        if let Ok(ready) = serde_json::from_slice::<Ready>(&text) {
            if let Some(a) = ready.admin {
                return Ok(AdminTarget {
                    addr: a.to_string(),
                    token,
                });
            }
        }
    }
    if config.admin.listen.is_empty() {
        bail!("the admin API is disabled (admin.listen is empty)");
    }
    Ok(AdminTarget {
        addr: config.admin.listen.clone(),
        token,
    })
}

/// A plain HTTP/1.0 request to the admin API; returns status and body.
pub fn http(
    target: &AdminTarget,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(&target.addr).with_context(|| {
        format!(
            "connecting to the admin API at {} (is the gateway running?)",
            target.addr
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n",
        target.addr
    );
    if let Some(t) = &target.token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    stream.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from {}", target.addr))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line from {}", target.addr))?;
    Ok((status, resp[split + 4..].to_vec()))
}

/// `relaygate queue list`.
/// Percent-encodes a query value (RFC 3986 unreserved characters pass as they are).
pub fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `relaygate queue list`: `query` is the API's filter and paging string.
pub fn queue_list(target: &AdminTarget, as_json: bool, query: &str) -> anyhow::Result<()> {
    let (status, body) = http(target, "GET", &format!("/api/queue?{query}"), None)?;
    if status != 200 {
        bail!(
            "admin API answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let v: Value = serde_json::from_slice(&body).context("admin API sent invalid JSON")?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let empty = Vec::new();
    let messages = v["messages"].as_array().unwrap_or(&empty);
    let total = v["total"].as_u64().unwrap_or(0);
    let offset = v["offset"].as_u64().unwrap_or(0);
    if messages.is_empty() {
        if total == 0 {
            outln!("no message matches");
        } else {
            outln!("{total} message(s) match; none after --offset {offset}");
        }
        return Ok(());
    }
    for m in messages {
        let held = if m["held"].as_bool() == Some(true) {
            " HELD"
        } else {
            ""
        };
        outln!(
            "{}  {}  {} bytes  from <{}>{}",
            m["id"].as_str().unwrap_or("?"),
            m["received"].as_str().unwrap_or("?"),
            m["size"],
            m["from"].as_str().unwrap_or(""),
            held
        );
        for r in m["rcpts"].as_array().unwrap_or(&empty) {
            outln!(
                "    <{}> {} attempts={} next={} transport={} last={}",
                r["address"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
                r["attempts"],
                r["next_attempt"].as_str().unwrap_or("-"),
                r["transport"].as_str().unwrap_or("-"),
                r["last_reply"].as_str().unwrap_or("-"),
            );
        }
    }
    let shown = messages.len() as u64;
    if offset > 0 || offset + shown < total {
        outln!(
            "-- messages {}-{} of {total}{}",
            offset + 1,
            offset + shown,
            if offset + shown < total {
                format!(" (--offset {} for more)", offset + shown)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Sends a request and returns the JSON answer, or the API's error message.
pub fn call(
    target: &AdminTarget,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let (status, bytes) = http(target, method, path, body)?;
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).trim().to_string()));
    if !(200..300).contains(&status) {
        let msg = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        bail!("admin API answered {status}: {msg}");
    }
    Ok(v)
}

/// `relaygate queue show ID`.
pub fn queue_show(target: &AdminTarget, id: &str, as_json: bool) -> anyhow::Result<()> {
    let m = call(target, "GET", &format!("/api/queue/{id}"), None)?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    outln!("id:        {}", m["id"].as_str().unwrap_or("?"));
    outln!("from:      <{}>", m["from"].as_str().unwrap_or(""));
    outln!("received:  {}", m["received"].as_str().unwrap_or("?"));
    outln!("size:      {} bytes", m["size"]);
    outln!("client:    {}", m["client"].as_str().unwrap_or("-"));
    outln!("account:   {}", m["account"].as_str().unwrap_or("-"));
    outln!("held:      {}", m["held"]);
    if let Some(t) = m["transport_override"].as_str() {
        outln!("transport: {t} (forced)");
    }
    let empty = Vec::new();
    for r in m["rcpts"].as_array().unwrap_or(&empty) {
        outln!(
            "<{}> {} attempts={} next={}",
            r["address"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["attempts"],
            r["next_attempt"].as_str().unwrap_or("-")
        );
        for a in r["history"].as_array().unwrap_or(&empty) {
            // The result's kind and the command it answered, from the recorded fields.
            let what = match (a["reason"].as_str(), a["stage"].as_str()) {
                (Some(reason), Some(stage)) => format!(" [{reason} at {stage}]"),
                (Some(reason), None) => format!(" [{reason}]"),
                (None, _) => String::new(),
            };
            let via = a["via"]
                .as_str()
                .map(|v| format!(" via={v}"))
                .unwrap_or_default();
            outln!(
                "    {}  transport={} remote={}{via} tls={}  {}{what}",
                a["at"].as_str().unwrap_or("?"),
                a["transport"].as_str().unwrap_or("-"),
                a["remote"].as_str().unwrap_or("-"),
                a["tls"].as_str().unwrap_or("-"),
                a["reply"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// Which messages a bulk command names.
pub fn bulk_body(all: bool, domain: Option<&str>, account: Option<&str>) -> anyhow::Result<Value> {
    match (all, domain, account) {
        (true, None, None) => Ok(serde_json::json!({ "all": true })),
        (false, Some(d), None) => Ok(serde_json::json!({ "domain": d })),
        (false, None, Some(a)) => Ok(serde_json::json!({ "account": a })),
        _ => bail!("give a message ID, or exactly one of --all, --domain, --account"),
    }
}

/// `queue retry|hold|release` for one id or a bulk selector; prints how many recipients.
pub fn queue_action(
    target: &AdminTarget,
    action: &str,
    id: Option<&str>,
    bulk: Option<Value>,
) -> anyhow::Result<()> {
    let v = match (id, bulk) {
        (Some(id), None) => call(
            target,
            "POST",
            &format!("/api/queue/{id}/{action}"),
            Some(&serde_json::json!({})),
        )?,
        (None, Some(body)) => call(target, "POST", &format!("/api/queue/{action}"), Some(&body))?,
        _ => bail!("give a message ID, or one of --all, --domain, --account"),
    };
    outln!("{action}: {} recipient(s)", v["recipients"]);
    let held = v["held"].as_u64().unwrap_or(0);
    if held > 0 {
        let by: Vec<&str> = v["held_by"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        outln!(
            "{held} recipient(s) not retried: held ({}); `relaygate queue release` first",
            by.join(", ")
        );
    }
    Ok(())
}
