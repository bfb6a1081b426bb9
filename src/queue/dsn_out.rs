//! The DSNs the queue sends: each recipient's line from its recorded result, the report
//! queued with a null sender (SMTPUTF8 for the international form), and the ASCII form
//! queued again when a path refused the international one.

use super::*;

impl Queue {
    pub(super) fn dsn_recipient(&self, r: &Recipient, action: Action, now: i64) -> DsnRecipient {
        let last = r.last.clone().unwrap_or_default();
        let result = last.result.unwrap_or_default();
        DsnRecipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            // The remote's own line when the attempt's text wraps it in our context.
            diagnostic: match (result.remote_reply, result.remote_line) {
                (true, Some(line)) => line,
                _ => last.reply,
            },
            remote_reply: result.remote_reply,
            status: result.enhanced,
            code: (result.code > 0).then_some(result.code),
            remote_mta: last.remote,
            remote_host: result.remote_host,
            last_attempt_ms: if last.at > 0 { last.at } else { now },
            will_retry_until_ms: match action {
                Action::Delayed => Some(retry::last_attempt_at(
                    now,
                    &self.settings.retry,
                    r.attempts,
                    self.settings.max_attempts,
                )),
                Action::Failed => None,
            },
        }
    }

    pub(super) async fn send_dsn(
        &self,
        original: &StoredMessage,
        body_ref: BodyRef,
        action: Action,
        rcpts: &[DsnRecipient],
        now: i64,
    ) -> Result<(), SpoolError> {
        let body = self.spool.read_body(body_ref).await?;
        let dsn_id = self.next_id();
        let dsn_body = dsn::build(&dsn::DsnInput {
            hostname: &self.settings.hostname,
            original,
            body: &body,
            action,
            rcpts,
            now_ms: now,
            dsn_id,
        });
        let eight_bit = dsn_body.iter().any(|&b| b >= 0x80);
        // RFC 6533 §6: the international form goes with SMTPUTF8.
        let smtputf8 = dsn::is_international(original, rcpts);
        self.enqueue(
            dsn_id,
            NewMessage {
                dkim: None,
                mail_from: String::new(),
                params: MailParams {
                    eight_bit,
                    smtputf8,
                    ..Default::default()
                },
                account: None,
                client: None,
                rcpts: vec![(original.mail_from.clone(), None, None)],
                body: dsn_body,
            },
        )
        .await?;
        tracing::info!(queue_id = %format_id(original.id), dsn_id = %format_id(dsn_id),
            action = ?action, to = %original.mail_from, "queue: DSN queued");
        Ok(())
    }

    /// An international DSN that a path refused for want of SMTPUTF8 (our 5.6.7) goes
    /// again in the ASCII form of RFC 6533 (`dsn::downgrade`), as a new message; the
    /// refused copy fails as usual (a DSN is never answered by another DSN).
    pub(super) async fn downgrade_refused_dsn(
        &self,
        dsn_msg: &StoredMessage,
        body_ref: BodyRef,
        decisions: &[(usize, Decision)],
    ) {
        let refused: Vec<&Recipient> = decisions
            .iter()
            .map(|(_, d)| &d.rcpt)
            .filter(|r| matches!(r.state, RcptState::Failed { .. }))
            .filter(|r| {
                r.last
                    .as_ref()
                    .and_then(|l| l.result.as_ref())
                    .is_some_and(|x| x.enhanced == Some([5, 6, 7]))
            })
            .collect();
        if refused.is_empty() {
            return;
        }
        let body = match self.spool.read_body(body_ref).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(queue_id = %format_id(dsn_msg.id), error = %e, "queue: cannot read a DSN to downgrade");
                return;
            }
        };
        let Some(ascii) = dsn::downgrade(&body) else {
            return;
        };
        let id = self.next_id();
        let new = NewMessage {
            dkim: None,
            mail_from: String::new(),
            params: MailParams {
                eight_bit: ascii.iter().any(|&b| b >= 0x80),
                ..Default::default()
            },
            account: None,
            client: None,
            rcpts: refused
                .iter()
                .map(|r| (r.address.clone(), None, None))
                .collect(),
            body: ascii,
        };
        match self.enqueue(id, new).await {
            Ok(_) => {
                tracing::info!(queue_id = %format_id(dsn_msg.id), dsn_id = %format_id(id),
                    "queue: DSN refused for want of SMTPUTF8, queued again in ASCII form (RFC 6533)");
            }
            Err(e) => {
                tracing::error!(queue_id = %format_id(dsn_msg.id), error = %e, "queue: cannot queue the downgraded DSN");
            }
        }
    }
}
