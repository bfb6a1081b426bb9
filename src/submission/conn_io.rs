//! Reading one connection: bounded command lines, and the TLS facts a session records
//! (protocol label, RFC 9266 channel binding).

use std::io;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::session::Conn;

/// How reading a command line ended.
pub enum Line {
    Ok,
    /// Longer than the limit: the rest of the line was read and dropped.
    TooLong,
    Eof,
}

/// Reads one line (without CRLF) into `buf`, keeping at most `max` bytes of it.
pub async fn read_line(
    reader: &mut BufReader<Conn>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = reader.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                if !too_long {
                    buf.extend_from_slice(&avail[..pos]);
                }
                reader.consume(pos + 1);
                break;
            }
            None => {
                let n = avail.len();
                if !too_long {
                    buf.extend_from_slice(avail);
                }
                reader.consume(n);
            }
        }
        if buf.len() > max {
            too_long = true;
            buf.clear();
        }
    }
    if too_long || buf.len() > max {
        return Ok(Line::TooLong);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Ok)
}

/// The RFC 9266 tls-exporter value, for TLS 1.3 sessions only.
pub fn tls_exporter(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}

pub fn tls_label(conn: &rustls::ServerConnection) -> String {
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .unwrap_or("TLS");
    let suite = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    format!("{version} {suite}")
}
