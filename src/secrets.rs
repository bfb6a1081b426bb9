//! Upstream secrets: the password a smarthost transport logs in with.
//!
//! A transport names its password in exactly one of three ways (validation refuses
//! more than one): `password_file` (the file's first line, without its line end),
//! `password_env` (an environment variable) or `password` (inline, discouraged). The
//! value is read when the transport snapshot is built — at start and at each reload —
//! so a secret that cannot be read stops the start, or leaves the running snapshot in
//! place on SIGHUP.
//!
//! Errors name the transport and the file or variable, never the value. The value
//! travels as a [`Secret`], whose `Debug` and `Display` print `<redacted>`.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::TransportConfig;

pub use relaygate_transports::Secret;

/// Why a secret could not be resolved. No variant holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The password file could not be read.
    #[error("{owner}: cannot read password_file {path}: {source}", path = .path.display())]
    ReadFile {
        /// Who needs the secret, e.g. `transport "provider"`.
        owner: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The password file's first line is empty.
    #[error("{owner}: password_file {path} is empty (the password is its first line)", path = .path.display())]
    EmptyFile {
        /// Who needs the secret.
        owner: String,
        /// The file.
        path: PathBuf,
    },
    /// The environment variable is not set.
    #[error("{owner}: environment variable {var} (password_env) is not set")]
    EnvMissing {
        /// Who needs the secret.
        owner: String,
        /// The variable.
        var: String,
    },
    /// The environment variable is not valid UTF-8.
    #[error("{owner}: environment variable {var} (password_env) is not valid UTF-8")]
    EnvNotUnicode {
        /// Who needs the secret.
        owner: String,
        /// The variable.
        var: String,
    },
    /// The environment variable is set but empty.
    #[error("{owner}: environment variable {var} (password_env) is empty")]
    EnvEmpty {
        /// Who needs the secret.
        owner: String,
        /// The variable.
        var: String,
    },
    /// A user name is configured but no password source.
    #[error("{owner}: a username is set but no password_file, password_env or password")]
    Missing {
        /// Who needs the secret.
        owner: String,
    },
}

/// Where a secret comes from; at most one of the fields is non-empty after validation.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// File whose first line is the secret.
    pub file: &'a str,
    /// Environment variable holding the secret.
    pub env: &'a str,
    /// The secret itself.
    pub inline: &'a str,
}

impl<'a> SecretSource<'a> {
    /// The password fields of a transport.
    pub fn of_transport(t: &'a TransportConfig) -> Self {
        SecretSource {
            file: &t.password_file,
            env: &t.password_env,
            inline: &t.password,
        }
    }

    /// True when no source is set.
    pub fn is_empty(&self) -> bool {
        self.file.is_empty() && self.env.is_empty() && self.inline.is_empty()
    }
}

/// Reads the secret from its source; `Ok(None)` when no source is set. `owner` names
/// who needs it in errors (e.g. `transport "provider"`).
pub fn resolve(owner: &str, source: SecretSource<'_>) -> Result<Option<Secret>, SecretError> {
    if !source.file.is_empty() {
        return read_file(owner, Path::new(source.file)).map(Some);
    }
    if !source.env.is_empty() {
        return read_env(owner, source.env).map(Some);
    }
    if !source.inline.is_empty() {
        return Ok(Some(Secret::new(source.inline)));
    }
    Ok(None)
}

/// The password of smarthost transport `name`: `Ok(None)` without a username, an error
/// when a username has no readable password.
pub fn transport_password(name: &str, t: &TransportConfig) -> Result<Option<Secret>, SecretError> {
    let owner = format!("transport {name:?}");
    let secret = resolve(&owner, SecretSource::of_transport(t))?;
    match (t.username.is_empty(), secret) {
        (true, _) => Ok(None),
        (false, Some(s)) => Ok(Some(s)),
        (false, None) => Err(SecretError::Missing { owner }),
    }
}

fn read_file(owner: &str, path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::ReadFile {
        owner: owner.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_readable_by_others(owner, path);
    // The first line, without "\n" or "\r\n"; other whitespace is part of the password.
    let first = text.split('\n').next().unwrap_or_default();
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first.is_empty() {
        return Err(SecretError::EmptyFile {
            owner: owner.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(first))
}

fn read_env(owner: &str, var: &str) -> Result<Secret, SecretError> {
    match std::env::var(var) {
        Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty {
            owner: owner.to_string(),
            var: var.to_string(),
        }),
        Ok(v) => Ok(Secret::new(v)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing {
            owner: owner.to_string(),
            var: var.to_string(),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode {
            owner: owner.to_string(),
            var: var.to_string(),
        }),
    }
}

/// A password file that every local user can read is worth a warning, not a refusal
/// (containers often mount secrets 0644).
fn warn_if_readable_by_others(owner: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(%owner, path = %path.display(),
                "password_file is readable by every local user; consider chmod 600");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(toml_text: &str) -> TransportConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn file_first_line_without_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            ("s3cret\n", "s3cret"),
            ("s3cret\r\nsecond line\n", "s3cret"),
            ("no newline", "no newline"),
            (" spaced pass \n", " spaced pass "),
        ];
        for (i, (content, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("pw{i}"));
            std::fs::write(&path, content).unwrap();
            let got = resolve(
                "transport \"t\"",
                SecretSource {
                    file: path.to_str().unwrap(),
                    env: "",
                    inline: "",
                },
            )
            .unwrap()
            .unwrap();
            assert_eq!(got.expose(), *want, "{content:?}");
        }
    }

    #[test]
    fn errors_name_the_source_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\nhidden-value\n").unwrap();
        let missing = dir.path().join("missing");
        let (empty_s, missing_s) = (
            empty.to_string_lossy().into_owned(),
            missing.to_string_lossy().into_owned(),
        );
        let file = |p: &str| {
            resolve(
                "transport \"p\"",
                SecretSource {
                    file: p,
                    env: "",
                    inline: "",
                },
            )
        };
        let e = file(&empty_s).unwrap_err();
        assert!(matches!(e, SecretError::EmptyFile { .. }));
        let text = e.to_string();
        assert!(
            text.contains("transport \"p\"") && text.contains("empty"),
            "{text}"
        );
        assert!(!text.contains("hidden-value"), "{text}");
        let e = file(&missing_s).unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        let var = "RELAYGATE_TEST_SECRET_THAT_IS_NOT_SET_9f3a";
        let e = resolve(
            "transport \"p\"",
            SecretSource {
                file: "",
                env: var,
                inline: "",
            },
        )
        .unwrap_err();
        assert!(matches!(e, SecretError::EnvMissing { .. }));
        assert!(e.to_string().contains(var), "{e}");
    }

    #[test]
    fn env_and_inline() {
        // PATH is set in every test environment; its value stands in for a secret.
        let path = std::env::var("PATH").unwrap();
        let got = resolve(
            "x",
            SecretSource {
                file: "",
                env: "PATH",
                inline: "",
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.expose(), path);
        let got = resolve(
            "x",
            SecretSource {
                file: "",
                env: "",
                inline: "inline-pw",
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.expose(), "inline-pw");
        assert_eq!(format!("{got:?} {got}"), "Secret(<redacted>) <redacted>");
    }

    #[test]
    fn transport_password_needs_a_source_with_a_username() {
        let t = transport("kind = \"submission\"\nhost = \"h\"\n");
        assert!(transport_password("t", &t).unwrap().is_none());
        let t = transport("kind = \"submission\"\nhost = \"h\"\nusername = \"u\"\n");
        let e = transport_password("t", &t).unwrap_err();
        assert!(matches!(e, SecretError::Missing { .. }), "{e}");
        let t =
            transport("kind = \"submission\"\nhost = \"h\"\nusername = \"u\"\npassword = \"pw\"\n");
        assert_eq!(transport_password("t", &t).unwrap().unwrap().expose(), "pw");
    }
}
