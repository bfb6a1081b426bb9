//! A real SOCKS5 server for tests: Debian's `microsocks`, on its own port, optionally
//! with RFC 1929 credentials, binding its outgoing connections to 127.0.0.2 so that a
//! peer can tell a connection came through the proxy. Killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io;

/// The address the proxy's outgoing connections come from.
pub const EGRESS_IP: &str = "127.0.0.2";

pub struct Microsocks {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on (bound, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Microsocks {
    /// Starts one; fails if the `microsocks` binary is missing or does not listen within
    /// 10 s.
    pub fn start(auth: Option<(&str, &str)>) -> io::Result<Microsocks> {
        let port = free_port()?;
        let mut cmd = Command::new("microsocks");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-b", EGRESS_IP]);
        if let Some((u, p)) = auth {
            cmd.args(["-u", u, "-P", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting microsocks (install Debian's microsocks package): {e}"),
                )
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let proxy = Microsocks { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("microsocks did not start listening on {addr}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(proxy)
    }
}
