//! PASETO v4.public tokens for builders and users. (The hook HMAC lives
//! with the notification in [`sai_core::notification`].)
//!
//! Claims: `iss` = `sai-server`, `sub` = builder, user or service name,
//! `kind` = `builder`, `user` or `service`, and for builders `platforms` (list of platform
//! tuples the builder may offer). The kind is also bound as the implicit
//! assertion (`sai-builder` / `sai-user`), so a token of one kind never
//! verifies as the other.

use std::path::Path;
use std::time::Duration;

use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Public, public};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A builder connecting to `/builder`.
    Builder,
    /// A user or script calling privileged API endpoints.
    User,
    /// A service (sai-web) acting for its signed-in users, named in
    /// `X-Sai-On-Behalf-Of`.
    Service,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Builder => "builder",
            TokenKind::User => "user",
            TokenKind::Service => "service",
        }
    }
    fn assertion(self) -> &'static [u8] {
        match self {
            TokenKind::Builder => b"sai-builder",
            TokenKind::User => b"sai-user",
            TokenKind::Service => b"sai-service",
        }
    }
}

/// Verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Builder or user name.
    pub name: String,
    /// Platforms a builder may offer (empty for users).
    pub platforms: Vec<String>,
}

/// May a builder whose token grants platform `granted` offer `offered`?
///
/// A grant naming all three elements (`os/arch/toolchain`) allows exactly
/// that platform. A shorter grant names a family: each element it names
/// must equal the offered element or be continued in it after a `-`
/// (`linux-debian` allows `linux-debian-12/...`, not `linux-debianish/...`;
/// `linux/x86_64` allows `linux-fedora/x86_64-amd/gcc`, not
/// `linux/x86_64_v3`), and the elements it leaves out are free. Never a
/// plain string prefix, and an empty element grants nothing.
pub fn token_allows(granted: &str, offered: &str) -> bool {
    let g: Vec<&str> = granted.split('/').collect();
    let o: Vec<&str> = offered.split('/').collect();
    if g.iter().any(|e| e.is_empty()) || o.iter().any(|e| e.is_empty()) {
        return false;
    }
    if g.len() == sai_core::platform::MAX_ELEMENTS {
        return granted == offered;
    }
    g.len() <= o.len()
        && g.iter().zip(&o).all(|(g, o)| {
            o.strip_prefix(g)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a PASETO v4.public token signed by this server, or expired.
    #[error("token is invalid, expired or not a {0} token")]
    Invalid(&'static str),
    /// The name is revoked in the config.
    #[error("{0} {1:?} is revoked")]
    Revoked(&'static str, String),
}

/// Why the signing key could not be loaded, or a token minted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{what} token key {}: {source}", path.display())]
    Io {
        /// `reading` or `writing`.
        what: &'static str,
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("{}: not a PASETO v4 secret key (64 raw bytes): {reason}", path.display())]
    NotAKey {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// pasetors failed (key generation, signing).
    #[error("{what}: {reason}")]
    Paseto {
        /// What was being done.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A platform given for a builder token is not a platform name.
    #[error("--platforms {platform:?}: {reason}")]
    Platform {
        /// The text given.
        platform: String,
        /// Why.
        reason: String,
    },
}

fn paseto(what: &'static str) -> impl Fn(pasetors::errors::Error) -> KeyError + Copy {
    move |e| KeyError::Paseto {
        what,
        reason: e.to_string(),
    }
}

/// The server's signing key.
pub struct TokenKeys {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl TokenKeys {
    /// Load the 64-byte secret key from `path`, creating it (mode 0600) if
    /// it does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenKeys, KeyError> {
        let io = |what| {
            move |source| KeyError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kp =
                    AsymmetricKeyPair::<V4>::generate().map_err(paseto("generating token key"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io("writing"))?;
                }
                sai_daemon::private_file::write_new(path, kp.secret.as_bytes())
                    .map_err(io("writing"))?;
                tracing::info!(path = %path.display(), "created token signing key");
                kp.secret.as_bytes().to_vec()
            }
            Err(e) => return Err(io("reading")(e)),
        };
        let secret = AsymmetricSecretKey::<V4>::from(&bytes).map_err(|e| KeyError::NotAKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let public =
            AsymmetricPublicKey::<V4>::try_from(&secret).map_err(paseto("deriving public key"))?;
        Ok(TokenKeys { secret, public })
    }

    /// Mint a token.
    pub fn mint(
        &self,
        kind: TokenKind,
        name: &str,
        platforms: &[String],
        ttl: Duration,
    ) -> Result<String, KeyError> {
        let err = paseto("minting token");
        let mut claims = Claims::new_expires_in(&ttl).map_err(err)?;
        claims.issuer("sai-server").map_err(err)?;
        claims.subject(name).map_err(err)?;
        claims.add_additional("kind", kind.name()).map_err(err)?;
        if kind == TokenKind::Builder {
            claims
                .add_additional("platforms", platforms.to_vec())
                .map_err(err)?;
        }
        public::sign(&self.secret, &claims, None, Some(kind.assertion())).map_err(err)
    }

    /// Verify a token of `kind`; `revoked` lists refused names.
    pub fn verify(
        &self,
        kind: TokenKind,
        token: &str,
        revoked: &[String],
    ) -> Result<Identity, TokenError> {
        let invalid = || TokenError::Invalid(kind.name());
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|_| invalid())?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with("sai-server");
        let trusted = public::verify(
            &self.public,
            &untrusted,
            &rules,
            None,
            Some(kind.assertion()),
        )
        .map_err(|_| invalid())?;
        let claims = trusted.payload_claims().ok_or_else(invalid)?;
        if claims.get_claim("kind").and_then(|v| v.as_str()) != Some(kind.name()) {
            return Err(invalid());
        }
        let name = claims
            .get_claim("sub")
            .and_then(|v| v.as_str())
            .ok_or_else(invalid)?
            .to_string();
        if revoked.iter().any(|r| r == &name) {
            return Err(TokenError::Revoked(kind.name(), name));
        }
        let platforms = claims
            .get_claim("platforms")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Identity { name, platforms })
    }
}

/// Bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

pub use sai_core::notification::{SigError, sign as sign_hook};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_platforms_allow_exactly_their_set() {
        // A full platform is exact: no prefix, no longer toolchain or arch.
        let full = "lnx-a/x86_64/gcc";
        assert!(token_allows(full, full));
        assert!(!token_allows(full, "lnx-ab/x86_64/gcc-evil"));
        assert!(!token_allows(full, "lnx-ab/x86_64/gcc"));
        assert!(!token_allows(full, "lnx-a/x86_64/gcc-evil"));
        assert!(!token_allows(full, "lnx-a-b/x86_64/gcc"));
        assert!(!token_allows(full, "lnx-a/x86_64-amd/gcc"));
        assert!(!token_allows(full, "lnx-a/x86_64"));
        assert!(!token_allows(full, "lnx-a"));
        // A shorter grant is a family, at '-' boundaries only.
        assert!(token_allows("linux", "linux"));
        assert!(token_allows("linux", "linux-debian-12/x86_64-amd/gcc"));
        assert!(!token_allows("linux", "linuxish/x86_64/gcc"));
        assert!(token_allows(
            "linux-debian",
            "linux-debian-12/x86_64-amd/gcc"
        ));
        assert!(!token_allows("linux-debian", "linux-debian12/x86_64/gcc"));
        assert!(!token_allows("linux-debian-12", "linux-debian/x86_64/gcc"));
        assert!(token_allows("linux/x86_64", "linux-fedora/x86_64-amd/gcc"));
        assert!(token_allows("linux/x86_64", "linux/x86_64"));
        assert!(!token_allows("linux/x86_64", "linux/x86_64_v3/gcc"));
        assert!(!token_allows("linux/x86_64", "linux"));
        assert!(!token_allows("lnx-a", "lnx-ab/x86_64/gcc"));
        // Empty elements are not wildcards here (they are in task requests).
        assert!(!token_allows("linux//gcc", "linux/x86_64/gcc"));
        assert!(!token_allows("", "linux"));
        assert!(!token_allows("linux/", "linux/x86_64"));
    }

    #[test]
    fn tokens_kinds_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(&dir.path().join("k")).unwrap();
        let again = TokenKeys::load_or_create(&dir.path().join("k")).unwrap();
        let t = keys
            .mint(
                TokenKind::Builder,
                "b1",
                &["linux".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let id = again.verify(TokenKind::Builder, &t, &[]).unwrap();
        assert_eq!(id.name, "b1");
        assert_eq!(id.platforms, vec!["linux".to_string()]);
        assert!(keys.verify(TokenKind::User, &t, &[]).is_err());
        assert!(matches!(
            keys.verify(TokenKind::Builder, &t, &["b1".into()]),
            Err(TokenError::Revoked(..))
        ));
        let other = TokenKeys::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(other.verify(TokenKind::Builder, &t, &[]).is_err());
    }
}
