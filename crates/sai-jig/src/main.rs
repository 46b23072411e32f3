//! `sai-jig`: HTTP-controlled GPIO sequences for test jigs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sai_core::config::Format;
use sai_core::config::jig::{DEFAULT_LISTEN, JigConfig};
use sai_jig::{CdevBackend, GpioBackend, Jig, SimChip};

/// Serve `GET|POST /<target>/<sequence>` (runs a GPIO sequence) and
/// `GET /api/status`. Answers: 200 done, 401 bad token, 404 unknown target,
/// 400 unknown sequence, 409 target busy, 500 GPIO failure.
#[derive(Debug, Parser)]
#[command(name = "sai-jig", version)]
struct Cli {
    /// Config file (JSON with # comments, or YAML).
    #[arg(
        long,
        short = 'c',
        env = "SAI_JIG_CONFIG",
        default_value = "/etc/sai/jig/conf"
    )]
    config: PathBuf,
    /// Listen address, overriding the config's `listen`.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Check the config and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
    /// Use a simulated GPIO chip appending every line change as a JSON line
    /// to FILE (for tests; no hardware is touched).
    #[arg(long, value_name = "FILE", hide = true)]
    simulate: Option<PathBuf>,
}

fn load(path: &std::path::Path) -> anyhow::Result<JigConfig> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read config {name}"))?;
    Ok(sai_core::config::load::<JigConfig>(
        &name,
        &bytes,
        Format::from_file_name(&name),
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sai_daemon::logging::init();
    let cli = Cli::parse();
    let config = load(&cli.config)?;
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    let token = sai_jig::load_token(&config)?;
    if token.is_none() {
        tracing::warn!("no token configured: anyone who can reach the port can drive the jig");
    }
    let backend: Arc<dyn GpioBackend> = match &cli.simulate {
        Some(file) => Arc::new(
            SimChip::with_record_file(file)
                .with_context(|| format!("cannot open record file {}", file.display()))?,
        ),
        None => Arc::new(CdevBackend::open(&config)?),
    };
    let jig = Arc::new(Jig::new(&config, backend, token)?);
    let listen = cli
        .listen
        .or(config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    println!("sai-jig: listening on {addr}");
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: lines go to their safe values");
    };
    sai_jig::serve(jig, listener, shutdown).await;
    Ok(())
}
