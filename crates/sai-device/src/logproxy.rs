//! Client of the builder's log-proxy sockets.
//!
//! Inside a build step `SAI_LOGPROXY`, `SAI_LOGPROXY_TTY0` and
//! `SAI_LOGPROXY_TTY1` name unix stream sockets (channels 3, 4 and 5 of the
//! task log). A value starting with `@` names a Linux abstract socket. Every
//! byte written becomes log bytes on that channel. An unset or unreachable
//! proxy is not an error: output then goes to a fallback stream (stderr for
//! notices), so a build never fails because of logging.

use std::io::Write;
use std::os::unix::net::UnixStream;

/// The log channels served by a log proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Channel 3: Sai notices (`SAI_LOGPROXY`).
    Notices,
    /// Channel 4: device tty 0 (`SAI_LOGPROXY_TTY0`).
    Tty0,
    /// Channel 5: device tty 1 (`SAI_LOGPROXY_TTY1`).
    Tty1,
}

impl Channel {
    /// The environment variable naming this channel's socket.
    pub fn env_var(self) -> &'static str {
        match self {
            Channel::Notices => "SAI_LOGPROXY",
            Channel::Tty0 => "SAI_LOGPROXY_TTY0",
            Channel::Tty1 => "SAI_LOGPROXY_TTY1",
        }
    }

    /// The log channel number.
    pub fn number(self) -> u8 {
        match self {
            Channel::Notices => 3,
            Channel::Tty0 => 4,
            Channel::Tty1 => 5,
        }
    }

    /// Channel of device tty `n` (0 or 1).
    pub fn tty(n: usize) -> Option<Channel> {
        match n {
            0 => Some(Channel::Tty0),
            1 => Some(Channel::Tty1),
            _ => None,
        }
    }
}

/// Where output goes when there is no log proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Write to our stderr.
    Stderr,
    /// Write to our stdout.
    Stdout,
    /// Drop the bytes.
    Discard,
}

/// Connect to a log proxy socket path; `@name` is a Linux abstract socket.
pub fn connect(path: &str) -> std::io::Result<UnixStream> {
    match path.strip_prefix('@') {
        Some(name) => connect_abstract(name),
        None => UnixStream::connect(path),
    }
}

#[cfg(target_os = "linux")]
fn connect_abstract(name: &str) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixStream::connect_addr(&addr)
}

#[cfg(not(target_os = "linux"))]
fn connect_abstract(name: &str) -> std::io::Result<UnixStream> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("log proxy @{name}: abstract unix sockets exist only on Linux"),
    ))
}

/// One log channel: the proxy socket if reachable, else the fallback.
#[derive(Debug)]
pub struct LogSink {
    channel: Channel,
    stream: Option<UnixStream>,
    fallback: Fallback,
}

impl LogSink {
    /// Connect to the socket named by the channel's environment variable.
    /// Unset, empty or unreachable gives a sink writing to `fallback`.
    pub fn from_env(channel: Channel, fallback: Fallback) -> LogSink {
        let path = std::env::var(channel.env_var()).ok();
        LogSink::to_path(channel, path.as_deref(), fallback)
    }

    /// Connect to `path` (if any) for `channel`.
    pub fn to_path(channel: Channel, path: Option<&str>, fallback: Fallback) -> LogSink {
        let stream = path.filter(|p| !p.is_empty()).and_then(|p| connect(p).ok());
        LogSink {
            channel,
            stream,
            fallback,
        }
    }

    /// Whether bytes reach a log proxy (rather than the fallback).
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// The channel this sink writes to.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Write raw bytes. A proxy that fails is dropped and the fallback used
    /// from then on; nothing here returns an error.
    pub fn write(&mut self, bytes: &[u8]) {
        if let Some(s) = &mut self.stream {
            if s.write_all(bytes).is_ok() {
                return;
            }
            self.stream = None;
        }
        let _ = match self.fallback {
            Fallback::Stderr => std::io::stderr().lock().write_all(bytes),
            Fallback::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|_| out.flush())
            }
            Fallback::Discard => Ok(()),
        };
    }

    /// Write one line of text (a newline is added).
    pub fn line(&mut self, text: &str) {
        let mut b = Vec::with_capacity(text.len() + 1);
        b.extend_from_slice(text.as_bytes());
        b.push(b'\n');
        self.write(&b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn writes_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy");
        let listener = UnixListener::bind(&path).unwrap();
        let mut sink = LogSink::to_path(
            Channel::Notices,
            Some(path.to_str().unwrap()),
            Fallback::Discard,
        );
        assert!(sink.is_connected());
        sink.line("hello");
        drop(sink);
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn writes_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sai-device-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let mut sink =
            LogSink::to_path(Channel::Tty1, Some(&format!("@{name}")), Fallback::Discard);
        assert!(sink.is_connected());
        sink.write(b"abc");
        drop(sink);
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");
    }

    #[test]
    fn unreachable_proxy_falls_back() {
        let mut sink = LogSink::to_path(
            Channel::Tty0,
            Some("/nonexistent/socket"),
            Fallback::Discard,
        );
        assert!(!sink.is_connected());
        sink.line("goes nowhere");
        assert_eq!(Channel::Tty0.number(), 4);
        assert_eq!(Channel::tty(1), Some(Channel::Tty1));
    }
}
