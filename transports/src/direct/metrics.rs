//! The metrics direct delivery owns (SPEC §3), from one attempt's per-host facts:
//! destinations looked up and authentic, DANE, REQUIRETLS, MTA-STS mismatches,
//! `TLS-Required: No` findings ignored, connections and plaintext fallbacks.

use super::{DaneHost, DirectResult, SkipReason};

/// Counts one attempt's facts.
pub fn record(result: &DirectResult) {
    for host in &result.hosts {
        if host.looked_up {
            metrics::counter!("relaygate_queue_destinations_total").increment(1);
        }
        if host.authentic {
            metrics::counter!("relaygate_queue_destinations_authentic_total").increment(1);
        }
        match host.dane {
            Some(DaneHost::Verify) => {
                metrics::counter!("relaygate_queue_destination_dane_required_total").increment(1);
            }
            Some(DaneHost::Unverified) => {
                metrics::counter!("relaygate_queue_destination_dane_required_total").increment(1);
                metrics::counter!("relaygate_queue_destination_dane_starttlsunverified_total")
                    .increment(1);
            }
            Some(DaneHost::LookupFailed) => {
                metrics::counter!("relaygate_queue_destination_dane_gathertlsa_errors_total")
                    .increment(1);
            }
            Some(DaneHost::NotApplicable) | None => {}
        }
        match host.skip_reason {
            Some(SkipReason::RequireTlsNoPolicy) => {
                metrics::counter!("relaygate_queue_requiretls_unsupported_total",
                    "reason" => "nopolicy")
                .increment(1);
            }
            Some(SkipReason::MtaStsMx | SkipReason::TlsaLookup) | None => {}
        }
        if host.requiretls_refused {
            metrics::counter!("relaygate_queue_requiretls_unsupported_total",
                "reason" => "norequiretls")
            .increment(1);
        }
        if host.mtasts_mismatch {
            let mode = result.mtasts.map_or("none", |m| m.as_str());
            metrics::counter!("relaygate_queue_mtasts_mx_mismatch_total", "mode" => mode)
                .increment(1);
        }
    }
    for ignored in result.ignored() {
        metrics::counter!("relaygate_queue_tlsrequiredno_ignored_total",
            "ignored" => ignored.label())
        .increment(1);
    }
    for connect in result.connections() {
        metrics::counter!("relaygate_queue_connection_total", "result" => connect.label())
            .increment(1);
    }
    let fallbacks = result.plaintext_fallbacks();
    if fallbacks > 0 {
        metrics::counter!("relaygate_queue_plaintext_fallback_total").increment(fallbacks as u64);
    }
}
