//! The signals that ask a daemon to stop.

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (systemd's stop); on
/// other systems at Ctrl-C. A handler that cannot be installed is logged
/// and waited on no further: the other one still stops the daemon.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => Some(term),
            Err(e) => {
                tracing::warn!(cause = %e, "cannot handle SIGTERM");
                None
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
