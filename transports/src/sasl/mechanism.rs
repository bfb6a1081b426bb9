//! SASL mechanism names, their strength order, and the client's choice among what a
//! server offers.
//!
//! The choice is the first mechanism of *our* preference list that the server advertised
//! (never the server's order): the operator decides, and a server cannot talk us down
//! to a weaker mechanism by listing it first.

use std::{fmt, str::FromStr};

use super::hash::ScramHash;

/// A SASL mechanism relaygate implements.
///
/// The derived order is the strength order of the password mechanisms, weakest first:
/// `Login < Plain < CramMd5 < ScramSha1 < ScramSha1Plus < ScramSha256 <
/// ScramSha256Plus`. SHA-256 without binding ranks above SHA-1 with binding, as in
/// [`DEFAULT_CLIENT_PREFERENCE`]. The bearer-token mechanisms (XOAUTH2, OAUTHBEARER)
/// carry an access token instead of a password and are outside that scale; they sort
/// first and are used only when the operator lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    /// XOAUTH2: an OAuth 2.0 bearer token in Google's and Microsoft's earlier format.
    XOAuth2,
    /// OAUTHBEARER (RFC 7628): an OAuth 2.0 bearer token.
    OAuthBearer,
    /// LOGIN: user name and password in clear, in answer to two prompts.
    Login,
    /// PLAIN (RFC 4616): authzid, authcid and password in clear.
    Plain,
    /// CRAM-MD5 (RFC 2195): HMAC-MD5 of a server challenge.
    CramMd5,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// SCRAM-SHA-1-PLUS: SCRAM-SHA-1 bound to the TLS channel.
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-256-PLUS: SCRAM-SHA-256 bound to the TLS channel.
    ScramSha256Plus,
}

/// The client preference when the operator lists no mechanisms: SCRAM first, with
/// channel binding where possible, then CRAM-MD5. PLAIN and LOGIN send the password
/// itself, so they are used only when the operator lists them.
pub const DEFAULT_CLIENT_PREFERENCE: &[Mechanism] = &[
    Mechanism::ScramSha256Plus,
    Mechanism::ScramSha256,
    Mechanism::ScramSha1Plus,
    Mechanism::ScramSha1,
    Mechanism::CramMd5,
];

impl Mechanism {
    /// Every password mechanism (client and server), strongest first.
    pub const ALL: [Mechanism; 7] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha1,
        Mechanism::CramMd5,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The bearer-token mechanisms (client only), the standard one first.
    pub const BEARER: [Mechanism; 2] = [Mechanism::OAuthBearer, Mechanism::XOAuth2];

    /// The registered name, as sent in `AUTH` and listed in the EHLO `AUTH` keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mechanism::Login => "LOGIN",
            Mechanism::Plain => "PLAIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Parses a wire name, ignoring ASCII case (RFC 4422 §3.1 names are upper case, but
    /// servers are seen sending lower case). Unknown names give `None`.
    pub fn from_wire(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .chain(Mechanism::BEARER)
            .find(|m| m.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// True for XOAUTH2 and OAUTHBEARER, which send an OAuth 2.0 access token (from the
    /// transport's `oauth2` source) instead of a password. Like PLAIN they send the
    /// credential itself, so they belong only on an encrypted connection.
    pub const fn is_bearer(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }

    /// True for the -PLUS variants, which need a channel binding.
    pub const fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }

    /// True for PLAIN and LOGIN, which send the password itself and so belong only on an
    /// encrypted connection.
    pub const fn sends_plaintext_password(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    /// The SCRAM hash of a SCRAM mechanism.
    pub const fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::Login
            | Mechanism::Plain
            | Mechanism::CramMd5
            | Mechanism::XOAuth2
            | Mechanism::OAuthBearer => None,
        }
    }

    /// The -PLUS variant of a SCRAM mechanism (itself for a -PLUS one).
    pub const fn plus_variant(self) -> Option<Mechanism> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(Mechanism::ScramSha1Plus),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(Mechanism::ScramSha256Plus),
            Mechanism::Login
            | Mechanism::Plain
            | Mechanism::CramMd5
            | Mechanism::XOAuth2
            | Mechanism::OAuthBearer => None,
        }
    }

    /// The SCRAM mechanism for a hash, with or without channel binding.
    pub const fn scram(hash: ScramHash, plus: bool) -> Mechanism {
        match (hash, plus) {
            (ScramHash::Sha1, false) => Mechanism::ScramSha1,
            (ScramHash::Sha1, true) => Mechanism::ScramSha1Plus,
            (ScramHash::Sha256, false) => Mechanism::ScramSha256,
            (ScramHash::Sha256, true) => Mechanism::ScramSha256Plus,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mechanism name that relaygate does not implement (e.g. in a config file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SASL mechanism {name:?} (known: SCRAM-SHA-256-PLUS, SCRAM-SHA-256, SCRAM-SHA-1-PLUS, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN, OAUTHBEARER, XOAUTH2)")]
pub struct UnknownMechanism {
    /// The name as given.
    pub name: String,
}

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mechanism::from_wire(s).ok_or_else(|| UnknownMechanism {
            name: s.to_string(),
        })
    }
}

/// No mechanism of our preference list is usable with this server. A permanent failure
/// for the transport: retrying will not make the lists meet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no common SASL mechanism: we accept [{}], the server offers [{}]{}",
    join(.preference.iter().map(|m| m.as_str())),
    join(.offered.iter().map(String::as_str)),
    if *.plus_needs_binding {
        " (its -PLUS mechanisms need a TLS 1.3 channel binding, which this connection lacks)"
    } else {
        ""
    }
)]
pub struct NoCommonMechanism {
    /// Our preference list.
    pub preference: Vec<Mechanism>,
    /// The names the server advertised, as received.
    pub offered: Vec<String>,
    /// True when a -PLUS mechanism would have matched but we had no channel binding.
    pub plus_needs_binding: bool,
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(" ")
}

/// Picks the first mechanism of `preference` that the server `offered` (names as listed
/// after `AUTH` in the EHLO reply, any case). A -PLUS mechanism is picked only when
/// `channel_binding_available` (TLS 1.3, exporter value at hand); otherwise it is
/// skipped and the list goes on.
pub fn choose(
    preference: &[Mechanism],
    offered: &[String],
    channel_binding_available: bool,
) -> Result<Mechanism, NoCommonMechanism> {
    let offered_mechs: Vec<Mechanism> = offered
        .iter()
        .filter_map(|name| Mechanism::from_wire(name))
        .collect();
    let mut plus_needs_binding = false;
    for &m in preference {
        if !offered_mechs.contains(&m) {
            continue;
        }
        if m.is_plus() && !channel_binding_available {
            plus_needs_binding = true;
            continue;
        }
        return Ok(m);
    }
    Err(NoCommonMechanism {
        preference: preference.to_vec(),
        offered: offered.to_vec(),
        plus_needs_binding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_round_trip_and_ignore_case() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_wire(m.as_str()), Some(m));
            assert_eq!(m.as_str().to_lowercase().parse::<Mechanism>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(
            Mechanism::from_wire("scram-sha-256-plus"),
            Some(Mechanism::ScramSha256Plus)
        );
        assert_eq!(Mechanism::from_wire("GSSAPI"), None);
        let err = "GSSAPI".parse::<Mechanism>().unwrap_err();
        assert!(err.to_string().contains("GSSAPI"));
        for m in Mechanism::BEARER {
            assert_eq!(Mechanism::from_wire(&m.as_str().to_lowercase()), Some(m));
            assert!(m.is_bearer() && !m.is_plus() && m.scram_hash().is_none());
            assert!(!Mechanism::ALL.contains(&m));
        }
        assert_eq!("xoauth2".parse::<Mechanism>(), Ok(Mechanism::XOAuth2));
        assert!(!DEFAULT_CLIENT_PREFERENCE.iter().any(|m| m.is_bearer()));
    }

    #[test]
    fn strength_order() {
        let mut all = Mechanism::ALL.to_vec();
        all.sort();
        all.reverse();
        assert_eq!(all, Mechanism::ALL.to_vec());
        assert!(Mechanism::ScramSha256 > Mechanism::ScramSha1Plus);
        assert!(Mechanism::CramMd5 > Mechanism::Plain);
        assert!(Mechanism::Plain > Mechanism::Login);
    }

    #[test]
    fn default_preference_has_no_plaintext() {
        assert!(DEFAULT_CLIENT_PREFERENCE
            .iter()
            .all(|m| !m.sends_plaintext_password()));
        assert_eq!(DEFAULT_CLIENT_PREFERENCE[0], Mechanism::ScramSha256Plus);
    }

    #[test]
    fn choose_table() {
        let pref = DEFAULT_CLIENT_PREFERENCE;
        let cases: &[(&[&str], bool, Option<Mechanism>)] = &[
            (
                &["PLAIN", "SCRAM-SHA-256", "CRAM-MD5"],
                false,
                Some(Mechanism::ScramSha256),
            ),
            (
                &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
                true,
                Some(Mechanism::ScramSha256Plus),
            ),
            // -PLUS needs a binding; without one the plain variant is chosen.
            (
                &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
                false,
                Some(Mechanism::ScramSha256),
            ),
            (
                &["scram-sha-1", "cram-md5"],
                true,
                Some(Mechanism::ScramSha1),
            ),
            (
                &["CRAM-MD5", "PLAIN", "LOGIN"],
                true,
                Some(Mechanism::CramMd5),
            ),
            // The server's order does not matter.
            (
                &["CRAM-MD5", "SCRAM-SHA-1"],
                false,
                Some(Mechanism::ScramSha1),
            ),
            (&["PLAIN", "LOGIN"], true, None),
            (&[], true, None),
        ];
        for (offered, cb, want) in cases {
            let got = choose(pref, &names(offered), *cb).ok();
            assert_eq!(got, *want, "offered {offered:?} binding {cb}");
        }
    }

    #[test]
    fn operator_list_is_respected() {
        let pref = [Mechanism::CramMd5, Mechanism::Plain];
        let offered = names(&["SCRAM-SHA-256", "CRAM-MD5", "PLAIN"]);
        assert_eq!(choose(&pref, &offered, true), Ok(Mechanism::CramMd5));
        let pref = [Mechanism::Login];
        assert_eq!(
            choose(&pref, &names(&["LOGIN"]), false),
            Ok(Mechanism::Login)
        );
    }

    #[test]
    fn no_common_mechanism_names_both_lists() {
        let err = choose(
            DEFAULT_CLIENT_PREFERENCE,
            &names(&["PLAIN", "XOAUTH2"]),
            false,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("SCRAM-SHA-256-PLUS SCRAM-SHA-256"), "{text}");
        assert!(text.contains("[PLAIN XOAUTH2]"), "{text}");
        assert!(!err.plus_needs_binding);

        let pref = [Mechanism::ScramSha256Plus];
        let err = choose(&pref, &names(&["SCRAM-SHA-256-PLUS"]), false).unwrap_err();
        assert!(err.plus_needs_binding);
        assert!(err.to_string().contains("channel binding"));
    }
}
