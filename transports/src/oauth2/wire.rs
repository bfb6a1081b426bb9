//! The token endpoint's side of the wire, with no I/O: its URL, the form we POST
//! (`application/x-www-form-urlencoded`, RFC 6749 §4.4.2 and §6) and the JSON it
//! answers — a token (RFC 6749 §5.1) or an error (RFC 6749 §5.2).

use std::time::Duration;

use super::TokenError;
use crate::session::Secret;

/// Longest `error_description` kept from an error answer.
const MAX_DESCRIPTION: usize = 300;

/// A parsed `token_url`: HTTPS only, no user information, no fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    url: String,
    host: String,
    port: u16,
    path: String,
}

impl TokenEndpoint {
    /// Parses `url` (e.g. `https://login.microsoftonline.com/TENANT/oauth2/v2.0/token`).
    pub fn parse(url: &str) -> Result<TokenEndpoint, String> {
        let bad = |why: &str| format!("token_url {url:?}: {why}");
        if url.contains('#') {
            return Err(bad("a URL with a fragment is not a token endpoint"));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("https") {
            // RFC 6749 §3.2: the token endpoint MUST be reached over TLS.
            return Err(bad("the token endpoint must be an https:// URL"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(443);
        if port == 0 {
            return Err(bad("port 0"));
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(TokenEndpoint {
            url: url.to_string(),
            host,
            port,
            path,
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host name (or IP address, without brackets), also the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 unless the URL says otherwise).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query to POST to.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `Host` header value (RFC 9110 §7.2): the port only when it is not 443.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            443 => host,
            port => format!("{host}:{port}"),
        }
    }
}

/// What one token request asks for. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// `client_id`.
    pub client_id: &'a str,
    /// `client_secret` (sent in the body, as Microsoft's and Google's endpoints take it).
    pub client_secret: Option<&'a Secret>,
    /// `refresh_token`: set for the refresh-token grant, unset for client credentials.
    pub refresh_token: Option<&'a Secret>,
    /// `scope`, when not empty.
    pub scope: &'a str,
}

impl TokenRequest<'_> {
    /// The request body, `application/x-www-form-urlencoded`.
    pub fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        match self.refresh_token {
            // RFC 6749 §6: refreshing an access token.
            Some(refresh) => {
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", refresh.expose());
            }
            // RFC 6749 §4.4.2: the client-credentials grant.
            None => {
                form.append_pair("grant_type", "client_credentials");
            }
        }
        form.append_pair("client_id", self.client_id);
        if let Some(secret) = self.client_secret {
            form.append_pair("client_secret", secret.expose());
        }
        if !self.scope.is_empty() {
            form.append_pair("scope", self.scope);
        }
        form.finish()
    }
}

/// A token answer (RFC 6749 §5.1). `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// `access_token`.
    pub access_token: Secret,
    /// `expires_in`, when given.
    pub expires_in: Option<Duration>,
    /// `refresh_token`: a new refresh token, when the endpoint rotates them.
    pub refresh_token: Option<Secret>,
}

/// Reads the endpoint's answer: a token from a `200`, an [`TokenError::Refused`] from
/// an OAuth error object (RFC 6749 §5.2, normally with `400` or `401`), else an error
/// naming what is wrong. The body is never quoted (a token answer holds secrets).
pub fn parse_answer(url: &str, status: u16, body: &[u8]) -> Result<TokenGrant, TokenError> {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    if status != 200 {
        return match json.as_ref().and_then(|v| text(v, "error").map(|e| (v, e))) {
            Some((v, error)) => Err(TokenError::Refused {
                url: url.to_string(),
                status,
                error: printable(&error, 100),
                description: text(v, "error_description").map(|d| printable(&d, MAX_DESCRIPTION)),
            }),
            None => Err(TokenError::Status {
                url: url.to_string(),
                status,
            }),
        };
    }
    let bad = |reason: &str| TokenError::BadResponse {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let Some(v) = json.filter(serde_json::Value::is_object) else {
        return Err(bad("not a JSON object"));
    };
    let Some(access_token) = text(&v, "access_token").filter(|t| !t.is_empty()) else {
        return Err(bad("no access_token"));
    };
    // RFC 6749 §5.1: token_type is REQUIRED; RFC 6750 defines "Bearer" (any case).
    match text(&v, "token_type") {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(bad("token_type is not Bearer")),
        None => return Err(bad("no token_type")),
    }
    // A number, or a number in a string (older Azure AD endpoints).
    let expires_in = match v.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| bad("expires_in is not a whole number of seconds"))?,
        ),
        Some(serde_json::Value::String(s)) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| bad("expires_in is not a whole number of seconds"))?,
        ),
        Some(_) => return Err(bad("expires_in is not a number")),
    };
    Ok(TokenGrant {
        access_token: Secret::new(access_token),
        expires_in: expires_in.map(Duration::from_secs),
        refresh_token: text(&v, "refresh_token")
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

/// `s` with control characters replaced and at most `max` characters, for messages.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = TokenEndpoint::parse(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
        )
        .unwrap();
        assert_eq!(e.host(), "login.microsoftonline.com");
        assert_eq!(e.port(), 443);
        assert_eq!(e.path(), "/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_eq!(e.host_header(), "login.microsoftonline.com");
        let e = TokenEndpoint::parse("https://localhost:8443/token?x=1").unwrap();
        assert_eq!((e.host(), e.port()), ("localhost", 8443));
        assert_eq!(e.path(), "/token?x=1");
        assert_eq!(e.host_header(), "localhost:8443");
        let e = TokenEndpoint::parse("https://[::1]:9000").unwrap();
        assert_eq!((e.host(), e.port(), e.path()), ("::1", 9000, "/"));
        assert_eq!(e.host_header(), "[::1]:9000");
        for bad in [
            "http://login.test/token",
            "login.test/token",
            "https://user:pw@login.test/token",
            "https://login.test/token#x",
            "https:///token",
            "",
        ] {
            assert!(TokenEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms() {
        let secret = Secret::new("s3cr&t=");
        let refresh = Secret::new("1//0g-refresh");
        let cc = TokenRequest {
            client_id: "app id",
            client_secret: Some(&secret),
            refresh_token: None,
            scope: "https://outlook.office365.com/.default",
        };
        assert_eq!(
            cc.form(),
            "grant_type=client_credentials&client_id=app+id&client_secret=s3cr%26t%3D\
             &scope=https%3A%2F%2Foutlook.office365.com%2F.default"
        );
        assert!(!format!("{cc:?}").contains("s3cr"));
        let rt = TokenRequest {
            client_id: "id",
            client_secret: None,
            refresh_token: Some(&refresh),
            scope: "",
        };
        assert_eq!(
            rt.form(),
            "grant_type=refresh_token&refresh_token=1%2F%2F0g-refresh&client_id=id"
        );
    }

    #[test]
    fn token_answers() {
        let url = "https://login.test/token";
        let g = parse_answer(
            url,
            200,
            br#"{"access_token":"eyJ0.a.b","token_type":"Bearer","expires_in":3599}"#,
        )
        .unwrap();
        assert_eq!(g.access_token.expose(), "eyJ0.a.b");
        assert_eq!(g.expires_in, Some(Duration::from_secs(3599)));
        assert!(g.refresh_token.is_none());
        assert!(!format!("{g:?}").contains("eyJ0"));
        let g = parse_answer(
            url,
            200,
            br#"{"access_token":"t","token_type":"bearer","expires_in":"60","refresh_token":"r2"}"#,
        )
        .unwrap();
        assert_eq!(g.expires_in, Some(Duration::from_secs(60)));
        assert_eq!(
            g.refresh_token.map(|r| r.expose().to_string()),
            Some("r2".into())
        );
        let g = parse_answer(url, 200, br#"{"access_token":"t","token_type":"Bearer"}"#).unwrap();
        assert_eq!(g.expires_in, None);
        for (body, want) in [
            (&b"<html>"[..], "not a JSON object"),
            (br#"{"token_type":"Bearer"}"#, "no access_token"),
            (br#"{"access_token":"t"}"#, "no token_type"),
            (br#"{"access_token":"t","token_type":"mac"}"#, "not Bearer"),
            (
                br#"{"access_token":"t","token_type":"Bearer","expires_in":-5}"#,
                "whole number",
            ),
        ] {
            let e = parse_answer(url, 200, body).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("\"t\""), "{e}");
        }
    }

    #[test]
    fn error_answers() {
        let url = "https://login.test/token";
        let e = parse_answer(
            url,
            400,
            br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
        .unwrap_err();
        match &e {
            TokenError::Refused {
                status,
                error,
                description,
                ..
            } => {
                assert_eq!(*status, 400);
                assert_eq!(error, "invalid_grant");
                assert_eq!(
                    description.as_deref(),
                    Some("Token has been expired or revoked.")
                );
            }
            other => panic!("{other:?}"),
        }
        let e = parse_answer(url, 401, br#"{"error":"invalid_client"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint https://login.test/token refused the request (HTTP 401): invalid_client"
        );
        let e = parse_answer(url, 503, b"busy").unwrap_err();
        assert!(matches!(e, TokenError::Status { status: 503, .. }), "{e}");
        let long = format!(
            r#"{{"error":"x","error_description":"{}\n"}}"#,
            "d".repeat(1000)
        );
        let e = parse_answer(url, 400, long.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.len() < 500 && !e.contains('\n'), "{e}");
    }
}
