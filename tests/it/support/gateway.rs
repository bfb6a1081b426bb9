//! Runs the real `relaygate` binary as a child process, with its own config, data
//! dir and log files in a fresh temp dir.
//!
//! Readiness: after binding, the gateway writes `<data_dir>/ready.json`
//! (`{"pid", "submission", "submission_tls", "admin"}`) atomically and removes it on
//! clean shutdown. [`Gateway::start`] removes a stale file, spawns, and polls for it.
//! The child's stdout/stderr go to files in the temp dir; their tails are printed
//! when the [`Gateway`] is dropped (the test harness shows them for failing tests).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `start`/`restart` wait for `ready.json`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of each log printed when the gateway is dropped.
const LOG_TAIL_LINES: usize = 120;

/// The path of the binary under test: this build's, or `$RELAYGATE_TEST_BINARY` (to
/// show that a test fails on an older build).
pub fn binary() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("RELAYGATE_TEST_BINARY")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_relaygate").to_string())
    })
}

/// What goes into the generated config.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Appended last: `[transports.*]`, `[[routes]]` and any other tables.
    pub extra_toml: String,
    /// `queue.first_retry`.
    pub first_retry: String,
    /// Extra lines inside `[queue]` (e.g. `retry_schedule = [...]`).
    pub queue_toml: String,
    /// `queue.max_attempts`.
    pub max_attempts: u32,
    /// `submission.trusted_networks`, only written when set.
    pub trusted_networks: Option<Vec<String>>,
    /// `submission.max_message_size`, only written when set.
    pub max_message_size: Option<String>,
    /// Extra lines inside `[submission]` (e.g. `tls_cert = ...`).
    pub submission_toml: String,
    /// `RUST_LOG` for the gateway process (default: its own default, info).
    pub log_filter: Option<String>,
    /// `data_dir` (default: `data` in the gateway's temp dir), e.g. on a small tmpfs.
    pub data_dir: Option<PathBuf>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            extra_toml: String::new(),
            first_retry: "200ms".to_string(),
            queue_toml: String::new(),
            max_attempts: 8,
            trusted_networks: None,
            max_message_size: None,
            submission_toml: String::new(),
            log_filter: None,
            data_dir: None,
        }
    }
}

impl GatewayOptions {
    /// Defaults plus a `smtp` transport "sink" to 127.0.0.1:`port` (no STARTTLS)
    /// and a global route sending everything there.
    pub fn relay_to(port: u16) -> Self {
        GatewayOptions {
            extra_toml: sink_route_toml(port),
            ..Default::default()
        }
    }
}

/// `[transports.sink]` (kind smtp, 127.0.0.1:`port`, no_starttls) and a global
/// `[[routes]]` entry sending everything to it.
pub fn sink_route_toml(port: u16) -> String {
    format!(
        "[transports.sink]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\nno_starttls = true\n\n\
         [[routes]]\ntransport = \"sink\"\n"
    )
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config text for `opts` with `data_dir`: top-level keys, then the
/// `[submission]`, `[admin]` and `[queue]` tables, then `extra_toml`.
pub fn config_text(opts: &GatewayOptions, data_dir: &Path) -> String {
    let mut s = String::new();
    s.push_str("hostname = \"gw.test\"\n");
    s.push_str(&format!(
        "data_dir = {}\n",
        toml_str(&data_dir.to_string_lossy())
    ));
    s.push_str("\n[submission]\nlisten = [\"127.0.0.1:0\"]\n");
    if let Some(nets) = &opts.trusted_networks {
        let list: Vec<String> = nets.iter().map(|n| toml_str(n)).collect();
        s.push_str(&format!("trusted_networks = [{}]\n", list.join(", ")));
    }
    if let Some(size) = &opts.max_message_size {
        s.push_str(&format!("max_message_size = {}\n", toml_str(size)));
    }
    if !opts.submission_toml.is_empty() {
        s.push_str(&opts.submission_toml);
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    s.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    s.push_str(&format!(
        "\n[queue]\nfirst_retry = {}\nmax_attempts = {}\n",
        toml_str(&opts.first_retry),
        opts.max_attempts
    ));
    if !opts.queue_toml.is_empty() {
        s.push_str(&opts.queue_toml);
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    if !opts.extra_toml.is_empty() {
        s.push('\n');
        s.push_str(&opts.extra_toml);
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// The contents of `ready.json`.
#[derive(Clone, Debug)]
pub struct Ready {
    pub pid: u32,
    pub submission: Vec<SocketAddr>,
    pub submission_tls: Vec<SocketAddr>,
    pub admin: SocketAddr,
}

pub fn parse_ready(text: &str) -> Result<Ready> {
    let v: Value = serde_json::from_str(text)?;
    let addrs = |key: &str| -> Result<Vec<SocketAddr>> {
        v.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("ready.json: no array {key:?}"))?
            .iter()
            .map(|a| {
                a.as_str()
                    .ok_or_else(|| anyhow!("ready.json: {key} entry is not a string"))?
                    .parse()
                    .with_context(|| format!("ready.json: {key}"))
            })
            .collect()
    };
    Ok(Ready {
        pid: v
            .get("pid")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("ready.json: no pid"))? as u32,
        submission: addrs("submission")?,
        submission_tls: addrs("submission_tls")?,
        admin: v
            .get("admin")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("ready.json: no admin"))?
            .parse()
            .context("ready.json: admin")?,
    })
}

/// The outcome of a CLI run.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `relaygate ARGS...` in `cwd` (60 s limit).
pub async fn run_relaygate(args: &[&str], cwd: &Path) -> Result<CliOutput> {
    run_relaygate_into(args, cwd, Stdio::piped()).await
}

/// [`run_relaygate`] with `stdout` as the command's standard output (the result's
/// `stdout` is what a pipe caught, empty otherwise).
pub async fn run_relaygate_into(args: &[&str], cwd: &Path, stdout: Stdio) -> Result<CliOutput> {
    // Not `output()`: tokio's would put a pipe of its own in place of `stdout`.
    let child = tokio::process::Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running relaygate {args:?}"))?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .with_context(|| format!("relaygate {args:?} did not finish within 60 s"))?
        .with_context(|| format!("running relaygate {args:?}"))?;
    Ok(CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A minimal HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// `GET path` over a fresh connection with `Connection: close` (10 s limit).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_http(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("GET {path} timed out"))?
        .with_context(|| format!("GET http://{addr}{path}"))
}

pub fn parse_http(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(raw.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A running gateway. Dropping it kills the process (and prints its log tails).
pub struct Gateway {
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    config_path: PathBuf,
    data_dir: PathBuf,
    child: Option<Child>,
    ready: Ready,
    starts: u32,
    log_filter: Option<String>,
}

impl Gateway {
    /// Writes the config into a fresh temp dir and starts `relaygate serve -c FILE`.
    pub async fn start(opts: GatewayOptions) -> Result<Gateway> {
        let dir = super::temp_dir("relaygate-it-")?;
        let dir_path = dir.path().to_path_buf();
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir_path.join("data"));
        let config_path = dir_path.join("relaygate.toml");
        std::fs::write(&config_path, config_text(&opts, &data_dir))?;
        let mut gw = Gateway {
            dir: Some(dir),
            dir_path,
            config_path,
            data_dir,
            child: None,
            ready: Ready {
                pid: 0,
                submission: Vec::new(),
                submission_tls: Vec::new(),
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            starts: 0,
            log_filter: opts.log_filter.clone(),
        };
        gw.spawn().await?;
        Ok(gw)
    }

    async fn spawn(&mut self) -> Result<()> {
        let ready_path = self.ready_path();
        match std::fs::remove_file(&ready_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("removing a stale ready.json"),
        }
        self.starts += 1;
        let stdout = self.log_file("stdout.log")?;
        let stderr = self.log_file("stderr.log")?;
        let mut cmd = Command::new(binary());
        if let Some(filter) = &self.log_filter {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd
            .arg("serve")
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context("spawning relaygate serve")?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "relaygate serve exited with {status} before it was ready\n{}",
                    self.log_tails()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                // Written atomically, so a parse error means a broken contract.
                let ready =
                    parse_ready(&text).with_context(|| format!("parsing ready.json: {text:?}"))?;
                ensure!(
                    ready.pid == pid,
                    "ready.json names pid {} but the child is {pid}",
                    ready.pid
                );
                ensure!(
                    !ready.submission.is_empty(),
                    "ready.json: no submission listener"
                );
                self.ready = ready;
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "relaygate serve was not ready within {START_TIMEOUT:?} (no {})\n{}",
                    ready_path.display(),
                    self.log_tails()
                );
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }

    fn log_file(&self, name: &str) -> Result<File> {
        let path = self.dir_path.join(name);
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        writeln!(f, "===== relaygate serve, start #{} =====", self.starts)?;
        Ok(f)
    }

    fn ready_path(&self) -> PathBuf {
        self.data_dir.join("ready.json")
    }

    /// The first plain submission listener.
    pub fn submission_addr(&self) -> SocketAddr {
        self.ready.submission[0]
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.ready.admin
    }

    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temp dir holding the config, data dir and logs.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The pid of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap the child.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL")?;
            child.wait().context("reaping the child")?;
        }
        Ok(())
    }

    /// SIGTERM and wait (up to [`STOP_TIMEOUT`]) for the exit; returns its status.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the gateway is not running");
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("running kill -TERM")?;
        ensure!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("relaygate did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }

    /// Starts again with the same config and data dir (stopping a running child first).
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        self.spawn().await
    }

    /// GET `path` on the admin listener.
    pub async fn http_get(&self, path: &str) -> Result<HttpResponse> {
        http_get(self.admin_addr(), path).await
    }

    /// `GET /api/queue`, parsed.
    pub async fn queue_json(&self) -> Result<Value> {
        let resp = self.http_get("/api/queue").await?;
        ensure!(
            resp.status == 200,
            "GET /api/queue: HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
        serde_json::from_slice(&resp.body).context("GET /api/queue: body is not JSON")
    }

    /// The messages of `GET /api/queue`.
    pub async fn queue_messages(&self) -> Result<Vec<Value>> {
        let v = self.queue_json().await?;
        Ok(v.get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("/api/queue has no \"messages\" array: {v}"))?
            .clone())
    }

    /// Polls `/api/queue` until it lists no message.
    pub async fn wait_queue_empty(&self, deadline: Instant) -> Result<()> {
        loop {
            let last = self.queue_messages().await;
            if matches!(&last, Ok(m) if m.is_empty()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return match last {
                    Ok(m) => bail!("queue not empty in time; it holds: {}", Value::Array(m)),
                    Err(e) => Err(e.context("waiting for an empty queue")),
                };
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> Result<String> {
        let resp = self.http_get("/metrics").await?;
        ensure!(resp.status == 200, "GET /metrics: HTTP {}", resp.status);
        Ok(String::from_utf8_lossy(&resp.body).into_owned())
    }

    /// Runs `relaygate ARGS... -c CONFIG` in the gateway's dir.
    pub async fn run_cli(&self, args: &[&str]) -> Result<CliOutput> {
        let config = self.config_path.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-c", config.as_str()]);
        run_relaygate(&all, &self.dir_path).await
    }

    /// The last lines of stdout.log and stderr.log.
    pub fn log_tails(&self) -> String {
        let mut s = String::new();
        for name in ["stdout.log", "stderr.log"] {
            let path = self.dir_path.join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
            s.push_str(&format!(
                "----- {} (last {} of {} lines)\n",
                path.display(),
                lines.len() - skip,
                lines.len()
            ));
            for line in &lines[skip..] {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Captured by the test harness: shown only when the test fails.
        eprintln!("{}", self.log_tails());
        if std::env::var_os("RELAYGATE_KEEP_TEST_DIRS").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}
