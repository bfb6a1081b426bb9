//! Real `redis-server` processes for the store tests: one server ([`RedisServer`], on a
//! free 127.0.0.1 port and a unix socket, in its own temp dir) or a three-node Redis
//! Cluster ([`RedisCluster`], built with `CLUSTER ADDSLOTSRANGE` and `CLUSTER MEET`).
//!
//! A server keeps its data in an append-only file fsynced at every write, so
//! [`RedisServer::kill9`] followed by [`RedisServer::restart`] (same port, same dir)
//! brings the data back, as a real outage would. Every process is killed when its
//! owner is dropped. Readiness is polled with a deadline, never slept for.
//!
//! [`StoreCli`] runs `relaygate routes|transports|accounts ...` against a store with a
//! config file of its own, the way an operator on another host would.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use redis::Value;

use super::gateway::{run_relaygate, toml_str, CliOutput};
use super::{deadline, temp_dir, wait_until, POLL_INTERVAL};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One `redis-server` process.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    /// Cluster bus port, for cluster nodes.
    bus_port: Option<u16>,
    /// TLS port and the PEM files (certificate chain, key, CA), for a TLS server.
    tls: Option<(u16, PathBuf, PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server with append-only persistence.
    pub async fn start() -> Result<RedisServer> {
        Self::start_with(false, None).await
    }

    /// A server that also listens with TLS (certificate of `pki`) on [`Self::tls_url`];
    /// the plain port stays for the test's own commands.
    pub async fn start_tls(pki: &super::pki::Pki) -> Result<RedisServer> {
        let files = (
            pki.chain_pem.clone(),
            pki.key_pem.clone(),
            pki.ca_pem.clone(),
        );
        Self::start_with(false, Some(files)).await
    }

    async fn start_with(
        cluster: bool,
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
    ) -> Result<RedisServer> {
        // A free port can be taken between the probe and redis-server's bind: retry.
        let mut last = None;
        for _ in 0..5 {
            let mut server = RedisServer {
                dir: temp_dir("relaygate-redis-")?,
                port: free_port()?,
                bus_port: if cluster { Some(free_port()?) } else { None },
                tls: match &tls {
                    Some((chain, key, ca)) => {
                        Some((free_port()?, chain.clone(), key.clone(), ca.clone()))
                    }
                    None => None,
                },
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    fn args(&self) -> Vec<String> {
        let dir = self.dir.path();
        let mut args = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.to_string_lossy().into_owned(),
            "--unixsocket".into(),
            self.socket_path().to_string_lossy().into_owned(),
            "--unixsocketperm".into(),
            "700".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "always".into(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--logfile".into(),
            dir.join("redis.log").to_string_lossy().into_owned(),
        ];
        if let Some((port, chain, key, ca)) = &self.tls {
            args.extend([
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                chain.to_string_lossy().into_owned(),
                "--tls-key-file".into(),
                key.to_string_lossy().into_owned(),
                "--tls-ca-cert-file".into(),
                ca.to_string_lossy().into_owned(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
        }
        if let Some(bus) = self.bus_port {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.join("nodes.conf").to_string_lossy().into_owned(),
                "--cluster-port".into(),
                bus.to_string(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ]);
        }
        args
    }

    async fn spawn(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server (install Debian's redis-server)")?;
        self.child = Some(child);
        let limit = deadline(15);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("redis-server exited with {status}:\n{}", self.log_tail());
            }
            if self.ping().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= limit {
                self.kill9();
                bail!(
                    "redis-server not answering on port {}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn ping(&self) -> Result<()> {
        let v = self.cmd(&["PING"]).await?;
        ensure!(
            matches!(&v, Value::SimpleString(s) if s == "PONG") || v == Value::Okay,
            "PING answered {v:?}"
        );
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `rediss://127.0.0.1:TLS_PORT/0` (for a server started with [`Self::start_tls`]).
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, ..)| format!("rediss://127.0.0.1:{port}/0"))
    }

    /// `redis+unix:///.../redis.sock`.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// Runs one command on a fresh connection (5 s limit).
    pub async fn cmd(&self, args: &[&str]) -> Result<Value> {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        let fut = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut c = redis::cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            c.query_async::<Value>(&mut conn).await
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), fut)
            .await
            .with_context(|| format!("redis {args:?} timed out"))?
            .with_context(|| format!("redis {args:?}"))
    }

    /// SIGKILL (no shutdown save; the append-only file has every write).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts again on the same port and dir.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A three-master Redis Cluster on 127.0.0.1.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

impl RedisCluster {
    pub async fn start() -> Result<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(true, None).await?);
        }
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (lo, hi)) in nodes.iter().zip(ranges) {
            node.cmd(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()])
                .await?;
        }
        for other in &nodes[1..] {
            let port = other.port().to_string();
            let bus = other.bus_port().unwrap_or_default().to_string();
            nodes[0]
                .cmd(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus])
                .await?;
        }
        let limit = deadline(30);
        loop {
            let mut ok = true;
            for n in &nodes {
                let info = text_of(&n.cmd(&["CLUSTER", "INFO"]).await?);
                ok &= info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3");
            }
            if ok {
                return Ok(RedisCluster { nodes });
            }
            if Instant::now() >= limit {
                bail!("the cluster did not reach cluster_state:ok in time");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }
}

/// The `[store]` table for a Redis store at `url`, checking the version every second.
pub fn store_toml(url: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\nredis_url = {}\ncheck_interval = \"1s\"\n",
        toml_str(url)
    )
}

/// A config file naming a store, for running the store CLI like an operator would.
pub struct StoreCli {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl StoreCli {
    /// A config with only `store_toml` (plus a data dir nobody uses).
    pub fn new(store_toml: &str) -> Result<StoreCli> {
        let dir = temp_dir("relaygate-cli-")?;
        let config = dir.path().join("cli.toml");
        let text = format!(
            "hostname = \"cli.test\"\ndata_dir = {}\n\n{store_toml}",
            toml_str(&dir.path().join("data").to_string_lossy())
        );
        std::fs::write(&config, text)?;
        Ok(StoreCli { dir, config })
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `relaygate ARGS... -c CONFIG`.
    pub async fn run(&self, args: &[&str]) -> Result<CliOutput> {
        let config = self.config.to_string_lossy().into_owned();
        let mut all = args.to_vec();
        all.extend(["-c", config.as_str()]);
        run_relaygate(&all, self.dir.path()).await
    }

    /// Like [`StoreCli::run`], and the command must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        ensure!(out.code == Some(0), "relaygate {args:?} failed:\n{out}");
        Ok(out.stdout)
    }

    /// Writes `toml` to a file and runs `routes import` on it.
    pub async fn import(&self, toml: &str) -> Result<String> {
        let file = self.dir.path().join("import.toml");
        std::fs::write(&file, toml)?;
        self.ok(&["routes", "import", &file.to_string_lossy()])
            .await
    }
}

/// `[transports.NAME]` of kind smtp to 127.0.0.1:`port` without STARTTLS.
pub fn sink_transport(name: &str, port: u16) -> String {
    format!(
        "[transports.{name}]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\nno_starttls = true\n\n"
    )
}

/// A `MONITOR` connection to a server: every command the server runs from then on,
/// including those run inside Lua scripts (`[0 lua] "LRANGE" ...`), one line each.
/// Collects at most [`Monitor::MAX_LINES`] lines; stops when dropped.
pub struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub const MAX_LINES: usize = 1_000_000;

    /// Connects to 127.0.0.1:`port` and waits for `MONITOR`'s `+OK`.
    pub async fn start(port: u16) -> Result<Monitor> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .context("MONITOR: connect timed out")??;
        stream.write_all(b"MONITOR\r\n").await?;
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), reader.read_line(&mut ok))
            .await
            .context("MONITOR: no answer")??;
        ensure!(ok.trim_end() == "+OK", "MONITOR answered {ok:?}");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        let task = tokio::spawn(async move {
            let mut reader = reader.lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                if all.len() >= Monitor::MAX_LINES {
                    return;
                }
                all.push(line);
            }
        });
        Ok(Monitor { lines, task })
    }

    /// The lines seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the server has run `ECHO mark` (sent on another connection), so
    /// that everything it ran before is in [`Monitor::lines`].
    pub async fn sync(&self, server: &RedisServer, mark: &str) -> Result<Vec<String>> {
        server.cmd(&["ECHO", mark]).await?;
        let quoted = format!("\"{mark}\"");
        wait_until(deadline(10), "the MONITOR mark", || {
            self.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|l| l.contains(&quoted))
        })
        .await?;
        Ok(self.lines())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The command name of a `MONITOR` line (`+1700000000.1 [0 lua] "KEYS" "p*"` → `KEYS`).
pub fn monitored_command(line: &str) -> Option<String> {
    let rest = &line[line.find("] \"")? + 3..];
    Some(rest[..rest.find('"')?].to_ascii_uppercase())
}
