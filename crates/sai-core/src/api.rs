//! Response types of sai-server's operations API (`/api/...`) and of the
//! hook endpoint. The server serialises exactly these, the OpenAPI document
//! at `/api/openapi.json` is generated from them, and clients (sai-web, the
//! `sai` CLI) deserialise them. Unknown fields are refused, so a field the
//! server sends but the types lack is caught by the API test.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::task::{EventState, TaskState};

/// An error answer: `{"error": ..., "detail"?: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Error {
    /// What went wrong, short.
    pub error: String,
    /// More, e.g. `file:line:col: message` for a saifile that does not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A project (a repository that pushed at least once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Name.
    pub name: String,
    /// Fetch URL of its last push.
    pub fetch_url: String,
    /// First push (unix ms).
    pub created: i64,
    /// Events stored.
    pub event_count: i64,
}

/// An event: one push of one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// 32 uppercase hex characters.
    pub id: String,
    /// Project name.
    pub project: String,
    /// Ref pushed.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Commit.
    pub hash: String,
    /// Fetch URL.
    pub fetch_url: String,
    /// Address the push came from.
    pub source_ip: Option<String>,
    /// Creation (unix ms).
    pub created: i64,
    /// Last state change (unix ms).
    pub last_updated: i64,
    /// State, from its tasks' states.
    pub state: EventState,
    /// Private: visible with a user token only.
    pub sec: bool,
    /// Number of tasks.
    pub task_count: i64,
    /// Its tasks (`GET /api/events/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
    /// Tasks per state (`GET /api/events/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_states: Option<BTreeMap<TaskState, usize>>,
    /// The event this one builds again (made by `POST
    /// /api/events/{id}/again`, e.g. `sai notify --rebuild`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_of: Option<String>,
}

/// A task: one configuration on one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// 64 uppercase hex characters; the first 32 are the event id.
    pub id: String,
    /// Its event.
    pub event_id: String,
    /// Configuration name.
    pub configuration: String,
    /// Platform requested.
    pub platform: String,
    /// State.
    pub state: TaskState,
    /// Why a waiting task cannot start: `no builder offers <platform>`,
    /// `all N instances of <platform> busy`, `attempt 2 of 3 after an
    /// infrastructure failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Builder running it (or that ran it last).
    pub builder: Option<String>,
    /// The builder's offered platform it runs in.
    pub instance: Option<String>,
    /// Exit code of the failing step (0 on success).
    pub exit_code: Option<i64>,
    /// Number of the failing step, from 1 (as the log's "Starting step N").
    pub failed_step: Option<i64>,
    /// Why it waits again, failed or was cancelled.
    pub reason: Option<String>,
    /// Offers accepted so far.
    pub attempt: i64,
    /// Infrastructure failures so far.
    pub infra_failures: i64,
    /// Steps started in the current attempt.
    pub build_step: i64,
    /// Number of steps.
    pub step_count: usize,
    /// Failed on this platform in the previous event of the same ref, so
    /// runs first.
    pub priority: bool,
    /// Creation (unix ms).
    pub created: i64,
    /// Start of the current attempt (unix ms).
    pub started: Option<i64>,
    /// End (unix ms).
    pub ended: Option<i64>,
    /// Last change (unix ms).
    pub last_updated: i64,
    /// Shell steps (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
    /// Artifact globs from the saifile (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_globs: Option<Vec<String>>,
    /// Packages (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    /// Uploaded artifacts (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<Artifact>>,
    /// Log bytes stored (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<i64>,
    /// Compressed bytes the log takes on disk (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stored_bytes: Option<i64>,
    /// The steps of the current attempt that ended, with their times
    /// (`GET /api/tasks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_times: Option<Vec<StepTime>>,
}

/// When one step of a task ran, as its builder reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepTime {
    /// Step number, from 1 (as the log's "Starting step N").
    pub step: i64,
    /// Exit status of its shell.
    pub exit_code: i64,
    /// Start (unix ms, its end less its duration).
    pub started: i64,
    /// End (unix ms, when the server heard of it).
    pub ended: i64,
    /// Wall clock duration on the builder (ms).
    pub duration_ms: i64,
}

/// An uploaded artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File name.
    pub name: String,
    /// Bytes.
    pub size: i64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Upload (unix ms).
    pub created: i64,
}

/// A page of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// The task.
    pub task_id: String,
    /// Byte offset asked for.
    pub offset: i64,
    /// Where the next page starts.
    pub next_offset: i64,
    /// Log bytes stored so far.
    pub total: i64,
    /// The task ended and everything was read.
    pub complete: bool,
    /// Records from `offset`.
    pub records: Vec<LogRecord>,
}

/// One record of a log page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    /// Byte offset in the task's log.
    pub offset: i64,
    /// 1 stdout, 2 stderr, 3-5 other channels (see the protocol).
    #[schemars(range(min = 1, max = 5))]
    pub channel: u8,
    /// When the builder read the bytes (unix microseconds).
    pub timestamp_us: i64,
    /// Bytes in the record.
    pub len: usize,
    /// The bytes as UTF-8, invalid sequences replaced; `format=raw` gives
    /// the exact bytes.
    pub text: String,
}

/// A builder, connected or seen before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    /// Name (the token's subject).
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Its address.
    pub peer: Option<String>,
    /// Its software and version.
    pub software: String,
    /// Offered platforms.
    pub platforms: Vec<BuilderPlatform>,
    /// Connection time when online, else last seen (unix ms).
    pub since: i64,
}

/// One platform a builder offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderPlatform {
    /// Platform tuple.
    pub name: String,
    /// Instances (slots).
    pub instances: u32,
    /// Tasks running in its slots (connected builders only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Vec<String>>,
}

/// Answer of `DELETE /api/events/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    /// The deleted event.
    pub deleted: String,
}

/// Answer of the hook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum HookReply {
    /// A new event.
    Accepted {
        /// Its id.
        event_id: String,
        /// Tasks queued.
        tasks: usize,
        /// The saifile's warnings (`<source>:<line>:<column>: <message>`),
        /// e.g. a misspelt key; `sai notify` and the hooks print them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// The project already has an event of this commit.
    Duplicate {
        /// That event.
        event_id: Option<String>,
        /// Always true.
        duplicate: bool,
    },
    /// Not built (a branch starting with `_`).
    Ignored {
        /// Why.
        ignored: String,
    },
}
