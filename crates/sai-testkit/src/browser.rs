//! Real headless Chromium for UI tests: Debian's `chromedriver` on a free
//! 127.0.0.1 port, a fresh profile per browser, the offline flags from the
//! tooling notes, driven over WebDriver by `fantoccini`.
//!
//! chromedriver runs in its own process group; dropping a [`Browser`]
//! signals that group, so Chromium never outlives the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::ProcessGuard;

/// The browser binary (Debian `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver (Debian `chromium-driver`, always matching `chromium`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: ProcessGuard,
    pgid: i32,
    _profile: tempfile::TempDir,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Browser {
    /// Start chromedriver and open a headless Chromium window of 1400x1000.
    pub async fn start() -> Result<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                bail!("{bin} is missing: install the Debian packages chromium and chromium-driver");
            }
        }
        let profile = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("spawning chromedriver")?;
        let pgid = child.id() as i32;
        let driver = ProcessGuard::new(child, Duration::from_secs(5));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/status")).await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {base} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!("json object"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&base)
            .await
            .context("opening a Chromium session through chromedriver")?;
        Ok(Browser {
            client,
            driver,
            pgid,
            _profile: profile,
        })
    }

    /// Navigate to `url`.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("loading {url}"))
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its value.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("running script: {script}"))
    }

    /// Poll `script` (a function body returning a value) every 50 ms until it
    /// returns something other than `null`/`false`; returns that value.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            match self.client.execute(script, vec![]).await {
                Ok(Value::Null) | Ok(Value::Bool(false)) => {}
                Ok(v) => return Ok(v),
                Err(e) => last = json!(e.to_string()),
            }
            if Instant::now() > deadline {
                let url = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                bail!(
                    "timed out after {timeout:?} waiting for {what} on {url} (last error: {last})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Save a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_path_buf())
    }

    /// End the session (closing Chromium) and stop chromedriver.
    pub async fn close(mut self) -> Result<()> {
        let client = self.client.clone();
        let r = client.close().await;
        self.driver.stop();
        r.context("closing the browser session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share this group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.driver.stop();
    }
}
