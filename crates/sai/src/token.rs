//! `sai token builder|user`: mint PASETO tokens with a sai-server's key,
//! exactly as `sai-server token` does (same flags).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use sai_server::auth::TokenKeys;
use sai_server::token_cli::TokenCmd;

/// Flags of `sai token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub kind: TokenCmd,
    /// sai-server config whose key signs the token (its `token_key_file`,
    /// else `<data_dir>/token.key`).
    #[arg(short = 'c', long = "config", global = true, env = "SAI_SERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use the key under this data dir (`<DIR>/token.key`, created when
    /// missing) instead of a config's; e.g. the `sai up` data dir `.sai`.
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

fn key_path(config: Option<&Path>, data: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = data {
        // A mistyped dir would get a new key, whose tokens the server
        // refuses with 401: only an existing data dir is used.
        anyhow::ensure!(
            d.is_dir(),
            "--data {}: no such directory (give the data dir of a sai-server or `sai up`, \
             e.g. .sai; a new key is only made inside an existing one)",
            d.display()
        );
        return Ok(d.join("token.key"));
    }
    if let Some(c) = config {
        let cfg = sai_server::load_config(c)?;
        let base = c.parent().unwrap_or(Path::new("."));
        return Ok(sai_server::Settings::resolve(cfg, base)?.token_key_path);
    }
    let local = Path::new(crate::up::DEFAULT_DATA).join("token.key");
    if local.exists() {
        return Ok(local);
    }
    anyhow::bail!(
        "no key: pass -c <sai-server config> or --data <dir> (no {} here)",
        local.display()
    )
}

/// `sai token`.
pub fn run(args: TokenArgs) -> Result<ExitCode> {
    let path = key_path(args.config.as_deref(), args.data.as_deref())?;
    let keys = TokenKeys::load_or_create(&path)
        .with_context(|| format!("token key {}", path.display()))?;
    let token = args.kind.mint(&keys)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
