//! OAuth2 for smarthost transports, the gateway's side: from a transport's
//! `[transports.NAME.oauth2]` table to the [`TokenSource`] its logins ask for access
//! tokens (`relaygate_transports::oauth2`).
//!
//! With `token_file`, the source reads that file at every login. With `token_url`, it is
//! relaygate's own client: the client secret and the refresh token are read from their
//! files when the snapshot is built (at start and at each reload, like passwords), the
//! endpoint is reached through `[dns]` and PKIX-verified with the trusted roots
//! (`tls.extra_ca_file` included). A transport whose mechanisms are all bearer ones has
//! no password: [`transport_password`] gives it an empty one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relaygate_transports::oauth2::{
    Grant, HttpsTokenClient, OAuthClient, OAuthClientConfig, TokenEndpoint, TokenFile, TokenSource,
};
use relaygate_transports::{Secret, SmarthostTransport, TcpConnector, TlsRoots};

use crate::config::{oauth2::bearer_only, OAuth2Config, TransportConfig};
use crate::secrets::{self, SecretError};

/// Bound on resolving and connecting to the token endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The password of smarthost transport `name`, as `secrets::transport_password` reads
/// it; a transport that logs in with tokens only gets an empty one.
pub fn transport_password(name: &str, t: &TransportConfig) -> Result<Option<Secret>, SecretError> {
    if bearer_only(t) && secrets::SecretSource::of_transport(t).is_empty() {
        return Ok(Some(Secret::default()));
    }
    secrets::transport_password(name, t)
}

/// `transport` with the token source of `t` attached, when `t` has an `oauth2` table.
/// Errors name the transport and the key (never a value).
pub fn attach(
    transport: SmarthostTransport,
    name: &str,
    t: &TransportConfig,
    resolver: Arc<dyn relaygate_transports::dns::Resolver>,
    roots: &TlsRoots,
) -> Result<SmarthostTransport, String> {
    match &t.oauth2 {
        None => Ok(transport),
        Some(o) => Ok(transport.with_token_source(token_source(name, o, resolver, roots)?)),
    }
}

/// The token source of one `oauth2` table.
pub fn token_source(
    name: &str,
    o: &OAuth2Config,
    resolver: Arc<dyn relaygate_transports::dns::Resolver>,
    roots: &TlsRoots,
) -> Result<Arc<dyn TokenSource>, String> {
    if !o.token_file.is_empty() {
        return Ok(Arc::new(TokenFile::new(&o.token_file)));
    }
    let owner = format!("transport {name:?}");
    let endpoint =
        TokenEndpoint::parse(&o.token_url).map_err(|e| format!("{owner}: oauth2: {e}"))?;
    let client_secret = match o.client_secret_file.as_str() {
        "" => None,
        path => Some(read_secret(&owner, "client_secret_file", Path::new(path))?),
    };
    let grant = match o.refresh_token_file.as_str() {
        "" => Grant::ClientCredentials,
        path => Grant::RefreshToken(read_secret(&owner, "refresh_token_file", Path::new(path))?),
    };
    let connector = Arc::new(TcpConnector::new(CONNECT_TIMEOUT).with_resolver(resolver));
    let http = Arc::new(HttpsTokenClient::new(connector, roots));
    Ok(Arc::new(OAuthClient::new(
        OAuthClientConfig {
            endpoint,
            client_id: o.client_id.trim().to_string(),
            client_secret,
            grant,
            scope: o.scope.trim().to_string(),
        },
        http,
    )))
}

/// The first line of a secret file, trimmed; an error names the owner, key and path.
fn read_secret(owner: &str, key: &str, path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{owner}: cannot read oauth2.{key} {}: {e}", path.display()))?;
    let first = text.lines().next().unwrap_or_default().trim();
    if first.is_empty() {
        return Err(format!(
            "{owner}: oauth2.{key} {} is empty (the value is its first line)",
            path.display()
        ));
    }
    warn_if_readable_by_others(owner, key, path);
    Ok(Secret::new(first))
}

/// A secret file every local user can read is worth a warning, not a refusal.
fn warn_if_readable_by_others(owner: &str, key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(%owner, path = %path.display(),
                "oauth2.{key} is readable by every local user; consider chmod 600");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn transport(text: &str) -> TransportConfig {
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        c.transports.into_values().next().unwrap()
    }

    #[test]
    fn token_only_transports_need_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok\n").unwrap();
        let t = transport(&format!(
            "[transports.g]\nkind = \"submission\"\nhost = \"smtp.gmail.com\"\n\
             username = \"u@example.org\"\nmechanisms = [\"XOAUTH2\"]\n\
             [transports.g.oauth2]\ntoken_file = {token:?}\n"
        ));
        let pw = transport_password("g", &t).unwrap().unwrap();
        assert!(pw.is_empty());
        let resolver = crate::runtime::resolver(
            &Config::parse(Path::new("t"), "[dns]\nnameservers = [\"127.0.0.1:53\"]\n").unwrap(),
        )
        .unwrap();
        let roots = TlsRoots::load(None).unwrap();
        let source = token_source("g", t.oauth2.as_ref().unwrap(), resolver, &roots).unwrap();
        assert!(
            source.describe().contains("token_file"),
            "{}",
            source.describe()
        );
    }

    #[test]
    fn secret_files_are_read_at_build() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let refresh = dir.path().join("refresh");
        std::fs::write(&secret, "the-secret\n").unwrap();
        std::fs::write(&refresh, "\n").unwrap();
        let resolver = crate::runtime::resolver(
            &Config::parse(Path::new("t"), "[dns]\nnameservers = [\"127.0.0.1:53\"]\n").unwrap(),
        )
        .unwrap();
        let roots = TlsRoots::load(None).unwrap();
        let mut o = OAuth2Config {
            token_url: "https://login.test/token".into(),
            client_id: "cid".into(),
            client_secret_file: secret.display().to_string(),
            ..Default::default()
        };
        let source = token_source("m", &o, Arc::clone(&resolver), &roots).unwrap();
        assert_eq!(
            source.describe(),
            "token endpoint https://login.test/token (client_credentials grant)"
        );
        o.refresh_token_file = refresh.display().to_string();
        let e = token_source("m", &o, Arc::clone(&resolver), &roots)
            .err()
            .unwrap();
        assert!(
            e.contains("oauth2.refresh_token_file") && e.contains("empty"),
            "{e}"
        );
        std::fs::write(&refresh, "rt\n").unwrap();
        let source = token_source("m", &o, Arc::clone(&resolver), &roots).unwrap();
        assert!(source.describe().contains("refresh_token grant"));
        o.client_secret_file = "/nonexistent/relaygate-secret".into();
        let e = token_source("m", &o, resolver, &roots).err().unwrap();
        assert!(
            e.contains("transport \"m\"") && e.contains("client_secret_file"),
            "{e}"
        );
        assert!(!e.contains("the-secret"));
    }
}
