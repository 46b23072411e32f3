//! PASETO v4.public tokens for builders and users, and the hook HMAC.
//!
//! Claims: `iss` = `sai-server`, `sub` = builder, user or service name,
//! `kind` = `builder`, `user` or `service`, and for builders `platforms` (list of platform
//! tuples the builder may offer). The kind is also bound as the implicit
//! assertion (`sai-builder` / `sai-user`), so a token of one kind never
//! verifies as the other.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
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

/// The server's signing key.
pub struct TokenKeys {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl TokenKeys {
    /// Load the 64-byte secret key from `path`, creating it (mode 0600) if
    /// it does not exist.
    pub fn load_or_create(path: &Path) -> Result<TokenKeys> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kp = AsymmetricKeyPair::<V4>::generate()
                    .map_err(|e| anyhow::anyhow!("generating token key: {e}"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(path, kp.secret.as_bytes())
                    .with_context(|| format!("writing token key {}", path.display()))?;
                tracing::info!(path = %path.display(), "created token signing key");
                kp.secret.as_bytes().to_vec()
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading token key {}", path.display()));
            }
        };
        let secret = AsymmetricSecretKey::<V4>::from(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a PASETO v4 secret key (64 raw bytes): {e}",
                path.display()
            )
        })?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret)
            .map_err(|e| anyhow::anyhow!("deriving public key: {e}"))?;
        Ok(TokenKeys { secret, public })
    }

    /// Mint a token.
    pub fn mint(
        &self,
        kind: TokenKind,
        name: &str,
        platforms: &[String],
        ttl: Duration,
    ) -> Result<String> {
        let err = |e: pasetors::errors::Error| anyhow::anyhow!("minting token: {e}");
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

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Hook signature check outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header.
    Missing,
    /// Not `sai sha256|sha384|sha512=<hex>` of the right length.
    Malformed,
    /// MAC does not match.
    Mismatch,
}

/// HMAC algorithm of a hook signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAlg {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA512.
    Sha512,
}

/// Parse `Authorization: sai shaNNN=<hex>` into the algorithm and the MAC.
pub fn parse_hook_signature(header: Option<&str>) -> Result<(HookAlg, Vec<u8>), SigError> {
    let h = header.ok_or(SigError::Missing)?.trim();
    let rest = h
        .strip_prefix("sai ")
        .or_else(|| h.strip_prefix("Sai "))
        .ok_or(SigError::Malformed)?
        .trim();
    let (alg, hexmac) = rest.split_once('=').ok_or(SigError::Malformed)?;
    let mac = hex::decode(hexmac.trim()).map_err(|_| SigError::Malformed)?;
    let (alg, len) = match alg {
        "sha256" => (HookAlg::Sha256, 32),
        "sha384" => (HookAlg::Sha384, 48),
        "sha512" => (HookAlg::Sha512, 64),
        _ => return Err(SigError::Malformed),
    };
    if mac.len() != len {
        return Err(SigError::Malformed);
    }
    Ok((alg, mac))
}

/// Verify `Authorization: sai shaNNN=<hex>` over `body` with `key`, in
/// constant time.
pub fn verify_hook_signature(
    header: Option<&str>,
    key: &[u8],
    body: &[u8],
) -> Result<(), SigError> {
    let (alg, mac) = parse_hook_signature(header)?;
    fn check<M: Mac + hmac::digest::KeyInit>(
        key: &[u8],
        body: &[u8],
        mac: &[u8],
    ) -> Result<(), SigError> {
        let mut m =
            <M as hmac::digest::KeyInit>::new_from_slice(key).map_err(|_| SigError::Mismatch)?;
        m.update(body);
        m.verify_slice(mac).map_err(|_| SigError::Mismatch)
    }
    match alg {
        HookAlg::Sha256 => check::<Hmac<sha2::Sha256>>(key, body, &mac),
        HookAlg::Sha384 => check::<Hmac<sha2::Sha384>>(key, body, &mac),
        HookAlg::Sha512 => check::<Hmac<sha2::Sha512>>(key, body, &mac),
    }
}

/// Compute `sai sha256=<hex>` for a body (used by tests and tools).
pub fn sign_hook(key: &[u8], body: &[u8]) -> String {
    let mut m = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .expect("hmac accepts any key length");
    m.update(body);
    format!("sai sha256={}", hex::encode(m.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn hook_signatures() {
        let body = b"{\"a\":1}\n";
        let h = sign_hook(b"key", body);
        assert_eq!(verify_hook_signature(Some(&h), b"key", body), Ok(()));
        assert_eq!(
            verify_hook_signature(Some(&h), b"other", body),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify_hook_signature(None, b"key", body),
            Err(SigError::Missing)
        );
        assert_eq!(
            verify_hook_signature(Some("sai md5=00"), b"key", body),
            Err(SigError::Malformed)
        );
        assert_eq!(
            verify_hook_signature(Some("sai sha256=00"), b"key", body),
            Err(SigError::Malformed)
        );
        let mut m = <Hmac<sha2::Sha512> as hmac::digest::KeyInit>::new_from_slice(b"key").unwrap();
        m.update(body);
        let h512 = format!("sai sha512={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(verify_hook_signature(Some(&h512), b"key", body), Ok(()));
    }
}
