//! DKIM canonicalization, relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4), and the header
//! fields of a message as signing needs them. Bytes in, bytes out: no keys, no I/O.

/// One header field: its name and its whole raw text (name, colon, value with any
/// folding, without the final CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
}

/// Splits a message into its header fields and its body (after the empty line; empty
/// when there is none). Lines end with CRLF; a bare LF is taken as a line end too.
pub fn split(message: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    let mut start: Option<usize> = None;
    let body_at;
    loop {
        let end = match message[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i,
            None => {
                // No end of line: the rest is one last header line, and no body.
                close(message, &mut fields, start, message.len());
                return (fields, &[]);
            }
        };
        let line = &message[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            close(message, &mut fields, start, pos);
            body_at = end + 1;
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation of the field above (RFC 5322 §2.2.3).
            if start.is_none() {
                start = Some(pos);
            }
        } else {
            close(message, &mut fields, start, pos);
            start = Some(pos);
        }
        pos = end + 1;
    }
    (fields, &message[body_at..])
}

fn close<'a>(message: &'a [u8], fields: &mut Vec<Field<'a>>, start: Option<usize>, end: usize) {
    let Some(start) = start else { return };
    let mut raw = &message[start..end];
    while let Some(r) = raw.strip_suffix(b"\n") {
        raw = r.strip_suffix(b"\r").unwrap_or(r);
    }
    let name_end = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let name = trim_wsp(&raw[..name_end]);
    fields.push(Field { name, raw });
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_wsp(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_wsp(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_wsp(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The relaxed canonical form of one header field, `name:value` without CRLF (RFC 6376
/// §3.4.2): the name in lower case, the value unfolded, runs of whitespace as one space,
/// no whitespace at either end of the value or around the colon.
pub fn relaxed_header(raw: &[u8]) -> Vec<u8> {
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let mut out: Vec<u8> = trim_wsp(&raw[..colon]).to_ascii_lowercase();
    out.push(b':');
    let value = raw.get(colon + 1..).unwrap_or(&[]);
    let mut space = false;
    let mut started = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                space = false;
                started = true;
                out.push(b);
            }
        }
    }
    out
}

/// The relaxed canonical form of a body (RFC 6376 §3.4.4): whitespace at line ends
/// removed, runs of whitespace as one space, empty lines at the end removed, and a
/// non-empty body ending in CRLF.
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut pending_empty = 0usize;
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        // The piece after the last LF is not a line unless it has content.
        if lines.peek().is_none() && line.is_empty() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut canon = Vec::with_capacity(line.len());
        let mut space = false;
        for &b in line {
            if is_wsp(b) {
                space = true;
            } else {
                if space {
                    canon.push(b' ');
                }
                space = false;
                canon.push(b);
            }
        }
        if canon.is_empty() {
            pending_empty += 1;
            continue;
        }
        for _ in 0..pending_empty {
            out.extend_from_slice(b"\r\n");
        }
        pending_empty = 0;
        out.extend_from_slice(&canon);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6376_example_relaxed() {
        // RFC 6376 §3.4.6.
        let msg = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (fields, body) = split(msg);
        let canon: Vec<Vec<u8>> = fields.iter().map(|f| relaxed_header(f.raw)).collect();
        assert_eq!(canon, vec![b"a:X".to_vec(), b"b:Y Z".to_vec()]);
        assert_eq!(
            relaxed_header(b"Subject:  a:  b "),
            b"subject:a: b".to_vec()
        );
        assert_eq!(fields[1].name, b"B");
        assert_eq!(relaxed_body(body), b" C\r\nD E\r\n".to_vec());
    }

    #[test]
    fn bodies() {
        assert_eq!(relaxed_body(b""), b"".to_vec());
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"".to_vec());
        assert_eq!(relaxed_body(b"x"), b"x\r\n".to_vec());
        assert_eq!(relaxed_body(b"a\r\n\r\nb\r\n"), b"a\r\n\r\nb\r\n".to_vec());
        let (_, body) = split(b"Subject: s\r\n");
        assert!(body.is_empty());
    }
}
