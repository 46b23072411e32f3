//! The secrets `sai up` keeps in its data dir: the hook secret and the
//! builder's and user's tokens (kept across runs while they still fit).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sai_server::auth::{TokenKeys, TokenKind};

use crate::notify::read_secret;

/// Write `bytes` to `path` with mode 0600 (replacing it).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The hook secret under `data`, created (32 random bytes, hex, 0600) if missing.
pub fn ensure_hook_secret(data: &Path) -> Result<PathBuf> {
    let path = data.join("hook-secret");
    if !path.exists() {
        let mut b = [0u8; 32];
        rand::fill(&mut b[..]);
        write_private(&path, format!("{}\n", hex::encode(b)).as_bytes())?;
    }
    read_secret(&path)?;
    Ok(path)
}

/// A token file kept while it verifies and `fits`, else minted anew.
pub fn ensure_token(
    keys: &TokenKeys,
    path: &Path,
    kind: TokenKind,
    name: &str,
    platforms: &[String],
    fits: impl Fn(&[String]) -> bool,
) -> Result<()> {
    if let Ok(t) = std::fs::read_to_string(path)
        && let Ok(id) = keys.verify(kind, t.trim(), &[])
        && id.name == name
        && fits(&id.platforms)
    {
        return Ok(());
    }
    let token = keys.mint(kind, name, platforms, Duration::from_secs(365 * 86_400))?;
    write_private(path, format!("{token}\n").as_bytes())
}
