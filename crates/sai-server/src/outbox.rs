//! Telling the outside about events: commit statuses on the forge and the
//! completion webhook.
//!
//! The scheduler's effects and the hook only queue a note ([`Outbox::note`]:
//! event id and state); nothing here runs under the scheduler lock or makes
//! it wait. A dispatcher task ([`crate::delivery::run`]) resolves the event's project, and
//! for each configured target keeps one worker per event that delivers the
//! **latest** state: `pending` when the event is created, then `success`,
//! `failure` or `error` when it ends (a newer state replaces one still being
//! retried). A failed delivery (no connection, HTTP error) is retried with
//! exponential backoff ([`RETRY_INITIAL`] doubling to [`RETRY_CAP`], at
//! most [`MAX_ATTEMPTS`] tries). The last attempt of each event is kept in
//! memory and shown in `GET /api/events/{id}` ([`Outbox::deliveries`]).
//!
//! Requests, as each forge documents them:
//!
//! | forge | request | auth | body |
//! |---|---|---|---|
//! | Forgejo, Gitea | `POST <url>/api/v1/repos/{owner}/{repo}/statuses/{sha}` | `Authorization: token <t>` | `state` (pending, success, failure, error), `target_url`, `description`, `context` |
//! | GitHub | `POST <url>/repos/{owner}/{repo}/statuses/{sha}` | `Authorization: Bearer <t>`, `Accept: application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28` | the same fields |
//! | GitLab | `POST <url>/api/v4/projects/{id}/statuses/{sha}` (id URL-encoded) | `PRIVATE-TOKEN: <t>` | `state` (pending, success, failed, canceled), `ref`, `name`, `target_url`, `description` |
//!
//! The webhook gets `POST <url>` with a JSON body `{"event": <the API
//! event>, "state", "url"}` and, with a secret, `X-Sai-Signature:
//! sha256=<hex HMAC-SHA256 of the body>`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sai_core::api::Delivery;
use sai_core::config::server::{CommitStatusConfig, Forge, ProjectConfig};
use sai_core::secret::{secret_from_file, secret_text_from_file};
use sai_core::task::{Event, EventState};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// First retry delay.
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const RETRY_CAP: Duration = Duration::from_secs(60);
/// Tries of one state before giving up.
pub const MAX_ATTEMPTS: u32 = 20;
/// Limit of one request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A commit status target with its token read.
#[derive(Debug, Clone)]
pub struct StatusTarget {
    /// The config.
    pub config: CommitStatusConfig,
    /// The API token.
    pub token: String,
}

/// A webhook with its secret read.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// URL.
    pub url: String,
    /// HMAC key.
    pub secret: Option<Vec<u8>>,
}

/// What one project reports.
#[derive(Debug, Clone, Default)]
pub struct ProjectTargets {
    /// Commit status on the forge.
    pub status: Option<StatusTarget>,
    /// Completion webhook.
    pub webhook: Option<WebhookTarget>,
}

/// Read the token and secret files of every project's targets; relative
/// paths are taken from `base`.
pub fn resolve_targets(
    projects: &[ProjectConfig],
    base: &Path,
) -> Result<HashMap<String, ProjectTargets>, sai_core::secret::SecretError> {
    let mut out = HashMap::new();
    for p in projects {
        let mut t = ProjectTargets::default();
        if let Some(cs) = &p.commit_status {
            let path = base.join(&cs.token_file);
            t.status = Some(StatusTarget {
                config: cs.clone(),
                token: secret_text_from_file(&path, std::fs::read(&path))?,
            });
        }
        if let Some(w) = &p.webhook {
            let secret = match &w.secret_file {
                Some(f) => {
                    let path = base.join(f);
                    Some(secret_from_file(&path, std::fs::read(&path))?)
                }
                None => None,
            };
            t.webhook = Some(WebhookTarget {
                url: w.url.clone(),
                secret,
            });
        }
        if t.status.is_some() || t.webhook.is_some() {
            out.insert(p.name.clone(), t);
        }
    }
    Ok(out)
}

/// Which delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Status,
    Webhook,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "commit_status",
            Kind::Webhook => "webhook",
        }
    }
}

/// A state to report.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) event: String,
    pub(crate) state: EventState,
}

/// The queue of notes and the latest delivery per event.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Note>,
    pub(crate) rx: Mutex<Option<mpsc::UnboundedReceiver<Note>>>,
    deliveries: Mutex<HashMap<(Kind, String), Delivery>>,
    pub(crate) workers: Mutex<HashMap<(Kind, String), watch::Sender<EventState>>>,
}

impl Default for Outbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Outbox {
            tx,
            rx: Mutex::new(Some(rx)),
            deliveries: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// Queue an event's new state (never blocks).
    pub fn note(&self, event: &str, state: EventState) {
        let _ = self.tx.send(Note {
            event: event.to_string(),
            state,
        });
    }

    /// The latest commit status and webhook deliveries of an event.
    pub fn deliveries(&self, event: &str) -> (Option<Delivery>, Option<Delivery>) {
        let d = lock(&self.deliveries);
        (
            d.get(&(Kind::Status, event.to_string())).cloned(),
            d.get(&(Kind::Webhook, event.to_string())).cloned(),
        )
    }

    pub(crate) fn record(&self, kind: Kind, event: &str, d: Delivery) {
        lock(&self.deliveries).insert((kind, event.to_string()), d);
    }
}

/// The forge's name of an event state, or `None` when it is not reported
/// (running states: the forge keeps showing `pending`).
pub fn forge_state(forge: Forge, state: EventState) -> Option<&'static str> {
    let gitlab = forge == Forge::Gitlab;
    Some(match state {
        EventState::Waiting => "pending",
        EventState::Running | EventState::RunningWithFailures => return None,
        EventState::Success => "success",
        EventState::Failed if gitlab => "failed",
        EventState::Failed => "failure",
        EventState::Cancelled if gitlab => "canceled",
        EventState::Cancelled => "error",
    })
}

fn description(state: EventState) -> &'static str {
    match state {
        EventState::Waiting => "Sai: waiting for builders",
        EventState::Running => "Sai: building",
        EventState::RunningWithFailures => "Sai: building, some tasks failed",
        EventState::Success => "Sai: every task passed",
        EventState::Failed => "Sai: some tasks failed",
        EventState::Cancelled => "Sai: cancelled",
    }
}

/// The link to an event's page on sai-web.
pub fn event_url(web_url: Option<&str>, event: &str) -> Option<String> {
    web_url.map(|u| format!("{}/e/{event}", u.trim_end_matches('/')))
}

/// One HTTP request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Full URL.
    pub url: String,
    /// Headers besides `Content-Type: application/json`.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Value,
}

/// The commit status request for `event` in `state` (`None` when the state
/// is not reported).
pub fn status_request(
    t: &StatusTarget,
    event: &Event,
    state: EventState,
    link: Option<&str>,
) -> Option<Request> {
    let c = &t.config;
    let st = forge_state(c.forge, state)?;
    let base = c.url.trim_end_matches('/');
    let sha = &event.hash;
    let mut body = json!({ "state": st, "description": description(state) });
    if let Some(l) = link {
        body["target_url"] = json!(l);
    }
    let (url, headers) = match c.forge {
        Forge::Forgejo | Forge::Gitea => {
            body["context"] = json!(c.context);
            (
                format!("{base}/api/v1/repos/{}/statuses/{sha}", c.repository),
                vec![
                    ("Authorization".into(), format!("token {}", t.token)),
                    ("Accept".into(), "application/json".into()),
                ],
            )
        }
        Forge::Github => {
            body["context"] = json!(c.context);
            (
                format!("{base}/repos/{}/statuses/{sha}", c.repository),
                vec![
                    ("Authorization".into(), format!("Bearer {}", t.token)),
                    ("Accept".into(), "application/vnd.github+json".into()),
                    ("X-GitHub-Api-Version".into(), "2022-11-28".into()),
                ],
            )
        }
        Forge::Gitlab => {
            body["name"] = json!(c.context);
            let r = event.git_ref.as_str();
            let short = r
                .strip_prefix("refs/heads/")
                .or_else(|| r.strip_prefix("refs/tags/"))
                .unwrap_or(r);
            body["ref"] = json!(short);
            (
                // The project path (`group/project`) is one segment: `/` encoded.
                format!(
                    "{base}/api/v4/projects/{}/statuses/{sha}",
                    sai_core::percent::encode(&c.repository, b"-_.~")
                ),
                vec![("PRIVATE-TOKEN".into(), t.token.clone())],
            )
        }
    };
    Some(Request { url, headers, body })
}

/// The webhook request for an ended event.
pub fn webhook_request(
    t: &WebhookTarget,
    event: &Event,
    state: EventState,
    link: Option<&str>,
) -> (Request, Vec<u8>) {
    let mut view = sai_core::api::Event::from(event);
    view.state = state;
    let body = json!({ "event": view, "state": state, "url": link });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut headers = Vec::new();
    if let Some(key) = &t.secret
        && let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key)
    {
        mac.update(&bytes);
        headers.push((
            "X-Sai-Signature".into(),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        ));
    }
    (
        Request {
            url: t.url.clone(),
            headers,
            body,
        },
        bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sai_core::task::EventId;

    fn event() -> Event {
        Event::new(
            EventId::from_bytes([7; 16]),
            "proj",
            "refs/heads/main",
            "0123456789abcdef0123456789abcdef01234567",
            "https://git.example/proj",
            None,
            false,
        )
    }

    fn target(forge: Forge, repo: &str) -> StatusTarget {
        StatusTarget {
            config: CommitStatusConfig {
                forge,
                url: "http://127.0.0.1:9/".into(),
                repository: repo.into(),
                token_file: "t".into(),
                context: "sai/ci".into(),
            },
            token: "TOKEN".into(),
        }
    }

    #[test]
    fn states_as_each_forge_names_them() {
        use EventState::*;
        for f in [Forge::Forgejo, Forge::Gitea, Forge::Github] {
            let got: Vec<_> = [Waiting, Running, Success, Failed, Cancelled]
                .iter()
                .map(|s| forge_state(f, *s))
                .collect();
            assert_eq!(
                got,
                [
                    Some("pending"),
                    None,
                    Some("success"),
                    Some("failure"),
                    Some("error")
                ]
            );
        }
        assert_eq!(forge_state(Forge::Gitlab, Failed), Some("failed"));
        assert_eq!(forge_state(Forge::Gitlab, Cancelled), Some("canceled"));
    }

    #[test]
    fn gitlab_project_paths_are_encoded_and_the_ref_is_short() {
        let r = status_request(
            &target(Forge::Gitlab, "group/sub project"),
            &event(),
            EventState::Success,
            None,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/api/v4/projects/group%2Fsub%20project/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(r.body["ref"], "main");
        assert_eq!(r.body["name"], "sai/ci");
        assert!(r.body.get("target_url").is_none());
        assert_eq!(
            r.headers,
            vec![("PRIVATE-TOKEN".to_string(), "TOKEN".to_string())]
        );
    }

    #[test]
    fn webhook_signature_is_the_hmac_of_the_body() {
        let t = WebhookTarget {
            url: "http://127.0.0.1:9/hook".into(),
            secret: Some(b"k".to_vec()),
        };
        let (r, bytes) = webhook_request(&t, &event(), EventState::Failed, Some("http://w/e/X"));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(&bytes);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(r.headers, vec![("X-Sai-Signature".to_string(), want)]);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["event"]["project"], "proj");
        assert_eq!(v["url"], "http://w/e/X");
    }
}
