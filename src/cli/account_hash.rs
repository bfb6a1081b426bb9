//! `relaygate account hash`: turns a password into the verifiers an `[accounts.NAME]`
//! section (or the Redis store) keeps, so the password itself need not be stored.

use std::io::Read;

use anyhow::{bail, Context};

use crate::accounts::AccountRecord;

/// Reads the password (first line of `password_file`, or of standard input) and prints
/// TOML lines for `[accounts.NAME]`.
pub fn run(password_file: Option<&str>) -> anyhow::Result<()> {
    let text = match password_file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from standard input")?;
            s
        }
    };
    let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if password.is_empty() {
        bail!("empty password");
    }
    let r = AccountRecord::from_password(password).map_err(|e| anyhow::anyhow!(e))?;
    for (key, value) in [
        ("scram_sha256", &r.scram_sha256),
        ("scram_sha1", &r.scram_sha1),
        ("cram_md5", &r.cram_md5),
    ] {
        if let Some(v) = value {
            outln!("{key} = \"{v}\"");
        }
    }
    Ok(())
}
