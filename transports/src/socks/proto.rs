//! The SOCKS5 client protocol as bytes, no I/O: method negotiation (RFC 1928 §3),
//! username/password sub-negotiation (RFC 1929 §2), the CONNECT request (RFC 1928 §4)
//! and its reply (§6).

use std::net::{IpAddr, SocketAddr};

pub const VERSION: u8 = 5;
pub const METHOD_NONE: u8 = 0x00;
pub const METHOD_USERPASS: u8 = 0x02;
pub const METHOD_REFUSED: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// The greeting: the methods we can do. With credentials we offer only
/// username/password, so a proxy cannot silently skip authentication.
pub fn greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        vec![VERSION, 1, METHOD_USERPASS]
    } else {
        vec![VERSION, 1, METHOD_NONE]
    }
}

/// The method the proxy chose (2 bytes), given what [`greeting`] offered. RFC 1928 §3:
/// the server selects from the methods the client offered; a proxy that picks another
/// (say "no authentication" when we offered only username/password) is refused.
pub fn parse_method(reply: [u8; 2], with_credentials: bool) -> Result<u8, String> {
    if reply[0] != VERSION {
        return Err(format!("not a SOCKS5 proxy (version byte {})", reply[0]));
    }
    let offered = if with_credentials {
        METHOD_USERPASS
    } else {
        METHOD_NONE
    };
    match reply[1] {
        METHOD_REFUSED => Err("proxy accepts none of our authentication methods".into()),
        m if m == offered => Ok(m),
        m => Err(format!(
            "proxy chose method {m:#04x}, which we did not offer (we offered {offered:#04x}{})",
            if with_credentials {
                ", username/password only"
            } else {
                ", no authentication"
            }
        )),
    }
}

/// RFC 1929 §2: VER=1, ULEN, UNAME, PLEN, PASSWD (each 1..=255 bytes).
pub fn userpass(username: &str, password: &str) -> Result<Vec<u8>, String> {
    let (u, p) = (username.as_bytes(), password.as_bytes());
    if u.is_empty() || u.len() > 255 || p.is_empty() || p.len() > 255 {
        return Err("SOCKS username and password must be 1 to 255 bytes".into());
    }
    let mut out = Vec::with_capacity(3 + u.len() + p.len());
    out.push(1);
    out.push(u.len() as u8);
    out.extend_from_slice(u);
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    Ok(out)
}

/// RFC 1929 §2: STATUS 0 is success, anything else a failure.
pub fn parse_userpass_reply(reply: [u8; 2]) -> Result<(), String> {
    match reply {
        [_, 0] => Ok(()),
        [_, status] => Err(format!(
            "proxy refused our username/password (status {status})"
        )),
    }
}

/// CONNECT to an address (we always resolve locally and send an IP).
pub fn connect_request(target: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION, CMD_CONNECT, 0];
    match target.ip() {
        IpAddr::V4(v4) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
    out
}

/// The meaning of a CONNECT reply code (RFC 1928 §6).
pub fn reply_text(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

/// From the first 4 bytes of the CONNECT reply: `Ok(n)` = how many more bytes (bound
/// address and port) follow and must be read, or the refusal.
pub fn parse_connect_head(head: [u8; 4]) -> Result<usize, String> {
    if head[0] != VERSION {
        return Err(format!("bad SOCKS reply version {}", head[0]));
    }
    if head[1] != 0 {
        return Err(format!("proxy reply {} ({})", head[1], reply_text(head[1])));
    }
    match head[3] {
        ATYP_V4 => Ok(4 + 2),
        ATYP_V6 => Ok(16 + 2),
        // A domain: one length byte, then the name; the caller reads the length first.
        ATYP_DOMAIN => Ok(1),
        other => Err(format!("bad address type {other} in SOCKS reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        assert_eq!(greeting(false), vec![5, 1, 0]);
        assert_eq!(greeting(true), vec![5, 1, 2]);
        assert_eq!(
            connect_request("192.0.2.1:25".parse().unwrap()),
            vec![5, 1, 0, 1, 192, 0, 2, 1, 0, 25]
        );
        let v6 = connect_request("[2001:db8::1]:587".parse().unwrap());
        assert_eq!(v6.len(), 4 + 16 + 2);
        assert_eq!(&v6[20..], &[2, 75]);
        assert_eq!(
            userpass("u", "pw").unwrap(),
            vec![1, 1, b'u', 2, b'p', b'w']
        );
        assert!(userpass("", "x").is_err());
    }

    #[test]
    fn replies() {
        assert_eq!(parse_method([5, 0], false), Ok(0));
        assert_eq!(parse_method([5, 2], true), Ok(2));
        assert!(parse_method([5, 0xff], false).is_err());
        assert!(parse_method([4, 0], false).is_err());
        // A proxy may not skip the authentication we asked for, nor ask for one we did
        // not offer.
        let e = parse_method([5, 0], true).unwrap_err();
        assert!(e.contains("did not offer"), "{e}");
        assert!(parse_method([5, 2], false).is_err());
        assert!(parse_userpass_reply([1, 1]).is_err());
        assert_eq!(parse_connect_head([5, 0, 0, 1]), Ok(6));
        let refused = parse_connect_head([5, 5, 0, 1]).unwrap_err();
        assert!(
            refused.contains("5") && refused.contains("connection refused"),
            "{refused}"
        );
    }
}
