//! `sai-server` binary: flags, logging, config, then [`sai_server::Server::open`]
//! and [`sai_server::serve`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sai_daemon::cli::ServeCmd;
use sai_server::auth::TokenKeys;
use sai_server::token_cli::TokenCmd;
use tokio_util::sync::CancellationToken;

/// Sai CI server: git hook intake, scheduler, builder websocket, operations API.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Config file (JSON with # comments, or YAML).
    #[arg(short = 'c', long = "config", global = true, env = "SAI_SERVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Serve(ServeCmd),
    /// Mint a PASETO token signed by this server's key.
    Token {
        #[command(subcommand)]
        kind: TokenCmd,
        /// Use the key under this data dir instead of the config's.
        #[arg(long, global = true)]
        data: Option<PathBuf>,
    },
}

fn settings(config: Option<&Path>) -> Result<sai_server::Settings> {
    let path = config.context("no config: pass -c <file> or set SAI_SERVER_CONFIG")?;
    let cfg = sai_server::load_config(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(sai_server::Settings::resolve(cfg, base)?)
}

fn main() -> Result<()> {
    // Two malloc arenas for two cores' worth of threads (glibc's default
    // allows 8 per core, each keeping its peak); freed memory is handed back
    // by the trimmer spawned in `serve`.
    sai_daemon::memory::limit_arenas(2);
    // Log blocks (4 MiB) and their zstd contexts get mappings of their own,
    // unmapped when freed, instead of staying in the heap after a big log.
    sai_daemon::memory::return_big_blocks(1 << 20);
    sai_daemon::logging::init();
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Serve(ServeCmd::Run)) {
        Cmd::Serve(ServeCmd::CheckConfig) => {
            settings(cli.config.as_deref())?;
            println!("config ok");
            Ok(())
        }
        Cmd::Token { kind, data } => {
            let key_path = match data {
                Some(d) => d.join("token.key"),
                None => settings(cli.config.as_deref())?.token_key_path,
            };
            let keys = TokenKeys::load_or_create(&key_path)?;
            let token = kind.mint(&keys)?;
            println!("{token}");
            Ok(())
        }
        Cmd::Serve(ServeCmd::Run) => {
            let settings = settings(cli.config.as_deref())?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(settings))
        }
    }
}

async fn serve(settings: sai_server::Settings) -> Result<()> {
    let listener = sai_server::bind(&settings.config.listen).await?;
    let addr = listener.local_addr()?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        sai_daemon::signals::stop_requested().await;
        tracing::info!("signal received, shutting down");
        sai_daemon::supervise::stopping();
        sd.cancel();
    });
    let data_dir = settings.data_dir.clone();
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = sai_server::Server::open(settings, shutdown.clone())?;
    std::fs::write(data_dir.join("server.addr"), format!("{addr}\n"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sai-server listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    // Store open, listener bound (connections queue until `serve` accepts).
    sai_daemon::supervise::ready(&format!("listening on {scheme}://{addr}"));
    tokio::spawn(sai_daemon::memory::trim_while_running(
        sai_daemon::memory::TRIM_PERIOD,
        sai_daemon::memory::TRIM_THRESHOLD,
        shutdown.clone(),
    ));
    let health = server.clone();
    sai_daemon::supervise::spawn_watchdog(move || drop(health.sched()), shutdown);
    sai_server::serve(server, listener).await?;
    Ok(())
}
