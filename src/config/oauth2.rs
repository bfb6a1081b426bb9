//! `[transports.NAME.oauth2]`: where a smarthost transport gets the OAuth 2.0 access
//! tokens that XOAUTH2 and OAUTHBEARER send, and the checks of those keys.
//!
//! Exactly one source: `token_file` (a token another tool keeps fresh, read at every
//! login) or `token_url` (relaygate's own client: the refresh-token grant when
//! `refresh_token_file` is set, else the client-credentials grant, which needs
//! `client_secret_file`). [`problems`] checks the shape (for the config file and for
//! the Redis store alike); [`file_problems`] checks that the files named can be read
//! (for the config file, on the gateway's host).

use serde::{Deserialize, Serialize};

use super::TransportConfig;

/// The `oauth2` table of a smarthost transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// A file holding the current access token (its first line), kept fresh by another
    /// tool and read again at every login. Instead of `token_url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_file: String,
    /// The token endpoint (`https://...`) of relaygate's own OAuth2 client. Instead of
    /// `token_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_url: String,
    /// The application's client id at the provider (with `token_url`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// A file holding the client secret (its first line); required for the
    /// client-credentials grant, optional for the refresh-token grant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_secret_file: String,
    /// A file holding a refresh token (its first line): set, the refresh-token grant;
    /// empty, the client-credentials grant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refresh_token_file: String,
    /// The scope to ask for (space-separated), e.g.
    /// `https://outlook.office365.com/.default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl OAuth2Config {
    /// The files named, with their keys.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        [
            ("token_file", self.token_file.as_str()),
            ("client_secret_file", self.client_secret_file.as_str()),
            ("refresh_token_file", self.refresh_token_file.as_str()),
        ]
        .into_iter()
        .filter(|(_, path)| !path.is_empty())
        .collect()
    }
}

/// True when XOAUTH2 or OAUTHBEARER is in the transport's `mechanisms`.
pub fn lists_bearer(t: &TransportConfig) -> bool {
    t.sasl_mechanisms()
        .map(|ms| ms.iter().any(|m| m.is_bearer()))
        .unwrap_or(false)
}

/// True when the transport logs in with tokens only (every mechanism listed is a
/// bearer one): it then needs no password.
pub fn bearer_only(t: &TransportConfig) -> bool {
    t.oauth2.is_some()
        && !t.mechanisms.is_empty()
        && t.sasl_mechanisms()
            .map(|ms| ms.iter().all(|m| m.is_bearer()))
            .unwrap_or(false)
}

/// What is wrong with the OAuth2 side of transport `name`.
pub fn problems(name: &str, t: &TransportConfig) -> Vec<String> {
    let mut out = Vec::new();
    let Some(o) = &t.oauth2 else {
        if lists_bearer(t) {
            out.push(format!(
                "mechanisms: XOAUTH2 and OAUTHBEARER need a [transports.{name}.oauth2] table \
                 (token_file or token_url)"
            ));
        }
        return out;
    };
    if !t.kind.is_smarthost() {
        out.push("oauth2 applies to smtp, submission and submissions transports".into());
        return out;
    }
    if !lists_bearer(t) {
        out.push("oauth2 is set but mechanisms lists neither XOAUTH2 nor OAUTHBEARER".into());
    }
    if t.username.is_empty() {
        out.push("oauth2 needs username (the mailbox the token is for)".into());
    }
    match (o.token_file.is_empty(), o.token_url.is_empty()) {
        (true, true) => out.push("oauth2: set token_file or token_url".into()),
        (false, false) => out.push("oauth2: set token_file or token_url, not both".into()),
        (false, true) => {
            if !(o.client_id.is_empty()
                && o.client_secret_file.is_empty()
                && o.refresh_token_file.is_empty()
                && o.scope.is_empty())
            {
                out.push(
                    "oauth2: client_id, client_secret_file, refresh_token_file and scope \
                     go with token_url, not token_file"
                        .into(),
                );
            }
        }
        (true, false) => {
            if let Err(e) = relaygate_transports::oauth2::TokenEndpoint::parse(&o.token_url) {
                out.push(format!("oauth2: {e}"));
            }
            if o.client_id.trim().is_empty() {
                out.push("oauth2: token_url needs client_id".into());
            }
            if o.refresh_token_file.is_empty() && o.client_secret_file.is_empty() {
                out.push(
                    "oauth2: the client-credentials grant (no refresh_token_file) needs \
                     client_secret_file"
                        .into(),
                );
            }
        }
    }
    out
}

/// The `oauth2` files of `t` that cannot be opened for reading.
pub fn file_problems(t: &TransportConfig) -> Vec<String> {
    let Some(o) = &t.oauth2 else {
        return Vec::new();
    };
    o.files()
        .into_iter()
        .filter_map(|(key, path)| {
            std::fs::File::open(path)
                .err()
                .map(|e| format!("oauth2.{key} {path}: cannot read: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), text).map_err(|e| e.to_string())
    }

    const BASE: &str = "[transports.m365]\nkind = \"submission\"\nhost = \"smtp.office365.com\"\n\
        username = \"relay@example.org\"\nmechanisms = [\"XOAUTH2\"]\n";

    #[test]
    fn shapes() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let token = dir.path().join("token");
        std::fs::write(&secret, "s\n").unwrap();
        std::fs::write(&token, "t\n").unwrap();
        let secret = secret.display();
        let token = token.display();

        let c = parse(&format!(
            "{BASE}[transports.m365.oauth2]\ntoken_url = \"https://login.test/t/oauth2/v2.0/token\"\n\
             client_id = \"cid\"\nclient_secret_file = \"{secret}\"\n\
             scope = \"https://outlook.office365.com/.default\"\n"
        ))
        .unwrap();
        let o = c.transports["m365"].oauth2.as_ref().unwrap();
        assert_eq!(o.client_id, "cid");
        assert!(super::bearer_only(&c.transports["m365"]));
        parse(&format!(
            "{BASE}[transports.m365.oauth2]\ntoken_file = \"{token}\"\n"
        ))
        .unwrap();

        for (extra, want) in [
            (String::new(), "need a [transports.m365.oauth2] table"),
            (
                "[transports.m365.oauth2]\n".to_string(),
                "set token_file or token_url",
            ),
            (
                format!("[transports.m365.oauth2]\ntoken_file = \"{token}\"\ntoken_url = \"https://l.test/\"\nclient_id = \"c\"\n"),
                "not both",
            ),
            (
                format!("[transports.m365.oauth2]\ntoken_file = \"{token}\"\nscope = \"x\"\n"),
                "go with token_url",
            ),
            (
                "[transports.m365.oauth2]\ntoken_url = \"http://l.test/\"\nclient_id = \"c\"\nrefresh_token_file = \"/etc/hostname\"\n".to_string(),
                "https://",
            ),
            (
                format!("[transports.m365.oauth2]\ntoken_url = \"https://l.test/\"\nclient_secret_file = \"{secret}\"\n"),
                "needs client_id",
            ),
            (
                "[transports.m365.oauth2]\ntoken_url = \"https://l.test/\"\nclient_id = \"c\"\n".to_string(),
                "needs client_secret_file",
            ),
            (
                "[transports.m365.oauth2]\ntoken_file = \"/nonexistent/relaygate-token\"\n".to_string(),
                "oauth2.token_file /nonexistent/relaygate-token: cannot read",
            ),
            (
                format!("[transports.m365.oauth2]\ntoken_file = \"{token}\"\nclient_idd = \"x\"\n"),
                "client_idd",
            ),
        ] {
            let e = parse(&format!("{BASE}{extra}")).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
        // A table without a bearer mechanism, on a socks transport, without a username.
        let e = parse(&format!(
            "[transports.p]\nkind = \"submission\"\nhost = \"h\"\n\
             [transports.p.oauth2]\ntoken_file = \"{token}\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("neither XOAUTH2 nor OAUTHBEARER"), "{e}");
        assert!(e.contains("needs username"), "{e}");
        let e = parse(&format!(
            "[transports.s]\nkind = \"socks\"\naddress = \"127.0.0.1:1080\"\n\
             [transports.s.oauth2]\ntoken_file = \"{token}\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("oauth2 applies to smtp"), "{e}");
        // A password mechanism beside the bearer one still needs the password.
        let e = parse(&format!(
            "[transports.m]\nkind = \"submission\"\nhost = \"h\"\nusername = \"u\"\n\
             mechanisms = [\"OAUTHBEARER\", \"PLAIN\"]\n\
             [transports.m.oauth2]\ntoken_file = \"{token}\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("no password_file"), "{e}");
    }

    #[test]
    fn redis_json_carries_the_table() {
        use crate::config::TransportConfig;
        use crate::store::raw::transport_json;
        let t: TransportConfig = serde_json::from_str(
            r#"{"kind":"submission","host":"smtp.gmail.com","username":"u@example.org",
                "mechanisms":["OAUTHBEARER"],
                "oauth2":{"token_url":"https://oauth2.googleapis.com/token","client_id":"c",
                          "refresh_token_file":"/run/secrets/rt","scope":""}}"#,
        )
        .unwrap();
        let json = transport_json(&t);
        assert!(
            json.contains(
                r#""oauth2":{"client_id":"c","refresh_token_file":"/run/secrets/rt","token_url":"https://oauth2.googleapis.com/token"}"#
            ),
            "{json}"
        );
        let back: TransportConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.oauth2, t.oauth2);
        assert!(super::problems("g", &back).is_empty());
        let bad = serde_json::from_str::<TransportConfig>(
            r#"{"kind":"smtp","host":"h","oauth2":{"token_uri":"x"}}"#,
        );
        assert!(bad.is_err());
    }
}
