//! `sai-jig`: run named GPIO sequences (reset, power, boot-mode straps) on
//! test-jig targets over HTTP.
//!
//! API (every request needs `Authorization: Bearer <token>` when a token is
//! configured; otherwise 401):
//! * `GET /<target>/<sequence>` (the original's call) and
//!   `POST /<target>/<sequence>`: run the sequence; the answer comes when it
//!   has finished: 200 done (GET: empty `text/html` as the original, POST: a
//!   JSON summary), 404 unknown target, 400 unknown or missing sequence, 409
//!   target busy, 500 a GPIO operation failed.
//! * `GET /api/status`: JSON with every target, its lines, busy flag and
//!   last run.
//!
//! Lines are driven to their `safe` values at start, after every sequence
//! (also a failed one) and on shutdown. A sequence, once started, runs to
//! its end even if the client goes away.

pub mod gpio;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sai_core::config::jig::{JigConfig, JigTarget, StepAction};
use sai_core::percent;
use serde::Serialize;
use warp::Filter;
use warp::http::StatusCode;

pub use gpio::{CdevBackend, GpioBackend, GpioError, LineId, SimChip};

/// Environment variable that may hold the token when the config has none.
pub const TOKEN_ENV: &str = "SAI_JIG_TOKEN";

/// The last run of a target's sequence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastRun {
    /// Sequence name.
    pub sequence: String,
    /// Start, unix milliseconds.
    pub started_unix_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Whether every step succeeded.
    pub ok: bool,
    /// What failed, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct TargetState {
    config: JigTarget,
    busy: Arc<tokio::sync::Mutex<()>>,
    last: Mutex<Option<LastRun>>,
    values: Mutex<HashMap<String, bool>>,
}

/// The jig: config, GPIO backend and per-target state.
pub struct Jig {
    backend: Arc<dyn GpioBackend>,
    token: Option<String>,
    targets: Vec<Arc<TargetState>>,
}

/// Why a run request was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    /// No such target.
    #[error("unknown target '{0}'")]
    UnknownTarget(String),
    /// No such sequence on the target.
    #[error("target '{target}' has no sequence '{sequence}' (it has: {known})")]
    UnknownSequence {
        /// Target.
        target: String,
        /// Asked-for sequence.
        sequence: String,
        /// The ones it has.
        known: String,
    },
    /// The target is running another sequence.
    #[error("target '{0}' is busy")]
    Busy(String),
    /// A GPIO operation failed.
    #[error("{0}")]
    Gpio(String),
}

impl RunError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            RunError::UnknownTarget(_) => StatusCode::NOT_FOUND,
            RunError::UnknownSequence { .. } => StatusCode::BAD_REQUEST,
            RunError::Busy(_) => StatusCode::CONFLICT,
            RunError::Gpio(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Jig {
    /// Set up the jig and drive every line to its safe value. `token` is the
    /// bearer token to require, if any. The config must be valid
    /// ([`ConfigType::validate`](sai_core::config::schema::ConfigType::validate)).
    pub fn new(
        config: &JigConfig,
        backend: Arc<dyn GpioBackend>,
        token: Option<String>,
    ) -> Result<Jig, GpioError> {
        let jig = Jig {
            backend,
            token: token.filter(|t| !t.is_empty()),
            targets: config
                .targets
                .iter()
                .map(|t| {
                    Arc::new(TargetState {
                        config: t.clone(),
                        busy: Arc::new(tokio::sync::Mutex::new(())),
                        last: Mutex::new(None),
                        values: Mutex::new(HashMap::new()),
                    })
                })
                .collect(),
        };
        for t in &jig.targets {
            jig.drive_safe(t)?;
        }
        Ok(jig)
    }

    fn target(&self, name: &str) -> Option<&Arc<TargetState>> {
        self.targets.iter().find(|t| t.config.name == name)
    }

    fn set(&self, t: &TargetState, gpio: &str, value: bool) -> Result<(), GpioError> {
        let g = t
            .config
            .gpio(gpio)
            .expect("validated config: every sequence gpio exists");
        let line = LineId {
            chip: g.chip.clone(),
            offset: g.offset,
        };
        self.backend.set(&line, value)?;
        t.values
            .lock()
            .expect("values lock")
            .insert(gpio.to_string(), value);
        Ok(())
    }

    /// Drive every line of `t` to its safe value; tries them all and
    /// reports the first failure.
    fn drive_safe(&self, t: &TargetState) -> Result<(), GpioError> {
        let mut first = Ok(());
        for g in &t.config.gpios {
            if let Err(e) = self.set(t, &g.name, g.safe == 1)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Check an `Authorization` header value in constant time.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
    }

    /// Run `sequence` on `target` to its end, then drive the target's lines
    /// to safe. Returns how long it took. The run continues even if the
    /// returned future is dropped.
    pub async fn run(self: &Arc<Self>, target: &str, sequence: &str) -> Result<Duration, RunError> {
        let t = self
            .target(target)
            .ok_or_else(|| RunError::UnknownTarget(target.to_string()))?
            .clone();
        if t.config.sequence(sequence).is_none() {
            return Err(RunError::UnknownSequence {
                target: target.to_string(),
                sequence: sequence.to_string(),
                known: t
                    .config
                    .sequences
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let guard = t
            .busy
            .clone()
            .try_lock_owned()
            .map_err(|_| RunError::Busy(target.to_string()))?;
        let jig = self.clone();
        let sequence = sequence.to_string();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let started = SystemTime::now();
            let start = Instant::now();
            let seq = t.config.sequence(&sequence).expect("checked above").clone();
            let mut result = Ok(());
            for step in &seq.seq {
                match step.action() {
                    Ok(StepAction::Set { gpio, value }) => {
                        if let Err(e) = jig.set(&t, gpio, value) {
                            result = Err(e.to_string());
                            break;
                        }
                    }
                    Ok(StepAction::Wait(ms)) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Err(e) = jig.drive_safe(&t)
                && result.is_ok()
            {
                result = Err(format!("restoring safe values: {e}"));
            }
            let took = start.elapsed();
            match &result {
                Ok(()) => {
                    tracing::info!(target = %t.config.name, sequence = %sequence, ms = took.as_millis() as u64, "sequence done")
                }
                Err(e) => {
                    tracing::error!(target = %t.config.name, sequence = %sequence, error = %e, "sequence failed")
                }
            }
            *t.last.lock().expect("last lock") = Some(LastRun {
                sequence: sequence.clone(),
                started_unix_ms: unix_ms(started),
                duration_ms: took.as_millis() as u64,
                ok: result.is_ok(),
                error: result.as_ref().err().cloned(),
            });
            result.map(|_| took)
        });
        match task.await {
            Ok(r) => r.map_err(RunError::Gpio),
            Err(e) => Err(RunError::Gpio(format!("sequence task failed: {e}"))),
        }
    }

    /// The status document served at `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        let targets: Vec<_> = self
            .targets
            .iter()
            .map(|t| {
                let values = t.values.lock().expect("values lock").clone();
                serde_json::json!({
                    "name": t.config.name,
                    "description": t.config.description,
                    "busy": t.busy.try_lock().is_err(),
                    "sequences": t.config.sequences.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "gpios": t.config.gpios.iter().map(|g| serde_json::json!({
                        "name": g.name,
                        "chip": g.chip,
                        "offset": g.offset,
                        "wire": g.wire,
                        "safe": g.safe,
                        "value": values.get(&g.name).map(|v| u8::from(*v)),
                    })).collect::<Vec<_>>(),
                    "last_run": *t.last.lock().expect("last lock"),
                })
            })
            .collect();
        serde_json::json!({ "targets": targets })
    }

    /// Wait for running sequences (at most `grace`), then drive every line to
    /// its safe value.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for t in &self.targets {
            let guard = tokio::time::timeout_at(deadline, t.busy.clone().lock_owned()).await;
            if let Err(e) = self.drive_safe(t) {
                tracing::error!(target = %t.config.name, error = %e, "cannot restore safe values");
            }
            drop(guard);
        }
    }
}

type Reply = Box<dyn warp::Reply>;

fn text(status: StatusCode, msg: String) -> Reply {
    Box::new(warp::reply::with_status(
        warp::reply::with_header(msg + "\n", "content-type", "text/plain; charset=utf-8"),
        status,
    ))
}

async fn handle(
    jig: Arc<Jig>,
    method: warp::http::Method,
    path: warp::path::FullPath,
    auth: Option<String>,
) -> Result<Reply, Infallible> {
    use warp::http::Method;
    if !jig.authorized(auth.as_deref()) {
        return Ok(Box::new(warp::reply::with_header(
            warp::reply::with_status("missing or wrong bearer token\n", StatusCode::UNAUTHORIZED),
            "www-authenticate",
            "Bearer",
        )));
    }
    let segs: Vec<&str> = path.as_str().split('/').filter(|s| !s.is_empty()).collect();
    let is_get = method == Method::GET;
    if !(is_get || method == Method::POST) {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or POST".into(),
        ));
    }
    match segs.as_slice() {
        ["api", "status"] if is_get => Ok(Box::new(warp::reply::json(&jig.status()))),
        [target, sequence] => {
            let target = percent::decode(target);
            let sequence = percent::decode(sequence);
            match jig.run(&target, &sequence).await {
                Ok(_) if is_get => Ok(Box::new(warp::reply::html(""))),
                Ok(took) => Ok(Box::new(warp::reply::json(&serde_json::json!({
                    "target": target,
                    "sequence": sequence,
                    "duration_ms": took.as_millis() as u64,
                })))),
                Err(e) => Ok(text(e.status(), e.to_string())),
            }
        }
        [target] if jig.target(&percent::decode(target)).is_some() => Ok(text(
            StatusCode::BAD_REQUEST,
            "missing sequence: use /<target>/<sequence>".into(),
        )),
        [target] => Ok(text(
            StatusCode::NOT_FOUND,
            format!("unknown target '{}'", percent::decode(target)),
        )),
        _ => Ok(text(
            StatusCode::NOT_FOUND,
            "use /<target>/<sequence> or /api/status".into(),
        )),
    }
}

/// The warp filter serving the API.
pub fn routes(
    jig: Arc<Jig>,
) -> impl Filter<Extract = (Reply,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::any()
        .map(move || jig.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and_then(handle)
}

/// Serve the API on `listener` until `shutdown` completes, then wait for
/// running sequences (at most 30 s) and drive every line to safe.
pub async fn serve(
    jig: Arc<Jig>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(jig.clone()))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    jig.shutdown(Duration::from_secs(30)).await;
}

/// Read the token: `token_file` (by the [`sai_core::secret`] rule), inline `token`, else
/// [`TOKEN_ENV`]. Both in the config is an error (caught by validation).
pub fn load_token(config: &JigConfig) -> std::io::Result<Option<String>> {
    if let Some(path) = &config.token_file {
        let file = std::path::Path::new(path);
        let t = sai_core::secret::secret_text_from_file(file, std::fs::read(file))
            .map_err(std::io::Error::other)?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    token_file = %path,
                    "token file is readable by group or others; chmod 600 it"
                );
            }
        }
        return Ok(Some(t));
    }
    if let Some(t) = &config.token {
        return Ok(Some(t.clone()));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_follows_the_secret_file_rule() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let config = JigConfig {
            token_file: Some(file.display().to_string()),
            ..JigConfig::default()
        };
        std::fs::write(&file, " tok-123 \r\n\n").unwrap();
        assert_eq!(load_token(&config).unwrap().as_deref(), Some("tok-123"));
        std::fs::write(&file, "\r\n").unwrap();
        let e = load_token(&config).unwrap_err().to_string();
        assert_eq!(e, format!("secret file {} is empty", file.display()));
    }
}
