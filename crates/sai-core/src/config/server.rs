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

use super::problem::{ConfigProblem, ConfigType, FieldPath};

/// Configuration of `sai-server`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Optional marker naming this config kind: `"sai-server"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Address and port to listen on for HTTP (hooks, operations API) and the
    /// builder websocket, e.g. `"0.0.0.0:4444"`. Port 0 picks a free port; the
    /// bound address is printed on stdout and written to `<data_dir>/server.addr`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory holding the main database, one folder per event (its
    /// database and artifacts) and the token signing key.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Global HMAC secret shared with the git hooks (the ASCII bytes of this
    /// string are the key). Prefer `notification_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_key: Option<String>,
    /// File holding the global HMAC secret (surrounding white space is not
    /// part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_key_file: Option<String>,
    /// Projects accepted by the hook endpoint. When empty, any repository
    /// name is accepted with the global key; when not empty, pushes for other
    /// names are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<ProjectConfig>,
    /// Largest accepted hook request body in bytes (default 1 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest accepted base64 `saifile` member in characters (default 65536).
    #[serde(default = "default_max_saifile_base64")]
    pub max_saifile_base64: u64,
    /// Delay in milliseconds between accepting a push and offering its tasks,
    /// for git servers that run the hook before the ref is visible (default 0).
    #[serde(default)]
    pub dispatch_grace_ms: u64,
    /// Interval in milliseconds between websocket pings to builders (default 10000).
    #[serde(default = "default_ping_ms")]
    pub builder_ping_interval_ms: u64,
    /// A builder that sends nothing (not even a pong) for this many
    /// milliseconds is considered dead and its running tasks are requeued
    /// (default 30000).
    #[serde(default = "default_dead_ms")]
    pub builder_dead_timeout_ms: u64,
    /// Number of infrastructure failures (builder lost, builder-reported
    /// infrastructure error) after which a task fails instead of being
    /// requeued (default 3).
    #[serde(default = "default_max_infra_attempts")]
    pub max_infra_attempts: u32,
    /// Log bytes a builder may send before the server grants more credit
    /// (flow-control window, default 1048576).
    #[serde(default = "default_log_window")]
    pub log_window_bytes: u64,
    /// Pending log bytes are written to the event database at least this often,
    /// in milliseconds (default 100).
    #[serde(default = "default_log_flush_ms")]
    pub log_flush_ms: u64,
    /// Event databases kept open while idle, least recently used closed
    /// first (default 16). Databases in use stay open besides these.
    #[serde(default = "default_event_db_cache")]
    pub event_db_cache: usize,
    /// Largest accepted artifact in bytes (default 4 GiB).
    #[serde(default = "default_max_artifact_bytes")]
    pub max_artifact_bytes: u64,
    /// File holding the PASETO v4 secret key (64 raw bytes) that signs builder
    /// and user tokens. Default: `<data_dir>/token.key`, created on first start
    /// with mode 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key_file: Option<String>,
    /// Builder names whose tokens are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_builders: Vec<String>,
    /// User names whose tokens are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_users: Vec<String>,
    /// How many events are kept and for how long.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Serve HTTPS and `wss://` on `listen` with this certificate. Leave it
    /// out to serve plain HTTP, e.g. behind a TLS-terminating reverse proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
}

/// The certificate sai-server presents when it terminates TLS itself. Both
/// files are PEM and are read again on SIGHUP (renewals without a restart;
/// connected builders stay connected).
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

/// One project (repository) the hook endpoint accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Repository name as the hook sends it in `repository.name`.
    pub name: String,
    /// HMAC secret of this project's hook; overrides the global key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_key: Option<String>,
    /// File holding this project's HMAC secret (surrounding white space is
    /// not part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_key_file: Option<String>,
}

/// Automatic deletion of old events. Events still referenced (open database)
/// are deleted once released.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep at most this many newest events per project; unset keeps all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_events_per_project: Option<u32>,
    /// Delete events older than this many days; unset keeps them forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
}

fn default_listen() -> String {
    "127.0.0.1:4444".into()
}
fn default_data_dir() -> String {
    "/var/lib/sai-server".into()
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}
fn default_max_saifile_base64() -> u64 {
    65536
}
fn default_ping_ms() -> u64 {
    10_000
}
fn default_dead_ms() -> u64 {
    30_000
}
fn default_max_infra_attempts() -> u32 {
    3
}
fn default_log_window() -> u64 {
    1024 * 1024
}
fn default_log_flush_ms() -> u64 {
    100
}
fn default_event_db_cache() -> usize {
    16
}
fn default_max_artifact_bytes() -> u64 {
    4 * 1024 * 1024 * 1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            schema: None,
            listen: default_listen(),
            data_dir: default_data_dir(),
            notification_key: None,
            notification_key_file: None,
            projects: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            max_saifile_base64: default_max_saifile_base64(),
            dispatch_grace_ms: 0,
            builder_ping_interval_ms: default_ping_ms(),
            builder_dead_timeout_ms: default_dead_ms(),
            max_infra_attempts: default_max_infra_attempts(),
            log_window_bytes: default_log_window(),
            log_flush_ms: default_log_flush_ms(),
            event_db_cache: default_event_db_cache(),
            max_artifact_bytes: default_max_artifact_bytes(),
            token_key_file: None,
            revoked_builders: Vec::new(),
            revoked_users: Vec::new(),
            retention: RetentionConfig::default(),
            tls: None,
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

impl ServerConfig {
    /// Semantic checks serde cannot express. Returns every problem found,
    /// each with the path of the field it concerns; empty means valid.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let root = FieldPath::root();
        let mut push = |path: FieldPath, message: String| {
            problems.push(ConfigProblem::new(path, message));
        };
        if let Some(s) = &self.schema
            && s != "sai-server"
        {
            push(
                root.key("schema"),
                format!("expected \"sai-server\", found {s:?}"),
            );
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            push(
                root.key("listen"),
                format!(
                    "{:?} is not an address:port such as \"0.0.0.0:4444\"",
                    self.listen
                ),
            );
        }
        if self.data_dir.is_empty() {
            push(root.key("data_dir"), "must not be empty".into());
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
        if self.log_window_bytes < 65536 {
            push(
                root.key("log_window_bytes"),
                "must be at least 65536 (one full frame)".into(),
            );
        }
        if self.log_flush_ms == 0 {
            push(root.key("log_flush_ms"), "must be greater than 0".into());
        }
        if self.retention.keep_events_per_project == Some(0) {
            push(
                root.key("retention").key("keep_events_per_project"),
                "must be at least 1".into(),
            );
        }
        if let Some(tls) = &self.tls {
            if tls.certificate_chain_file.is_empty() {
                push(
                    root.key("tls").key("certificate_chain_file"),
                    "must not be empty".into(),
                );
            }
            if tls.private_key_file.is_empty() {
                push(
                    root.key("tls").key("private_key_file"),
                    "must not be empty".into(),
                );
            }
        }
        problems
    }
}

const BOTH_KEYS: &str = "notification_key and notification_key_file are both set; keep only one";

impl ConfigType for ServerConfig {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
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
                    notification_key: None,
                    notification_key_file: None,
                },
                ProjectConfig {
                    name: "../x".into(),
                    notification_key: None,
                    notification_key_file: None,
                },
            ],
            ..ServerConfig::default()
        };
        let p = c.validate();
        assert!(p.len() >= 5, "{p:?}");
    }
}
