//! Every error of a config file that does not parse, at once: the TOML reader stops at
//! the first one, so the line it names is set aside (commented out) and the text read
//! again, until it parses or nothing more can be set aside. Each error names the file,
//! the line, the key (`queue.first_retry`, `transports.p.host`) and the value written.
//! When the rest parses, the validation errors of what is left are added (those about
//! a key set aside are not: they are the same error again).

use std::path::Path;

use super::{line_of, Config, ConfigError};

/// At most this many errors are collected.
const MAX_ERRORS: usize = 50;

/// The `[table]` or `[[table]]` header in force at line `index` (0-based), as a dotted
/// path, and the key written on that line.
fn key_at(lines: &[&str], index: usize) -> Option<String> {
    let line = lines.get(index)?.trim();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = lines[..index]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| {
            l.trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .replace('"', "")
        });
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) if line.starts_with('[') => Some(t),
        _ => None,
    }
}

/// The value written on a `key = value` line.
fn value_at(lines: &[&str], index: usize) -> Option<String> {
    lines
        .get(index)?
        .split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Every error of `text`, parse errors first, then validation errors.
pub fn all_errors(path: &Path, text: &str) -> Vec<ConfigError> {
    let original: Vec<&str> = text.lines().collect();
    let mut work: Vec<String> = original.iter().map(|l| l.to_string()).collect();
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut set_aside: Vec<(usize, Option<String>)> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let joined = work.join("\n");
        match toml::from_str::<Config>(&joined) {
            Ok(config) => {
                // Parse errors in file order, then the validation errors.
                errors.sort_by_key(|e| e.line);
                for e in config.validate(path, &joined) {
                    let about_set_aside = set_aside
                        .iter()
                        .any(|(_, k)| k.is_some() && e.key.as_deref() == k.as_deref());
                    if !about_set_aside {
                        errors.push(e);
                    }
                }
                break;
            }
            Err(e) => {
                let message = e.message().trim().to_string();
                let line = e.span().map(|s| line_of(&joined, s.start));
                let index = line.map(|l| l.saturating_sub(1));
                // A field found missing because its line was set aside is not news.
                let missing_set_aside = message.starts_with("missing field")
                    && set_aside.iter().any(|(_, k)| {
                        k.as_deref()
                            .and_then(|k| k.rsplit('.').next())
                            .is_some_and(|f| message.contains(&format!("`{f}`")))
                    });
                let key = index
                    .and_then(|i| key_at(&original, i))
                    .or_else(|| super::key_in_message(&message));
                let mut message = message;
                if let Some(v) = index.and_then(|i| value_at(&original, i)) {
                    if !message.contains(&v) {
                        message.push_str(&format!(" (written: {v})"));
                    }
                }
                if !missing_set_aside {
                    errors.push(ConfigError {
                        file: path.to_path_buf(),
                        line,
                        key: key.clone(),
                        message,
                    });
                }
                // Set the line aside and read again; without a line (or one already set
                // aside) nothing more can be learned.
                match index {
                    Some(i) if i < work.len() && !set_aside.iter().any(|(j, _)| *j == i) => {
                        work[i] = format!("# {}", work[i]);
                        set_aside.push((i, key));
                    }
                    _ => {
                        errors.sort_by_key(|e| e.line);
                        break;
                    }
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_with_its_key_and_value() {
        let text = "hostname = \"x\"\n[queue]\nfirst_retry = \"5 minutes\"\n\
                    [submission]\ntrusted_networks = \"127.0.0.1\"\nbogus = 1\n";
        let errors = all_errors(Path::new("t.toml"), text);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{shown:#?}");
        assert_eq!(
            errors[0].key.as_deref(),
            Some("queue.first_retry"),
            "{shown:#?}"
        );
        assert_eq!(errors[0].line, Some(3));
        assert!(shown[0].contains("5 minutes"), "{}", shown[0]);
        assert_eq!(
            errors[1].key.as_deref(),
            Some("submission.trusted_networks")
        );
        assert!(shown[1].contains("\"127.0.0.1\""), "{}", shown[1]);
        assert_eq!(
            errors[2].key.as_deref(),
            Some("submission.bogus"),
            "{shown:#?}"
        );
    }
}
