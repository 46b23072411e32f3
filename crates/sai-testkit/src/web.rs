//! The real `sai-web` binary on `127.0.0.1:0`, configured from the real
//! config type, its address read from its `sai-web listening on` line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
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
        let log_path = dir.join(format!(
            "web.{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let guard = ProcessGuard::new(child, Duration::from_secs(10));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(rest) = line.trim().strip_prefix("sai-web listening on ")
                    && let Some((scheme, a)) = rest.split_once("://")
                {
                    let _ = tx.send((scheme == "https", a.to_string()));
                }
                line.clear();
            }
        });
        let (tls, addr) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((tls, a)) => (tls, a.parse().context("parsing listening address")?),
            Err(_) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("sai-web did not report listening; its log:\n{log}");
            }
        };
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
