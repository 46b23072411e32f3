//! A stand-in for systemd's `NOTIFY_SOCKET`: a unix datagram socket in a
//! temporary folder that records the `sd_notify` messages a daemon sends.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The socket and every message received so far.
pub struct FakeNotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    /// Messages in arrival order (one datagram each, e.g. `READY=1\nSTATUS=...`).
    pub received: Vec<String>,
}

impl FakeNotifySocket {
    /// Bind a new socket.
    pub fn bind() -> Result<FakeNotifySocket> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path)?;
        Ok(FakeNotifySocket {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        })
    }

    /// Value for the daemon's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }

    /// Receive until a message satisfies `want` (returned), or fail after
    /// `timeout` listing what did arrive.
    pub fn wait_for(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no such notification within {timeout:?}; got {:?}",
                    self.received
                );
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                    self.received.push(msg.clone());
                    if want(&msg) {
                        return Ok(msg);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
