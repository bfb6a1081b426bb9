//! The socket `tokio-socks` runs the SOCKS5 handshake over: our TCP connection to the
//! proxy, wrapped to keep two promises the crate alone does not, and to remember what
//! the proxy answered so a failure names its step and the proxy's code.
//!
//! - **We offer username/password only when we have credentials.** Given credentials,
//!   tokio-socks offers "no authentication" as well (greeting `05 02 00 02`), and a proxy
//!   that picks it is used without ever checking them. We rewrite that greeting to
//!   `05 01 02`, so that a proxy that lets some clients in without a login (say, an
//!   address it trusts) still asks for ours, as it did before tokio-socks.
//! - **RFC 1928 §3: the proxy selects one of the methods we offered.** With our
//!   narrowed offer, a proxy that answers "no authentication" is refused here, before
//!   anything else is sent. Without credentials tokio-socks offers only "no
//!   authentication" and itself refuses any other choice (`AuthorizationRequired` for
//!   username/password, `UnknownAuthMethod` for the rest); the tests pin both.
//!
//! The handshake strictly alternates (we send a request, the proxy replies), so the
//! first write after a reply starts the next [`Step`]. Of each reply we keep the first
//! four bytes: version and method; version and RFC 1929 status; or version, reply code,
//! reserved byte and address type. After the handshake [`Guarded::into_inner`] gives the
//! plain stream back, so the tunnel itself costs nothing extra.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{SocksFailure, Step};

/// SOCKS protocol version 5 (RFC 1928 §3).
const VERSION: u8 = 5;
/// RFC 1928 §3 method X'00': no authentication required.
const METHOD_NONE: u8 = 0x00;
/// The greeting tokio-socks 0.5 sends with credentials: both methods.
const CRATE_GREETING: [u8; 4] = [VERSION, 2, METHOD_NONE, 0x02];
/// What we send instead: username/password (X'02') only.
const OUR_GREETING: [u8; 3] = [VERSION, 1, 0x02];

/// A stream to the proxy during the handshake.
#[derive(Debug)]
pub(super) struct Guarded<S> {
    inner: S,
    /// We have credentials: offer (and accept) username/password only.
    with_credentials: bool,
    step: Step,
    /// The proxy replied since our last request: our next write starts the next step.
    replied: bool,
    /// The first bytes of the current step's reply, and how many arrived in all.
    reply: [u8; 4],
    reply_len: usize,
    /// How much of [`OUR_GREETING`] is written.
    greeting_written: usize,
    /// The proxy chose "no authentication" though we offered only username/password.
    refused_none: bool,
}

impl<S> Guarded<S> {
    pub(super) fn new(inner: S, with_credentials: bool) -> Self {
        Guarded {
            inner,
            with_credentials,
            step: Step::Method,
            replied: false,
            reply: [0; 4],
            reply_len: 0,
            greeting_written: 0,
            refused_none: false,
        }
    }

    /// The step under way (or the one that failed).
    pub(super) fn step(&self) -> Step {
        self.step
    }

    pub(super) fn into_inner(self) -> S {
        self.inner
    }

    /// The reply byte at `index` of the current step, if it arrived.
    fn reply_byte(&self, index: usize) -> Option<u8> {
        (index < self.reply_len.min(self.reply.len())).then(|| self.reply[index])
    }

    /// What a tokio-socks error means, given what the proxy sent.
    pub(super) fn failure(&self, error: tokio_socks::Error) -> SocksFailure {
        use tokio_socks::Error as E;
        let step = self.step;
        let with_credentials = self.with_credentials;
        if self.refused_none {
            return SocksFailure::MethodNotOffered {
                chosen: METHOD_NONE,
                with_credentials,
            };
        }
        let malformed = |detail: String| SocksFailure::Malformed { step, detail };
        match error {
            E::Io(source) => SocksFailure::Io { step, source },
            E::InvalidResponseVersion => SocksFailure::BadVersion {
                step,
                version: self.reply_byte(0).unwrap_or(0),
            },
            E::NoAcceptableAuthMethods => SocksFailure::NoAcceptableMethod,
            E::PasswordAuthFailure(status) => SocksFailure::AuthRefused(status),
            E::InvalidAuthValues(_) => SocksFailure::BadCredentials,
            // The proxy picked username/password, or an unknown method, that we did
            // not offer.
            E::AuthorizationRequired | E::UnknownAuthMethod if step == Step::Method => {
                SocksFailure::MethodNotOffered {
                    chosen: self.reply_byte(1).unwrap_or(0),
                    with_credentials,
                }
            }
            E::InvalidReservedByte => malformed(format!(
                "reserved byte {} in the reply is not 0",
                self.reply_byte(2).unwrap_or(0)
            )),
            E::UnknownAddressType => malformed(format!(
                "bad address type {} in SOCKS reply",
                self.reply_byte(3).unwrap_or(0)
            )),
            // Every other refusal of the CONNECT, named by its code (tokio-socks reports
            // an unassigned code as `UnknownAuthMethod`).
            _ if step == Step::Connect && self.reply_byte(1).is_some_and(|c| c != 0) => {
                SocksFailure::Refused {
                    code: self.reply_byte(1).unwrap_or(0),
                }
            }
            other => malformed(other.to_string()),
        }
    }

    /// A write after a reply begins the next step.
    fn next_step(&mut self) {
        self.step = match self.step {
            Step::Method if self.with_credentials => Step::Auth,
            Step::Dial | Step::Method | Step::Auth | Step::Connect => Step::Connect,
        };
        self.replied = false;
        self.reply_len = 0;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        for &byte in &buf.filled()[before..] {
            if let Some(slot) = this.reply.get_mut(this.reply_len) {
                *slot = byte;
            }
            this.reply_len += 1;
            this.replied = true;
        }
        // RFC 1928 §3: we offered username/password only.
        if this.with_credentials
            && this.step == Step::Method
            && this.reply_byte(0) == Some(VERSION)
            && this.reply_byte(1) == Some(METHOD_NONE)
        {
            this.refused_none = true;
            return Poll::Ready(Err(io::Error::other(
                "proxy chose no authentication, which we did not offer",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replied {
            this.next_step();
        }
        let greeting_pending = this.greeting_written < OUR_GREETING.len();
        if !(this.with_credentials && this.step == Step::Method && greeting_pending) {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // tokio-socks hands us its whole greeting until we report it written.
        if buf != CRATE_GREETING {
            return Poll::Ready(Err(io::Error::other(format!(
                "unexpected SOCKS5 greeting {buf:02x?} from tokio-socks"
            ))));
        }
        while this.greeting_written < OUR_GREETING.len() {
            let rest = &OUR_GREETING[this.greeting_written..];
            match ready!(Pin::new(&mut this.inner).poll_write(cx, rest))? {
                0 => return Poll::Ready(Ok(0)),
                n => this.greeting_written += n,
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
