//! Test certificates: a CA and a server certificate signed by it, made with rcgen.

use std::{io::Write, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use relaygate_transports::TlsRoots;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::NamedTempFile;

/// A CA, a server config with a certificate for one host name signed by it, and the CA as
/// a PEM file.
pub struct TestPki {
    pub server_config: Arc<ServerConfig>,
    /// The same certificate, TLS 1.2 only (no RFC 9266 tls-exporter binding).
    pub server_config_tls12: Arc<ServerConfig>,
    pub ca_file: NamedTempFile,
}

impl TestPki {
    pub fn new(host: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "relaygate test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec![host.to_string()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, host);
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &*ca).unwrap();

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server_config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key.clone_key())
                .unwrap();
        let server_config_tls12 =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .unwrap();

        let mut ca_file = NamedTempFile::new().unwrap();
        ca_file.write_all(ca.pem().as_bytes()).unwrap();
        TestPki {
            server_config: Arc::new(server_config),
            server_config_tls12: Arc::new(server_config_tls12),
            ca_file,
        }
    }

    /// webpki-roots plus this CA.
    pub fn roots(&self) -> TlsRoots {
        TlsRoots::load(Some(self.ca_file.path())).unwrap()
    }
}
