//! The sai-server operations API as sai-web reads it: typed responses and a
//! client that adds the service credential when it acts for a signed-in user.
//!
//! These types mirror the JSON documented in `docs/server.md`; fields the
//! UI does not need are left out, unknown fields are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// An event (one push) as listed by the server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Event {
    /// 32 hex id.
    pub id: String,
    /// Project (repository) name.
    pub project: String,
    /// Git ref, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Commit hash.
    pub hash: String,
    /// Creation, unix ms.
    pub created: i64,
    /// Last change, unix ms.
    #[serde(default)]
    pub last_updated: i64,
    /// State name.
    pub state: String,
    /// Private event.
    #[serde(default)]
    pub sec: bool,
    /// Number of tasks.
    #[serde(default)]
    pub task_count: i64,
}

/// An event with its tasks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EventDetail {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Its tasks in saifile order.
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// Count of tasks per state.
    #[serde(default)]
    pub task_states: BTreeMap<String, usize>,
    /// When the event is expected to be done (unix ms), if estimable.
    #[serde(default)]
    pub expected_finish: Option<i64>,
}

/// A task as listed in an event, or in full from `/api/tasks/{id}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Task {
    /// 64 hex id.
    pub id: String,
    /// Event id.
    pub event_id: String,
    /// Configuration name.
    pub configuration: String,
    /// Platform requested.
    pub platform: String,
    /// State name.
    pub state: String,
    /// Builder that ran it last.
    #[serde(default)]
    pub builder: Option<String>,
    /// Exit code of the failing step.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// 0-based failing step.
    #[serde(default)]
    pub failed_step: Option<i64>,
    /// Why it failed or was cancelled.
    #[serde(default)]
    pub reason: Option<String>,
    /// Offers accepted so far.
    #[serde(default)]
    pub attempt: i64,
    /// Infrastructure failures so far.
    #[serde(default)]
    pub infra_failures: i64,
    /// Steps started.
    #[serde(default)]
    pub build_step: i64,
    /// Number of steps.
    #[serde(default)]
    pub step_count: i64,
    /// Creation, unix ms.
    #[serde(default)]
    pub created: i64,
    /// Start of the current attempt, unix ms.
    #[serde(default)]
    pub started: Option<i64>,
    /// End, unix ms.
    #[serde(default)]
    pub ended: Option<i64>,
    /// Why a waiting task waits.
    #[serde(default)]
    pub detail: Option<String>,
    /// Step commands (full task only).
    #[serde(default)]
    pub steps: Vec<String>,
    /// Uploaded artifacts (full task only).
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Log size in bytes (full task only).
    #[serde(default)]
    pub log_bytes: u64,
    /// Expected duration (ms) of a waiting or running task, from history.
    #[serde(default)]
    pub estimate_ms: Option<i64>,
}

impl Task {
    /// Whether the task reached a final state.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "success" | "failed" | "cancelled")
    }
}

/// One uploaded artifact.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Artifact {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// A project.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Project {
    /// Name.
    pub name: String,
    /// Number of events.
    #[serde(default)]
    pub event_count: i64,
}

/// A builder, online or remembered.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Builder {
    /// Name.
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Peer address.
    #[serde(default)]
    pub peer: Option<String>,
    /// Software version.
    #[serde(default)]
    pub software: String,
    /// Offered platforms.
    #[serde(default)]
    pub platforms: Vec<BuilderPlatform>,
    /// Connected since / last seen, unix ms.
    #[serde(default)]
    pub since: i64,
    /// Latest load report (connected builders).
    #[serde(default)]
    pub load: Option<BuilderLoad>,
}

/// A builder's latest load report.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BuilderLoad {
    /// One-minute load average times 100.
    #[serde(default)]
    pub load_avg_1m_centi: Option<u32>,
    /// Logical CPUs.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Total memory in bytes.
    #[serde(default)]
    pub mem_total_bytes: Option<u64>,
    /// Available memory in bytes.
    #[serde(default)]
    pub mem_available_bytes: Option<u64>,
    /// Free bytes under the job directories.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// The floor that applies.
    #[serde(default)]
    pub disk_floor_bytes: u64,
    /// Below the floor: offered no work.
    #[serde(default)]
    pub below_disk_floor: bool,
}

/// One platform a builder offers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BuilderPlatform {
    /// Platform tuple.
    pub name: String,
    /// Instances.
    #[serde(default)]
    pub instances: u32,
    /// Tasks running.
    #[serde(default)]
    pub running: Vec<String>,
}

/// A range of a task's log.
#[derive(Debug, Clone, Deserialize)]
pub struct LogRange {
    /// First byte returned.
    pub offset: u64,
    /// Where the next read starts.
    pub next_offset: u64,
    /// Bytes in the log now.
    pub total: u64,
    /// The task is finished and this range reaches the end.
    #[serde(default)]
    pub complete: bool,
    /// Records, each with its channel.
    pub records: Vec<LogRecord>,
}

/// One stored log record.
#[derive(Debug, Clone, Deserialize)]
pub struct LogRecord {
    /// Byte offset in the task's log.
    pub offset: u64,
    /// Channel: 1 stdout, 2 stderr, 3 Sai notice, 4 tty0, 5 tty1.
    pub channel: u8,
    /// Unix microseconds when received.
    pub timestamp_us: i64,
    /// Text (invalid UTF-8 replaced).
    pub text: String,
}

/// Whose view a request is made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// Not signed in: private events are hidden by the server.
    Anonymous,
    /// Signed in as this user.
    User(String),
}

impl Viewer {
    /// Signed in.
    pub fn is_user(&self) -> bool {
        matches!(self, Viewer::User(_))
    }
}

/// Why a call to sai-server failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The server could not be reached.
    #[error("sai-server at {0} is unreachable: {1}")]
    Unreachable(String, String),
    /// Not found (or hidden from this viewer).
    #[error("not found")]
    NotFound,
    /// The server refused or failed: status and its error text.
    #[error("sai-server answered {0}: {1}")]
    Status(u16, String),
    /// The answer was not the JSON expected.
    #[error("unexpected answer from sai-server for {0}: {1}")]
    Decode(String, String),
}

/// The sai-server client.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    http: reqwest::Client,
    service_token: Option<String>,
}

impl Upstream {
    /// A client for the API at `base` (`http://host:port`), acting for
    /// signed-in users with `service_token`.
    pub fn new(base: &str, service_token: Option<String>) -> Upstream {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client without TLS builds");
        Upstream {
            base: base.trim_end_matches('/').to_string(),
            http,
            service_token,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        viewer: &Viewer,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let (Viewer::User(name), Some(tok)) = (viewer, &self.service_token) {
            rb = rb.bearer_auth(tok).header("x-sai-on-behalf-of", name);
        }
        rb
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, UpstreamError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(self.base.clone(), e.to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(UpstreamError::NotFound);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(UpstreamError::Status(status.as_u16(), msg));
        }
        Ok(resp)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        viewer: &Viewer,
    ) -> Result<T, UpstreamError> {
        let resp = self
            .send(self.request(reqwest::Method::GET, path, viewer))
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unreachable(self.base.clone(), e.to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::Decode(path.to_string(), e.to_string()))
    }

    /// All projects.
    pub async fn projects(&self, viewer: &Viewer) -> Result<Vec<Project>, UpstreamError> {
        self.get("/api/projects", viewer).await
    }

    /// Newest events of a project, newest first.
    pub async fn events(
        &self,
        project: &str,
        limit: usize,
        viewer: &Viewer,
    ) -> Result<Vec<Event>, UpstreamError> {
        if !is_name(project) {
            return Err(UpstreamError::NotFound);
        }
        self.get(
            &format!("/api/projects/{project}/events?limit={limit}"),
            viewer,
        )
        .await
    }

    /// One event with its tasks.
    pub async fn event(&self, id: &str, viewer: &Viewer) -> Result<EventDetail, UpstreamError> {
        if !is_hex_id(id, 32) {
            return Err(UpstreamError::NotFound);
        }
        self.get(&format!("/api/events/{id}"), viewer).await
    }

    /// A task's test results, failed first.
    pub async fn task_tests(
        &self,
        id: &str,
        viewer: &Viewer,
    ) -> Result<sai_core::api::TaskTests, UpstreamError> {
        if !is_hex_id(id, 64) {
            return Err(UpstreamError::NotFound);
        }
        self.get(&format!("/api/tasks/{id}/tests"), viewer).await
    }

    /// The tests that failed anywhere in an event.
    pub async fn event_tests(
        &self,
        id: &str,
        viewer: &Viewer,
    ) -> Result<sai_core::api::EventTests, UpstreamError> {
        if !is_hex_id(id, 32) {
            return Err(UpstreamError::NotFound);
        }
        self.get(&format!("/api/events/{id}/tests"), viewer).await
    }

    /// One task with steps and artifacts.
    pub async fn task(&self, id: &str, viewer: &Viewer) -> Result<Task, UpstreamError> {
        if !is_hex_id(id, 64) {
            return Err(UpstreamError::NotFound);
        }
        self.get(&format!("/api/tasks/{id}"), viewer).await
    }

    /// Records of a task's log from `offset`, about `max` bytes.
    pub async fn log(
        &self,
        id: &str,
        offset: u64,
        max: u64,
        viewer: &Viewer,
    ) -> Result<LogRange, UpstreamError> {
        if !is_hex_id(id, 64) {
            return Err(UpstreamError::NotFound);
        }
        self.get(
            &format!("/api/tasks/{id}/log?offset={offset}&max={max}"),
            viewer,
        )
        .await
    }

    /// The exact bytes of a task's log from `offset`, about `max` bytes.
    pub async fn log_raw(
        &self,
        id: &str,
        offset: u64,
        max: u64,
        viewer: &Viewer,
    ) -> Result<bytes::Bytes, UpstreamError> {
        if !is_hex_id(id, 64) {
            return Err(UpstreamError::NotFound);
        }
        let path = format!("/api/tasks/{id}/log?offset={offset}&max={max}&format=raw");
        let resp = self
            .send(self.request(reqwest::Method::GET, &path, viewer))
            .await?;
        resp.bytes()
            .await
            .map_err(|e| UpstreamError::Unreachable(self.base.clone(), e.to_string()))
    }

    /// An artifact's bytes, as a response to stream on.
    pub async fn artifact(
        &self,
        id: &str,
        name: &str,
        viewer: &Viewer,
    ) -> Result<reqwest::Response, UpstreamError> {
        if !is_hex_id(id, 64) || !is_artifact_name(name) {
            return Err(UpstreamError::NotFound);
        }
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/api/tasks/{id}/artifacts/{name}"),
            viewer,
        ))
        .await
    }

    /// Builders known to the server.
    pub async fn builders(&self, viewer: &Viewer) -> Result<Vec<Builder>, UpstreamError> {
        self.get("/api/builders", viewer).await
    }

    /// A privileged operation on behalf of `user`.
    pub async fn act(&self, action: &Action, user: &str) -> Result<(), UpstreamError> {
        let viewer = Viewer::User(user.to_string());
        if self.service_token.is_none() {
            return Err(UpstreamError::Status(
                503,
                "sai-web has no service credential for sai-server (server_token_file)".into(),
            ));
        }
        let (method, path) = match action {
            Action::RebuildTask(t) => (reqwest::Method::POST, format!("/api/tasks/{t}/rebuild")),
            Action::CancelTask(t) => (reqwest::Method::POST, format!("/api/tasks/{t}/cancel")),
            Action::RebuildEvent(e) => (reqwest::Method::POST, format!("/api/events/{e}/rebuild")),
            Action::DeleteEvent(e) => (reqwest::Method::DELETE, format!("/api/events/{e}")),
        };
        self.send(self.request(method, &path, &viewer))
            .await
            .map(drop)
    }
}

/// A privileged operation a signed-in user may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Rebuild one task.
    RebuildTask(String),
    /// Cancel one task.
    CancelTask(String),
    /// Rebuild every task of an event.
    RebuildEvent(String),
    /// Delete an event.
    DeleteEvent(String),
}

/// An id of exactly `len` uppercase hex digits.
pub fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// A project name safe to put in a path.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !s.starts_with('.')
}

/// An artifact file name safe to put in a path.
pub fn is_artifact_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.bytes().all(|b| b == b'.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}
