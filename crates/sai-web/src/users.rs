//! Who may sign in: the config's inline users plus the users file
//! (`name:<argon2 PHC hash>` per line, `#` comments), and password checks.
//!
//! The same file format is written by `sai user add` (crate `sai`).

use std::collections::BTreeMap;
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use sai_core::config::web::WebConfig;

/// Why the users file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `name:<argon2 PHC hash>`.
    #[error("{path}:{line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Users and their password hashes.
#[derive(Debug, Clone, Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
}

/// Parse the text of a users file; `path` names it in errors.
pub fn parse_users_file(path: &str, text: &str) -> Result<BTreeMap<String, String>, UsersError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| UsersError::Line {
            path: path.to_string(),
            line: i + 1,
            why,
        };
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| bad("expected name:<argon2 PHC hash>".into()))?;
        sai_core::config::web::check_argon2_phc(hash)
            .map_err(|w| bad(format!("user {name:?}: {w}")))?;
        if out.insert(name.to_string(), hash.to_string()).is_some() {
            return Err(bad(format!("user {name:?} is listed twice")));
        }
    }
    Ok(out)
}

impl Users {
    /// Users of `config`; `base` resolves a relative `users_file`.
    pub fn load(config: &WebConfig, base: &Path) -> Result<Users, UsersError> {
        let mut hashes: BTreeMap<String, String> = config
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password_hash.clone()))
            .collect();
        if let Some(file) = &config.users_file {
            let path = base.join(file);
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => {
                    return Err(UsersError::Read {
                        path: shown,
                        source,
                    });
                }
            };
            hashes.extend(parse_users_file(&shown, &text)?);
        }
        Ok(Users { hashes })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// No users: nobody can sign in.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `password` is `name`'s. Unknown names cost a hash too, so
    /// timing does not tell which names exist.
    pub fn check(&self, name: &str, password: &str) -> bool {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FpLXdlYi1kdW1teQ$2B5JJlG7kWk0v6N2B9kFZ0oQ8gqY2vZ3n3t1d3Jm3cU";
        let (hash, known) = match self.hashes.get(name) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY, false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    }

    /// Whether `name` is a user now (sessions of removed users end).
    pub fn exists(&self, name: &str) -> bool {
        self.hashes.contains_key(name)
    }
}
