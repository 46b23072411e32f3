//! The config file, loaded and resolved: relative paths are relative to the
//! config file's folder; the service token is read from its file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use sai_core::config::schema::ConfigType;
use sai_core::config::web::WebConfig;

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config as written.
    pub config: WebConfig,
    /// Folder of the config file.
    pub base_dir: PathBuf,
    /// Session key file.
    pub session_key_path: PathBuf,
    /// Service token for sai-server, if configured.
    pub service_token: Option<String>,
    /// Cookies may carry `Secure` for every request (served over TLS).
    pub public_https: bool,
    /// The certificate sai-web serves HTTPS with, when `tls` is configured.
    pub tls: Option<Arc<sai_https::CertificateStore>>,
}

/// Load and validate a config file.
pub fn load_config(path: &Path) -> Result<WebConfig> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let config: WebConfig = sai_core::config::parse(
        &name,
        &bytes,
        sai_core::config::Format::from_file_name(&name),
    )?;
    let problems = config.validate();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("{name}: invalid config:\n  {}", lines.join("\n  "));
    }
    Ok(config)
}

impl Settings {
    /// Resolve `config` read from a file in `base_dir`.
    pub fn resolve(config: WebConfig, base_dir: &Path) -> Result<Settings> {
        let service_token = match &config.server_token_file {
            Some(f) => {
                let p = base_dir.join(f);
                let t = std::fs::read_to_string(&p)
                    .with_context(|| format!("server_token_file {}", p.display()))?;
                Some(t.trim().to_string())
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => Some(sai_https::CertificateStore::open(
                sai_https::TlsFiles::resolve(t, base_dir),
            )?),
            None => None,
        };
        Ok(Settings {
            session_key_path: base_dir.join(&config.session_key_file),
            public_https: tls.is_some()
                || config
                    .public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            tls,
            base_dir: base_dir.to_path_buf(),
            service_token,
            config,
        })
    }
}
