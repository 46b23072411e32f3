//! Browser sessions: a PASETO v4.local token (sealed with the session key)
//! in a `__Host-` cookie, carrying the user, the expiry and the CSRF token
//! that every state-changing form must echo.
//!
//! Before sign-in, the sign-in form is protected the same way by a random
//! pre-session value (double-submit cookie). All POSTs also check that the
//! browser reports a same-origin request (`Sec-Fetch-Site`/`Origin`).

use std::path::Path;
use std::time::Duration;

use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::keys::SymmetricKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Local, local};
use rand::RngCore;

/// Name of the session cookie when it can carry `Secure` (TLS, a TLS proxy,
/// or a loopback host, which browsers treat as secure).
pub const SECURE_COOKIE: &str = "__Host-sai_session";
/// Name of the session cookie on plain HTTP to a non-loopback host.
pub const PLAIN_COOKIE: &str = "sai_session";
/// Pre-session (sign-in form) CSRF cookie, secure variant.
pub const SECURE_PRE_COOKIE: &str = "__Host-sai_pre";
/// Pre-session cookie, plain variant.
pub const PLAIN_PRE_COOKIE: &str = "sai_pre";

const ASSERTION: &[u8] = b"sai-web-session";

/// A signed-in user's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// User name.
    pub user: String,
    /// Expiry, RFC 3339.
    pub expires: String,
    /// CSRF token to echo in forms.
    pub csrf: String,
}

/// Why the session key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or creating the file failed.
    #[error("session key {0}: {1}")]
    Io(String, std::io::Error),
    /// The file does not hold 32 bytes.
    #[error("session key {0}: expected 32 raw bytes, found {1}")]
    Length(String, usize),
}

/// Seals and opens session tokens.
pub struct Sessions {
    key: SymmetricKey<V4>,
    lifetime: Duration,
}

/// A random URL-safe token of 32 bytes.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Load the 32-byte key from `path`, creating it (mode 0600) if missing.
    pub fn load_or_create(path: &Path, lifetime: Duration) -> Result<Sessions, KeyError> {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                rand::rng().fill_bytes(&mut b);
                write_private(path, &b).map_err(|e| KeyError::Io(shown.clone(), e))?;
                b
            }
            Err(e) => return Err(KeyError::Io(shown, e)),
        };
        if bytes.len() != 32 {
            return Err(KeyError::Length(shown, bytes.len()));
        }
        let key =
            SymmetricKey::<V4>::from(&bytes).map_err(|_| KeyError::Length(shown, bytes.len()))?;
        Ok(Sessions { key, lifetime })
    }

    /// Session lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A sealed token for `user`, and the session it holds.
    pub fn issue(&self, user: &str) -> Option<(String, Session)> {
        let claims = Claims::new_expires_in(&self.lifetime).ok()?;
        self.seal(user, claims)
    }

    /// A sealed token for `user` expiring at `expires` (RFC 3339), which
    /// may be in the past: how tests show that expiry alone is refused.
    pub fn issue_expiring_at(&self, user: &str, expires: &str) -> Option<(String, Session)> {
        let mut claims = Claims::new().ok()?;
        claims.expiration(expires).ok()?;
        self.seal(user, claims)
    }

    fn seal(&self, user: &str, mut claims: Claims) -> Option<(String, Session)> {
        let csrf = random_token();
        claims.subject(user).ok()?;
        claims.add_additional("csrf", csrf.clone()).ok()?;
        let expires = claims.get_claim("exp")?.as_str()?.to_string();
        let token = local::encrypt(&self.key, &claims, None, Some(ASSERTION)).ok()?;
        Some((
            token,
            Session {
                user: user.to_string(),
                expires,
                csrf,
            },
        ))
    }

    /// The session in `token`, if it was sealed by this key and is unexpired.
    pub fn open(&self, token: &str) -> Option<Session> {
        let untrusted = UntrustedToken::<Local, V4>::try_from(token).ok()?;
        let rules = ClaimsValidationRules::new();
        let trusted = local::decrypt(&self.key, &untrusted, &rules, None, Some(ASSERTION)).ok()?;
        let claims = trusted.payload_claims()?;
        Some(Session {
            user: claims.get_claim("sub")?.as_str()?.to_string(),
            expires: claims.get_claim("exp")?.as_str()?.to_string(),
            csrf: claims.get_claim("csrf")?.as_str()?.to_string(),
        })
    }
}

/// Value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: u64) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A new key file, mode 0600, in a folder made if missing.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    sai_daemon::private_file::write_new(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_only_with_their_key_and_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::load_or_create(&dir.path().join("k"), Duration::from_secs(60)).unwrap();
        let (tok, sess) = s.issue("alice").unwrap();
        assert_eq!(s.open(&tok), Some(sess.clone()));
        let again =
            Sessions::load_or_create(&dir.path().join("k"), Duration::from_secs(60)).unwrap();
        assert_eq!(again.open(&tok).map(|x| x.user), Some("alice".into()));
        let other =
            Sessions::load_or_create(&dir.path().join("k2"), Duration::from_secs(60)).unwrap();
        assert_eq!(other.open(&tok), None);
        let mut forged = tok.clone();
        forged.pop();
        forged.push('A');
        assert_eq!(s.open(&forged), None);
        let short =
            Sessions::load_or_create(&dir.path().join("k"), Duration::from_secs(1)).unwrap();
        let (old, _) = short.issue("bob").unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(s.open(&old), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = Some("a=1; __Host-sai_session=tok; b=2");
        assert_eq!(cookie(h, SECURE_COOKIE), Some("tok"));
        assert_eq!(cookie(h, "sai_session"), None);
        assert!(set_cookie(SECURE_COOKIE, "x", true, 10).contains("HttpOnly; SameSite=Strict"));
    }
}
