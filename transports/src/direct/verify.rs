//! Turns a host's [`HostTls`] decision into the [`TlsPolicy`] of its session: the rustls
//! configs that verify against the TLSA records ([`DaneVerifier`]), PKIX for the MX host
//! name, or both, and the [`RelaxedVerifier`] of `TLS-Required: No`, which runs the same
//! checks but only notes a failure (RFC 8689 §5).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::plan::{HostTls, TlsPolicy, TlsRequirement, Verification};
use crate::dane::DaneVerifier;
use crate::dns::Tlsa;
use crate::tls::{provider, verified_client_config, TlsRoots};

/// Wraps a verifier for `TLS-Required: No`: the inner verifier runs, and its verdict on
/// the certificate is noted instead of failing the handshake. Handshake signatures are
/// still checked by the inner verifier, so the peer must hold the certificate's key.
/// Build one per connection.
#[derive(Debug)]
pub struct RelaxedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    failure: Mutex<Option<String>>,
}

impl RelaxedVerifier {
    /// Relaxes `inner`.
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        RelaxedVerifier {
            inner,
            failure: Mutex::new(None),
        }
    }

    /// Why the certificate of the last handshake did not verify, if it did not.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let failure = verdict.err().map(|e| e.to_string());
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client config verifying with `verifier`, never resuming a session (resumption
/// would skip verification, and each session has its own verifier anyway).
fn config_with(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// What the verifiers of one host are built from.
pub(super) struct VerifyInputs<'a> {
    /// The usable TLSA records, when DANE verifies.
    pub records: &'a [Tlsa],
    /// The names a DANE-TA certificate may carry (RFC 7672 §3.2.3).
    pub reference_names: &'a [String],
    /// The MX host name (PKIX reference identifier, RFC 8461 §4.2).
    pub mx_host: &'a str,
    /// Trusted roots for PKIX (`None` when MTA-STS is not set up).
    pub roots: Option<&'a TlsRoots>,
    /// The accept-any-certificate config.
    pub unverified: &'a Arc<ClientConfig>,
}

/// The verifier a [`Verification`] needs.
fn verifier(
    how: Verification,
    inputs: &VerifyInputs<'_>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let roots = || {
        inputs
            .roots
            .ok_or_else(|| "no trusted roots for the PKIX check".to_string())
    };
    let dane = || DaneVerifier::new(inputs.records, inputs.reference_names);
    Ok(match how {
        Verification::Dane => Arc::new(dane().map_err(|e| e.to_string())?),
        Verification::DaneAndPkix => {
            let roots = roots()?;
            Arc::new(
                dane()
                    .and_then(|v| v.require_pkix(roots, inputs.mx_host))
                    .map_err(|e| e.to_string())?,
            )
        }
        Verification::Pkix => {
            WebPkiServerVerifier::builder_with_provider(roots()?.root_store(), provider())
                .build()
                .map_err(|e| format!("PKIX verifier: {e}"))?
        }
    })
}

/// The session policy for a host's decision. An error (no roots, a verifier that cannot
/// be built) means the host cannot be used now.
pub(super) fn session_policy(
    tls: &HostTls,
    inputs: &VerifyInputs<'_>,
) -> Result<TlsPolicy, String> {
    Ok(match (tls.requirement, tls.relaxed) {
        (TlsRequirement::Opportunistic, _) => TlsPolicy::Opportunistic,
        (TlsRequirement::RequiredUnverified, false) => TlsPolicy::RequiredUnverified,
        (TlsRequirement::RequiredUnverified, true) => TlsPolicy::Relaxed {
            config: Arc::clone(inputs.unverified),
            verifier: None,
        },
        (TlsRequirement::Verified(Verification::Pkix), false) => {
            let roots = inputs
                .roots
                .ok_or_else(|| "no trusted roots for the PKIX check".to_string())?;
            TlsPolicy::RequiredVerified(verified_client_config(roots))
        }
        (TlsRequirement::Verified(how), false) => {
            TlsPolicy::RequiredVerified(config_with(verifier(how, inputs)?)?)
        }
        (TlsRequirement::Verified(how), true) => {
            let relaxed = Arc::new(RelaxedVerifier::new(verifier(how, inputs)?));
            TlsPolicy::Relaxed {
                config: config_with(relaxed.clone())?,
                verifier: Some(relaxed),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::plan::TlsSources;

    fn host_tls(requirement: TlsRequirement, relaxed: bool) -> HostTls {
        HostTls {
            requirement,
            relaxed,
            sources: TlsSources::default(),
            ignored: Vec::new(),
        }
    }

    #[test]
    fn direct_session_policies() {
        let unverified = crate::tls::danger::insecure_client_config();
        let roots = TlsRoots::load(None).unwrap();
        let records = [Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: vec![7; 32],
        }];
        let names = ["mx.example.org".to_string()];
        let inputs = |roots| VerifyInputs {
            records: &records,
            reference_names: &names,
            mx_host: "mx.example.org",
            roots,
            unverified: &unverified,
        };
        let label = |req, relaxed, roots| {
            session_policy(&host_tls(req, relaxed), &inputs(roots))
                .map(|p| p.label())
                .unwrap_or("error")
        };
        use TlsRequirement::{Opportunistic, RequiredUnverified, Verified};
        let r = Some(&roots);
        assert_eq!(label(Opportunistic, true, None), "opportunistic");
        assert_eq!(
            label(RequiredUnverified, false, None),
            "required-unverified"
        );
        assert_eq!(label(RequiredUnverified, true, None), "tls-required-no");
        assert_eq!(
            label(Verified(Verification::Dane), false, None),
            "required-verified"
        );
        assert_eq!(
            label(Verified(Verification::Dane), true, None),
            "tls-required-no"
        );
        assert_eq!(
            label(Verified(Verification::Pkix), false, r),
            "required-verified"
        );
        assert_eq!(
            label(Verified(Verification::Pkix), true, r),
            "tls-required-no"
        );
        assert_eq!(
            label(Verified(Verification::DaneAndPkix), false, r),
            "required-verified"
        );
        // PKIX without roots cannot be set up: the host is not used.
        assert_eq!(label(Verified(Verification::Pkix), false, None), "error");
        assert_eq!(
            label(Verified(Verification::DaneAndPkix), true, None),
            "error"
        );
    }
}
