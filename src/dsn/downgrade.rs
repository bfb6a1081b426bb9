//! Downgrading an international DSN (RFC 6533) for a path without SMTPUTF8: the
//! `message/global-delivery-status` part becomes `message/delivery-status` with UTF-8
//! addresses in `utf-8-addr-xtext` (RFC 6533 §3) and any other non-ASCII character
//! escaped the same way; the returned `message/global(-headers)` becomes
//! `text/rfc822-headers` without the header fields that are not ASCII. Pure, and only
//! for DSNs [`super::build`] made (it relies on their layout).

use crate::address::utf8_addr_xtext;

/// The ASCII form of a DSN built in the international form, or `None` when `dsn` is not
/// one, or its recipient (the original sender, in `To:`) is not ASCII and so needs
/// SMTPUTF8 whatever we do.
pub fn downgrade(dsn: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(dsn).ok()?;
    let (head, _) = text.split_once("\r\n\r\n")?;
    let to = head.lines().find(|l| l.starts_with("To: "))?;
    if !to.is_ascii() || !text.contains("Content-Type: message/global-delivery-status\r\n") {
        return None;
    }
    let boundary = head
        .split("boundary=")
        .nth(1)?
        .trim_start_matches('"')
        .split(['"', ';', '\r'])
        .next()?;
    let delimiter = format!("\r\n--{boundary}\r\n");
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split(&delimiter).enumerate() {
        if i > 0 {
            out.push_str(&delimiter);
        }
        let Some((headers, body)) = part.split_once("\r\n\r\n") else {
            out.push_str(part);
            continue;
        };
        let content_type = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .unwrap_or("");
        match content_type {
            "message/global-delivery-status" if i > 0 => {
                out.push_str(
                    "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
                );
                out.push_str(&status_fields(body));
            }
            "message/global" | "message/global-headers" if i > 0 => {
                out.push_str(
                    "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
                );
                out.push_str(&ascii_header_fields(body, boundary));
            }
            _ => out.push_str(part),
        }
    }
    Some(out.into_bytes())
}

/// The per-message and per-recipient fields, ASCII: `utf-8` addresses in xtext, other
/// non-ASCII characters escaped.
fn status_fields(body: &str) -> String {
    body.split_inclusive("\r\n")
        .map(|line| {
            if line.is_ascii() {
                return line.to_string();
            }
            let (content, end) = match line.strip_suffix("\r\n") {
                Some(c) => (c, "\r\n"),
                None => (line, ""),
            };
            for field in ["Final-Recipient: utf-8; ", "Original-Recipient: utf-8;"] {
                if let Some(addr) = content.strip_prefix(field) {
                    return format!("{field}{}{end}", utf8_addr_xtext(addr));
                }
            }
            let escaped: String = content
                .chars()
                .map(|c| {
                    if c.is_ascii() {
                        c.to_string()
                    } else {
                        format!("\\x{{{:X}}}", c as u32)
                    }
                })
                .collect();
            format!("{escaped}{end}")
        })
        .collect()
}

/// The header section of the returned message without the fields that are not ASCII
/// (a field with its continuation lines), followed by what ended the part.
fn ascii_header_fields(part: &str, boundary: &str) -> String {
    let closing = format!("\r\n--{boundary}--\r\n");
    let content = part.strip_suffix(&closing).unwrap_or(part);
    let headers = content.split("\r\n\r\n").next().unwrap_or("");
    let mut fields: Vec<String> = Vec::new();
    for line in headers.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str("\r\n");
                last.push_str(line);
            }
        } else {
            fields.push(line.to_string());
        }
    }
    let mut out: String = fields
        .into_iter()
        .filter(|f| f.is_ascii() && !f.is_empty())
        .map(|f| f + "\r\n")
        .collect();
    if part.ends_with(&closing) {
        out.push_str(&closing);
    }
    out
}
