//! The `token` subcommand, shared by `sai-server token` and `sai token`.

use std::time::Duration;

use crate::auth::{KeyError, TokenKeys, TokenKind};

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
    /// A service token for sai-web: it may read and act for the users it
    /// signs in, named per request in `X-Sai-On-Behalf-Of`.
    Service {
        /// Service name, e.g. sai-web.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 365d.
        #[arg(long, default_value = "365d")]
        ttl: humantime::Duration,
    },
}

impl TokenCmd {
    /// Mint the token this command asks for, signed with `keys`.
    pub fn mint(self, keys: &TokenKeys) -> Result<String, KeyError> {
        match self {
            TokenCmd::Builder {
                name,
                platforms,
                ttl,
            } => {
                for p in &platforms {
                    sai_core::platform::Platform::parse(p).map_err(|e| KeyError::Platform {
                        platform: p.clone(),
                        reason: e.to_string(),
                    })?;
                }
                keys.mint(TokenKind::Builder, &name, &platforms, ttl.into())
            }
            TokenCmd::User { name, ttl } => {
                keys.mint(TokenKind::User, &name, &[], Duration::from(ttl))
            }
            TokenCmd::Service { name, ttl } => {
                keys.mint(TokenKind::Service, &name, &[], Duration::from(ttl))
            }
        }
    }
}
