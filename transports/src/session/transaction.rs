//! One mail transaction on a ready [`Session`]: checks against the server's
//! capabilities, MAIL/RCPT/DATA (pipelined or one by one), the body, and the mapping of
//! replies to per-recipient outcomes.

use crate::{
    command,
    ehlo::Capabilities,
    message::OutboundMessage,
    outcome::{RcptOutcome, Stage, TransportError},
    reply::{EnhancedCode, Reply},
};

use super::{synthesized, Session, SessionState, State, TxnEnd, BODY_CHUNK};

impl Session {
    /// Runs as many transactions on this connection as it takes to get an answer for
    /// every recipient: recipients refused with 452 (too many recipients, RFC 5321
    /// §4.5.3.1.10, or beyond LIMITS RCPTMAX, RFC 9422 §4.2) go into the next
    /// transaction, as long as each one makes progress. Every transport kind uses this,
    /// so the excess never waits for a whole retry interval.
    ///
    /// Returns an outcome per recipient, in order; `None` for recipients a connection
    /// error left without one, with that error.
    pub async fn send_message_all(
        &mut self,
        msg: &OutboundMessage,
    ) -> (Vec<Option<RcptOutcome>>, Option<TransportError>) {
        let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; msg.rcpts.len()];
        let mut todo: Vec<usize> = (0..msg.rcpts.len()).collect();
        loop {
            // The first transaction sends the message as given; only the recipients
            // refused with 452 need a copy of it.
            let again_msg;
            let batch = if todo.len() == msg.rcpts.len() {
                msg
            } else {
                again_msg = OutboundMessage {
                    rcpts: todo.iter().map(|&i| msg.rcpts[i].clone()).collect(),
                    ..msg.clone()
                };
                &again_msg
            };
            let got = match self.send_message(batch).await {
                Ok(got) => got,
                Err(e) => return (outcomes, Some(e)),
            };
            let mut again = Vec::new();
            for (&i, outcome) in todo.iter().zip(got) {
                if outcome.reply().code == 452 {
                    again.push(i);
                }
                outcomes[i] = Some(outcome);
            }
            if again.is_empty() || again.len() == todo.len() {
                return (outcomes, None);
            }
            if self.state() == SessionState::InTransaction && self.rset().await.is_err() {
                return (outcomes, None);
            }
            if self.state() != SessionState::Ready {
                return (outcomes, None);
            }
            tracing::debug!(host = %self.host(), rcpts = again.len(),
                "452 for some recipients: another transaction for them");
            todo = again;
        }
    }

    /// Runs one transaction for `msg` and returns an outcome per recipient, in order.
    ///
    /// Checks the message against the server first (SIZE, 8BITMIME, SMTPUTF8,
    /// REQUIRETLS); those errors leave the session `Ready`. With PIPELINING (RFC 2920)
    /// MAIL, every RCPT and DATA go out in one write. An `Err` means the connection is
    /// broken and every recipient failed temporarily or as the error's severity says.
    pub async fn send_message(
        &mut self,
        msg: &OutboundMessage,
    ) -> Result<Vec<RcptOutcome>, TransportError> {
        let caps = match &self.state {
            State::Ready { caps } => caps.clone(),
            State::Greeted | State::InTransaction { .. } | State::Closed => {
                return Err(self.misuse(Stage::Mail));
            }
        };
        self.check_message(msg, &caps)?;
        let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; msg.rcpts.len()];
        if let Some(reply) = envelope_defect(msg).map(|r| r.at(Stage::Mail)) {
            return Ok(vec![RcptOutcome::Permanent(reply); msg.rcpts.len()]);
        }
        let mut batch = Vec::new();
        for (i, rcpt) in msg.rcpts.iter().enumerate() {
            let valid = command::is_safe_mailbox(&rcpt.address)
                && [&rcpt.notify, &rcpt.orcpt]
                    .iter()
                    .all(|p| p.as_deref().is_none_or(command::is_safe_param));
            if !valid {
                let reply = synthesized(501, EnhancedCode::new(5, 1, 3), "invalid recipient")
                    .at(Stage::Rcpt);
                outcomes[i] = Some(RcptOutcome::Permanent(reply));
            } else if caps.limits_rcptmax.is_some_and(|max| batch.len() >= max) {
                // RFC 9422 §4.2: no more than RCPTMAX recipients per transaction; the
                // queue retries the rest in another one.
                let reply = synthesized(
                    452,
                    EnhancedCode::new(4, 5, 3),
                    "too many recipients for one transaction",
                )
                .at(Stage::Rcpt);
                outcomes[i] = Some(RcptOutcome::Transient(reply));
            } else {
                batch.push(i);
            }
        }
        if !batch.is_empty() {
            self.state = State::InTransaction { caps: caps.clone() };
            let result = if caps.pipelining {
                self.transaction_pipelined(msg, &caps, &batch, &mut outcomes)
                    .await
            } else {
                self.transaction_serial(msg, &caps, &batch, &mut outcomes)
                    .await
            };
            match result {
                Ok(TxnEnd::Completed) => self.state = State::Ready { caps },
                Ok(TxnEnd::Aborted) => {}
                Err(e) => {
                    self.state = State::Closed;
                    return Err(e);
                }
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.ok_or_else(|| self.protocol_ref(Stage::Rcpt, i)))
            .collect()
    }

    fn check_message(
        &self,
        msg: &OutboundMessage,
        caps: &Capabilities,
    ) -> Result<(), TransportError> {
        let host = || self.host.clone();
        let size = u64::try_from(msg.body.len()).unwrap_or(u64::MAX);
        if let Some(limit) = caps.size_limit() {
            // RFC 1870 §6: do not send a message larger than the announced SIZE.
            if size > limit {
                return Err(TransportError::MessageTooLarge {
                    host: host(),
                    size,
                    limit,
                });
            }
        }
        if msg.params.eight_bit && !caps.eight_bit_mime {
            // RFC 6152 §3: 8-bit data only to servers that announce 8BITMIME.
            return Err(TransportError::EightBitUnsupported { host: host() });
        }
        if msg.params.smtputf8 && !caps.smtputf8 {
            // RFC 6531 §3.2: SMTPUTF8 messages only to servers that announce it.
            return Err(TransportError::SmtpUtf8Unsupported { host: host() });
        }
        if msg.params.requiretls && !(caps.requiretls && self.is_tls()) {
            // RFC 8689 §4.2.1: only over TLS to a server that announces REQUIRETLS.
            return Err(TransportError::RequireTlsUnsupported { host: host() });
        }
        Ok(())
    }

    async fn transaction_pipelined(
        &mut self,
        msg: &OutboundMessage,
        caps: &Capabilities,
        batch: &[usize],
        outcomes: &mut [Option<RcptOutcome>],
    ) -> Result<TxnEnd, TransportError> {
        // RFC 2920 §3.1: MAIL, RCPTs and DATA in one group, DATA last; replies in order.
        // RSET may come first in the group (§3.1 lets it anywhere): a pending probe.
        let probe = self.probe.take();
        let mut group = String::with_capacity(64 + 48 * batch.len());
        if probe.is_some() {
            group.push_str(command::RSET);
        }
        command::push_mail_from(&mut group, msg, caps);
        for &i in batch {
            command::push_rcpt_to(&mut group, &msg.rcpts[i], caps);
        }
        group.push_str(command::DATA);
        self.send_command(&group, Stage::Mail).await?;
        if let Some(limit) = probe {
            let reply = self.read_reply(Stage::Rset, limit).await?;
            if !reply.is_completion() {
                return Err(self.protocol(Stage::Rset, format!("unexpected reply {reply}")));
            }
        }
        let mail = self.read_reply(Stage::Mail, self.timeouts.command).await?;
        let mut rcpt_replies = Vec::with_capacity(batch.len());
        for _ in batch {
            rcpt_replies.push(self.read_reply(Stage::Rcpt, self.timeouts.command).await?);
        }
        let data = self
            .read_reply(Stage::Data, self.timeouts.data_init)
            .await?;
        if !mail.is_completion() {
            tracing::info!(host = %self.host, reply = %mail, "MAIL FROM rejected");
            for &i in batch {
                outcomes[i] = Some(RcptOutcome::from_reply(mail.clone()));
            }
            self.abort_unwanted_data(&data).await?;
            return Ok(TxnEnd::Aborted);
        }
        let mut accepted = Vec::new();
        for (&i, reply) in batch.iter().zip(rcpt_replies) {
            self.note_rcpt(msg, i, reply, &mut accepted, outcomes);
        }
        if accepted.is_empty() {
            self.abort_unwanted_data(&data).await?;
            return Ok(TxnEnd::Aborted);
        }
        self.data_and_body(msg, data, &accepted, outcomes).await
    }

    async fn transaction_serial(
        &mut self,
        msg: &OutboundMessage,
        caps: &Capabilities,
        batch: &[usize],
        outcomes: &mut [Option<RcptOutcome>],
    ) -> Result<TxnEnd, TransportError> {
        self.send_command(&command::mail_from(msg, caps), Stage::Mail)
            .await?;
        let mail = self.read_reply(Stage::Mail, self.timeouts.command).await?;
        if !mail.is_completion() {
            tracing::info!(host = %self.host, reply = %mail, "MAIL FROM rejected");
            for &i in batch {
                outcomes[i] = Some(RcptOutcome::from_reply(mail.clone()));
            }
            return Ok(TxnEnd::Aborted);
        }
        let mut accepted = Vec::new();
        for &i in batch {
            self.send_command(&command::rcpt_to(&msg.rcpts[i], caps), Stage::Rcpt)
                .await?;
            let reply = self.read_reply(Stage::Rcpt, self.timeouts.command).await?;
            self.note_rcpt(msg, i, reply, &mut accepted, outcomes);
        }
        if accepted.is_empty() {
            // No recipient: do not start DATA at all.
            return Ok(TxnEnd::Aborted);
        }
        self.send_command(command::DATA, Stage::Data).await?;
        let data = self
            .read_reply(Stage::Data, self.timeouts.data_init)
            .await?;
        self.data_and_body(msg, data, &accepted, outcomes).await
    }

    fn note_rcpt(
        &self,
        msg: &OutboundMessage,
        i: usize,
        reply: Reply,
        accepted: &mut Vec<usize>,
        outcomes: &mut [Option<RcptOutcome>],
    ) {
        if reply.is_completion() {
            accepted.push(i);
        } else {
            tracing::info!(host = %self.host, rcpt = %msg.rcpts[i].address, reply = %reply,
                "RCPT TO rejected");
            outcomes[i] = Some(RcptOutcome::from_reply(reply));
        }
    }

    /// After the reply to DATA with at least one accepted recipient: send the body on 354,
    /// and give every accepted recipient the final reply (or the DATA refusal).
    async fn data_and_body(
        &mut self,
        msg: &OutboundMessage,
        data: Reply,
        accepted: &[usize],
        outcomes: &mut [Option<RcptOutcome>],
    ) -> Result<TxnEnd, TransportError> {
        if data.code != 354 {
            if data.is_transient() || data.is_permanent() {
                tracing::info!(host = %self.host, reply = %data, "DATA rejected");
                for &i in accepted {
                    outcomes[i] = Some(RcptOutcome::from_reply(data.clone()));
                }
                return Ok(TxnEnd::Aborted);
            }
            return Err(self.protocol(Stage::Data, format!("unexpected reply {data}")));
        }
        self.send_body(&msg.body).await?;
        let end = self
            .read_reply(Stage::DataEnd, self.timeouts.data_end)
            .await?;
        tracing::info!(host = %self.host, reply = %end, rcpts = accepted.len(), "end of data");
        for &i in accepted {
            outcomes[i] = Some(RcptOutcome::from_reply(end.clone()));
        }
        Ok(TxnEnd::Completed)
    }

    /// DATA was pipelined but nobody is to receive the message: if the server still said
    /// 354, end the data at once and ignore the reply.
    async fn abort_unwanted_data(&mut self, data: &Reply) -> Result<(), TransportError> {
        if data.code == 354 {
            self.send_with(b".\r\n", Stage::DataBlock, self.timeouts.data_block)
                .await?;
            let reply = self
                .read_reply(Stage::DataEnd, self.timeouts.data_end)
                .await?;
            tracing::debug!(host = %self.host, reply = %reply, "empty data ended");
        }
        Ok(())
    }

    async fn send_body(&mut self, body: &[u8]) -> Result<(), TransportError> {
        // RFC 5321 §4.5.2: transparency (dot-stuffing) and the final CRLF "." CRLF. The
        // end of data goes out with the last piece: one write for a small message.
        let mut enc = command::DotStuffer::new();
        let mut out = Vec::with_capacity(body.len().min(BODY_CHUNK) + BODY_CHUNK / 16);
        let mut rest = body;
        loop {
            let (piece, tail) = rest.split_at(rest.len().min(BODY_CHUNK));
            out.clear();
            enc.encode(piece, &mut out);
            if tail.is_empty() {
                enc.finish(&mut out);
                return self
                    .send_with(&out, Stage::DataBlock, self.timeouts.data_block)
                    .await;
            }
            self.send_with(&out, Stage::DataBlock, self.timeouts.data_block)
                .await?;
            rest = tail;
        }
    }
}

/// A sender that cannot be put on the wire safely: a permanent reply for every
/// recipient, without any I/O (ENVID is xtext-encoded at the wire, so any value is).
fn envelope_defect(msg: &OutboundMessage) -> Option<Reply> {
    if !command::is_safe_mailbox(&msg.mail_from) {
        return Some(synthesized(
            501,
            EnhancedCode::new(5, 1, 7),
            "invalid sender address",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn envelope_defects() {
        let mut msg = OutboundMessage {
            mail_from: "a@b".into(),
            rcpts: vec![],
            body: Arc::from(&b""[..]),
            params: Default::default(),
        };
        assert_eq!(envelope_defect(&msg), None);
        // Any ENVID is fine: it is xtext-encoded at the wire.
        msg.params.envid = Some("x y\r\nRSET".into());
        assert_eq!(envelope_defect(&msg), None);
        let line = crate::command::mail_from(
            &msg,
            &crate::ehlo::Capabilities {
                dsn: true,
                ..Default::default()
            },
        );
        assert_eq!(line, "MAIL FROM:<a@b> ENVID=x+20y+0D+0ARSET\r\n");
        msg.mail_from = "a@b>\r\nRSET".into();
        assert_eq!(
            envelope_defect(&msg).map(|r| r.to_string()),
            Some("501 5.1.7 invalid sender address".to_string())
        );
    }
}
