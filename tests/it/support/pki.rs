//! A throw-away test PKI: one CA and one server certificate for `localhost` and
//! 127.0.0.1 (and any other names asked for, e.g. `mx.dst.test`) signed by it, as PEM
//! files (for the gateway's `tls.extra_ca_file`, `submission.tls_cert`/`tls_key`), as
//! rustls configs (for sinks and clients), and as DER (for TLSA records).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub struct Pki {
    /// Holds the PEM files; removed on drop.
    pub dir: tempfile::TempDir,
    /// The CA certificate (trust anchor).
    pub ca_pem: PathBuf,
    /// The server certificate (leaf only).
    pub cert_pem: PathBuf,
    /// The server certificate followed by the CA certificate.
    pub chain_pem: PathBuf,
    /// The server's PKCS#8 private key.
    pub key_pem: PathBuf,
    ca_der: CertificateDer<'static>,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    /// A new CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> Result<Self> {
        Self::for_names(&[])
    }

    /// A new CA and a server certificate for `localhost`, `127.0.0.1` and `names`.
    pub fn for_names(names: &[&str]) -> Result<Self> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "relaygate test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).context("CA cert")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().context("server key")?;
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        sans.extend(names.iter().map(|n| n.to_string()));
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).context("server cert")?;

        let dir = super::temp_dir("relaygate-pki-")?;
        let ca_pem = dir.path().join("ca.pem");
        let cert_pem = dir.path().join("cert.pem");
        let chain_pem = dir.path().join("chain.pem");
        let key_pem = dir.path().join("key.pem");
        std::fs::write(&ca_pem, ca_cert.pem())?;
        std::fs::write(&cert_pem, cert.pem())?;
        std::fs::write(&chain_pem, format!("{}{}", cert.pem(), ca_cert.pem()))?;
        std::fs::write(&key_pem, key.serialize_pem())?;
        Ok(Pki {
            dir,
            ca_pem,
            cert_pem,
            chain_pem,
            key_pem,
            ca_der: ca_cert.der().clone(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// A rustls server config presenting the server certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone(), self.ca_der.clone()], key)?;
        Ok(Arc::new(config))
    }

    /// A rustls client config that trusts only this CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The server certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The name the server certificate is valid for.
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from("localhost").expect("valid DNS name")
    }
}
