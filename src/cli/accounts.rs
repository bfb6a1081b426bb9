//! `relaygate accounts list | set-password NAME | remove NAME`: accounts (SASL
//! identities of submitting applications) in the store named by `-c FILE`.
//!
//! `set-password` reads the password from `--password-file` or the first line of
//! standard input and stores only what the server side of SASL needs: SCRAM-SHA-256 and
//! SCRAM-SHA-1 verifiers (RFC 5803 form, fresh salts) and the CRAM-MD5 HMAC state. The
//! password itself is never stored, printed or logged.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;

use super::routes::{apply, block_on, header, load, open, report, warn_problems};
use crate::accounts::AccountRecord;
use crate::store::mutate::Mutation;

#[derive(Subcommand, Debug)]
pub enum AccountsAction {
    /// Account names, with the kinds of verifier stored (never their values).
    List,
    /// Set an account's password (stored as verifiers): from --password-file, else the
    /// first line of standard input.
    SetPassword {
        /// Account name.
        name: String,
        /// File whose first line is the password.
        #[arg(long = "password-file")]
        password_file: Option<PathBuf>,
    },
    /// Remove an account (its routes stay until removed).
    Remove {
        /// Account name.
        name: String,
    },
}

/// The first line of `reader`, without its line end.
fn first_line(reader: impl BufRead, what: &str) -> anyhow::Result<String> {
    let line = reader
        .lines()
        .next()
        .transpose()
        .with_context(|| format!("reading the password from {what}"))?
        .unwrap_or_default();
    let line = line.trim_end_matches('\r').to_string();
    if line.is_empty() {
        bail!("the password from {what} is empty");
    }
    Ok(line)
}

fn read_password(file: Option<&Path>) -> anyhow::Result<String> {
    match file {
        Some(path) => {
            let f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            first_line(std::io::BufReader::new(f), &path.display().to_string())
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("password (one line; it will be echoed): ");
            }
            first_line(std::io::stdin().lock(), "standard input")
        }
    }
}

pub fn run(config_path: &Path, action: AccountsAction) -> anyhow::Result<()> {
    let (config, store) = open(config_path)?;
    // The file store's accounts are the config's (their secrets are not read here).
    if matches!(action, AccountsAction::List) && config.store.kind == crate::config::StoreKind::File
    {
        outln!("store: {} (file)", config_path.display());
        if config.accounts.is_empty() {
            outln!("no accounts");
        }
        for (name, a) in &config.accounts {
            let secret = if !a.password_file.is_empty() {
                format!("password_file {}", a.password_file)
            } else if !a.password_env.is_empty() {
                format!("password_env {}", a.password_env)
            } else {
                "verifiers".to_string()
            };
            let senders = if a.allowed_senders.is_empty() {
                "any sender".to_string()
            } else {
                format!("senders {}", a.allowed_senders.join(", "))
            };
            let rate = if a.rate_limit.is_empty() {
                String::new()
            } else {
                format!("; rate {}", a.rate_limit.join(", "))
            };
            outln!(
                "{name} ({secret}; {senders}{rate}; {} route(s))",
                a.routes.len()
            );
        }
        return Ok(());
    }
    block_on(async move {
        match action {
            AccountsAction::List => {
                let loaded = load(&store).await?;
                outln!("{}", header(&store, &loaded));
                for (name, r) in &loaded.data.accounts {
                    let mut kinds = Vec::new();
                    if r.scram_sha256.is_some() {
                        kinds.push("SCRAM-SHA-256");
                    }
                    if r.scram_sha1.is_some() {
                        kinds.push("SCRAM-SHA-1");
                    }
                    if r.cram_md5.is_some() {
                        kinds.push("CRAM-MD5");
                    }
                    let routes = loaded
                        .data
                        .accounts_routes
                        .get(name)
                        .map(Vec::len)
                        .unwrap_or(0);
                    outln!("{name} ({}; {routes} route(s))", kinds.join(", "));
                }
                warn_problems(&loaded);
            }
            AccountsAction::SetPassword {
                name,
                password_file,
            } => {
                if name.is_empty() {
                    bail!("an account name must not be empty");
                }
                let password = read_password(password_file.as_deref())?;
                let record = AccountRecord::from_password(&password).map_err(|e| anyhow!(e))?;
                drop(password);
                let w = apply(
                    &store,
                    Mutation::SetAccount {
                        name: name.clone(),
                        record,
                    },
                )
                .await?;
                report(w, &format!("account {name}: verifiers stored"));
            }
            AccountsAction::Remove { name } => {
                let w = apply(&store, Mutation::RemoveAccount { name: name.clone() }).await?;
                report(w, &format!("account {name} removed"));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_only() {
        assert_eq!(first_line(&b"secret\r\nmore\n"[..], "x").unwrap(), "secret");
        assert!(first_line(&b"\n"[..], "x").is_err());
        assert!(first_line(&b""[..], "x").is_err());
    }
}
