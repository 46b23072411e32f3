//! The sai-server operations API as sai-web reads it: the API's own types
//! ([`sai_core::api`], the ones the server serialises and its OpenAPI
//! document describes) and a client that adds the service credential when
//! it acts for a signed-in user.

use std::time::Duration;

pub use sai_core::api::{
    Artifact, Builder, BuilderPlatform, Event, EventTests, Log as LogRange, LogRecord, Project,
    StepTime, Task, TaskTests,
};
pub use sai_core::task::{EventState, TaskState};

/// An event with its tasks and task counts (`GET /api/events/{id}`).
pub type EventDetail = Event;

/// Log bytes of a task read with [`Upstream::task`].
pub fn log_len(t: &Task) -> u64 {
    t.log_bytes.unwrap_or(0).max(0) as u64
}

/// Most tasks of one event sai-web shows (read 1,000 a page); larger
/// events show this many and say how many there are.
pub const MAX_EVENT_TASKS: usize = 20_000;

/// The tasks of an event read with [`Upstream::event`].
pub fn tasks_of(e: &Event) -> &[Task] {
    e.tasks.as_deref().unwrap_or_default()
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
    /// The server's local unix socket, when `server_url` is `unix:/path`.
    socket: Option<std::path::PathBuf>,
}

/// The socket path of a `unix:/path` server URL.
pub fn unix_socket_of(server_url: &str) -> Option<&str> {
    server_url.strip_prefix("unix:")
}

impl Upstream {
    /// A client for the API at `base` (`http://host:port`, or `unix:/path`
    /// for sai-server's `local_socket`), acting for signed-in users with
    /// `service_token` (on the local socket, the socket's permissions stand
    /// for it).
    pub fn new(base: &str, service_token: Option<String>) -> Upstream {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60));
        let socket = unix_socket_of(base).map(std::path::PathBuf::from);
        if let Some(path) = &socket {
            b = b.unix_socket(path.as_path());
        }
        let http = b.build().expect("reqwest client without TLS builds");
        Upstream {
            base: match &socket {
                Some(_) => "http://localhost".to_string(),
                None => base.trim_end_matches('/').to_string(),
            },
            http,
            service_token,
            socket,
        }
    }

    /// Acting for signed-in users is possible: a service token, or the
    /// local socket.
    fn can_act(&self) -> bool {
        self.service_token.is_some() || self.socket.is_some()
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        viewer: &Viewer,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Viewer::User(name) = viewer
            && self.can_act()
        {
            if let Some(tok) = &self.service_token {
                rb = rb.bearer_auth(tok);
            }
            rb = rb.header("x-sai-on-behalf-of", name);
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

    /// GET `/api/{collection}/{id}{rest}`, for `collection` [`TASKS`] or
    /// [`EVENTS`]; what is not an id of it is not found, without asking.
    async fn get_item<T: serde::de::DeserializeOwned>(
        &self,
        (collection, id_len): (&str, usize),
        id: &str,
        rest: &str,
        viewer: &Viewer,
    ) -> Result<T, UpstreamError> {
        if !is_hex_id(id, id_len) {
            return Err(UpstreamError::NotFound);
        }
        self.get(&format!("/api/{collection}/{id}{rest}"), viewer)
            .await
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

    /// One event with the first page of its tasks (the server's
    /// `limits.max_page`, 1,000 by default).
    pub async fn event(&self, id: &str, viewer: &Viewer) -> Result<EventDetail, UpstreamError> {
        self.get_item(EVENTS, id, "", viewer).await
    }

    /// One event with all its tasks, page after page, up to
    /// [`MAX_EVENT_TASKS`]; `next_cursor` stays set when there are more.
    pub async fn event_all(&self, id: &str, viewer: &Viewer) -> Result<EventDetail, UpstreamError> {
        let mut d = self.event(id, viewer).await?;
        while let Some(cursor) = d.next_cursor.take() {
            if tasks_of(&d).len() >= MAX_EVENT_TASKS || !cursor.bytes().all(|b| b.is_ascii_digit())
            {
                d.next_cursor = Some(cursor);
                break;
            }
            let page: EventDetail = self
                .get(&format!("/api/events/{id}?cursor={cursor}"), viewer)
                .await?;
            d.tasks
                .get_or_insert_with(Vec::new)
                .extend(page.tasks.unwrap_or_default());
            d.next_cursor = page.next_cursor;
            // The counts of the latest page are the most recent.
            d.task_states = page.task_states.or(d.task_states);
        }
        Ok(d)
    }

    /// A task's test results, failed first.
    pub async fn task_tests(&self, id: &str, viewer: &Viewer) -> Result<TaskTests, UpstreamError> {
        self.get_item(TASKS, id, "/tests", viewer).await
    }

    /// The tests that failed anywhere in an event.
    pub async fn event_tests(
        &self,
        id: &str,
        viewer: &Viewer,
    ) -> Result<EventTests, UpstreamError> {
        self.get_item(EVENTS, id, "/tests", viewer).await
    }

    /// One task with steps and artifacts.
    pub async fn task(&self, id: &str, viewer: &Viewer) -> Result<Task, UpstreamError> {
        self.get_item(TASKS, id, "", viewer).await
    }

    /// Records of a task's log from `offset`, about `max` bytes.
    pub async fn log(
        &self,
        id: &str,
        offset: u64,
        max: u64,
        viewer: &Viewer,
    ) -> Result<LogRange, UpstreamError> {
        self.get_item(
            TASKS,
            id,
            &format!("/log?offset={offset}&max={max}"),
            viewer,
        )
        .await
    }

    /// Records of a task's log from the first byte of 0-based line `line`
    /// (the end of the log past its last line), about `max` bytes.
    pub async fn log_from_line(
        &self,
        id: &str,
        line: u64,
        max: u64,
        viewer: &Viewer,
    ) -> Result<LogRange, UpstreamError> {
        let line = line.min(i64::MAX as u64);
        self.get_item(TASKS, id, &format!("/log?line={line}&max={max}"), viewer)
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
        if !is_hex_id(id, 64) || sai_core::artifact_name::check(name).is_err() {
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
        if !self.can_act() {
            return Err(UpstreamError::Status(
                503,
                "sai-web has no service credential for sai-server (server_token_file, or server_url unix:/path on its local_socket)".into(),
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

/// The tasks of the operations API and the length of their hex ids.
const TASKS: (&str, usize) = ("tasks", 64);
/// The events of the operations API and the length of their hex ids.
const EVENTS: (&str, usize) = ("events", 32);

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
