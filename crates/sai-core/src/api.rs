//! Response types of sai-server's operations API (`/api/...`) and of the
//! hook endpoint. The server serialises exactly these, the OpenAPI document
//! at `/api/openapi.json` is generated from them, and clients (sai-web, the
//! `sai` CLI) deserialise them. Unknown fields are refused, so a field the
//! server sends but the types lack is caught by the API test.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::junit::TestOutcome;
use crate::task::{EventState, TaskState};

/// An error answer: `{"error": ..., "detail"?: ...}`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Error {
    /// What went wrong, short.
    pub error: String,
    /// More, e.g. `file:line:col: message` for a saifile that does not parse.
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

/// An event: one push of one commit. Its optional members are left out
/// when absent, except `source_ip`, which is always sent (`null` when unknown).
#[serde_with::skip_serializing_none]
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
    #[serialize_always]
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
    pub tasks: Option<Vec<Task>>,
    /// Tasks per state (`GET /api/events/{id}` only).
    pub task_states: Option<BTreeMap<TaskState, usize>>,
    /// When the event is expected to be done (unix ms; `GET /api/events/{id}`
    /// of an open event only): per platform, the estimated work queued up to
    /// it divided by the instances builders offer (docs/web.md, "Estimates").
    /// Absent when any of that work has no history or no builder offers one
    /// of its platforms.
    pub expected_finish: Option<i64>,
    /// The last commit status report to the forge, when the project has
    /// one configured (`GET /api/events/{id}` only; kept in memory).
    pub commit_status: Option<Delivery>,
    /// The last completion webhook call, when the project has one
    /// (`GET /api/events/{id}` only; kept in memory).
    pub webhook: Option<Delivery>,
    /// `tasks` is one page: pass this as `cursor` for the next one
    /// (`GET /api/events/{id}` only, absent on the last page).
    pub next_cursor: Option<String>,
    /// The event this one builds again (made by `POST
    /// /api/events/{id}/again`, e.g. `sai notify --rebuild`).
    pub rebuild_of: Option<String>,
}

impl From<&crate::task::Event> for Event {
    /// The API view of a stored event, without its tasks and the details
    /// only `GET /api/events/{id}` adds.
    fn from(e: &crate::task::Event) -> Self {
        Self {
            id: e.id.to_string(),
            project: e.project.clone(),
            git_ref: e.git_ref.clone(),
            hash: e.hash.clone(),
            fetch_url: e.fetch_url.clone(),
            source_ip: e.source_ip.clone(),
            created: e.created,
            last_updated: e.last_updated,
            state: e.state,
            sec: e.sec,
            task_count: e.task_count,
            tasks: None,
            task_states: None,
            expected_finish: None,
            commit_status: None,
            webhook: None,
            next_cursor: None,
            rebuild_of: e.rebuild_of.as_ref().map(ToString::to_string),
        }
    }
}

/// The latest attempt to tell something outside Sai about an event (a
/// commit status on the forge, a webhook).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// What was being reported: the state sent to the forge (`pending`,
    /// `success`, `failure`, `error`; GitLab `failed`, `canceled`) or the
    /// event state sent to the webhook.
    pub state: String,
    /// Attempts for this state so far.
    pub attempts: u32,
    /// When the last attempt ended (unix ms).
    pub last_attempt: i64,
    /// The last attempt was accepted (HTTP 2xx).
    pub delivered: bool,
    /// HTTP status of the last answer, if one came.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When the next attempt is due (unix ms), while retrying.
    pub next_attempt: Option<i64>,
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
    /// Expected duration of a waiting or running task (ms): the median of
    /// the latest successful runs of its project, configuration and
    /// platform. Absent without such history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_ms: Option<i64>,
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
    /// Byte offset asked for (the start of the line asked for with `line`).
    pub offset: i64,
    /// Where the next page starts.
    pub next_offset: i64,
    /// Log bytes stored so far.
    pub total: i64,
    /// The task ended and everything was read.
    pub complete: bool,
    /// Records from `offset`.
    pub records: Vec<LogRecord>,
    /// Newlines before `offset`: the 0-based number of the line holding
    /// its first byte (`line=N` asks for the page starting at line `N`).
    #[serde(default)]
    pub first_line: i64,
    /// Newlines in the stored log (its complete lines).
    #[serde(default)]
    pub newlines: i64,
    /// Lines in the stored log, counting an unterminated last one.
    #[serde(default)]
    pub lines: i64,
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
    /// Its latest load report (connected builders that sent one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<BuilderLoad>,
}

/// A connected builder's latest load report (protocol message `load`):
/// the report as the builder sent it, when it arrived, and whether the
/// scheduler holds work back for lack of disk. The report's
/// `disk_floor_bytes` is the floor in force: the larger of the builder's
/// own floor and the server's `builder_min_free_disk_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderLoad {
    /// When it arrived (unix ms).
    pub reported: i64,
    /// The report's probes, flattened into this object.
    #[serde(flatten)]
    pub report: crate::protocol::BuilderLoad,
    /// True when `disk_free_bytes` is below `disk_floor_bytes`: the
    /// scheduler offers it nothing.
    pub below_disk_floor: bool,
}

/// One platform a builder offers.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderPlatform {
    /// Platform tuple.
    pub name: String,
    /// Instances (slots).
    pub instances: u32,
    /// Tasks running in its slots (connected builders only).
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
    /// The project already has an event of this commit on this ref.
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

/// One test case of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Suite (JUnit `classname`, or the enclosing `testsuite`).
    pub suite: String,
    /// Name.
    pub name: String,
    /// Result.
    pub result: TestOutcome,
    /// Duration (ms), when the report gives it.
    pub duration_ms: Option<i64>,
    /// Why it failed, errored or was skipped (the end of it, when long).
    pub message: Option<String>,
    /// The report file it came from.
    pub report: String,
}

/// One test report a task uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestReport {
    /// File name (also downloadable among the task's artifacts).
    pub name: String,
    /// Test cases recorded from it.
    pub cases: i64,
    /// Why it was refused (not well-formed, too large, a DTD...), if it was.
    pub refused: Option<String>,
    /// Arrival (unix ms).
    pub created: i64,
}

/// `GET /api/tasks/{id}/tests`: a task's test results, failed first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskTests {
    /// The task.
    pub task_id: String,
    /// Test cases per result.
    pub counts: BTreeMap<TestOutcome, usize>,
    /// Reports uploaded.
    pub reports: Vec<TestReport>,
    /// Test cases: failed, errored, passed, skipped; report order inside.
    pub cases: Vec<TestCase>,
}

/// Where a test failed in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFailure {
    /// The task.
    pub task_id: String,
    /// Its configuration.
    pub configuration: String,
    /// Its platform.
    pub platform: String,
    /// `fail` or `error`.
    pub result: TestOutcome,
    /// The message.
    pub message: Option<String>,
}

/// A test that failed in at least one task of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailedTest {
    /// Suite.
    pub suite: String,
    /// Name.
    pub name: String,
    /// Platforms it failed on, sorted.
    pub platforms: Vec<String>,
    /// It also passed at this commit somewhere (another task, or a rebuild).
    pub flaky: bool,
    /// Each failure.
    pub failures: Vec<TestFailure>,
}

/// `GET /api/events/{id}/tests`: the tests that failed anywhere in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTests {
    /// The event.
    pub event_id: String,
    /// Test cases per result over all its tasks.
    pub counts: BTreeMap<TestOutcome, usize>,
    /// Failed tests, by suite and name.
    pub failed: Vec<FailedTest>,
}

/// One recorded run of a test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRun {
    /// Event.
    pub event_id: String,
    /// Task.
    pub task_id: String,
    /// Commit.
    pub hash: String,
    /// Ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Configuration.
    pub configuration: String,
    /// Platform.
    pub platform: String,
    /// Result.
    pub result: TestOutcome,
    /// Duration (ms).
    pub duration_ms: Option<i64>,
    /// When it was recorded (unix ms).
    pub recorded: i64,
}

/// `GET /api/projects/{name}/tests?suite=..&name=..`: a test's recent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestHistory {
    /// Project.
    pub project: String,
    /// Suite.
    pub suite: String,
    /// Name.
    pub name: String,
    /// Some commit among the runs both failed and passed it.
    pub flaky: bool,
    /// Those commits.
    pub flaky_commits: Vec<String>,
    /// Runs, newest first (rebuilt tasks' earlier runs included).
    pub runs: Vec<TestRun>,
}
