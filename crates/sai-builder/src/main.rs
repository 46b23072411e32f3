//! `sai-builder` binary: flags, logging, config, then [`sai_builder::daemon::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sai_builder::daemon::{DEFAULT_CONFIG, check, load_config, run};
use tokio_util::sync::CancellationToken;

/// Sai CI builder: dials out to sai-server(s) and runs build steps.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Config file (JSON with # comments, or YAML).
    #[arg(short = 'c', long = "config", env = "SAI_BUILDER_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Load and validate the config (and check the home, the step user and
    /// the server URL schemes), print "config ok" and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    sai_daemon::logging::init();
    let cli = Cli::parse();
    let config = match load_config(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sai-builder: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        if let Err(e) = check(&config) {
            eprintln!("sai-builder: {}: {e:#}", cli.config.display());
            return ExitCode::from(2);
        }
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    // One malloc arena: the I/O thread and the few blocking git workers
    // rarely allocate at the same moment, and every further arena keeps
    // its own free pages resident (0.6 MiB in an idle builder with two;
    // glibc's default allows 8 per core).
    sai_daemon::memory::limit_arenas(1);
    // The builder waits on sockets, pipes and children; one worker thread
    // carries that (git and file work runs on the blocking pool), and each
    // worker costs stack and allocator memory while idle.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // Idle blocking threads end after a second: a task's checkout
        // reuses one, and an idle builder keeps none (nor the stack pages
        // its git work touched).
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sai-builder: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            sai_daemon::signals::stop_requested().await;
            tracing::info!("signal received: stopping (running tasks are killed and handed back)");
            sd.cancel();
        });
        tokio::spawn(sai_daemon::memory::trim_while_running(
            sai_daemon::memory::TRIM_PERIOD,
            sai_daemon::memory::TRIM_THRESHOLD,
            shutdown.clone(),
        ));
        run(config, shutdown).await
    });
    // A git fetch still running in a blocking thread must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sai-builder: {e:#}");
            ExitCode::FAILURE
        }
    }
}
