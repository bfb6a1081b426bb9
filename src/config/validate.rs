//! Config validation beyond what the types check: per-kind transport fields, route
//! targets, domains, listener addresses, networks; every error with its line and key.

use std::collections::BTreeMap;
use std::path::Path;

use super::{line_of, Config, ConfigError, RouteConfig, TransportConfig, TransportKind};

impl Config {
    /// Checks what the types do not: per-kind transport fields, route targets, domains,
    /// listener addresses, networks.
    pub fn validate(&self, path: &Path, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |line: Option<usize>, key: &str, message: String| {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                line,
                key: Some(key.to_string()),
                message,
            })
        };
        let find_line = |needle: &str| text.find(needle).map(|offset| line_of(text, offset));

        if self.hostname.trim().is_empty() {
            err(
                find_line("hostname"),
                "hostname",
                "must not be empty".into(),
            );
        }
        for addr in self
            .submission
            .listen
            .iter()
            .chain(&self.submission.listen_tls)
        {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                err(
                    find_line(addr),
                    "submission.listen",
                    format!("{addr:?} is not an IP:PORT address"),
                );
            }
        }
        if !self.submission.listen_tls.is_empty()
            && (self.submission.tls_cert.is_empty() || self.submission.tls_key.is_empty())
        {
            err(
                find_line("listen_tls"),
                "submission.listen_tls",
                "implicit TLS listeners need submission.tls_cert and submission.tls_key".into(),
            );
        }
        if self.submission.tls_cert.is_empty() != self.submission.tls_key.is_empty() {
            err(
                find_line("tls_cert").or(find_line("tls_key")),
                "submission.tls_cert",
                "tls_cert and tls_key go together".into(),
            );
        }
        for net in &self.submission.trusted_networks {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                err(
                    find_line(net),
                    "submission.trusted_networks",
                    format!("{net:?} is not a network (e.g. 10.0.0.0/8)"),
                );
            }
        }
        if !self.admin.listen.is_empty()
            && self.admin.listen.parse::<std::net::SocketAddr>().is_err()
        {
            err(
                find_line(&self.admin.listen),
                "admin.listen",
                format!("{:?} is not an IP:PORT address", self.admin.listen),
            );
        }
        if self.submission.max_message_size.0 > crate::spool::record::MAX_MESSAGE_SIZE {
            err(
                find_line("max_message_size"),
                "submission.max_message_size",
                format!(
                    "{} bytes is over the limit of 1GiB ({} bytes), the largest record the spool stores",
                    self.submission.max_message_size.0,
                    crate::spool::record::MAX_MESSAGE_SIZE
                ),
            );
        }
        for (key, zero) in [
            ("max_connections", self.submission.max_connections == 0),
            (
                "max_connections_per_ip",
                self.submission.max_connections_per_ip == 0,
            ),
            ("max_errors", self.submission.max_errors == 0),
            ("auth_max_failures", self.submission.auth_max_failures == 0),
            (
                "auth_max_failures_per_ip",
                self.submission.auth_max_failures_per_ip == 0,
            ),
            ("auth_lockout", self.submission.auth_lockout.0.is_zero()),
            (
                "command_timeout",
                self.submission.command_timeout.0.is_zero(),
            ),
            ("data_timeout", self.submission.data_timeout.0.is_zero()),
            (
                "session_timeout",
                self.submission.session_timeout.0.is_zero(),
            ),
        ] {
            if zero {
                err(
                    find_line(key),
                    &format!("submission.{key}"),
                    "must be greater than zero".into(),
                );
            }
        }
        // Each DKIM key is read and parsed now, so a bad file is named at load, not at
        // the first message.
        for (i, k) in self.dkim.keys.iter().enumerate() {
            if let Err(e) = crate::dkim::Key::load(k, None) {
                err(
                    find_line("key_file"),
                    &format!("dkim.keys[{i}]"),
                    e.to_string(),
                );
            }
        }
        if let Err(e) = crate::accounts::SenderPolicy::parse(&self.submission.trusted_senders) {
            err(
                find_line("trusted_senders"),
                "submission.trusted_senders",
                e.to_string(),
            );
        }
        for (name, a) in &self.accounts {
            if let Err(e) = crate::accounts::SenderPolicy::parse(&a.allowed_senders) {
                err(
                    find_line("allowed_senders"),
                    &format!("accounts.{name}.allowed_senders"),
                    e.to_string(),
                );
            }
            for r in &a.rate_limit {
                if let Err(e) = crate::queue::rate::Rate::parse(r) {
                    err(
                        find_line("rate_limit"),
                        &format!("accounts.{name}.rate_limit"),
                        e,
                    );
                }
            }
        }
        if self.queue.max_attempts == 0 {
            err(
                find_line("max_attempts"),
                "queue.max_attempts",
                "must be at least 1".into(),
            );
        }
        if self.queue.first_retry.0.is_zero() {
            err(
                find_line("first_retry"),
                "queue.first_retry",
                "must be positive".into(),
            );
        }
        if self.queue.retry_schedule.iter().any(|d| d.0.is_zero()) {
            err(
                find_line("retry_schedule"),
                "queue.retry_schedule",
                "every delay must be positive".into(),
            );
        }
        if self.queue.max_concurrency == 0
            || self.queue.max_per_destination == 0
            || self.queue.max_per_transport == Some(0)
        {
            err(
                find_line("max_concurrency").or(find_line("max_per_destination")),
                "queue.max_concurrency",
                "concurrency limits must be at least 1".into(),
            );
        }

        for (name, t) in &self.transports {
            let key = format!("transports.{name}");
            let line = find_line(&format!("[transports.{name}]"))
                .or(find_line(&format!("[transports.\"{name}\"]")));
            for problem in transport_problems(name, t, &self.transports) {
                err(line, &key, problem);
            }
            for problem in super::oauth2::file_problems(t) {
                err(line, &key, problem);
            }
            // The secret's file must be readable here, where the gateway runs.
            if !t.password_file.is_empty() {
                if let Err(e) = std::fs::File::open(&t.password_file) {
                    err(
                        find_line("password_file").or(line),
                        &format!("{key}.password_file"),
                        format!("{:?} cannot be read: {e}", t.password_file),
                    );
                }
            }
        }
        for (name, a) in &self.accounts {
            if !a.password_file.is_empty() {
                if let Err(e) = std::fs::File::open(&a.password_file) {
                    err(
                        find_line("password_file"),
                        &format!("accounts.{name}.password_file"),
                        format!("{:?} cannot be read: {e}", a.password_file),
                    );
                }
            }
        }

        let mut check_routes = |routes: &[RouteConfig], key: &str| {
            for (i, r) in routes.iter().enumerate() {
                let span = r.transport.span();
                let line = if span.end > 0 {
                    Some(line_of(text, span.start))
                } else {
                    None
                };
                for f in &r.fallback {
                    if f != crate::snapshot::DIRECT && !self.transports.contains_key(f) {
                        errors.push(ConfigError {
                            file: path.to_path_buf(),
                            line: line.or(find_line(f)),
                            key: Some(format!("{key}[{i}].fallback")),
                            message: format!(
                                "fallback names transport {f:?}, which is not defined"
                            ),
                        });
                    }
                }
                let name = r.transport.get_ref();
                if !name.is_empty() && !self.transports.contains_key(name) {
                    errors.push(ConfigError {
                        file: path.to_path_buf(),
                        line,
                        key: Some(format!("{key}[{i}].transport")),
                        message: format!("route names transport {name:?}, which is not defined"),
                    });
                }
                for d in r.from_domain.iter().chain(&r.to_domain) {
                    if let Err(e) = crate::routes::DomainPattern::parse(d) {
                        errors.push(ConfigError {
                            file: path.to_path_buf(),
                            line: line.or(find_line(d)),
                            key: Some(format!("{key}[{i}]")),
                            message: e.to_string(),
                        });
                    }
                }
            }
        };
        check_routes(&self.routes, "routes");
        for (name, acct) in &self.accounts {
            check_routes(&acct.routes, &format!("accounts.{name}.routes"));
        }
        for (domain, d) in &self.domains {
            check_routes(&d.routes, &format!("domains.{domain:?}.routes"));
        }
        for domain in self.domains.keys() {
            if crate::address::normalize_domain(domain).is_err() {
                errors.push(ConfigError {
                    file: path.to_path_buf(),
                    line: find_line(domain),
                    key: Some(format!("domains.{domain:?}")),
                    message: format!("{domain:?} is not a valid domain"),
                });
            }
        }
        errors
    }
}

/// What is wrong with one transport's fields for its kind.
pub fn transport_problems(
    name: &str,
    t: &TransportConfig,
    all: &BTreeMap<String, TransportConfig>,
) -> Vec<String> {
    let mut out = Vec::new();
    let secrets = [&t.password_file, &t.password_env, &t.password]
        .iter()
        .filter(|s| !s.is_empty())
        .count();
    if secrets > 1 {
        out.push("set only one of password_file, password_env, password".into());
    }
    if let Err(e) = t.reply_rules() {
        out.push(e);
    }
    if let Err(e) = t.breaker() {
        out.push(e);
    }
    if let Err(e) = t.rate_limits() {
        out.push(e);
    }
    if t.max_recipients == Some(0) {
        out.push("max_recipients: must be at least 1".into());
    }
    out.extend(super::oauth2::problems(name, t));
    if t.kind == TransportKind::Direct && !t.on_reply.is_empty() {
        out.push("on_reply applies to smarthost and socks transports".into());
    }
    match t.kind {
        TransportKind::Smtp | TransportKind::Submission | TransportKind::Submissions => {
            match (t.host.trim().is_empty(), t.hosts.is_empty()) {
                (true, true) => out.push(format!(
                    "transport {name:?} of kind {:?} needs `host` (or `hosts`)",
                    t.kind
                )),
                (false, false) => out.push("set `host` or `hosts`, not both".into()),
                (true, false) => {
                    if let Err(e) = t.smarthost_hosts() {
                        out.push(e);
                    }
                }
                (false, true) => {
                    // `host = "h:587"` would be dialed as h:587:587.
                    let h = t.host.trim();
                    let v6 = h.starts_with('[') || h.matches(':').count() > 1;
                    if !v6 && h.contains(':') {
                        out.push(format!(
                            "host {h:?} has a port: write the port in `port` (or use hosts = [{h:?}])"
                        ));
                    }
                }
            }
            if t.kind == TransportKind::Submissions && t.no_starttls {
                out.push("no_starttls cannot apply to submissions (implicit TLS)".into());
            }
            if !t.address.is_empty() || !t.remote_ips.is_empty() {
                out.push("address/remote_ips apply only to socks transports".into());
            }
            if secrets > 0 && t.username.is_empty() {
                out.push("a password is set but no username".into());
            }
            if secrets == 0 && !t.username.is_empty() && !super::oauth2::bearer_only(t) {
                out.push("a username is set but no password_file, password_env or password".into());
            }
            for m in &t.mechanisms {
                if let Err(e) = m.parse::<relaygate_transports::sasl::Mechanism>() {
                    out.push(format!("mechanisms: {e}"));
                }
            }
            if !t.mechanisms.is_empty() && t.username.is_empty() {
                out.push("mechanisms are set but no username".into());
            }
            if !t.socks_proxy.is_empty() {
                match all.get(&t.socks_proxy) {
                    Some(p) if p.kind == TransportKind::Socks => {}
                    Some(_) => out.push(format!(
                        "socks_proxy {:?} is not a socks transport",
                        t.socks_proxy
                    )),
                    None => out.push(format!(
                        "socks_proxy names transport {:?}, which is not defined",
                        t.socks_proxy
                    )),
                }
            }
        }
        TransportKind::Socks => {
            if t.address.is_empty() {
                out.push(format!("socks transport {name:?} needs `address`"));
            }
            for a in &t.address {
                if let Err(e) = a.parse::<relaygate_transports::socks::ProxyAddr>() {
                    out.push(format!("socks address: {e}"));
                }
            }
            for ip in &t.remote_ips {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    out.push(format!("remote_ips: {ip:?} is not an IP address"));
                }
            }
            if !t.host.is_empty() || !t.hosts.is_empty() {
                out.push("`host`/`hosts` do not apply to socks transports (use `address`)".into());
            }
        }
        TransportKind::Direct => {
            if !t.host.is_empty() || !t.hosts.is_empty() || !t.address.is_empty() {
                out.push("direct transports take no host or address".into());
            }
        }
    }
    out
}
