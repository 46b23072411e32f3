//! `sai-web` binary: flags, logging, config, then [`sai_web::serve`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use sai_daemon::cli::ServeCmd;
use tokio_util::sync::CancellationToken;

/// Sai web UI: overview, event matrix, task logs, builders, badges.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Config file (JSON with # comments, or YAML).
    #[arg(short = 'c', long = "config", global = true, env = "SAI_WEB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<ServeCmd>,
}

fn settings(config: Option<&Path>) -> Result<sai_web::settings::Settings> {
    let path = config.context("no config: pass -c <file> or set SAI_WEB_CONFIG")?;
    let cfg = sai_web::settings::load_config(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    sai_web::settings::Settings::resolve(cfg, base)
}

fn main() -> Result<()> {
    sai_daemon::logging::init();
    let cli = Cli::parse();
    let settings = settings(cli.config.as_deref())?;
    match cli.cmd.unwrap_or(ServeCmd::Run) {
        ServeCmd::CheckConfig => {
            sai_web::users::Users::load(&settings.config, &settings.base_dir)?;
            println!("config ok");
            Ok(())
        }
        ServeCmd::Run => tokio::runtime::Runtime::new()?.block_on(serve(settings)),
    }
}

async fn serve(settings: sai_web::settings::Settings) -> Result<()> {
    if settings.config.listen.starts_with("unix:") {
        anyhow::bail!("listen: unix sockets are not supported yet; use host:port");
    }
    let listener = sai_web::bind(&settings.config.listen).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let app = Arc::new(sai_web::App::new(settings, shutdown.clone())?);
    let signals = app.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    if let Err(e) = signals.reload_users() {
                        tracing::error!(cause = %e, "reloading users; keeping the old list");
                    }
                    continue;
                }
            }
        }
        tracing::info!("signal received, shutting down");
        signals.shutdown.cancel();
    });
    {
        let mut out = std::io::stdout().lock();
        let scheme = if app.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        writeln!(out, "sai-web listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    sai_web::serve(app, listener).await
}
