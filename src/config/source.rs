//! Where `serve` takes its config from: the file named by `-c`, else
//! `./config/relaygate.toml` when it exists, else the default compiled into the binary
//! (the same text as `config/relaygate.toml`; `relaygate config print-default` writes it
//! out).

use std::path::{Path, PathBuf};

use super::{Config, ConfigErrors, DEFAULT_CONFIG_PATH};

/// The default config, compiled in.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/relaygate.toml");

/// What the gateway reads its config from (again at each reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    /// `-c FILE` when given; else the default path when it exists; else the embedded
    /// default.
    pub fn resolve(explicit: Option<PathBuf>) -> ConfigSource {
        match explicit {
            Some(p) => ConfigSource::File(p),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                ConfigSource::File(PathBuf::from(DEFAULT_CONFIG_PATH))
            }
            None => ConfigSource::Embedded,
        }
    }

    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Embedded => {
                Config::parse(Path::new("(embedded default)"), EMBEDDED_DEFAULT)
            }
        }
    }

    /// For logs and reports: the path, or "the embedded default".
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Embedded => {
                format!("the embedded default (no {DEFAULT_CONFIG_PATH} here)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_parses_and_is_the_shipped_file() {
        let c = ConfigSource::Embedded.load().unwrap();
        assert_eq!(c.submission.listen, ["127.0.0.1:2525"]);
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/relaygate.toml"
        ))
        .unwrap();
        assert_eq!(shipped, EMBEDDED_DEFAULT);
    }
}
