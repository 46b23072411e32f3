//! One server link's settings: its URL and trust, where its token comes
//! from, the platforms it offers and its timings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sai_core::protocol::LOAD_REPORT_SECS;

use crate::connection::{DEFAULT_DEAD_AFTER, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_KEEPALIVE};

/// Default time a connection must stay up for the backoff to start over.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);

/// Where a server's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given inline in the config.
    Inline(String),
    /// Read from this file on every connect ([`sai_core::secret`] rules).
    File(PathBuf),
}

impl TokenSource {
    /// The token now.
    pub fn read(&self) -> anyhow::Result<String> {
        let t = match self {
            TokenSource::Inline(t) => t.trim().to_string(),
            TokenSource::File(p) => sai_core::secret::secret_text_from_file(p, std::fs::read(p))?,
        };
        anyhow::ensure!(!t.is_empty(), "the token is empty");
        Ok(t)
    }
}

/// One server link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `ws://` or `wss://host[:port][/prefix]/builder`.
    pub url: String,
    /// Trust settings for a `wss://` URL (its `ca_file`, or the system roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The token for this server.
    pub token: TokenSource,
    /// Names of the platforms offered on this link (each in [`Shared::platforms`]).
    ///
    /// [`Shared::platforms`]: super::Shared::platforms
    pub platforms: Vec<String>,
    /// Limit for connecting plus hello/welcome.
    pub handshake_timeout: Duration,
    /// Ping interval.
    pub keepalive: Duration,
    /// Silence after which the link counts as dead.
    pub dead_after: Duration,
    /// A connection up this long resets the backoff.
    pub stable_after: Duration,
    /// First reconnect delay bound.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_cap: Duration,
    /// Interval of the `load` reports (also sent when a task starts or ends).
    pub load_every: Duration,
    /// Told the URL once the first connection attempt has ended either way
    /// (connected, or failed and retrying): the daemon's readiness.
    pub first_attempt: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl LinkConfig {
    /// A link with the default timings.
    pub fn new(url: impl Into<String>, token: TokenSource, platforms: Vec<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            token,
            platforms,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            dead_after: DEFAULT_DEAD_AFTER,
            stable_after: DEFAULT_STABLE_AFTER,
            backoff_initial: crate::backoff::INITIAL,
            backoff_cap: crate::backoff::CAP,
            load_every: Duration::from_secs(LOAD_REPORT_SECS),
            first_attempt: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenSource;

    #[test]
    fn token_files_follow_the_secret_file_rule() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let source = TokenSource::File(file.clone());
        std::fs::write(&file, "v4.public.abc \r\n\n").unwrap();
        assert_eq!(source.read().unwrap(), "v4.public.abc");
        std::fs::write(&file, " \n").unwrap();
        let e = source.read().unwrap_err().to_string();
        assert_eq!(e, format!("secret file {} is empty", file.display()));
        std::fs::remove_file(&file).unwrap();
        let e = source.read().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read secret file {}: ", file.display())),
            "{e}"
        );
    }
}
