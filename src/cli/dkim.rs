//! `relaygate dkim keygen DOMAIN SELECTOR [--algorithm ed25519|rsa] [--out FILE]`: writes
//! a new DKIM private key (mode 0600, never over an existing file) and prints the DNS
//! TXT record to publish and the `[[dkim.keys]]` entry to add.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;

use crate::dkim::{keygen, Algorithm};

#[derive(Subcommand)]
pub enum DkimAction {
    /// Write a new private key and print the TXT record that publishes it.
    Keygen {
        /// The header From domain it signs for (`d=`).
        domain: String,
        /// The selector (`s=`): the record goes at SELECTOR._domainkey.DOMAIN.
        selector: String,
        /// `ed25519` (small records, RFC 8463) or `rsa` (2048 bits, understood by every
        /// verifier). Publishing both, under two selectors, gives two signatures.
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
        /// Where to write the key (default: ./SELECTOR.DOMAIN.pem).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(action: DkimAction) -> anyhow::Result<()> {
    match action {
        DkimAction::Keygen {
            domain,
            selector,
            algorithm,
            out,
        } => {
            let algorithm = Algorithm::parse(&algorithm)
                .ok_or_else(|| anyhow!("--algorithm {algorithm:?}: ed25519 or rsa"))?;
            let domain = crate::address::normalize_domain(&domain)
                .map_err(|e| anyhow!("domain {domain:?}: {e}"))?;
            if selector.is_empty()
                || !selector
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                bail!("selector {selector:?}: letters, digits and hyphens only");
            }
            let path = out.unwrap_or_else(|| PathBuf::from(format!("{selector}.{domain}.pem")));
            let pem = keygen::generate(algorithm).map_err(|e| anyhow!(e))?;
            let line = keygen::zone_line(&domain, &selector, &pem).map_err(|e| anyhow!(e))?;
            write_new(&path, pem.as_bytes())?;
            outln!("key written to {} (mode 0600)", path.display());
            outln!();
            outln!("Publish this record in the DNS of {domain}:");
            outln!("{line}");
            outln!();
            outln!("and add to the config:");
            outln!("[[dkim.keys]]");
            outln!("domain = \"{domain}\"");
            outln!("selector = \"{selector}\"");
            outln!("key_file = \"{}\"", path.display());
            outln!("algorithm = \"{}\"", algorithm.as_str());
            outln!();
            outln!("`relaygate dnscheck {domain}` tells when the record is published.");
            Ok(())
        }
    }
}

/// Creates `path` with mode 0600; an existing file is never overwritten.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
