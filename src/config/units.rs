//! Human-friendly durations ("7m30s", "200ms", "2h") and sizes ("25MiB", "512KiB",
//! "10MB", "1000") as they appear in the config file, parsed into std types.

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, units `ms`, `s`, `m`,
/// `h`, `d`; for example `"7m30s"`. A bare number is refused: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("duration {text:?}: expected a number at {rest:?}"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86400)),
            "" => return Err(format!("duration {text:?}: missing unit (ms, s, m, h, d)")),
            other => return Err(format!("duration {text:?}: unknown unit {other:?}")),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Parses a size in bytes: a number with an optional unit `B`, `KB`/`MB`/`GB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(format!("size {text:?}: expected a number"));
    }
    let value: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("size {text:?}: number too large"))?;
    let factor: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("size {text:?}: unknown unit {other:?}")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?}: too large"))
}

/// Formats a duration compactly for logs and DSNs, e.g. `7m30s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let table = [
            ("7m30s", Ok(Duration::from_secs(450))),
            ("200ms", Ok(Duration::from_millis(200))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("1d2h", Ok(Duration::from_secs(93600))),
            ("30", Err(())),
            ("m", Err(())),
            ("5x", Err(())),
            ("", Err(())),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input).map_err(|_| ()), want, "{input}");
        }
    }

    #[test]
    fn sizes() {
        let table = [
            ("25MiB", Ok(25 << 20)),
            ("1KiB", Ok(1024)),
            ("10MB", Ok(10_000_000)),
            ("1000", Ok(1000)),
            ("12 KiB", Ok(12 * 1024)),
            ("1XB", Err(())),
            ("KiB", Err(())),
        ];
        for (input, want) in table {
            assert_eq!(parse_size(input).map_err(|_| ()), want, "{input}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(450)), "7m30s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }
}
