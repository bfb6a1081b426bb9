//! A private Dovecot submission server: a real SASL server outside the project for the
//! smarthost AUTH tests.
//!
//! Each [`Dovecot`] runs `dovecot -c <conf> -F` (foreground, as root — the master drops
//! privileges for its login and auth processes) from its own temp dir: `base_dir`,
//! `state_dir` and `log_path` live there, so instances do not collide and nothing of the
//! system's Dovecot is touched. The config has one passwd-file account with a plaintext
//! password (so SCRAM and CRAM-MD5 can work), `auth_mechanisms = plain login cram-md5
//! scram-sha-1 scram-sha-256`, SSL with the test PKI's certificate, and the submission
//! service on 127.0.0.1:<free port>, relaying every accepted message to a test sink
//! (`submission_relay_host`/`submission_relay_port`).
//!
//! Dovecot cannot bind port 0 and report it, so a free port is found by binding and
//! releasing one; readiness is polled (the 220 greeting) with a deadline. Dropping the
//! instance sends SIGTERM and reaps it (SIGKILL after a deadline).
//!
//! Needs the Debian packages `dovecot-core` and `dovecot-submissiond`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::pki::Pki;

/// The dovecot binary (Debian: /usr/sbin, often not on a test's PATH).
fn binary() -> Result<PathBuf> {
    for candidate in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        let p = PathBuf::from(candidate);
        if p.exists() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("dovecot");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    bail!(
        "dovecot is not installed: these tests need a real SASL server; install the Debian \
         packages dovecot-core and dovecot-submissiond (tests/run.sh does)"
    )
}

/// A running private Dovecot.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl Dovecot {
    /// Starts Dovecot with one account `user`/`password`, STARTTLS with `pki`'s server
    /// certificate, relaying to 127.0.0.1:`relay_port`.
    pub async fn start(pki: &Pki, relay_port: u16, user: &str, password: &str) -> Result<Dovecot> {
        let binary = binary()?;
        let dir = super::temp_dir("relaygate-dovecot-")?;
        // The login and auth processes run as dovenull/dovecot and must reach base_dir.
        set_mode(dir.path(), 0o755)?;
        for (sub, mode) in [("run", 0o755), ("state", 0o755), ("home", 0o1777)] {
            std::fs::create_dir(dir.path().join(sub))?;
            set_mode(&dir.path().join(sub), mode)?;
        }
        std::fs::write(
            dir.path().join("passwd"),
            format!("{user}:{{PLAIN}}{password}\n"),
        )?;
        set_mode(&dir.path().join("passwd"), 0o644)?;
        let mut last_error = None;
        // A port found free can be taken before Dovecot binds it; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let conf = dir.path().join("dovecot.conf");
            std::fs::write(&conf, config(dir.path(), pki, port, relay_port))?;
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .arg("-F")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
                .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
                .spawn()
                .with_context(|| format!("spawning {}", binary.display()))?;
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(Dovecot {
                        dir,
                        child: Some(child),
                        port,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(e);
                }
            }
        }
        let logs = logs_of(dir.path());
        match last_error {
            Some(e) => Err(e.context(format!("dovecot did not start\n{logs}"))),
            None => bail!("dovecot did not start\n{logs}"),
        }
    }

    /// The submission port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Dovecot's own log (logins name their mechanism: `method=SCRAM-SHA-256`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Every log Dovecot wrote, for failure messages.
    pub fn logs(&self) -> String {
        logs_of(self.dir.path())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets the master stop its children; SIGKILL only if it hangs.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("{}", self.logs());
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn config(dir: &Path, pki: &Pki, port: u16, relay_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"# Private test instance of relaygate's integration tests.
instance_name = relaygate-test-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
protocols = submission
listen = 127.0.0.1
hostname = dovecot.test
postmaster_address = postmaster@dovecot.test
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
# The static userdb below maps every user to the system user "dovecot", whose home
# (created on demand under a world-writable dir) holds a never-used Maildir.
mail_location = maildir:~/Maildir
first_valid_uid = 1
first_valid_gid = 1
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/home/%u
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {port}
  }}
}}
submission_relay_host = 127.0.0.1
submission_relay_port = {relay_port}
submission_relay_trusted = no
submission_relay_ssl = no
"#,
        cert = pki.chain_pem.display(),
        key = pki.key_pem.display(),
    )
}

/// Polls until the submission port greets with 220 (or the process exits).
async fn wait_ready(child: &mut Child, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("dovecot exited with {status}");
        }
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            let mut buf = [0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await
            {
                if buf[..n].starts_with(b"220 ") {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("dovecot did not greet on 127.0.0.1:{port} within 20 s");
        }
        tokio::time::sleep(super::POLL_INTERVAL).await;
    }
}

fn logs_of(dir: &Path) -> String {
    let mut s = String::new();
    for name in ["dovecot.log", "stdout.log", "stderr.log"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        s.push_str(&format!("----- dovecot {name}\n{text}"));
    }
    s
}
