//! Log proxy sockets of a task.
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
//! A [`LogProxy`] (the directory and its bound sockets) outlives its task:
//! [`LogProxy::serve`] forwards to one task's log and [`Serving::shutdown`]
//! ends that, and [`LogProxies`] keeps each instance's proxy for its next
//! task, whose run dir it becomes by a rename ([`LogProxy::move_to`]; a
//! bound unix socket is found through its inode, so clients connect by the
//! new path) unless a step changed what is in it (then the next task gets
//! new sockets, as every task did before). A task thus creates and deletes
//! no files for its proxies:
//! on a filesystem that allocates inodes slowly (ext4 without a journal
//! scans past every inode freed in the last minutes) that was a third of
//! the builder's CPU per trivial task. Dropping the proxy deletes the socket
//! files and the run directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::log::{CH_NOTICE, CH_TTY0, CH_TTY1, LogChunk, LogSender};
use crate::platform::{LogListener, LogStream, RunAs, file_identity, make_private};

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

/// A task's log proxy directory and its bound sockets; see the module doc.
#[derive(Debug)]
pub struct LogProxy {
    dir: PathBuf,
    paths: LogProxyPaths,
    listeners: [(Arc<LogListener>, u8); 3],
    /// The socket files as bound (none for TCP endpoints).
    files: Vec<(PathBuf, (u64, u64))>,
}

/// A [`LogProxy`] forwarding to one task's log.
#[derive(Debug)]
pub struct Serving {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl LogProxy {
    /// Create `run_dir` and bind the three sockets in it. With `owner`, the
    /// directory and sockets are chowned to that user so a step running as
    /// it can connect. Must be called inside a tokio runtime.
    pub fn bind(run_dir: &Path, owner: Option<&RunAs>) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        // Until every socket is bound, this guard removes what was made.
        let mut made = Made {
            dir: run_dir,
            paths: Vec::new(),
            kept: false,
        };
        make_private(run_dir)?;
        if let Some(user) = owner {
            crate::platform::chown_to(run_dir, user)?;
        }
        let wanted = LogProxyPaths::in_dir(run_dir);
        let mut bound = Vec::new();
        for (path, channel) in wanted.with_channels() {
            let (listener, endpoint) = LogListener::bind(path, owner)?;
            made.paths.push(path.to_path_buf());
            bound.push((Arc::new(listener), channel, endpoint));
        }
        made.kept = true;
        let files = bound
            .iter()
            .filter_map(|(_, _, endpoint)| Some((endpoint.clone(), file_identity(endpoint)?)))
            .collect();
        let [sai, tty0, tty1] = <[_; 3]>::try_from(bound).expect("three proxies");
        Ok(Self {
            dir: run_dir.to_path_buf(),
            paths: LogProxyPaths {
                sai: sai.2,
                tty0: tty0.2,
                tty1: tty1.2,
            },
            listeners: [(sai.0, sai.1), (tty0.0, tty0.1), (tty1.0, tty1.1)],
            files,
        })
    }

    /// Whether the directory holds just the sockets as they were bound: a
    /// step may have removed, replaced or added files (it can write there).
    fn untouched(&self) -> bool {
        let held = std::fs::read_dir(&self.dir).map(|entries| entries.count());
        held.is_ok_and(|n| n == self.files.len())
            && self
                .files
                .iter()
                .all(|(path, id)| file_identity(path) == Some(*id))
    }

    /// What steps are told to connect to.
    pub fn paths(&self) -> &LogProxyPaths {
        &self.paths
    }

    /// Make `run_dir` (a new path on the same filesystem) the proxy's
    /// directory by renaming it; the sockets stay bound.
    pub fn move_to(&mut self, run_dir: &Path) -> std::io::Result<()> {
        if run_dir == self.dir {
            return Ok(());
        }
        std::fs::rename(&self.dir, run_dir)?;
        let moved = |p: &PathBuf| match p.strip_prefix(&self.dir) {
            Ok(name) => run_dir.join(name),
            // An endpoint that is not a path (a TCP address) stays.
            Err(_) => p.clone(),
        };
        self.paths = LogProxyPaths {
            sai: moved(&self.paths.sai),
            tty0: moved(&self.paths.tty0),
            tty1: moved(&self.paths.tty1),
        };
        for (path, _) in &mut self.files {
            *path = moved(path);
        }
        self.dir = run_dir.to_path_buf();
        Ok(())
    }

    /// Forward what clients write to `tx` until [`Serving::shutdown`].
    /// Connections made since the last task ended are closed unread: they
    /// are not this task's. Must be called inside a tokio runtime.
    pub fn serve(&self, tx: LogSender) -> Serving {
        let stop = CancellationToken::new();
        let tasks = self
            .listeners
            .iter()
            .map(|(listener, channel)| {
                drop(listener.drain_backlog());
                tokio::spawn(accept_loop(
                    listener.clone(),
                    *channel,
                    tx.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Serving { stop, tasks }
    }
}

impl Serving {
    /// Stop accepting, give open connections up to `grace` to reach
    /// end-of-file (so bytes written just before a step exited still arrive),
    /// then close them.
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
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for LogProxy {
    fn drop(&mut self) {
        for (path, _) in self.paths.with_channels() {
            LogListener::remove(path);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// What [`LogProxy::bind`] made so far, removed on drop unless `kept`.
struct Made<'a> {
    dir: &'a Path,
    paths: Vec<PathBuf>,
    kept: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for path in &self.paths {
            LogListener::remove(path);
        }
        let _ = std::fs::remove_dir(self.dir);
    }
}

/// Each instance's proxy between its tasks (shared by the clones of a
/// task context).
#[derive(Debug, Clone, Default)]
pub struct LogProxies(Arc<Mutex<HashMap<u32, LogProxy>>>);

impl LogProxies {
    /// Instance `idx`'s proxy moved to `run_dir`, or a new one bound there.
    pub fn take_or_bind(
        &self,
        idx: u32,
        run_dir: &Path,
        owner: Option<&RunAs>,
    ) -> std::io::Result<LogProxy> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&idx);
        if let Some(mut proxy) = kept {
            if !proxy.untouched() {
                tracing::info!(dir = %proxy.dir.display(), "a step changed the log proxy dir: new sockets");
            } else {
                match proxy.move_to(run_dir) {
                    Ok(()) => return Ok(proxy),
                    Err(e) => tracing::warn!(error = %e, "log proxy not reused"),
                }
            }
        }
        LogProxy::bind(run_dir, owner)
    }

    /// Keep `proxy` for instance `idx`'s next task.
    pub fn keep(&self, idx: u32, proxy: LogProxy) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(idx, proxy);
    }
}

async fn accept_loop(
    listener: Arc<LogListener>,
    channel: u8,
    tx: LogSender,
    stop: CancellationToken,
) {
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

    /// One client: connect to `path`, write `bytes`, close.
    async fn write_once(path: impl AsRef<Path>, bytes: &[u8]) {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
    }

    #[tokio::test]
    async fn forwards_each_socket_on_its_channel_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run").join("ABCDWXYZ");
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let proxy = LogProxy::bind(&run, None).unwrap();
        let serving = proxy.serve(tx);
        let paths = proxy.paths().clone();
        assert_eq!(paths, LogProxyPaths::in_dir(&run));
        let mode = std::fs::metadata(&paths.sai).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        for (path, channel) in paths.with_channels() {
            // Two connections one after another on the same socket.
            for msg in [&b"hello "[..], &b"world\n"[..]] {
                write_once(path, msg).await;
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

        drop(serving);
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
        let proxy = LogProxy::bind(&run, None).unwrap();
        let serving = proxy.serve(tx);
        write_once(&proxy.paths().sai, b"last words").await;
        serving.shutdown(Duration::from_secs(30)).await;
        assert_eq!(collect(&mut rx, CH_NOTICE, 10).await, b"last words");
        drop(proxy);
        assert!(!run.exists());
    }

    #[tokio::test]
    async fn the_next_task_gets_the_sockets_renamed_into_its_run_dir_and_only_its_own_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let proxies = LogProxies::default();
        let first_dir = tmp.path().join("run").join("AAAA1111");
        let (tx1, mut rx1) = tokio::sync::mpsc::channel(16);
        let first = proxies.take_or_bind(0, &first_dir, None).unwrap();
        let serving = first.serve(tx1);
        write_once(&first.paths().tty1, b"first").await;
        serving.shutdown(Duration::from_secs(30)).await;
        assert_eq!(collect(&mut rx1, CH_TTY1, 5).await, b"first");
        let socket_inode = std::fs::metadata(&first.paths().tty1).unwrap().ino();
        proxies.keep(0, first);

        // Between tasks: a connection nobody may read for the next task.
        write_once(first_dir.join("logproxy.tty1"), b"stray").await;

        let second_dir = tmp.path().join("run").join("BBBB2222");
        let second = proxies.take_or_bind(0, &second_dir, None).unwrap();
        assert_eq!(second.paths(), &LogProxyPaths::in_dir(&second_dir));
        assert!(!first_dir.exists(), "the run dir was renamed, not copied");
        assert_eq!(
            std::fs::metadata(&second.paths().tty1).unwrap().ino(),
            socket_inode,
            "the same bound socket, no new file"
        );
        let (tx2, mut rx2) = tokio::sync::mpsc::channel(16);
        let serving = second.serve(tx2);
        write_once(&second.paths().tty1, b"second").await;
        serving.shutdown(Duration::from_secs(30)).await;
        assert_eq!(collect(&mut rx2, CH_TTY1, 6).await, b"second");
        assert!(
            rx2.try_recv().is_err(),
            "the stray bytes were not forwarded"
        );

        // Another instance gets its own sockets.
        let other = proxies
            .take_or_bind(1, &tmp.path().join("run").join("CCCC3333"), None)
            .unwrap();
        assert_ne!(
            std::fs::metadata(&other.paths().tty1).unwrap().ino(),
            socket_inode
        );
        drop(second);
        assert!(!second_dir.exists());
    }

    /// A step can write in its run dir: what it changed there must not
    /// reach the instance's next task, which then gets new sockets.
    #[tokio::test]
    async fn a_run_dir_a_step_changed_is_not_handed_on() {
        let tmp = tempfile::tempdir().unwrap();
        let run = |vn: &str| tmp.path().join("run").join(vn);
        let proxies = LogProxies::default();
        type Step = fn(&Path);
        let steps: [(&str, Step); 3] = [
            ("a file left beside the sockets", |dir| {
                std::fs::write(dir.join("note"), b"for the next task").unwrap();
            }),
            ("a socket removed", |dir| {
                std::fs::remove_file(dir.join("logproxy.tty0")).unwrap();
            }),
            ("a socket replaced by a file", |dir| {
                std::fs::remove_file(dir.join("logproxy.sai")).unwrap();
                std::fs::write(dir.join("logproxy.sai"), b"not a socket").unwrap();
            }),
        ];
        for (n, (what, step)) in steps.into_iter().enumerate() {
            let (used, next) = (run(&format!("USED000{n}")), run(&format!("NEXT000{n}")));
            let proxy = proxies.take_or_bind(0, &used, None).unwrap();
            step(&used);
            proxies.keep(0, proxy);

            let fresh = proxies.take_or_bind(0, &next, None).unwrap();
            let mut names: Vec<_> = std::fs::read_dir(&next)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(
                names,
                ["logproxy.sai", "logproxy.tty0", "logproxy.tty1"],
                "{what}"
            );
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            let serving = fresh.serve(tx);
            for (path, channel) in fresh.paths().with_channels() {
                write_once(path, what.as_bytes()).await;
                assert_eq!(collect(&mut rx, channel, what.len()).await, what.as_bytes());
            }
            serving.shutdown(Duration::from_secs(30)).await;
            proxies.keep(0, fresh);
            // The next round's first task binds anew: its dir is another.
            drop(proxies.0.lock().unwrap().remove(&0));
        }
    }

    #[tokio::test]
    async fn stale_socket_files_are_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("r");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("logproxy.sai"), b"stale").unwrap();
        let proxy = LogProxy::bind(&run, None).unwrap();
        UnixStream::connect(&proxy.paths().sai).await.unwrap();
    }
}
