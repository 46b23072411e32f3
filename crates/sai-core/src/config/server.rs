//! Config of `sai-server`.
//!
//! Example (JSON with `#` comments):
//!
//! ```json
//! {
//!   "schema": "sai-server",
//!   "listen": "0.0.0.0:4444",
//!   "data_dir": "/var/lib/sai-server",
//!   "notification_key_file": "/run/credentials/sai-server.service/notification-key",
//!   "projects": [ { "name": "libwebsockets" } ],
//!   "retention": { "keep_events_per_project": 200, "max_age_days": 90 }
//! }
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problem::{ConfigProblem, ConfigType, FieldPath, check_marker, check_socket_addr};

/// Value of the optional `schema` marker of a server config.
pub const SCHEMA_MARKER: &str = "sai-server";

/// Configuration of `sai-server`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Optional marker naming this config kind: `"sai-server"`.
    pub schema: Option<String>,
    /// Address and port to listen on for HTTP (hooks, operations API) and the
    /// builder websocket, e.g. `"0.0.0.0:4444"`. Port 0 picks a free port; the
    /// bound address is printed on stdout and written to `<data_dir>/server.addr`.
    pub listen: String,
    /// Directory holding the main database, one folder per event (its
    /// database and artifacts) and the token signing key.
    pub data_dir: String,
    /// Global HMAC secret shared with the git hooks (the ASCII bytes of this
    /// string are the key). Prefer `notification_key_file`.
    pub notification_key: Option<String>,
    /// File holding the global HMAC secret (surrounding white space is not
    /// part of it).
    pub notification_key_file: Option<String>,
    /// Projects accepted by the hook endpoint. When empty, any repository
    /// name is accepted with the global key; when not empty, pushes for other
    /// names are refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<ProjectConfig>,
    /// Largest accepted hook request body in bytes (default 1 MiB).
    pub max_body_bytes: u64,
    /// Largest accepted base64 `saifile` member in characters (default 65536).
    pub max_saifile_base64: u64,
    /// Delay in milliseconds between accepting a push and offering its tasks,
    /// for git servers that run the hook before the ref is visible (default 0).
    pub dispatch_grace_ms: u64,
    /// Interval in milliseconds between websocket pings to builders (default 10000).
    pub builder_ping_interval_ms: u64,
    /// A builder that sends nothing (not even a pong) for this many
    /// milliseconds is considered dead and its running tasks are requeued
    /// (default 30000).
    pub builder_dead_timeout_ms: u64,
    /// Number of infrastructure failures (builder lost, builder-reported
    /// infrastructure error) after which a task fails instead of being
    /// requeued (default 3).
    pub max_infra_attempts: u32,
    /// Log bytes a builder may send before the server grants more credit
    /// (flow-control window, default 1048576).
    pub log_window_bytes: u64,
    /// Pending log bytes are written to the event database at least this often,
    /// in milliseconds (default 100), and as soon as no more arrived for a
    /// twentieth of it.
    pub log_flush_ms: u64,
    /// Event databases kept open between uses, least recently used closed
    /// first (default 16); one nobody asked for during a second is closed.
    /// Databases in use stay open besides these.
    pub event_db_cache: usize,
    /// Largest accepted artifact in bytes (default 4 GiB).
    pub max_artifact_bytes: u64,
    /// File holding the PASETO v4 secret key (64 raw bytes) that signs builder
    /// and user tokens. Default: `<data_dir>/token.key`, created on first start
    /// with mode 0600.
    pub token_key_file: Option<String>,
    /// Builder names whose tokens are refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked_builders: Vec<String>,
    /// User names whose tokens are refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked_users: Vec<String>,
    /// How many events are kept and for how long.
    pub retention: RetentionConfig,
    /// Serve HTTPS and `wss://` on `listen` with this certificate. Leave it
    /// out to serve plain HTTP, e.g. behind a TLS-terminating reverse proxy.
    pub tls: Option<ServerTlsConfig>,
    /// Free bytes a builder must report on the file system of its job
    /// directories to be offered work (protocol message `load`); the larger
    /// of this and the builder's own `min_free_disk_bytes` applies. Default
    /// 0: only the builder's own floor.
    pub builder_min_free_disk_bytes: u64,
    /// File holding a token that `GET /metrics` requires as
    /// `Authorization: Bearer <token>`. Without it `/metrics` is open.
    pub metrics_token_file: Option<String>,
    /// Base URL of sai-web, e.g. `https://ci.example.org`: commit statuses
    /// and webhooks link to `<web_url>/e/<event id>`.
    pub web_url: Option<String>,
    /// Longest a task may stay with one builder, in seconds, from the offer
    /// to its result (default 86400). A builder that takes a task and then
    /// goes silent on it while its connection stays up loses it at this
    /// deadline: the task is cancelled there and counts an infrastructure
    /// failure (requeued, or failed at `max_infra_attempts`).
    pub task_deadline_secs: u64,
    /// What one push, one request or one client may cost, and how long a
    /// hook notification stays valid.
    pub limits: ServerLimits,
    /// Also serve the operations API and the change feed on this unix
    /// socket (an absolute path), for a sai-web on the same host. The
    /// socket is created with mode 0660, so only the server's user and
    /// group can connect; a request on it acts as the service credential
    /// does (`X-Sai-On-Behalf-Of` names the user), without a token.
    pub local_socket: Option<String>,
    /// Graceful restart: a task found `running` when the server starts
    /// stays `running` this many seconds for its builder, which kept it
    /// going across the restart, to claim it back and report it once
    /// (default 120). A task not claimed in time is requeued without
    /// counting an infrastructure failure; 0 requeues at once.
    pub restart_grace_secs: u64,
}

/// Caps and timeouts that keep one push, request or client from exhausting
/// the server. The defaults are safe for a public server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// A hook notification carrying a `timestamp` is accepted only within
    /// this many seconds of the server's clock, and its `nonce` is
    /// remembered (in the main database) until then, so a captured
    /// notification cannot be replayed (default 300).
    pub hook_window_secs: u64,
    /// Refuse notifications without a `timestamp`. The original hook sends
    /// none; their nonces are remembered forever instead (default false).
    pub hook_require_timestamp: bool,
    /// Most tasks one push may create after matrix expansion; more is
    /// refused with 422 (default 10000).
    pub max_tasks_per_push: u64,
    /// Largest step (one shell command line) after `${...}` substitution,
    /// in bytes; larger is refused with 422 (default 262144).
    pub max_step_bytes: u64,
    /// Largest saifile after expansion: the bytes of every task's steps,
    /// artifact globs and packages together; larger is refused with 422
    /// (default 33554432).
    pub max_expanded_bytes: u64,
    /// Most items one page of a listing returns (`limit` is clamped to it;
    /// the tasks of an event, the events of a project; default 1000).
    pub max_page: u32,
    /// A connection must send a request's headers within this many
    /// milliseconds of connecting or of its previous response, else it is
    /// closed (default 10000).
    pub header_timeout_ms: u64,
    /// A request body (a hook notification) must arrive within this many
    /// milliseconds, else 408 (default 30000).
    pub body_timeout_ms: u64,
    /// Most HTTP connections served for the API at once. Builder websockets
    /// and hook requests do not count and are served beyond it; other
    /// requests on connections over it get 503 (default 512).
    pub max_api_connections: u32,
}

/// The limits a config leaves out (the struct is `#[serde(default)]`).
impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            hook_window_secs: 300,
            hook_require_timestamp: false,
            max_tasks_per_push: 10_000,
            max_step_bytes: 256 * 1024,
            max_expanded_bytes: 32 * 1024 * 1024,
            max_page: 1000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_api_connections: 512,
        }
    }
}

/// The certificate sai-server (or sai-web) presents when it terminates TLS
/// itself. Both files are PEM and are read again on SIGHUP (renewals
/// without a restart; open connections, such as builders', stay up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file with the server certificate first, then any intermediate CA
    /// certificates (e.g. certbot's `fullchain.pem`). Relative paths are
    /// taken from the config file's folder.
    pub certificate_chain_file: String,
    /// PEM file with the private key of that certificate (PKCS#8, PKCS#1 or
    /// SEC1), e.g. certbot's `privkey.pem`.
    pub private_key_file: String,
}

impl ServerTlsConfig {
    /// Problems of this section, found at `at` in its config.
    pub fn validate(&self, at: &FieldPath) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("certificate_chain_file", &self.certificate_chain_file),
            ("private_key_file", &self.private_key_file),
        ] {
            if value.is_empty() {
                problems.push(ConfigProblem::new(at.key(key), "must not be empty"));
            }
        }
        problems
    }
}

/// One project (repository) the hook endpoint accepts.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Repository name as the hook sends it in `repository.name`.
    pub name: String,
    /// HMAC secret of this project's hook; overrides the global key.
    pub notification_key: Option<String>,
    /// File holding this project's HMAC secret (surrounding white space is
    /// not part of it).
    pub notification_key_file: Option<String>,
    /// Report each event's state as a commit status on the forge.
    pub commit_status: Option<CommitStatusConfig>,
    /// POST a JSON summary of each event to this webhook when it ends.
    pub webhook: Option<WebhookConfig>,
}

/// The forge kinds whose commit status API sai-server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Forge {
    /// Forgejo: `POST <url>/api/v1/repos/{owner}/{repo}/statuses/{sha}`,
    /// `Authorization: token <token>`.
    Forgejo,
    /// Gitea: the same API as Forgejo.
    Gitea,
    /// GitHub: `POST <url>/repos/{owner}/{repo}/statuses/{sha}`,
    /// `Authorization: Bearer <token>`.
    Github,
    /// GitLab: `POST <url>/api/v4/projects/{id}/statuses/{sha}`,
    /// `PRIVATE-TOKEN: <token>`.
    Gitlab,
}

/// Where and how a project's commit statuses are reported: `pending` when
/// an event is created, then `success`, `failure` or `error` when it ends.
/// Failed deliveries are retried with backoff in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitStatusConfig {
    /// Which API to speak.
    pub forge: Forge,
    /// Base URL of the forge, e.g. `https://codeberg.org` (Forgejo, Gitea),
    /// `https://api.github.com` (GitHub; `https://host/api/v3` for GitHub
    /// Enterprise), `https://gitlab.com` (GitLab).
    pub url: String,
    /// The repository on the forge: `owner/repo`, or for GitLab the numeric
    /// project id or `group/project` path.
    pub repository: String,
    /// File holding the API token (surrounding white space ignored).
    pub token_file: String,
    /// Name of the status on the commit (`context`; GitLab `name`).
    /// Default `sai`.
    #[serde(default = "default_status_context")]
    pub context: String,
}

fn default_status_context() -> String {
    "sai".into()
}

/// A generic JSON webhook called when an event ends (chat bots).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL the JSON is POSTed to.
    pub url: String,
    /// File holding an HMAC secret: the request then carries
    /// `X-Sai-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret_file: Option<String>,
}

/// Automatic deletion of old events. Events still referenced (open database)
/// are deleted once released.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep at most this many newest events per project; unset keeps all.
    pub keep_events_per_project: Option<u32>,
    /// Delete events older than this many days; unset keeps them forever.
    pub max_age_days: Option<u32>,
}

/// The value of every member a config leaves out (the struct is
/// `#[serde(default)]`): these are the documented defaults.
impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            schema: None,
            listen: "127.0.0.1:4444".into(),
            data_dir: "/var/lib/sai-server".into(),
            notification_key: None,
            notification_key_file: None,
            projects: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_saifile_base64: 65536,
            dispatch_grace_ms: 0,
            builder_ping_interval_ms: 10_000,
            builder_dead_timeout_ms: 30_000,
            max_infra_attempts: 3,
            log_window_bytes: 1024 * 1024,
            log_flush_ms: 100,
            event_db_cache: 16,
            max_artifact_bytes: 4 * 1024 * 1024 * 1024,
            token_key_file: None,
            revoked_builders: Vec::new(),
            revoked_users: Vec::new(),
            retention: RetentionConfig::default(),
            tls: None,
            builder_min_free_disk_bytes: 0,
            metrics_token_file: None,
            web_url: None,
            task_deadline_secs: 86_400,
            limits: ServerLimits::default(),
            local_socket: None,
            restart_grace_secs: 120,
        }
    }
}

/// True for a name usable as a project name: 1..=64 chars of ASCII
/// alphanumerics, `-`, `_` and `.`, not starting with `.`.
pub fn valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_http_url(u: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|p| u.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

const BOTH_KEYS: &str = "notification_key and notification_key_file are both set; keep only one";

impl ConfigType for ServerConfig {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Semantic checks serde cannot express. Returns every problem found,
    /// each with the path of the field it concerns; empty means valid.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = check_marker(self.schema.as_deref(), SCHEMA_MARKER);
        let root = FieldPath::root();
        let mut push = |path: FieldPath, message: String| {
            problems.push(ConfigProblem::new(path, message));
        };
        if let Err(why) = check_socket_addr(&self.listen, "0.0.0.0:4444") {
            push(root.key("listen"), why);
        }
        if self.data_dir.is_empty() {
            push(root.key("data_dir"), "must not be empty".into());
        }
        if let Some(p) = &self.local_socket
            && !p.starts_with('/')
        {
            push(
                root.key("local_socket"),
                format!("{p:?} is not an absolute path such as \"/run/sai/server.sock\""),
            );
        }
        if self.notification_key.is_some() && self.notification_key_file.is_some() {
            push(root.key("notification_key"), BOTH_KEYS.into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            let at = root.key("projects").index(i);
            if !valid_project_name(&p.name) {
                push(
                    at.key("name"),
                    format!(
                        "{:?} must be 1-64 characters of A-Z a-z 0-9 - _ . and not start with '.'",
                        p.name
                    ),
                );
            }
            if !seen.insert(p.name.as_str()) {
                push(at.key("name"), format!("{:?} is listed twice", p.name));
            }
            if p.notification_key.is_some() && p.notification_key_file.is_some() {
                push(at.key("notification_key"), BOTH_KEYS.into());
            }
            if let Some(cs) = &p.commit_status {
                let at = at.key("commit_status");
                if !is_http_url(&cs.url) {
                    push(at.key("url"), format!("{:?} is not an http(s) URL", cs.url));
                }
                let parts = cs.repository.split('/').count();
                let forge_path = cs.forge == Forge::Gitlab || parts == 2;
                if cs.repository.is_empty()
                    || !forge_path
                    || cs.repository.split('/').any(str::is_empty)
                {
                    push(
                        at.key("repository"),
                        format!("{:?} is not owner/repo", cs.repository),
                    );
                }
                if cs.context.is_empty() {
                    push(at.key("context"), "must not be empty".into());
                }
            }
            if let Some(w) = &p.webhook
                && !is_http_url(&w.url)
            {
                push(
                    at.key("webhook").key("url"),
                    format!("{:?} is not an http(s) URL", w.url),
                );
            }
        }
        if self.max_body_bytes < 1024 {
            push(root.key("max_body_bytes"), "must be at least 1024".into());
        }
        if self.max_saifile_base64 < 8 {
            push(root.key("max_saifile_base64"), "must be at least 8".into());
        }
        if self.builder_ping_interval_ms == 0 {
            push(
                root.key("builder_ping_interval_ms"),
                "must be greater than 0".into(),
            );
        }
        if self.builder_dead_timeout_ms <= self.builder_ping_interval_ms {
            push(
                root.key("builder_dead_timeout_ms"),
                format!(
                    "{} must be greater than builder_ping_interval_ms ({})",
                    self.builder_dead_timeout_ms, self.builder_ping_interval_ms
                ),
            );
        }
        if self.max_infra_attempts == 0 {
            push(root.key("max_infra_attempts"), "must be at least 1".into());
        }
        let limits = root.key("limits");
        for (name, v) in [
            ("max_tasks_per_push", self.limits.max_tasks_per_push),
            ("max_step_bytes", self.limits.max_step_bytes),
            ("max_expanded_bytes", self.limits.max_expanded_bytes),
            ("max_page", self.limits.max_page.into()),
            ("header_timeout_ms", self.limits.header_timeout_ms),
            ("body_timeout_ms", self.limits.body_timeout_ms),
            (
                "max_api_connections",
                self.limits.max_api_connections.into(),
            ),
        ] {
            if v == 0 {
                push(limits.key(name), "must be at least 1".into());
            }
        }
        if self.log_window_bytes < 65536 {
            push(
                root.key("log_window_bytes"),
                "must be at least 65536 (one full frame)".into(),
            );
        }
        if self.log_flush_ms == 0 {
            push(root.key("log_flush_ms"), "must be greater than 0".into());
        }
        if self.task_deadline_secs == 0 {
            push(
                root.key("task_deadline_secs"),
                "must be greater than 0".into(),
            );
        }
        if self.retention.keep_events_per_project == Some(0) {
            push(
                root.key("retention").key("keep_events_per_project"),
                "must be at least 1".into(),
            );
        }
        if let Some(u) = &self.web_url
            && !is_http_url(u)
        {
            push(root.key("web_url"), format!("{u:?} is not an http(s) URL"));
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.validate(&root.key("tls")));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ServerConfig::default().validate().is_empty());
    }

    #[test]
    fn empty_object_parses_to_defaults() {
        let c: ServerConfig =
            crate::config::parse("t", b"{}", crate::config::Format::Json).unwrap();
        assert_eq!(c, ServerConfig::default());
    }

    #[test]
    fn unknown_field_is_an_error_with_position() {
        let e = crate::config::parse::<ServerConfig>(
            "conf",
            b"{\n  \"listne\": 1\n}",
            crate::config::Format::Json,
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("listne"), "{e}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = ServerConfig {
            listen: "nope".into(),
            notification_key: Some("a".into()),
            notification_key_file: Some("b".into()),
            builder_dead_timeout_ms: 5,
            projects: vec![
                ProjectConfig {
                    name: "../x".into(),
                    ..ProjectConfig::default()
                },
                ProjectConfig {
                    name: "../x".into(),
                    ..ProjectConfig::default()
                },
            ],
            ..ServerConfig::default()
        };
        let p = c.validate();
        assert!(p.len() >= 5, "{p:?}");
    }
}
