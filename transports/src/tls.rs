//! rustls client configurations for outbound SMTP.
//!
//! [`TlsRoots`] holds the trusted roots (webpki-roots plus the operator's
//! `tls.extra_ca_file`); [`verified_client_config`] builds a PKIX-verifying config from
//! them. The [`danger`] module has the config that accepts any certificate, for
//! smarthosts configured with `verify_certificates = false`. Every config uses the ring
//! provider explicitly, never the process-wide default.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{crypto::CryptoProvider, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};

/// What we know about the TLS of a session, for logs and delivery reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsInfo {
    /// Plaintext session.
    None,
    /// TLS without certificate verification.
    Unverified {
        /// Negotiated protocol version, e.g. "TLSv1.3".
        version: String,
    },
    /// TLS with a PKIX-verified certificate for the host name.
    Verified {
        /// Negotiated protocol version, e.g. "TLSv1.3".
        version: String,
    },
}

impl TlsInfo {
    /// Short label for logs and metrics: "none", "unverified" or "verified".
    pub fn mode(&self) -> &'static str {
        match self {
            TlsInfo::None => "none",
            TlsInfo::Unverified { .. } => "unverified",
            TlsInfo::Verified { .. } => "verified",
        }
    }
}

/// Loading the trusted roots failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read.
    #[error("reading CA file {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA file is not valid PEM.
    #[error("parsing CA file {path}: {reason}", path = path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The CA file has no CERTIFICATE block.
    #[error("CA file {path} contains no PEM certificate", path = path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file is not usable as a trust anchor.
    #[error("CA file {path}: certificate #{index} is unusable: {reason}", path = path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What rustls said.
        reason: String,
    },
}

/// Trusted root certificates for PKIX verification.
#[derive(Debug, Clone)]
pub struct TlsRoots {
    store: Arc<RootCertStore>,
    extra: usize,
}

impl TlsRoots {
    /// webpki-roots plus every certificate of `extra_ca_file` (PEM). `None` or an empty
    /// path means no extra roots.
    pub fn load(extra_ca_file: Option<&Path>) -> Result<TlsRoots, TlsSetupError> {
        let mut store = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut extra = 0;
        if let Some(path) = extra_ca_file.filter(|p| !p.as_os_str().is_empty()) {
            let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
                let cert = cert.map_err(|e| TlsSetupError::Pem {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                store.add(cert).map_err(|e| TlsSetupError::BadCertificate {
                    path: path.to_path_buf(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
                extra += 1;
            }
            if extra == 0 {
                return Err(TlsSetupError::NoCertificates {
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(TlsRoots {
            store: Arc::new(store),
            extra,
        })
    }

    /// The root store, for other PKIX users (MTA-STS fetches, DANE fallbacks).
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    /// How many roots came from the extra CA file.
    pub fn extra_count(&self) -> usize {
        self.extra
    }
}

/// The ring provider, always passed explicitly.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config that verifies the server certificate against `roots` and the server
/// name (PKIX, RFC 5280 / RFC 6125).
pub fn verified_client_config(roots: &TlsRoots) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // The ring provider supports both default protocol versions; this cannot fail.
        .expect("ring provider supports the default TLS versions")
        .with_root_certificates(roots.root_store())
        .with_no_client_auth();
    Arc::new(config)
}

/// Configs that accept any certificate.
pub mod danger {
    use std::sync::Arc;

    use rustls::{
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
        pki_types::{CertificateDer, ServerName, UnixTime},
        ClientConfig, DigitallySignedStruct, SignatureScheme,
    };

    /// A client config that accepts any server certificate. The handshake signatures are
    /// still checked, so the peer must hold the key of the certificate it presents; only
    /// the certificate's identity and chain are not verified.
    pub fn insecure_client_config() -> Arc<ClientConfig> {
        let provider = super::provider();
        let verifier = AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring provider supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Arc::new(config)
    }

    #[derive(Debug)]
    struct AcceptAnyCertificate {
        algorithms: WebPkiSupportedAlgorithms,
    }

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn load_without_extra() {
        let roots = TlsRoots::load(None).unwrap();
        assert_eq!(roots.extra_count(), 0);
        assert!(!roots.root_store().is_empty());
        let roots = TlsRoots::load(Some(Path::new(""))).unwrap();
        assert_eq!(roots.extra_count(), 0);
    }

    #[test]
    fn load_extra_certificates() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(f, "# comment\n{}{}", ca_pem(), ca_pem()).unwrap();
        let roots = TlsRoots::load(Some(f.path())).unwrap();
        assert_eq!(roots.extra_count(), 2);
        assert_eq!(
            roots.root_store().len(),
            webpki_roots::TLS_SERVER_ROOTS.len() + 2
        );
    }

    #[test]
    fn bad_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = TlsRoots::load(Some(&missing)).unwrap_err();
        assert!(matches!(err, TlsSetupError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsRoots::load(Some(&empty)).unwrap_err();
        assert!(matches!(err, TlsSetupError::NoCertificates { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = TlsRoots::load(Some(&garbage)).unwrap_err();
        assert!(
            matches!(err, TlsSetupError::BadCertificate { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.pem"), "{err}");
    }

    #[test]
    fn configs_build() {
        let roots = TlsRoots::load(None).unwrap();
        let _ = verified_client_config(&roots);
        let _ = danger::insecure_client_config();
        assert_eq!(TlsInfo::None.mode(), "none");
    }
}
