//! The two daemons of `sai up`, sai-server and sai-builder, as tasks on one
//! tokio runtime: started together, stopped builder first (so running tasks
//! are handed back to a server that still listens), then the server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use sai_core::config::builder::BuilderConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::output::say;

/// The running server and builder.
pub struct Daemons {
    server: JoinHandle<Result<()>>,
    builder: JoinHandle<Result<()>>,
    server_sd: CancellationToken,
    builder_sd: CancellationToken,
}

/// Why [`Daemons::run_until_stopped`] returned.
pub enum Stopped {
    /// Ctrl-C or SIGTERM: a clean stop.
    Asked,
    /// One daemon ended by itself.
    Early(&'static str, Result<()>),
}

impl Daemons {
    /// Start serving `server` on `listener` and the builder with `config`.
    pub fn start(
        server: std::sync::Arc<sai_server::Server>,
        listener: tokio::net::TcpListener,
        server_sd: CancellationToken,
        config: BuilderConfig,
    ) -> Daemons {
        let builder_sd = CancellationToken::new();
        Daemons {
            server: tokio::spawn(async move { Ok(sai_server::serve(server, listener).await?) }),
            builder: tokio::spawn(sai_builder::daemon::run(config, builder_sd.clone())),
            server_sd,
            builder_sd,
        }
    }

    /// Wait for Ctrl-C, SIGTERM or a daemon's end, then stop both.
    pub async fn run_until_stopped(mut self) -> Result<Stopped> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let flat = |r: Result<Result<()>, tokio::task::JoinError>| {
            r.map_err(anyhow::Error::from).and_then(|r| r)
        };
        let stopped = tokio::select! {
            _ = tokio::signal::ctrl_c() => Stopped::Asked,
            _ = term.recv() => Stopped::Asked,
            r = &mut self.server => Stopped::Early("sai-server", flat(r)),
            r = &mut self.builder => Stopped::Early("sai-builder", flat(r)),
        };
        say("stopping: builder first (running tasks are killed and handed back), then the server");
        let finished = |who: &str| matches!(&stopped, Stopped::Early(w, _) if *w == who);
        self.builder_sd.cancel();
        if !finished("sai-builder") {
            stop("sai-builder", &mut self.builder).await;
        }
        self.server_sd.cancel();
        if !finished("sai-server") {
            stop("sai-server", &mut self.server).await;
        }
        Ok(stopped)
    }
}

async fn stop(who: &str, task: &mut JoinHandle<Result<()>>) {
    match tokio::time::timeout(Duration::from_secs(20), task).await {
        Ok(Ok(Err(e))) => tracing::error!("{who} failed: {e:#}"),
        Ok(Err(e)) => tracing::error!("{who} task failed: {e}"),
        Err(_) => tracing::warn!("{who} did not stop within 20 s"),
        Ok(Ok(Ok(()))) => {}
    }
}

impl Stopped {
    /// The exit status of `sai up` for this stop.
    pub fn into_result(self) -> Result<std::process::ExitCode> {
        match self {
            Stopped::Asked => {
                say("stopped");
                Ok(std::process::ExitCode::SUCCESS)
            }
            Stopped::Early(who, Err(e)) => bail!("{who} failed: {e:#}"),
            Stopped::Early(who, Ok(())) => bail!("{who} stopped unexpectedly"),
        }
    }
}

/// Loopback for an unspecified listen address, so the builder can dial it.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}
