//! `relaygate check-config`: unknown keys and dangling transport references are
//! reported with file, key and line; the shipped configs are valid.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::support::gateway::{config_text, run_relaygate, sink_route_toml, GatewayOptions};
use crate::support::{mentions_line, temp_dir, toml_files};

fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A valid config (as the gateway tests write it) with a transport "sink".
fn base_config(dir: &Path) -> String {
    let opts = GatewayOptions {
        extra_toml: sink_route_toml(2525),
        ..Default::default()
    };
    config_text(&opts, &dir.join("data"))
}

/// Inserts `line` so that it becomes line `n` (1-based) of `text`.
fn insert_line(text: &str, n: usize, line: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(n - 1, line);
    lines.join("\n") + "\n"
}

async fn check(path: &Path, cwd: &Path) -> Result<crate::support::gateway::CliOutput> {
    let path = path.to_string_lossy();
    run_relaygate(&["check-config", "-c", &path], cwd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_config_passes() -> Result<()> {
    let dir = temp_dir("relaygate-cfg-")?;
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, base_config(dir.path()))?;
    let out = check(&path, dir.path()).await?;
    ensure!(out.code == Some(0), "a valid config was refused: {out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_names_key_and_line() -> Result<()> {
    let dir = temp_dir("relaygate-cfg-")?;
    let base = base_config(dir.path());
    // A top-level key, and a key inside [queue] (the line after "[queue]").
    let queue_line = base
        .lines()
        .position(|l| l == "[queue]")
        .context("no [queue] table")?
        + 2;
    let cases = [
        ("top.toml", 3, "colour = \"blue\"", "colour"),
        (
            "queue.toml",
            queue_line,
            "retry_forever = true",
            "retry_forever",
        ),
    ];
    for (name, line, text, key) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, insert_line(&base, line, text))?;
        let out = check(&path, dir.path()).await?;
        ensure!(
            out.code == Some(1),
            "{name}: unknown key {key:?} must exit 1: {out}"
        );
        ensure!(
            out.stderr.contains(key),
            "{name}: stderr does not name {key:?}: {out}"
        );
        ensure!(
            mentions_line(&out.stderr, line),
            "{name}: stderr does not say \"line {line}\": {out}"
        );
        ensure!(
            out.stderr.contains(name),
            "{name}: stderr does not name the file: {out}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_to_missing_transport_names_it_and_line() -> Result<()> {
    let dir = temp_dir("relaygate-cfg-")?;
    let mut text = base_config(dir.path());
    let routes_line = text.lines().count() + 2;
    text.push_str("\n[[routes]]\nto_domain = [\"example.net\"]\ntransport = \"nowhere\"\n");
    let transport_line = routes_line + 2;
    let path = dir.path().join("dangling.toml");
    std::fs::write(&path, &text)?;
    let out = check(&path, dir.path()).await?;
    ensure!(
        out.code == Some(1),
        "a route to a missing transport must exit 1: {out}"
    );
    ensure!(
        out.stderr.contains("nowhere"),
        "stderr does not name the transport: {out}"
    );
    // Either the [[routes]] header or the `transport =` line is a fair answer.
    ensure!(
        mentions_line(&out.stderr, routes_line) || mentions_line(&out.stderr, transport_line),
        "stderr names neither line {routes_line} nor line {transport_line}: {out}"
    );
    Ok(())
}

/// The embedded default, both explicitly and as the `-c` default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_is_valid() -> Result<()> {
    let root = project_dir();
    let out = run_relaygate(&["check-config", "-c", "config/relaygate.toml"], &root).await?;
    ensure!(out.code == Some(0), "config/relaygate.toml: {out}");
    let out = run_relaygate(&["check-config"], &root).await?;
    ensure!(out.code == Some(0), "check-config without -c: {out}");
    Ok(())
}

/// Every config shipped under config/ (examples included) is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_config_is_valid() -> Result<()> {
    let root = project_dir();
    let files = toml_files(&root.join("config"))?;
    ensure!(
        files.iter().any(|f| f.ends_with("relaygate.toml")),
        "config/relaygate.toml is missing: {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        // check-config checks what serve would, secrets included: the examples name
        // theirs in environment variables, given here.
        let path = file.to_string_lossy();
        let out = tokio::process::Command::new(crate::support::gateway::binary())
            .args(["check-config", "-c", &path])
            .current_dir(&root)
            .env("PROVIDER_PASSWORD", "x")
            .env("BULK_PASSWORD", "x")
            .output()
            .await?;
        let out = crate::support::gateway::CliOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.code != Some(0) {
            failures.push(format!("{}: {out}", file.display()));
        }
    }
    ensure!(
        failures.is_empty(),
        "invalid shipped configs:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// A Redis password never shows in check-config's output, however the URL is written
/// (unencoded `/`, `?`, `#`, `@` in the password included) and whatever fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_is_never_printed() -> Result<()> {
    let dir = temp_dir("relaygate-cfg-")?;
    let path = dir.path().join("redis.toml");
    for pw in [
        "Pw0rdXyz",
        "Pw0/rdXyz",
        "Pw0?rdXyz",
        "Pw0#rdXyz",
        "Pw0@rdXyz",
    ] {
        for url in [
            format!("redis://app:{pw}@127.0.0.1:1/0"),
            format!("rediss://:{pw}@127.0.0.1:1/0"),
            format!("redis-cluster://app:{pw}@127.0.0.1:1,127.0.0.1:2/"),
            format!("redis://app:{pw}@bad host/0"),
        ] {
            let text = format!("[store]\nkind = \"redis\"\nredis_url = \"{url}\"\n");
            std::fs::write(&path, text)?;
            let out = check(&path, dir.path()).await?;
            ensure!(
                out.code == Some(1),
                "{url}: an unreachable store passed: {out}"
            );
            ensure!(
                !out.stdout.contains(pw)
                    && !out.stderr.contains(pw)
                    && !out.stderr.contains("rdXyz"),
                "{url}: the password was printed: {out}"
            );
            ensure!(out.stderr.contains("***"), "{url}: {out}");
        }
    }
    Ok(())
}

/// The broken configs of issue 16: a duration with a bad unit, a string where a list is
/// expected, `host` with a port, a password file that does not exist. check-config
/// reports all four at once, each with its line and key, prints no OK, and exits 1
/// (before: the first error only, some without their key, and OK for the last two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_at_once_with_its_key() -> Result<()> {
    let dir = crate::support::temp_dir("relaygate-check-")?;
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"x\"\ndata_dir = {}\n[queue]\nfirst_retry = \"5 minutes\"\n\
             [submission]\ntrusted_networks = \"127.0.0.1\"\n[transports.p]\nkind = \"submission\"\n\
             host = \"h.example:587\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
            crate::support::gateway::toml_str(&dir.path().join("data").to_string_lossy())
        ),
    )?;
    let out = check(&path, dir.path()).await?;
    ensure!(out.code == Some(1), "{out}");
    ensure!(!out.stdout.contains("OK"), "{out}");
    for (line, key) in [
        ("line 4", "queue.first_retry"),
        ("line 6", "submission.trusted_networks"),
        ("line 7", "transports.p"),
        ("line 11", "transports.p.password_file"),
    ] {
        ensure!(
            out.stderr
                .lines()
                .any(|l| l.contains(line) && l.contains(&format!("key `{key}`"))),
            "no error at {line} for {key}:\n{out}"
        );
    }
    ensure!(
        out.stderr.contains("h.example:587") && out.stderr.contains("5 minutes"),
        "{out}"
    );
    ensure!(
        !dir.path().join("data").exists(),
        "check-config created the data dir"
    );
    Ok(())
}

/// `routes explain --from bad` is refused instead of being explained as the null sender
/// (issue 16); `<>` is the null sender.
#[tokio::test]
async fn explain_refuses_a_sender_that_is_not_an_address() -> Result<()> {
    let root = project_dir();
    let config = root.join("config/relaygate.toml");
    let config = config.to_string_lossy();
    let bad = run_relaygate(
        &[
            "routes", "explain", "--from", "bad", "--to", "x@y.test", "-c", &config,
        ],
        &root,
    )
    .await?;
    ensure!(
        bad.code == Some(1) && bad.stderr.contains("not an address"),
        "{bad}"
    );
    let null = run_relaygate(
        &[
            "routes", "explain", "--from", "<>", "--to", "x@y.test", "-c", &config,
        ],
        &root,
    )
    .await?;
    ensure!(
        null.code == Some(0) && null.stdout.contains("(null sender)"),
        "{null}"
    );
    Ok(())
}
