//! Log proxy sockets of one task.
//!
//! Three unix stream listeners at `<home>/run/<VN>/logproxy.sai` (channel 3),
//! `logproxy.tty0` (channel 4) and `logproxy.tty1` (channel 5). They are
//! filesystem sockets (not the reference's abstract ones, which any local user
//! could write to): the sockets are mode 0600, owned by the user the steps run
//! as. Their paths reach the step as `SAI_LOGPROXY`, `SAI_LOGPROXY_TTY0` and
//! `SAI_LOGPROXY_TTY1` (see [`crate::env`]). Any number of clients may connect
//! to each, concurrently or one after another; every byte they write becomes a
//! [`LogChunk`] on that socket's channel (raw bytes, in reads of up to 2048).
//!
//! The sockets exist while the [`LogProxy`] lives: dropping it (or
//! [`LogProxy::shutdown`]) stops the forwarding tasks and deletes the socket
//! files and the run directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::log::{CH_NOTICE, CH_TTY0, CH_TTY1, LogChunk, LogSender};
use crate::platform::{LogListener, LogStream, RunAs, make_private};

/// Read size of one forwarded chunk.
pub const READ_SIZE: usize = 2048;

/// Socket paths of one task's log proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogProxyPaths {
    /// Channel 3 (`SAI_LOGPROXY`).
    pub sai: PathBuf,
    /// Channel 4 (`SAI_LOGPROXY_TTY0`).
    pub tty0: PathBuf,
    /// Channel 5 (`SAI_LOGPROXY_TTY1`).
    pub tty1: PathBuf,
}

impl LogProxyPaths {
    /// The paths under `run_dir` (normally `<home>/run/<VN>`).
    pub fn in_dir(run_dir: &Path) -> Self {
        Self {
            sai: run_dir.join("logproxy.sai"),
            tty0: run_dir.join("logproxy.tty0"),
            tty1: run_dir.join("logproxy.tty1"),
        }
    }

    fn with_channels(&self) -> [(&Path, u8); 3] {
        [
            (&self.sai, CH_NOTICE),
            (&self.tty0, CH_TTY0),
            (&self.tty1, CH_TTY1),
        ]
    }
}

/// Running log proxies of one task; see the module doc.
#[derive(Debug)]
pub struct LogProxy {
    dir: PathBuf,
    paths: LogProxyPaths,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl LogProxy {
    /// Create `run_dir` and bind the three sockets in it, forwarding to `tx`.
    /// With `owner`, the directory and sockets are chowned to that user so a
    /// step running as it can connect. Must be called inside a tokio runtime.
    pub fn bind(run_dir: &Path, tx: LogSender, owner: Option<&RunAs>) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        make_private(run_dir)?;
        if let Some(user) = owner {
            crate::platform::chown_to(run_dir, user)?;
        }
        let wanted = LogProxyPaths::in_dir(run_dir);
        let mut proxy = Self {
            dir: run_dir.to_path_buf(),
            paths: wanted.clone(),
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        };
        let mut endpoints = Vec::new();
        for (path, channel) in wanted.with_channels() {
            // On error `proxy` drops here and removes what was made so far.
            let (listener, endpoint) = LogListener::bind(path, owner)?;
            endpoints.push(endpoint);
            let task = tokio::spawn(accept_loop(
                listener,
                channel,
                tx.clone(),
                proxy.stop.clone(),
            ));
            proxy.tasks.push(task);
        }
        let [sai, tty0, tty1] = <[PathBuf; 3]>::try_from(endpoints).expect("three proxies");
        proxy.paths = LogProxyPaths { sai, tty0, tty1 };
        Ok(proxy)
    }

    /// The socket paths.
    pub fn paths(&self) -> &LogProxyPaths {
        &self.paths
    }

    /// Stop accepting, give open connections up to `grace` to reach
    /// end-of-file (so bytes written just before a step exited still arrive),
    /// then remove everything.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let joined = tokio::time::timeout(grace, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        if joined.is_err() {
            for a in aborts {
                a.abort();
            }
        }
        // Drop removes the files.
    }
}

impl Drop for LogProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
        for (path, _) in self.paths.with_channels() {
            LogListener::remove(path);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

async fn accept_loop(listener: LogListener, channel: u8, tx: LogSender, stop: CancellationToken) {
    // Dropping the JoinSet (when this task is aborted) aborts the connections.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    conns.spawn(forward(stream, channel, tx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, channel, "log proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    for stream in listener.drain_backlog() {
        conns.spawn(forward(stream, channel, tx.clone()));
    }
    while conns.join_next().await.is_some() {}
}

async fn forward(mut stream: LogStream, channel: u8, tx: LogSender) {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = LogChunk {
                    channel,
                    bytes: Bytes::copy_from_slice(&buf[..n]),
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    async fn collect(
        rx: &mut tokio::sync::mpsc::Receiver<LogChunk>,
        channel: u8,
        want: usize,
    ) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            let c = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("log chunk in time")
                .expect("channel open");
            assert_eq!(c.channel, channel);
            got.extend_from_slice(&c.bytes);
        }
        got
    }

    #[tokio::test]
    async fn forwards_each_socket_on_its_channel_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run").join("ABCDWXYZ");
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let proxy = LogProxy::bind(&run, tx, None).unwrap();
        let paths = proxy.paths().clone();
        assert_eq!(paths, LogProxyPaths::in_dir(&run));
        let mode = std::fs::metadata(&paths.sai).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        for (path, channel) in paths.with_channels() {
            // Two connections one after another on the same socket.
            for msg in [&b"hello "[..], &b"world\n"[..]] {
                let mut s = UnixStream::connect(path).await.unwrap();
                s.write_all(msg).await.unwrap();
                drop(s);
                assert_eq!(collect(&mut rx, channel, msg.len()).await, msg);
            }
        }

        // Two at once.
        let mut a = UnixStream::connect(&paths.tty0).await.unwrap();
        let mut b = UnixStream::connect(&paths.tty0).await.unwrap();
        a.write_all(b"aa").await.unwrap();
        b.write_all(b"bb").await.unwrap();
        let mut got = collect(&mut rx, CH_TTY0, 4).await;
        got.sort_unstable();
        assert_eq!(got, b"aabb");

        drop(proxy);
        for (path, _) in paths.with_channels() {
            assert!(!path.exists(), "{} removed", path.display());
        }
        assert!(!run.exists());
        assert!(UnixStream::connect(&paths.sai).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_delivers_pending_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("r");
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let proxy = LogProxy::bind(&run, tx, None).unwrap();
        let mut s = UnixStream::connect(&proxy.paths().sai).await.unwrap();
        s.write_all(b"last words").await.unwrap();
        drop(s);
        proxy.shutdown(Duration::from_secs(30)).await;
        assert!(!run.exists());
        assert_eq!(collect(&mut rx, CH_NOTICE, 10).await, b"last words");
    }

    #[tokio::test]
    async fn stale_socket_files_are_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("r");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("logproxy.sai"), b"stale").unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let proxy = LogProxy::bind(&run, tx, None).unwrap();
        UnixStream::connect(&proxy.paths().sai).await.unwrap();
    }
}
