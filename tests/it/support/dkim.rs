//! DKIM in tests: keys made by `relaygate dkim keygen` and published in the test DNS
//! zone, and verification by dkimpy (Debian's `python3-dkim`, through
//! `dkim_verify.py`), an implementation independent of relaygate.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use relaygate_transports::testkit::TestDns;
use serde_json::Value;

use super::gateway::{run_relaygate, toml_str};

/// One key: its file and the `[[dkim.keys]]` entry for it.
pub struct KeyFile {
    pub path: PathBuf,
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
}

impl KeyFile {
    pub fn toml(&self) -> String {
        format!(
            "[[dkim.keys]]\ndomain = {}\nselector = {}\nkey_file = {}\nalgorithm = {}\n\n",
            toml_str(&self.domain),
            toml_str(&self.selector),
            toml_str(&self.path.to_string_lossy()),
            toml_str(&self.algorithm)
        )
    }
}

/// Runs `relaygate dkim keygen` in `dir` and publishes the record it prints in `dns`
/// (unless `publish` is false).
pub async fn keygen(
    dir: &Path,
    dns: &TestDns,
    domain: &str,
    selector: &str,
    algorithm: &str,
    publish: bool,
) -> Result<KeyFile> {
    let out = run_relaygate(
        &["dkim", "keygen", domain, selector, "--algorithm", algorithm],
        dir,
    )
    .await?;
    ensure!(out.code == Some(0), "dkim keygen failed:\n{out}");
    let path = dir.join(format!("{selector}.{domain}.pem"));
    let meta = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600,
        "key mode {:o}",
        meta.permissions().mode()
    );
    let (name, record) = record_of(&out.stdout)?;
    ensure!(
        name == format!("{selector}._domainkey.{domain}."),
        "record name {name}"
    );
    if publish {
        dns.add_txt(name.trim_end_matches('.'), &record);
    }
    let algorithm = if algorithm == "rsa" {
        "rsa-sha256"
    } else {
        "ed25519-sha256"
    };
    Ok(KeyFile {
        path,
        domain: domain.into(),
        selector: selector.into(),
        algorithm: algorithm.into(),
    })
}

/// The owner and the joined strings of the `... IN TXT ( "..." "..." )` line.
pub fn record_of(stdout: &str) -> Result<(String, String)> {
    let line = stdout
        .lines()
        .find(|l| l.contains(" IN TXT "))
        .context("no TXT line printed")?;
    let (name, rest) = line.split_once(" IN TXT ").context("TXT line")?;
    let strings: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
    if strings.is_empty() {
        bail!("no strings in {line}");
    }
    Ok((name.to_string(), strings.concat()))
}

/// What dkimpy says of each signature: (d, a, ok).
pub async fn verify(message: &[u8], dns: &TestDns) -> Result<Vec<(String, String, bool)>> {
    use tokio::io::AsyncWriteExt;
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/dkim_verify.py"
    );
    let mut child = tokio::process::Command::new(python)
        .args([script, &dns.addr().port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running dkim_verify.py (needs python3-dkim, python3-nacl)")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(message).await?;
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .context("dkim_verify.py timed out")??;
    ensure!(
        out.status.success(),
        "dkim_verify.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["signatures"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["d"].as_str().unwrap_or("").to_string(),
                s["a"].as_str().unwrap_or("").to_string(),
                s["ok"].as_bool().unwrap_or(false),
            )
        })
        .collect())
}
