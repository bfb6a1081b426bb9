//! The DATA phase as a byte-level state machine, no I/O: un-stuffs dots, normalises
//! line ends, finds the end of data, enforces the size limit, notes 8-bit content.
//!
//! Only `CRLF . CRLF` ends the data (RFC 5321 §4.1.1.4), where both line ends are real
//! CRLF pairs. A bare LF or bare CR inside the content is turned into CRLF, and a line
//! that starts after such a bare line end can never end the data: `\n.\n`, `\r\n.\n` and
//! `\n.\r\n` are content. That is what makes SMTP smuggling impossible through us: no
//! next hop can see an end of data where we did not.

use relaygate_transports::command::ordinary_run_end;

/// Where the receiver is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf` is true when the previous line ended with a real
    /// CRLF (or this is the first line).
    LineStart { crlf: bool },
    /// A "." at the start of a line.
    Dot { crlf: bool },
    /// ".\r" at the start of a line that followed a real CRLF.
    DotCr,
    /// Inside a line.
    Middle,
    /// A "\r" inside a line, not yet known to be followed by "\n".
    Cr,
}

#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    out: Vec<u8>,
    max: usize,
    size: usize,
    overflow: bool,
    eight_bit: bool,
}

/// What the receiver needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// Everything was consumed; more input is needed.
    NeedMore,
    /// The end of data was found after `consumed` bytes of this input.
    Done { consumed: usize },
}

/// The received content.
#[derive(Debug)]
pub struct Received {
    /// Content with CRLF line ends and dots un-stuffed (empty when over the limit).
    pub body: Vec<u8>,
    /// Size of the content, counted even past the limit.
    pub size: usize,
    /// The content was larger than the limit and was discarded.
    pub overflow: bool,
    /// Some byte had the high bit set.
    pub eight_bit: bool,
}

impl DataReceiver {
    pub fn new(max: usize) -> DataReceiver {
        DataReceiver {
            state: State::LineStart { crlf: true },
            // Small to start: most mail is a few KiB, and a large block allocated and
            // freed per message makes the allocator trim and refault its heap.
            out: Vec::with_capacity(max.min(16 * 1024)),
            max,
            size: 0,
            overflow: false,
            eight_bit: false,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if !self.eight_bit && !bytes.is_ascii() {
            self.eight_bit = true;
        }
        if self.overflow {
            return;
        }
        if self.size > self.max {
            self.overflow = true;
            self.out = Vec::new();
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Consumes input up to and including the end-of-data line.
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Middle => {
                    // Fast path: the rest of this line and every ordinary line after it
                    // (CRLF ended, not starting with "." or a bare line end) in one go.
                    let end = ordinary_run_end(input, i);
                    if end > i {
                        self.emit(&input[i..end]);
                        i = end;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.emit(b"\r\n");
                        self.state = State::LineStart { crlf: false };
                    }
                    i += 1;
                }
                State::LineStart { crlf } => {
                    match b {
                        b'.' => self.state = State::Dot { crlf },
                        b'\r' => self.state = State::Cr,
                        b'\n' => {
                            self.emit(b"\r\n");
                            self.state = State::LineStart { crlf: false };
                        }
                        _ => {
                            self.state = State::Middle;
                            continue;
                        }
                    }
                    i += 1;
                }
                State::Dot { crlf } => {
                    if crlf && b == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                        continue;
                    }
                    if crlf && b != b'\n' {
                        // A stuffed dot: delete it (RFC 5321 §4.5.2).
                    } else {
                        // A dot after a bare line end, or a lone "." line ended by a bare
                        // LF: content, kept as written.
                        self.emit(b".");
                    }
                    self.state = State::Middle;
                }
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart { crlf: true };
                        return Feed::Done { consumed: i + 1 };
                    }
                    // ".\r" then something else: the bare CR ends a "." line.
                    self.emit(b".\r\n");
                    self.state = State::LineStart { crlf: false };
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(b"\r\n");
                        self.state = State::LineStart { crlf: true };
                        i += 1;
                    } else {
                        self.emit(b"\r\n");
                        self.state = State::LineStart { crlf: false };
                    }
                }
            }
        }
        Feed::NeedMore
    }

    pub fn finish(self) -> Received {
        Received {
            body: self.out,
            size: self.size,
            overflow: self.overflow,
            eight_bit: self.eight_bit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], max: usize) -> (Feed, Received) {
        let mut r = DataReceiver::new(max);
        let f = r.feed(input);
        (f, r.finish())
    }

    /// Fed one byte at a time, the receiver never sees a run of lines at once: what it
    /// does then is the state machine alone, which whole-buffer feeding must match.
    #[test]
    fn whole_buffers_match_byte_at_a_time() {
        let tokens: [&[u8]; 10] = [
            b"ab\r\n",
            b"x\r\n",
            b".",
            b"\r\n",
            b"\r",
            b"\n",
            b"a",
            b".y\r\n",
            b"\xc3\xa9",
            b"\r\n.\r\n",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400 {
            let input: Vec<u8> = (0..len)
                .flat_map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    tokens[(seed % tokens.len() as u64) as usize]
                        .iter()
                        .copied()
                })
                .collect();
            let (whole, whole_rx) = run(&input, 1 << 20);
            let mut r = DataReceiver::new(1 << 20);
            let mut single = Feed::NeedMore;
            for (i, b) in input.iter().enumerate() {
                if let Feed::Done { .. } = r.feed(std::slice::from_ref(b)) {
                    single = Feed::Done { consumed: i + 1 };
                    break;
                }
            }
            let single_rx = r.finish();
            let shown = String::from_utf8_lossy(&input);
            assert_eq!(whole, single, "{shown:?}");
            assert_eq!(whole_rx.body, single_rx.body, "{shown:?}");
            assert_eq!(whole_rx.eight_bit, single_rx.eight_bit, "{shown:?}");
            assert_eq!(whole_rx.size, single_rx.size, "{shown:?}");
        }
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<usize>, &[u8])] = &[
            (b"a\r\nb\r\n.\r\n", Some(9), b"a\r\nb\r\n"),
            (b".\r\n", Some(3), b""),
            (b"..x\r\n.\r\n", Some(8), b".x\r\n"),
            (b"a\n.\nb\r\n.\r\nrest", Some(10), b"a\r\n.\r\nb\r\n"),
            (b"a\r\n.\nX\r\n.\r\n", Some(11), b"a\r\n.\r\nX\r\n"),
            (b"a\n.\r\nX\r\n.\r\n", Some(11), b"a\r\n.\r\nX\r\n"),
            (b"a\rb\r\n.\r\n", Some(8), b"a\r\nb\r\n"),
            (b"a\r\n.\rb\r\n.\r\n", Some(11), b"a\r\n.\r\nb\r\n"),
            (b"no end\r\n", None, b"no end\r\n"),
        ];
        for (input, done, body) in cases {
            let (f, r) = run(input, 1 << 20);
            match done {
                Some(n) => assert_eq!(
                    f,
                    Feed::Done { consumed: *n },
                    "{:?}",
                    String::from_utf8_lossy(input)
                ),
                None => assert_eq!(f, Feed::NeedMore),
            }
            assert_eq!(
                String::from_utf8_lossy(&r.body),
                String::from_utf8_lossy(body),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn split_anywhere_gives_same_result() {
        let input: &[u8] = b"Subject: x\r\n\r\n..dot\r\nbare\nlf\r\n.\nno\r\n.\r\n";
        let (_, whole) = run(input, 1 << 20);
        for cut in 0..input.len() {
            let mut r = DataReceiver::new(1 << 20);
            assert_eq!(r.feed(&input[..cut]), Feed::NeedMore, "cut {cut}");
            assert_eq!(
                r.feed(&input[cut..]),
                Feed::Done {
                    consumed: input.len() - cut
                }
            );
            assert_eq!(r.finish().body, whole.body, "cut {cut}");
        }
    }

    #[test]
    fn overflow_and_eight_bit() {
        let (f, r) = run(b"0123456789\r\n.\r\n", 5);
        assert_eq!(f, Feed::Done { consumed: 15 });
        assert!(r.overflow && r.body.is_empty() && r.size == 12);
        let (_, r) = run("é\r\n.\r\n".as_bytes(), 100);
        assert!(r.eight_bit && !r.overflow);
    }
}
