//! Delivery to a configured smarthost (kinds `smtp`, `submission`, `submissions`), with a
//! pool of idle connections reused across messages.
//!
//! A [`SmarthostTransport`] connects through its [`Connector`], runs implicit TLS or
//! STARTTLS as configured (verifying the certificate unless told not to), says EHLO, and
//! runs one transaction per [`SmarthostTransport::deliver`] call. After the transaction
//! the session goes back to an idle pool; the next delivery probes it with RSET (sent in
//! the same write as MAIL, RCPT and DATA where the server allows PIPELINING, so reuse
//! costs no round trip) and connects fresh if the probe fails (or the connection dies
//! before the end of data), so a stale connection never fails a delivery.
//!
//! With credentials ([`SmarthostAuth`]) every new connection authenticates once, after
//! TLS and the EHLO that follows it, before its first transaction (see
//! [`Session::authenticate`]); pooled connections are already authenticated. The
//! transport keeps one SCRAM SaltedPassword cache, so only its first login pays for
//! PBKDF2. A refused login (535) fails the attempt without another mechanism, and for
//! [`SmarthostConfig::auth_failure_holddown`] further connections fail at once with the
//! same reply instead of hammering the provider (which may lock the account).
//! [`SmarthostTransport::probe_auth`] runs the same steps without sending a message, for
//! `relaygate auth-test`.
//!
//! When the mechanism chosen is XOAUTH2 or OAUTHBEARER, the login asks the transport's
//! [`TokenSource`] (set with [`SmarthostTransport::with_token_source`]) for an access
//! token and sends that instead of a password.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use rustls::ClientConfig;
use tokio::time::Instant;

use crate::{
    message::OutboundMessage,
    oauth2::{AccessToken, TokenSource},
    outcome::{RcptOutcome, ReasonKind, Stage, TransportError},
    reply::Reply,
    sasl::{BearerError, CacheStats, Mechanism, SaltedCache},
    session::{
        server_name, AuthParams, AuthPlan, ConnectParams, Secret, Session, SessionState, Timeouts,
    },
    stream::Connector,
    tls::{danger, verified_client_config, TlsInfo, TlsRoots},
};

/// Whether a transaction on a pooled connection failed in a way that shows the connection
/// was stale, with nothing accepted: the delivery is tried again on a fresh connection.
/// That is an I/O error before the end of data (nothing can have been delivered before
/// it, RFC 5321 §4.1.1.4), or an RSET probe refused or unanswered.
fn stale_reuse(e: &TransportError) -> bool {
    match e {
        TransportError::Io { stage, .. } => *stage != Stage::DataEnd,
        TransportError::Protocol { command, .. } => *command == Stage::Rset,
        TransportError::Timeout { stage, .. } => *stage == Stage::Rset,
        _ => false,
    }
}

/// Upper bound on the RSET probe of a pooled connection (a dead peer must not stall the
/// delivery for the full command timeout).
const REUSE_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How TLS is used with the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmarthostTls {
    /// TLS right after the TCP connect (port 465, RFC 8314 §3.3).
    Implicit,
    /// STARTTLS (RFC 3207). `required`: it must be offered and succeed, else the attempt
    /// fails temporarily; otherwise it is used when offered.
    StartTls {
        /// Fail when STARTTLS is not offered or refused.
        required: bool,
    },
    /// Plaintext; never STARTTLS.
    None,
}

/// Settings of one smarthost transport.
#[derive(Debug, Clone)]
pub struct SmarthostConfig {
    /// Transport name from the config, for logs.
    pub name: String,
    /// Smarthost host name (also the TLS server name).
    pub host: String,
    /// Smarthost port.
    pub port: u16,
    /// Further hosts (name, port), tried in order within one attempt after `host` when a
    /// host cannot be used: no connection, a refused greeting (421), TLS failing, AUTH not
    /// possible. Never after the remote accepted or refused recipients.
    pub more_hosts: Vec<(String, u16)>,
    /// TLS mode.
    pub tls: SmarthostTls,
    /// Verify the certificate (PKIX against `host`); false uses
    /// [`danger::insecure_client_config`].
    pub verify_certificates: bool,
    /// Name sent in EHLO.
    pub ehlo_name: String,
    /// Stage timeouts.
    pub timeouts: Timeouts,
    /// Most idle connections kept (0 disables reuse).
    pub max_idle: usize,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// SASL credentials; `None` sends mail without AUTH.
    pub auth: Option<SmarthostAuth>,
    /// After a 535, new connections fail at once with that reply for this long (zero
    /// disables this), so concurrent deliveries do not each try the bad password.
    pub auth_failure_holddown: Duration,
    /// Provider reply classification (the defaults plus the transport's `on_reply`).
    pub reply_rules: Arc<crate::replies::ReplyRules>,
}

/// The credentials of a smarthost transport. `Debug` shows no password.
#[derive(Debug, Clone)]
pub struct SmarthostAuth {
    /// The SASL authentication identity.
    pub username: String,
    /// Its password (empty when only XOAUTH2/OAUTHBEARER are listed: their token comes
    /// from the transport's [`TokenSource`]).
    pub password: Secret,
    /// Mechanisms in preference order; empty means
    /// [`crate::sasl::DEFAULT_CLIENT_PREFERENCE`] (PLAIN and LOGIN only when listed).
    pub mechanisms: Vec<Mechanism>,
}

/// What [`SmarthostTransport::probe_auth`] found out, step by step; later fields stay
/// empty when an earlier step failed.
#[derive(Debug)]
pub struct AuthProbe {
    /// The address connected to.
    pub addr: Option<SocketAddr>,
    /// TLS of the session (`TlsInfo::None` also when the connection failed).
    pub tls: TlsInfo,
    /// The AUTH mechanisms of the EHLO reply after TLS (`None` before EHLO).
    pub advertised: Option<Vec<String>>,
    /// The chosen mechanism, when one was chosen.
    pub plan: Option<AuthPlan>,
    /// For XOAUTH2/OAUTHBEARER: the access token of the token step, which runs before
    /// connecting (`None` without a token source or a bearer mechanism listed, and when
    /// the step failed: `result` is then a [`TransportError::Token`]).
    pub token: Option<AccessToken>,
    /// `Ok` when authenticated (or no credentials are configured).
    pub result: Result<(), TransportError>,
}

/// The two client configs a transport may need; build once and share.
#[derive(Debug, Clone)]
pub struct TlsClientConfigs {
    /// PKIX-verifying config ([`verified_client_config`]).
    pub verified: Arc<ClientConfig>,
    /// Accept-any-certificate config ([`danger::insecure_client_config`]).
    pub insecure: Arc<ClientConfig>,
}

impl TlsClientConfigs {
    /// Both configs, the verified one trusting `roots`.
    pub fn new(roots: &TlsRoots) -> Self {
        Self {
            verified: verified_client_config(roots),
            insecure: danger::insecure_client_config(),
        }
    }
}

/// Who we delivered to and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInfo {
    /// The smarthost name.
    pub host: String,
    /// The address connected to.
    pub addr: Option<SocketAddr>,
    /// TLS of the session.
    pub tls: TlsInfo,
    /// The connection came from the idle pool.
    pub reused: bool,
}

/// The result of one [`SmarthostTransport::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// One outcome per recipient, in the order of `msg.rcpts`.
    pub outcomes: Vec<RcptOutcome>,
    /// The remote end.
    pub remote: RemoteInfo,
}

/// A connected, greeted, EHLO'd (and possibly TLS'd and authenticated) session with
/// its TLS facts.
struct Conn {
    session: Session,
    tls: TlsInfo,
    /// The host this connection reached (one of the transport's hosts).
    host: String,
}

/// The last refused login, for the hold-down.
struct AuthRefusal {
    at: Instant,
    mechanism: Mechanism,
    reply: Reply,
    bearer: Option<Box<BearerError>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle sessions, oldest first, and whether a reaper task is watching them.
#[derive(Default)]
struct PoolInner {
    idle: Vec<Idle>,
    reaper_running: bool,
}

type Pool = Arc<Mutex<PoolInner>>;

mod login;

/// Relays messages to one smarthost. `deliver` may be called concurrently.
pub struct SmarthostTransport {
    config: SmarthostConfig,
    tls_config: Arc<ClientConfig>,
    connector: Arc<dyn Connector>,
    /// Idle sessions, oldest first.
    pool: Pool,
    /// SCRAM SaltedPassword cache shared by every login of this transport.
    sasl_cache: Arc<SaltedCache>,
    /// The last 535, while it holds connections down.
    refused: Mutex<Option<AuthRefusal>>,
    /// Access tokens for XOAUTH2/OAUTHBEARER.
    tokens: Option<Arc<dyn TokenSource>>,
}

impl std::fmt::Debug for SmarthostTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmarthostTransport")
            .field("config", &self.config)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl SmarthostTransport {
    /// A transport for `config`, picking the TLS config by `verify_certificates`.
    pub fn new(
        config: SmarthostConfig,
        tls: &TlsClientConfigs,
        connector: Arc<dyn Connector>,
    ) -> Self {
        let tls_config = if config.verify_certificates {
            Arc::clone(&tls.verified)
        } else {
            Arc::clone(&tls.insecure)
        };
        Self {
            config,
            tls_config,
            connector,
            pool: Arc::new(Mutex::new(PoolInner::default())),
            sasl_cache: Arc::new(SaltedCache::new(SaltedCache::DEFAULT_CAPACITY)),
            refused: Mutex::new(None),
            tokens: None,
        }
    }

    /// Hits and misses of the SCRAM SaltedPassword cache (every miss ran PBKDF2).
    pub fn sasl_cache_stats(&self) -> CacheStats {
        self.sasl_cache.stats()
    }

    /// The configuration.
    pub fn config(&self) -> &SmarthostConfig {
        &self.config
    }

    /// Idle connections currently pooled.
    pub fn idle_count(&self) -> usize {
        lock(&self.pool).idle.len()
    }

    /// Delivers `msg` in one transaction: a pooled connection if one answers RSET, else a
    /// new one. `Err` is a failure for every recipient; see [`TransportError::severity`].
    pub async fn deliver(&self, msg: &OutboundMessage) -> Result<Delivery, TransportError> {
        // RFC 8689 §4.2.1: a REQUIRETLS message needs a certificate verified for the
        // server; a transport that skips verification can never carry one.
        if msg.params.requiretls
            && (!self.config.verify_certificates || self.config.tls == SmarthostTls::None)
        {
            return Err(TransportError::RequireTlsUnsupported {
                host: self.config.host.clone(),
            });
        }
        if let Some(conn) = self.take_idle().await {
            match self.transact(conn, msg, true).await {
                Err(e) if stale_reuse(&e) => {
                    tracing::debug!(transport = %self.config.name, host = %self.config.host,
                        error = %e, "pooled connection failed, retrying on a new connection");
                }
                other => return other,
            }
        }
        let conn = self.connect().await?;
        self.transact(conn, msg, false).await
    }

    /// Runs the transaction on `conn`, logs it and returns the session to the pool.
    async fn transact(
        &self,
        mut conn: Conn,
        msg: &OutboundMessage,
        reused: bool,
    ) -> Result<Delivery, TransportError> {
        let remote = RemoteInfo {
            host: conn.host.clone(),
            addr: conn.session.peer(),
            tls: conn.tls.clone(),
            reused,
        };
        // Recipients refused with 452 go into further transactions on this connection.
        let result = match conn.session.send_message_all(msg).await {
            (outcomes, None) => Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(lost))
                .collect()),
            // Nothing was answered: the error is the attempt's (and a pooled connection
            // may be retried on a fresh one).
            (outcomes, Some(e)) if outcomes.iter().all(Option::is_none) => Err(e),
            // Some recipients were answered before the connection failed: they keep
            // their outcome, the rest get the error's.
            (outcomes, Some(e)) => Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| error_outcome(&e)))
                .collect::<Vec<RcptOutcome>>()),
        };
        match &result {
            Ok(outcomes) => {
                let delivered = outcomes
                    .iter()
                    .filter(|o| matches!(o, RcptOutcome::Delivered(_)))
                    .count();
                tracing::info!(transport = %self.config.name, host = %remote.host,
                    addr = ?remote.addr, tls = remote.tls.mode(), reused,
                    rcpts = outcomes.len(), delivered, "smarthost transaction done");
            }
            Err(e) if reused && stale_reuse(e) => {}
            Err(e) => {
                tracing::warn!(transport = %self.config.name, host = %remote.host,
                    addr = ?remote.addr, tls = remote.tls.mode(), reused, error = %e,
                    "smarthost delivery failed");
            }
        }
        self.checkin(conn).await;
        result.map(|outcomes| Delivery { outcomes, remote })
    }

    /// Closes every idle connection.
    pub async fn close_idle(&self) {
        let idle: Vec<Idle> = std::mem::take(&mut lock(&self.pool).idle);
        for i in idle {
            i.conn.session.quit().await;
        }
    }

    /// Takes the most recently used idle session that is not stale: it gets an RSET
    /// probe, pipelined with the next transaction where the server allows.
    async fn take_idle(&self) -> Option<Conn> {
        loop {
            let idle = lock(&self.pool).idle.pop()?;
            if idle.since.elapsed() >= self.config.idle_timeout {
                tokio::spawn(idle.conn.session.quit());
                continue;
            }
            let mut conn = idle.conn;
            let probe = self.config.timeouts.command.min(REUSE_PROBE_TIMEOUT);
            match conn.session.probe_reuse(probe).await {
                Ok(()) => {
                    tracing::debug!(transport = %self.config.name, host = %self.config.host,
                        addr = ?conn.session.peer(), "reusing pooled connection");
                    return Some(conn);
                }
                Err(e) => {
                    tracing::debug!(transport = %self.config.name, host = %self.config.host,
                        error = %e, "pooled connection is stale, discarding");
                }
            }
        }
    }

    /// Connects, runs TLS as configured, EHLO (again after STARTTLS), and AUTH.
    /// A ready session with the first of the transport's hosts that can be used.
    async fn connect(&self) -> Result<Conn, TransportError> {
        let cfg = &self.config;
        let hosts = std::iter::once((cfg.host.as_str(), cfg.port))
            .chain(cfg.more_hosts.iter().map(|(h, p)| (h.as_str(), *p)));
        let mut last = None;
        for (host, port) in hosts {
            match self.connect_to(host, port).await {
                Ok(conn) => return Ok(conn),
                Err(e) if next_host_may_help(&e) && !cfg.more_hosts.is_empty() => {
                    tracing::warn!(transport = %cfg.name, host, port, error = %e,
                        "smarthost host unusable; trying the next one");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TransportError::Protocol {
            host: cfg.host.clone(),
            command: Stage::Connect,
            detail: "no host to try".into(),
        }))
    }

    /// A ready session with `host`: connected, TLS as configured, authenticated.
    async fn connect_to(&self, host: &str, port: u16) -> Result<Conn, TransportError> {
        let cfg = &self.config;
        if let Some(auth) = &cfg.auth {
            self.check_holddown()?;
            let mut conn = self.open(host, port).await?;
            match self.login(&mut conn, auth, None).await {
                Ok(plan) => {
                    tracing::info!(transport = %cfg.name, host = %cfg.host,
                        mechanism = %plan.mechanism, binding = %plan.binding(),
                        "authenticated to smarthost");
                }
                Err(e) => {
                    self.auth_failed(&e);
                    conn.session.quit().await;
                    return Err(e);
                }
            }
            tracing::info!(transport = %cfg.name, host = %cfg.host, addr = ?conn.session.peer(),
                tls = conn.tls.mode(), version = ?conn.session.tls_version(),
                "smarthost session ready");
            Ok(conn)
        } else {
            let conn = self.open(host, port).await?;
            tracing::info!(transport = %cfg.name, host = %cfg.host, addr = ?conn.session.peer(),
                tls = conn.tls.mode(), version = ?conn.session.tls_version(),
                "smarthost session ready");
            Ok(conn)
        }
    }

    /// Connects to `host`, runs TLS as configured and EHLO (again after STARTTLS); no
    /// AUTH.
    async fn open(&self, host: &str, port: u16) -> Result<Conn, TransportError> {
        let cfg = &self.config;
        let params = ConnectParams {
            host: host.to_string(),
            port,
            implicit_tls: match cfg.tls {
                SmarthostTls::Implicit => Some(Arc::clone(&self.tls_config)),
                SmarthostTls::StartTls { .. } | SmarthostTls::None => None,
            },
            timeouts: cfg.timeouts,
        };
        let mut session = Session::connect_and_greet(self.connector.as_ref(), &params).await?;
        let caps = session.ehlo(&cfg.ehlo_name).await?;
        match cfg.tls {
            SmarthostTls::Implicit | SmarthostTls::None => {}
            SmarthostTls::StartTls { required } => {
                if caps.starttls {
                    let name = server_name(host)?;
                    // RFC 3207 §4.2: `starttls` drops the old capabilities and says EHLO
                    // again; AUTH below sees only the list given inside TLS.
                    match session.starttls(name, Arc::clone(&self.tls_config)).await {
                        Ok(_) => {}
                        Err(e @ TransportError::StartTlsRejected { .. }) if !required => {
                            tracing::warn!(transport = %cfg.name, host = %cfg.host, error = %e,
                                "STARTTLS refused, continuing in plaintext");
                        }
                        Err(e) => return Err(e),
                    }
                } else if required {
                    return Err(TransportError::StartTlsUnavailable {
                        host: host.to_string(),
                    });
                } else {
                    tracing::debug!(transport = %cfg.name, host = %cfg.host,
                        "STARTTLS not offered, plaintext");
                }
            }
        }
        let tls = match session.tls_version() {
            None => TlsInfo::None,
            Some(version) if cfg.verify_certificates => TlsInfo::Verified { version },
            Some(version) => TlsInfo::Unverified { version },
        };
        Ok(Conn {
            session,
            tls,
            host: host.to_string(),
        })
    }

    /// What AUTH needs; `bearer` is the access token, sent instead of the password by
    /// XOAUTH2 and OAUTHBEARER.
    fn auth_params<'a>(
        &'a self,
        auth: &'a SmarthostAuth,
        bearer: Option<&'a Secret>,
    ) -> AuthParams<'a> {
        AuthParams {
            username: &auth.username,
            password: bearer.unwrap_or(&auth.password),
            preference: &auth.mechanisms,
            // Only the operator's explicit no_starttls lets credentials go in clear.
            plaintext_allowed: self.config.tls == SmarthostTls::None,
            cache: Some(&self.sasl_cache),
        }
    }

    /// Fails at once while a recent 535 holds connections down.
    fn check_holddown(&self) -> Result<(), TransportError> {
        let holddown = self.config.auth_failure_holddown;
        let guard = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some(r) if r.at.elapsed() < holddown => {
                tracing::warn!(transport = %self.config.name, host = %self.config.host,
                    refused_secs_ago = r.at.elapsed().as_secs(),
                    "not connecting: the smarthost refused these credentials recently");
                Err(TransportError::AuthFailed {
                    host: self.config.host.clone(),
                    mechanism: r.mechanism,
                    reply: r.reply.clone(),
                    bearer: r.bearer.clone(),
                })
            }
            Some(_) | None => Ok(()),
        }
    }

    /// Logs an AUTH failure and starts the hold-down after a 535.
    fn auth_failed(&self, e: &TransportError) {
        let cfg = &self.config;
        match e {
            TransportError::AuthFailed {
                mechanism,
                reply,
                bearer,
                ..
            } if reply.code == 535 => {
                if mechanism.is_bearer() {
                    let detail = bearer.as_ref().map(|b| b.to_string()).unwrap_or_default();
                    tracing::error!(transport = %cfg.name, host = %cfg.host, %mechanism,
                        reply = %reply, %detail,
                        holddown_secs = cfg.auth_failure_holddown.as_secs(),
                        "smarthost refused the OAuth2 access token; messages stay queued until \
                         the token source gives one it accepts (check scope and permissions)");
                } else {
                    tracing::error!(transport = %cfg.name, host = %cfg.host, %mechanism,
                        reply = %reply, holddown_secs = cfg.auth_failure_holddown.as_secs(),
                        "smarthost refused the credentials; messages stay queued until the \
                         operator fixes the username/password (no weaker mechanism is tried)");
                }
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(AuthRefusal {
                    at: Instant::now(),
                    mechanism: *mechanism,
                    reply: reply.clone(),
                    bearer: bearer.clone(),
                });
            }
            other => {
                tracing::warn!(transport = %cfg.name, host = %cfg.host, error = %other,
                    severity = ?other.severity(), "smarthost AUTH failed");
            }
        }
    }

    /// Connects and authenticates as a delivery would, reports each step, and quits
    /// without sending a message (`relaygate auth-test`). Ignores the hold-down. With
    /// a token source and a bearer mechanism listed, the token comes first: a token
    /// that cannot be had stops the probe before it connects.
    pub async fn probe_auth(&self) -> AuthProbe {
        let mut probe = AuthProbe {
            addr: None,
            tls: TlsInfo::None,
            advertised: None,
            plan: None,
            token: None,
            result: Ok(()),
        };
        if let Some(Err(e)) = self.probe_token(&mut probe).await {
            probe.result = Err(e);
            return probe;
        }
        // The first host (auth-test names it; delivery would go on to the next ones).
        let mut conn = match self.open(&self.config.host, self.config.port).await {
            Ok(conn) => conn,
            Err(e) => {
                probe.result = Err(e);
                return probe;
            }
        };
        probe.addr = conn.session.peer();
        probe.tls = conn.tls.clone();
        probe.advertised = conn.session.capabilities().map(|c| c.auth.clone());
        if let Some(auth) = &self.config.auth {
            probe.plan = conn.session.plan_auth(&self.auth_params(auth, None)).ok();
            let token = probe.token.as_ref();
            probe.result = self.login(&mut conn, auth, token).await.map(|_| ());
        }
        conn.session.quit().await;
        probe
    }

    /// Returns a session after a delivery: pooled when clean (RSET first if a transaction
    /// was left open), dropped when broken.
    async fn checkin(&self, mut conn: Conn) {
        match conn.session.state() {
            SessionState::Ready => {}
            SessionState::InTransaction => {
                if let Err(e) = conn.session.rset().await {
                    tracing::debug!(host = %self.config.host, error = %e,
                        "RSET after failed transaction failed, dropping connection");
                    return;
                }
            }
            SessionState::Greeted | SessionState::Closed => return,
        }
        if self.config.max_idle == 0 {
            tokio::spawn(conn.session.quit());
            return;
        }
        let (evicted, start_reaper) = {
            let mut pool = lock(&self.pool);
            pool.idle.push(Idle {
                conn,
                since: Instant::now(),
            });
            let excess = pool.idle.len().saturating_sub(self.config.max_idle);
            let evicted: Vec<Idle> = pool.idle.drain(..excess).collect();
            // The flag changes only under the lock, so an entry pushed here is always
            // seen by a running reaper or starts a new one.
            let start = !pool.reaper_running;
            pool.reaper_running = true;
            (evicted, start)
        };
        for idle in evicted {
            tokio::spawn(idle.conn.session.quit());
        }
        if start_reaper {
            tokio::spawn(reap(Arc::downgrade(&self.pool), self.config.idle_timeout));
        }
    }
}

/// Closes sessions once they have been idle for `idle_timeout`; runs while the pool has
/// entries and the transport exists.
async fn reap(pool: Weak<Mutex<PoolInner>>, idle_timeout: Duration) {
    loop {
        let Some(strong) = pool.upgrade() else {
            return;
        };
        let (expired, next) = {
            let mut inner = lock(&strong);
            let (expired, keep): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut inner.idle)
                .into_iter()
                .partition(|i| i.since.elapsed() >= idle_timeout);
            inner.idle = keep;
            let next = inner.idle.iter().map(|i| i.since + idle_timeout).min();
            if next.is_none() {
                inner.reaper_running = false;
            }
            (expired, next)
        };
        drop(strong);
        for idle in expired {
            tracing::debug!(host = %idle.conn.session.host(), "closing idle connection");
            tokio::spawn(idle.conn.session.quit());
        }
        match next {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => return,
        }
    }
}

/// Locks the pool; a panic elsewhere while holding it leaves plain data, so poisoning is
/// ignored.
fn lock(pool: &Mutex<PoolInner>) -> std::sync::MutexGuard<'_, PoolInner> {
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl crate::transport::Transport for SmarthostTransport {
    fn kind(&self) -> &'static str {
        "smarthost"
    }

    /// One smarthost is one destination, whatever the recipients' domains.
    fn destination(&self, name: &str, _domain: &str) -> String {
        name.to_string()
    }

    fn deliver<'a>(
        &'a self,
        batch: &'a crate::transport::Batch,
    ) -> crate::transport::BoxFuture<'a, crate::transport::BatchResult> {
        use crate::transport::{BatchResult, RcptResult, RemoteEnd};
        Box::pin(async move {
            match SmarthostTransport::deliver(self, &batch.message).await {
                Ok(delivery) => {
                    metrics::counter!("relaygate_queue_connection_total", "result" => "ok")
                        .increment(1);
                    let remote = RemoteEnd {
                        host: delivery.remote.host.clone(),
                        ip: delivery.remote.addr.map(|a| a.ip()),
                        tls: delivery.remote.tls.mode().to_string(),
                    };
                    let rules = &self.config.reply_rules;
                    BatchResult {
                        rcpts: delivery
                            .outcomes
                            .into_iter()
                            .map(|o| {
                                let mut r = RcptResult::from_outcome(o, Some(remote.clone()));
                                r.classify_with(rules);
                                r
                            })
                            .collect(),
                        dialed: Default::default(),
                    }
                }
                Err(e) => {
                    metrics::counter!("relaygate_queue_connection_total", "result" => "error")
                        .increment(1);
                    let mut r = RcptResult::from_error(&e, None);
                    if e.reply().is_some() {
                        r.classify_with(&self.config.reply_rules);
                    }
                    BatchResult::all(batch, r)
                }
            }
        })
    }
}

/// A recipient the session gave no outcome without an error (cannot happen): retried.
fn lost() -> RcptOutcome {
    RcptOutcome::Transient(Reply::new(
        451,
        Some(crate::reply::EnhancedCode::new(4, 3, 0)),
        "no outcome for this recipient",
    ))
}

/// The outcome a connection error gives a recipient it left unanswered.
fn error_outcome(e: &TransportError) -> RcptOutcome {
    match e.severity() {
        crate::outcome::Severity::Temporary => RcptOutcome::Transient(e.as_reply()),
        crate::outcome::Severity::Permanent => RcptOutcome::Permanent(e.as_reply()),
    }
}

/// Whether another host of the same transport may do better after `e`: the host could
/// not be reached, refused the greeting or EHLO, broke TLS, or offers no way to log in.
/// Not after a 535 (the credentials are the same everywhere) nor for message checks.
fn next_host_may_help(e: &TransportError) -> bool {
    match e {
        TransportError::Connect { .. }
        | TransportError::Tls { .. }
        | TransportError::StartTlsUnavailable { .. }
        | TransportError::StartTlsRejected { .. }
        | TransportError::GreetingRejected { .. }
        | TransportError::EhloRejected { .. }
        | TransportError::NoCommonMechanism { .. }
        | TransportError::AuthWithoutTls { .. } => true,
        // Before AUTH: this host's network, greeting or TLS.
        TransportError::Timeout { stage, .. } | TransportError::Io { stage, .. } => matches!(
            ReasonKind::of_stage(*stage),
            Some(ReasonKind::Connect | ReasonKind::Greeting | ReasonKind::Tls)
        ),
        TransportError::Protocol { .. }
        | TransportError::MessageTooLarge { .. }
        | TransportError::EightBitUnsupported { .. }
        | TransportError::SmtpUtf8Unsupported { .. }
        | TransportError::RequireTlsUnsupported { .. }
        | TransportError::AuthFailed { .. }
        | TransportError::Token { .. }
        | TransportError::Sasl { .. } => false,
    }
}
