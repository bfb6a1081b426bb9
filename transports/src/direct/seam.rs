//! Direct delivery behind the [`Transport`] seam: a batch becomes a [`DirectRequest`],
//! the per-host facts become metrics (`metrics.rs`), each recipient's outcome a
//! structured result.

use super::{DirectRequest, DirectTransport, RemoteMta};
use crate::transport::{Batch, BatchResult, BoxFuture, RcptResult, RemoteEnd, Transport};

impl From<RemoteMta> for RemoteEnd {
    fn from(m: RemoteMta) -> RemoteEnd {
        RemoteEnd {
            // "verified+dane" and the like: the TLS used and the policies behind it.
            tls: m.tls_mode(),
            host: m.host,
            ip: m.ip,
        }
    }
}

impl Transport for DirectTransport {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn destination(&self, name: &str, domain: &str) -> String {
        format!("{name}/{domain}")
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, BatchResult> {
        Box::pin(async move {
            let request = DirectRequest {
                domain: batch.domain.clone(),
                message: batch.message.clone(),
                attempt: batch.attempt,
                dialed: batch.dialed.clone(),
                // RFC 8689 §5: the header counts only without REQUIRETLS.
                tls_required_no: batch.message.params.tls_required_no
                    && !batch.message.params.requiretls,
            };
            let result = DirectTransport::deliver(self, &request).await;
            super::metrics::record(&result);
            BatchResult {
                rcpts: result
                    .rcpts
                    .into_iter()
                    .map(|r| {
                        let mut r =
                            RcptResult::from_outcome(r.outcome, r.remote.map(RemoteEnd::from));
                        r.classify_with(&self.config().reply_rules);
                        r
                    })
                    .collect(),
                dialed: result.dialed,
            }
        })
    }
}
