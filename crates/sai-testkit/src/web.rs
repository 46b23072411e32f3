//! The real `sai-web` binary on `127.0.0.1:0`, configured from the real
//! config type, its address read from its `sai-web listening on` line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sai_core::config::web::WebConfig;

use crate::ProcessGuard;

/// A running `sai-web`.
pub struct TestWeb {
    /// The process.
    pub guard: ProcessGuard,
    /// Bound address.
    pub addr: SocketAddr,
    /// Config file used.
    pub config_path: PathBuf,
    /// stderr log file.
    pub log_path: PathBuf,
    /// Whether it serves HTTPS (it said `listening on https://`).
    pub tls: bool,
}

/// A web config for tests: loopback port 0, the session key in `dir`.
pub fn test_web_config(dir: &Path, server_url: &str) -> WebConfig {
    WebConfig {
        schema: Some("sai-web".into()),
        listen: "127.0.0.1:0".into(),
        server_url: server_url.into(),
        server_token_file: None,
        public_url: None,
        users: Vec::new(),
        users_file: None,
        session_lifetime_secs: 3600,
        session_key_file: dir.join("session.key").display().to_string(),
        trusted_proxy: None,
        tls: None,
    }
}

impl TestWeb {
    /// Start `bin` with `config` written to `dir/web.conf`.
    pub fn start(bin: &Path, dir: &Path, config: &WebConfig) -> Result<TestWeb> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("web.conf");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)?;
        let log_path = crate::timestamped_log(dir, &config_path);
        let (guard, tls, addr) =
            crate::spawn_listening("sai-web", bin, &config_path, &log_path, &[])?;
        Ok(TestWeb {
            guard,
            addr,
            config_path,
            log_path,
            tls,
        })
    }

    /// `http://addr<path>` (`https://` when it serves TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
