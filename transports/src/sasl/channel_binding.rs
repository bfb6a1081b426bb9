//! SCRAM channel binding on the client side: which gs2 flag to send (RFC 5802 §6) and
//! the `tls-exporter` binding data (RFC 9266).
//!
//! The exporter value comes from the TLS layer: with rustls,
//! `conn.export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)`. RFC 9266 defines
//! it for TLS 1.3 only; without TLS 1.3 there is no binding and -PLUS is not chosen.

use std::fmt;

use super::mechanism::Mechanism;

/// The exporter label for `tls-exporter` (RFC 9266 §2).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// Length of the `tls-exporter` value, in bytes (RFC 9266 §2).
pub const TLS_EXPORTER_LEN: usize = 32;
/// The channel binding type name sent in the gs2 header.
pub const TLS_EXPORTER_NAME: &str = "tls-exporter";

/// What a SCRAM client says about channel binding in its gs2 header.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// gs2 flag `n`: we do not bind (no TLS 1.3, or the operator's list excludes -PLUS).
    None,
    /// gs2 flag `y`: we could bind, but the server did not offer the -PLUS variant. A
    /// server that did offer it treats this as a downgrade (RFC 5802 §6).
    ServerLacksSupport,
    /// gs2 flag `p=tls-exporter` with the exporter value of this TLS connection: the
    /// -PLUS mechanisms.
    TlsExporter(Vec<u8>),
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelBinding::None => f.write_str("None"),
            ChannelBinding::ServerLacksSupport => f.write_str("ServerLacksSupport"),
            ChannelBinding::TlsExporter(v) => write!(f, "TlsExporter(<{} bytes>)", v.len()),
        }
    }
}

impl ChannelBinding {
    /// Decides the binding for the `chosen` mechanism (see [`super::choose`]), given our
    /// `preference` list, the names the server `offered` and the exporter value if this
    /// connection has one.
    ///
    /// RFC 5802 §6: a client that supports channel binding but does not see the -PLUS
    /// name advertised MUST NOT send `n`; it sends `y`. We "support" it when we have an
    /// exporter and the -PLUS variant is in our preference list.
    pub fn negotiate(
        chosen: Mechanism,
        preference: &[Mechanism],
        offered: &[String],
        exporter: Option<&[u8]>,
    ) -> ChannelBinding {
        let Some(plus) = chosen.plus_variant() else {
            return ChannelBinding::None;
        };
        match exporter {
            Some(value) if chosen.is_plus() => ChannelBinding::TlsExporter(value.to_vec()),
            None => ChannelBinding::None,
            Some(_) => {
                let server_offers_plus = offered
                    .iter()
                    .any(|name| Mechanism::from_wire(name) == Some(plus));
                if preference.contains(&plus) && !server_offers_plus {
                    ChannelBinding::ServerLacksSupport
                } else {
                    ChannelBinding::None
                }
            }
        }
    }

    /// The gs2 header without authzid (RFC 5802 §7 `gs2-header`).
    pub(crate) fn gs2_header(&self) -> &'static str {
        match self {
            ChannelBinding::None => "n,,",
            ChannelBinding::ServerLacksSupport => "y,,",
            ChannelBinding::TlsExporter(_) => "p=tls-exporter,,",
        }
    }

    /// What `c=` carries, before base64: the gs2 header, then the binding data for `p`
    /// (RFC 5802 §7 `cbind-input`).
    pub(crate) fn cbind_input(&self) -> Vec<u8> {
        let mut input = self.gs2_header().as_bytes().to_vec();
        if let ChannelBinding::TlsExporter(value) = self {
            input.extend_from_slice(value);
        }
        input
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::mechanism::DEFAULT_CLIENT_PREFERENCE;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flag_table() {
        let pref = DEFAULT_CLIENT_PREFERENCE;
        let exporter = [9u8; 32];
        let both = names(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        let plain_only = names(&["SCRAM-SHA-256"]);
        use ChannelBinding as C;
        let cases = [
            (
                Mechanism::ScramSha256Plus,
                &both,
                Some(&exporter[..]),
                C::TlsExporter(exporter.to_vec()),
            ),
            // We could bind, the server did not offer -PLUS: "y" (RFC 5802 §6).
            (
                Mechanism::ScramSha256,
                &plain_only,
                Some(&exporter[..]),
                C::ServerLacksSupport,
            ),
            // No TLS 1.3: we cannot bind, "n".
            (Mechanism::ScramSha256, &plain_only, None, C::None),
            (Mechanism::ScramSha256, &both, None, C::None),
            (
                Mechanism::CramMd5,
                &plain_only,
                Some(&exporter[..]),
                C::None,
            ),
        ];
        for (chosen, offered, exp, want) in cases {
            assert_eq!(
                ChannelBinding::negotiate(chosen, pref, offered, exp),
                want,
                "{chosen}"
            );
        }
        // Operator excluded -PLUS: we do not support binding, so "n" even with TLS 1.3.
        let pref = [Mechanism::ScramSha256];
        assert_eq!(
            ChannelBinding::negotiate(Mechanism::ScramSha256, &pref, &plain_only, Some(&exporter)),
            C::None
        );
    }

    #[test]
    fn headers() {
        assert_eq!(ChannelBinding::None.cbind_input(), b"n,,");
        assert_eq!(ChannelBinding::ServerLacksSupport.cbind_input(), b"y,,");
        let mut want = b"p=tls-exporter,,".to_vec();
        want.extend_from_slice(&[1, 2]);
        assert_eq!(ChannelBinding::TlsExporter(vec![1, 2]).cbind_input(), want);
        assert_eq!(
            format!("{:?}", ChannelBinding::TlsExporter(vec![0; 32])),
            "TlsExporter(<32 bytes>)"
        );
    }
}
