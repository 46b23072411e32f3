//! `sai token builder|user`: mint PASETO tokens with a sai-server's key,
//! exactly as `sai-server token` does (same flags).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use sai_server::auth::{TokenKeys, TokenKind};

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

/// The kinds of token.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// A builder token: the builder name and the platforms it may offer.
    Builder {
        /// Builder (host) name; the builder's hello must use it.
        #[arg(long)]
        name: String,
        /// Comma-separated platform tuples the builder may offer (prefix rule).
        #[arg(long, value_delimiter = ',', required = true)]
        platforms: Vec<String>,
        /// Lifetime, e.g. 90d, 12h.
        #[arg(long, default_value = "90d")]
        ttl: humantime::Duration,
    },
    /// A user token for privileged API calls.
    User {
        /// User name.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 30d.
        #[arg(long, default_value = "30d")]
        ttl: humantime::Duration,
    },
}

fn key_path(config: Option<&Path>, data: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = data {
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
    let token = match args.kind {
        TokenCmd::Builder {
            name,
            platforms,
            ttl,
        } => {
            for p in &platforms {
                sai_core::platform::Platform::parse(p)
                    .map_err(|e| anyhow::anyhow!("--platforms {p:?}: {e}"))?;
            }
            keys.mint(TokenKind::Builder, &name, &platforms, ttl.into())?
        }
        TokenCmd::User { name, ttl } => {
            keys.mint(TokenKind::User, &name, &[], Duration::from(ttl))?
        }
    };
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
