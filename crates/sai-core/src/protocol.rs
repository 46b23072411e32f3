//! Builder <-> server protocol, version [`PROTOCOL_VERSION`].
//!
//! Sans-I/O: this module only defines the messages and their encodings; the
//! server (`sai-server`) and the builder (`sai-builder`) own the websocket.
//! The full description, with a sequence example, is in `docs/protocol.md`.
//!
//! # Transport
//! A builder opens a websocket to `ws[s]://<server>/builder` (also
//! `/sai/builder`) with `Authorization: Bearer <PASETO v4.public builder
//! token>` in the upgrade request. Without a valid token the upgrade is
//! refused with HTTP 401 before any message is exchanged.
//!
//! # Text frames
//! One JSON object per text frame, internally tagged by `"type"`:
//! [`BuilderMessage`] from the builder, [`ServerMessage`] from the server.
//! The builder's first message must be [`BuilderMessage::Hello`]; the server
//! answers [`ServerMessage::Welcome`] or closes with
//! [`CLOSE_UNSUPPORTED_VERSION`] / [`CLOSE_POLICY`] and a reason. A builder
//! receiving a `welcome` with another `protocol_version` closes with
//! [`CLOSE_UNSUPPORTED_VERSION`] too.
//!
//! # Binary frames
//! Log bytes and artifact contents travel as binary frames, never as JSON or
//! base64: a [`FRAME_HEADER_LEN`]-byte header ([`FrameHeader`]) followed by at
//! most [`MAX_FRAME_PAYLOAD`] payload bytes. See [`encode_frame`] and
//! [`decode_frame`].
//!
//! # Flow control
//! Credit based, per connection: `welcome.log_window` is the initial credit
//! in payload bytes. Every binary frame consumes its payload length; the
//! builder must not send a frame larger than its remaining credit. The server
//! returns credit with [`ServerMessage::Credit`] once the bytes are stored.
//! A builder exceeding its credit is closed with [`CLOSE_POLICY`].

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// Websocket path of the builder endpoint (also served under `/sai/builder`).
pub const BUILDER_PATH: &str = "/builder";
pub use crate::task::{EVENT_ID_LEN, TASK_ID_LEN};
/// Largest payload of one binary frame.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
/// Size of the binary frame header.
pub const FRAME_HEADER_LEN: usize = 4 + 8 + TASK_ID_LEN;

/// Websocket close code: the peer speaks a protocol version we do not.
pub const CLOSE_UNSUPPORTED_VERSION: u16 = 4001;
/// Websocket close code: the peer broke a rule (standard 1008 "policy violation"):
/// hello not matching the token, credit exceeded, revoked token.
pub const CLOSE_POLICY: u16 = 1008;
/// Websocket close code: malformed message (standard 1002 "protocol error").
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Websocket close code: a newer connection with the same builder name
/// replaced this one.
pub const CLOSE_REPLACED: u16 = 4002;

/// Log channel: stdout of a step.
pub const CHANNEL_STDOUT: u8 = 1;
/// Log channel: stderr of a step.
pub const CHANNEL_STDERR: u8 = 2;
/// Log channel: Sai notices (builder messages, `SAI_LOGPROXY`).
pub const CHANNEL_NOTICE: u8 = 3;
/// Log channel: device tty0.
pub const CHANNEL_TTY0: u8 = 4;
/// Log channel: device tty1.
pub const CHANNEL_TTY1: u8 = 5;

/// One platform a builder offers, with how many tasks of it may run at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformOffer {
    /// Platform tuple, e.g. `linux-debian-12/x86_64-amd/gcc`.
    pub name: String,
    /// Concurrent task slots for this platform (at least 1).
    pub instances: u32,
}

/// Free capacity of one offered platform, in [`BuilderMessage::Capacity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCapacity {
    /// Platform tuple, as offered in the hello.
    pub name: String,
    /// Instances of it that could take a task now (0 when none is free or
    /// the disk is too full to accept work).
    pub free: u32,
}

/// Messages from builder to server (text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuilderMessage {
    /// First message on a connection.
    Hello {
        /// Must equal the server's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Builder name; must equal the token's `sub`.
        builder: String,
        /// Platforms offered; each must be matched by a platform of the token.
        platforms: Vec<PlatformOffer>,
        /// Builder software name and version, informational.
        software: String,
        /// Tasks this builder is still running for this server from an
        /// earlier connection (the server restarted or the link dropped),
        /// claimed back. The server answers each with
        /// [`ServerMessage::ResumeTask`] or [`ServerMessage::ClaimRefused`]
        /// after its welcome. Absent (empty) when none; older servers ignore it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        held: Vec<HeldTask>,
    },
    /// The builder takes the offered task and starts it.
    Accept {
        /// Task offered.
        task_id: String,
    },
    /// The builder will not run the offered task now (busy, no space...);
    /// the server offers it elsewhere and does not count an attempt.
    Reject {
        /// Task offered.
        task_id: String,
        /// Human readable reason.
        reason: String,
    },
    /// A step (0-based index into `offer.steps`) started.
    StepStarted {
        /// Running task.
        task_id: String,
        /// 0-based step index.
        step: u32,
    },
    /// A step ended.
    StepFinished {
        /// Running task.
        task_id: String,
        /// 0-based step index.
        step: u32,
        /// Exit status of the step's shell.
        exit_code: i32,
        /// Wall clock duration in milliseconds.
        duration_ms: u64,
    },
    /// An artifact upload starts; `size` bytes follow as binary frames of kind
    /// [`FrameKind::Artifact`] for this task, then [`BuilderMessage::ArtifactEnd`].
    /// Only one artifact per task is open at a time.
    ArtifactBegin {
        /// Running task.
        task_id: String,
        /// Path relative to the task's checkout, `/`-separated (e.g.
        /// `out/result.txt`): a valid [`crate::artifact_name`]; the server
        /// refuses any other name and serves the file under this path.
        name: String,
        /// Total bytes that follow.
        size: u64,
        /// Lowercase hex sha256 of the content.
        sha256: String,
        /// The file is a JUnit XML test report (the saifile's
        /// `test_reports`), uploaded after the steps whether they passed or
        /// failed; the server stores it like an artifact and records its test
        /// cases. Absent (false) for plain artifacts; older servers ignore it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        test_report: bool,
    },
    /// All bytes of the open artifact were sent.
    ArtifactEnd {
        /// Running task.
        task_id: String,
    },
    /// The builder's free capacity changed (an instance was freed, possibly
    /// by another connection sharing it, or housekeeping freed disk). The
    /// server offers this connection again the tasks it declined on the
    /// platforms listed with `free > 0`, without waiting for a task to end.
    Capacity {
        /// Every platform offered on this connection with its free instances.
        platforms: Vec<PlatformCapacity>,
    },
    /// The builder is going away (operator stop): offer it nothing more.
    /// Its running tasks come back as `handed_back`; should the link close
    /// before those arrive, the server requeues them without counting an
    /// attempt or an infrastructure failure.
    ShuttingDown,
    /// The task is over. Log frames for it must be sent before this message.
    TaskFinished {
        /// Running task.
        task_id: String,
        /// Outcome.
        result: TaskResult,
    },
    /// How loaded the builder is: sent after the welcome, every
    /// [`LOAD_REPORT_SECS`] seconds and when a task starts or ends. The
    /// server keeps the latest per connection and offers no work while
    /// `disk_free_bytes` is below the floor. An optional addition to
    /// version 2 (like `shutting_down`): a server that predates it answers
    /// `error` and ignores it.
    Load(BuilderLoad),
}

/// A task a builder kept running across a lost link, in
/// [`BuilderMessage::Hello::held`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTask {
    /// The task.
    pub task_id: String,
    /// The offered platform (slot) it runs in, as in its offer.
    pub offer_platform: String,
    /// Log bytes the builder has produced for it so far (it holds all of
    /// them and resends from the offset the server names).
    pub log_bytes: u64,
    /// Whether the task has ended on the builder (its result is held).
    pub finished: bool,
}

/// Interval of [`BuilderMessage::Load`] reports, in seconds.
pub const LOAD_REPORT_SECS: u64 = 10;

/// A builder's load, in [`BuilderMessage::Load`]. Every probe is optional:
/// a value the builder's platform cannot measure is left out. The
/// operations API shows it inside [`crate::api::BuilderLoad`].
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BuilderLoad {
    /// One-minute load average times 100 (`150` is 1.5).
    pub load_avg_1m_centi: Option<u32>,
    /// Logical CPUs of the host.
    pub cpus: Option<u32>,
    /// Total memory in bytes.
    pub mem_total_bytes: Option<u64>,
    /// Memory available to new processes in bytes.
    pub mem_available_bytes: Option<u64>,
    /// Bytes free to unprivileged users on the file system of the job
    /// directories.
    pub disk_free_bytes: Option<u64>,
    /// The builder's own floor (`min_free_disk_bytes`; 0 for none).
    #[serde(default)]
    pub disk_floor_bytes: u64,
    /// Tasks running on the builder now, over all its connections.
    #[serde(default)]
    pub running_tasks: u32,
}

/// How a task ended on the builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TaskResult {
    /// Every step exited 0.
    Success,
    /// A step failed: the build is broken.
    Failed {
        /// Exit status of the failing step.
        exit_code: i32,
        /// 0-based index of the failing step.
        step: u32,
    },
    /// Stopped after a [`ServerMessage::Cancel`].
    Cancelled,
    /// The builder could not run the task (checkout failed, disk full...):
    /// not the build's fault; counts as an infrastructure attempt.
    InfraError {
        /// What went wrong.
        reason: String,
    },
    /// The builder stopped the task because it is going away by operator
    /// request (e.g. SIGTERM): the server requeues it at once, without
    /// counting an infrastructure failure, and notes `reason` in the task log.
    HandedBack {
        /// Why, e.g. "sai-builder on host1 is shutting down".
        reason: String,
    },
}

/// Messages from server to builder (text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to a valid hello.
    Welcome {
        /// The server's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Server software name and version.
        server: String,
        /// Initial flow-control credit in payload bytes.
        log_window: u64,
        /// Largest payload of one binary frame.
        max_frame_payload: u32,
    },
    /// Run this task (all its steps) on one instance of `task.offer_platform`.
    Offer {
        /// The task (boxed: it is much larger than the other messages).
        task: Box<TaskOffer>,
    },
    /// Stop this task; answer with `task_finished` / `cancelled`.
    Cancel {
        /// Task to stop.
        task_id: String,
        /// Why (operator cancel, rebuild, event deleted).
        reason: String,
    },
    /// More flow-control credit, in payload bytes.
    Credit {
        /// Bytes granted.
        bytes: u64,
    },
    /// A message was refused; the connection stays up.
    Error {
        /// Task concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
        /// What was wrong.
        message: String,
    },
    /// The server is stopping to restart (SIGTERM): the link closes next.
    /// The builder keeps its running tasks going, holds their log and
    /// results and claims them in the hello of its next connection; the
    /// restarted server keeps them for `grace_secs`.
    Restarting {
        /// How long the restarted server keeps a running task for its
        /// builder to come back (`restart_grace_secs`).
        grace_secs: u64,
    },
    /// A claimed task ([`HeldTask`]) is this builder's again: resend its
    /// log from `log_offset` (the builder bytes the server has stored; no
    /// gap, no duplicate), then carry on as before.
    ResumeTask {
        /// The task.
        task_id: String,
        /// Log bytes of the task the server has stored.
        log_offset: u64,
    },
    /// A claimed task is not this builder's any more (cancelled, deleted,
    /// requeued or given to another builder): kill it and report nothing.
    ClaimRefused {
        /// The task.
        task_id: String,
        /// Why.
        reason: String,
    },
}

/// Everything a builder needs to run a task without asking again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOffer {
    /// 64-hex task id.
    pub task_id: String,
    /// 32-hex event id (the first half of the task id).
    pub event_id: String,
    /// Project (repository) name; `SAI_PROJECT`.
    pub project: String,
    /// Git URL to fetch from.
    pub fetch_url: String,
    /// Ref pushed, e.g. `refs/heads/main`; `SAI_REMOTE_REF`.
    pub git_ref: String,
    /// Commit hash to check out.
    pub hash: String,
    /// Configuration name from the saifile.
    pub configuration: String,
    /// Platform the task asked for.
    pub platform: String,
    /// The builder's offered platform this task was matched to (its slot).
    pub offer_platform: String,
    /// Shell steps, run in order in the checkout; the first failing one ends the task.
    pub steps: Vec<String>,
    /// Artifact globs to upload after success.
    pub artifacts: Vec<String>,
    /// Packages the build environment needs.
    pub packages: Vec<String>,
    /// 1 for the first try; higher after infrastructure failures.
    pub attempt: u32,
    /// JUnit XML report globs, relative to the checkout, to upload after the
    /// steps (passed or failed) with `artifact_begin.test_report`. Absent
    /// when the configuration has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_reports: Vec<String>,
}

/// Kind of a binary frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Log bytes of a channel.
    Log = 1,
    /// Bytes of the open artifact.
    Artifact = 2,
}

/// Header of a binary frame.
///
/// Layout (big endian): `kind: u8`, `channel: u8` (log channel 1..=5, 0 for
/// artifacts), `reserved: u16 = 0`, `timestamp_us: u64` (unix microseconds
/// when the bytes were read), `task_id: [u8; 64]` ASCII, then the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    /// Log or artifact.
    pub kind: FrameKind,
    /// Log channel (0 for artifacts).
    pub channel: u8,
    /// Unix time in microseconds.
    pub timestamp_us: u64,
    /// Task the bytes belong to.
    pub task_id: String,
}

/// Why a binary frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error("binary frame of {0} bytes is shorter than its {FRAME_HEADER_LEN}-byte header")]
    Short(usize),
    /// Unknown kind byte.
    #[error("binary frame kind {0} is unknown (1 log, 2 artifact)")]
    Kind(u8),
    /// Channel outside 1..=5 for a log frame, or not 0 for an artifact frame.
    #[error("binary frame channel {0} is invalid for its kind")]
    Channel(u8),
    /// Reserved bytes not zero.
    #[error("binary frame reserved bytes are not zero")]
    Reserved,
    /// The task id is not 64 uppercase hex characters.
    #[error("binary frame task id is not 64 uppercase hex characters")]
    TaskId,
    /// Payload larger than [`MAX_FRAME_PAYLOAD`].
    #[error("binary frame payload of {0} bytes exceeds {MAX_FRAME_PAYLOAD}")]
    TooLarge(usize),
}

/// Encode a binary frame. Panics only in debug builds if `payload` exceeds
/// [`MAX_FRAME_PAYLOAD`] or the header is invalid; callers split payloads.
pub fn encode_frame(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_FRAME_PAYLOAD);
    debug_assert!(is_task_id(&header.task_id));
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.push(header.kind as u8);
    out.push(header.channel);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&header.timestamp_us.to_be_bytes());
    out.extend_from_slice(header.task_id.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decode a binary frame into its header and payload.
pub fn decode_frame(bytes: &[u8]) -> Result<(FrameHeader, &[u8]), FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Short(bytes.len()));
    }
    let kind = match bytes[0] {
        1 => FrameKind::Log,
        2 => FrameKind::Artifact,
        k => return Err(FrameError::Kind(k)),
    };
    let channel = bytes[1];
    match kind {
        FrameKind::Log if !(CHANNEL_STDOUT..=CHANNEL_TTY1).contains(&channel) => {
            return Err(FrameError::Channel(channel));
        }
        FrameKind::Artifact if channel != 0 => return Err(FrameError::Channel(channel)),
        _ => {}
    }
    if bytes[2] != 0 || bytes[3] != 0 {
        return Err(FrameError::Reserved);
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&bytes[4..12]);
    let id = &bytes[12..FRAME_HEADER_LEN];
    let task_id = std::str::from_utf8(id).map_err(|_| FrameError::TaskId)?;
    if !is_task_id(task_id) {
        return Err(FrameError::TaskId);
    }
    let payload = &bytes[FRAME_HEADER_LEN..];
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    Ok((
        FrameHeader {
            kind,
            channel,
            timestamp_us: u64::from_be_bytes(ts),
            task_id: task_id.to_string(),
        },
        payload,
    ))
}

/// True for a 32-character uppercase hex event id ([`crate::task::EventId`]).
pub fn is_event_id(s: &str) -> bool {
    crate::task::EventId::parse(s).is_ok()
}

/// True for a 64-character uppercase hex task id ([`crate::task::TaskId`]).
pub fn is_task_id(s: &str) -> bool {
    crate::task::TaskId::event_of(s).is_some()
}

/// The event id a task id belongs to, if `task_id` is valid.
pub fn event_of_task(task_id: &str) -> Option<&str> {
    crate::task::TaskId::event_of(task_id)
}

/// The protocol version a first text frame announces, without requiring the
/// rest of it to match this version's `hello` shape. `None` if the frame is
/// not a JSON object of `"type": "hello"` with an integer `protocol_version`.
pub fn hello_version(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        protocol_version: u64,
    }
    let p: Probe = serde_json::from_str(text).ok()?;
    (p.kind == "hello").then_some(p.protocol_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF";

    /// The exact wire bytes of a log frame and an artifact frame. Encoders
    /// on every architecture (this test also runs on big-endian s390x under
    /// qemu in CI) must produce these bytes, and decode them back.
    #[test]
    fn binary_frames_have_these_exact_wire_bytes() {
        let log = FrameHeader {
            kind: FrameKind::Log,
            channel: CHANNEL_STDERR,
            timestamp_us: 0x0102_0304_0506_0708,
            task_id: TID.into(),
        };
        let mut want = vec![0x01, 0x02, 0x00, 0x00];
        want.extend_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]);
        want.extend_from_slice(TID.as_bytes());
        want.extend_from_slice(b"hi\n");
        let bytes = encode_frame(&log, b"hi\n");
        assert_eq!(bytes, want);
        assert_eq!(bytes.len(), 4 + 8 + 64 + 3);
        let (h, p) = decode_frame(&want).unwrap();
        assert_eq!((h, p), (log, &b"hi\n"[..]));

        let art = FrameHeader {
            kind: FrameKind::Artifact,
            channel: 0,
            timestamp_us: 1_700_000_000_123_456, // 0x00060A2418202240
            task_id: TID.into(),
        };
        let mut want = vec![0x02, 0x00, 0x00, 0x00];
        want.extend_from_slice(&[0x00, 0x06, 0x0A, 0x24, 0x18, 0x20, 0x22, 0x40]);
        want.extend_from_slice(TID.as_bytes());
        want.extend_from_slice(&[0xFF, 0x00]);
        assert_eq!(encode_frame(&art, &[0xFF, 0x00]), want);
        assert_eq!(
            decode_frame(&want).unwrap().0.timestamp_us,
            1_700_000_000_123_456
        );
    }

    #[test]
    fn frame_round_trip() {
        let h = FrameHeader {
            kind: FrameKind::Log,
            channel: CHANNEL_STDERR,
            timestamp_us: 1_700_000_000_000_000,
            task_id: TID.into(),
        };
        let bytes = encode_frame(&h, b"hello\n");
        assert_eq!(bytes.len(), FRAME_HEADER_LEN + 6);
        let (h2, p) = decode_frame(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(p, b"hello\n");
    }

    #[test]
    fn frame_rejections() {
        let h = FrameHeader {
            kind: FrameKind::Artifact,
            channel: 0,
            timestamp_us: 0,
            task_id: TID.into(),
        };
        let good = encode_frame(&h, b"x");
        assert_eq!(decode_frame(&good[..10]), Err(FrameError::Short(10)));
        let mut b = good.clone();
        b[0] = 9;
        assert_eq!(decode_frame(&b), Err(FrameError::Kind(9)));
        let mut b = good.clone();
        b[1] = 1;
        assert_eq!(decode_frame(&b), Err(FrameError::Channel(1)));
        let mut b = good.clone();
        b[0] = 1;
        b[1] = 6;
        assert_eq!(decode_frame(&b), Err(FrameError::Channel(6)));
        let mut b = good.clone();
        b[3] = 1;
        assert_eq!(decode_frame(&b), Err(FrameError::Reserved));
        let mut b = good.clone();
        b[12] = b'a';
        assert_eq!(decode_frame(&b), Err(FrameError::TaskId));
        let mut b = good;
        b.truncate(FRAME_HEADER_LEN);
        b.extend(std::iter::repeat_n(0u8, MAX_FRAME_PAYLOAD + 1));
        assert_eq!(
            decode_frame(&b),
            Err(FrameError::TooLarge(MAX_FRAME_PAYLOAD + 1))
        );
    }

    #[test]
    fn messages_are_type_tagged_snake_case() {
        let m = BuilderMessage::TaskFinished {
            task_id: TID.into(),
            result: TaskResult::Failed {
                exit_code: 2,
                step: 1,
            },
        };
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(
            j,
            format!(
                r#"{{"type":"task_finished","task_id":"{TID}","result":{{"outcome":"failed","exit_code":2,"step":1}}}}"#
            )
        );
        assert_eq!(serde_json::from_str::<BuilderMessage>(&j).unwrap(), m);
        let c = ServerMessage::Credit { bytes: 5 };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"credit","bytes":5}"#
        );
    }

    #[test]
    fn capacity_and_handed_back_shapes() {
        let m = BuilderMessage::Capacity {
            platforms: vec![PlatformCapacity {
                name: "linux".into(),
                free: 1,
            }],
        };
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(
            j,
            r#"{"type":"capacity","platforms":[{"name":"linux","free":1}]}"#
        );
        assert_eq!(serde_json::from_str::<BuilderMessage>(&j).unwrap(), m);
        let r = TaskResult::HandedBack {
            reason: "stopping".into(),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"outcome":"handed_back","reason":"stopping"}"#);
        assert_eq!(serde_json::from_str::<TaskResult>(&j).unwrap(), r);
    }

    /// The exact text of a `load` message: builders and servers of any
    /// build must agree on it.
    #[test]
    fn load_message_has_this_exact_wire_text() {
        let m = BuilderMessage::Load(BuilderLoad {
            load_avg_1m_centi: Some(150),
            cpus: Some(4),
            mem_total_bytes: Some(8_000_000_000),
            mem_available_bytes: Some(6_000_000_000),
            disk_free_bytes: Some(1_073_741_824),
            disk_floor_bytes: 2_147_483_648,
            running_tasks: 2,
        });
        let want = r#"{"type":"load","load_avg_1m_centi":150,"cpus":4,"mem_total_bytes":8000000000,"mem_available_bytes":6000000000,"disk_free_bytes":1073741824,"disk_floor_bytes":2147483648,"running_tasks":2}"#;
        assert_eq!(serde_json::to_string(&m).unwrap(), want);
        assert_eq!(serde_json::from_str::<BuilderMessage>(want).unwrap(), m);
        // A builder that cannot measure anything sends only the counts.
        let bare = r#"{"type":"load","disk_floor_bytes":0,"running_tasks":0}"#;
        assert_eq!(
            serde_json::from_str::<BuilderMessage>(bare).unwrap(),
            BuilderMessage::Load(BuilderLoad::default())
        );
        assert_eq!(
            serde_json::to_string(&BuilderMessage::Load(BuilderLoad::default())).unwrap(),
            bare
        );
    }

    /// The exact text of the restart messages (appended to version 2).
    #[test]
    fn restart_messages_have_this_exact_wire_text() {
        let hello = BuilderMessage::Hello {
            protocol_version: 2,
            builder: "b1".into(),
            platforms: vec![PlatformOffer {
                name: "linux".into(),
                instances: 1,
            }],
            software: "sai-builder".into(),
            held: vec![HeldTask {
                task_id: TID.into(),
                offer_platform: "linux".into(),
                log_bytes: 4096,
                finished: false,
            }],
        };
        let want = format!(
            r#"{{"type":"hello","protocol_version":2,"builder":"b1","platforms":[{{"name":"linux","instances":1}}],"software":"sai-builder","held":[{{"task_id":"{TID}","offer_platform":"linux","log_bytes":4096,"finished":false}}]}}"#
        );
        assert_eq!(serde_json::to_string(&hello).unwrap(), want);
        assert_eq!(
            serde_json::from_str::<BuilderMessage>(&want).unwrap(),
            hello
        );
        // A hello without held tasks is the version 2 hello of before.
        let plain =
            r#"{"type":"hello","protocol_version":2,"builder":"b1","platforms":[],"software":"s"}"#;
        let m: BuilderMessage = serde_json::from_str(plain).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), plain);
        let cases = [
            (
                ServerMessage::Restarting { grace_secs: 120 },
                r#"{"type":"restarting","grace_secs":120}"#.to_string(),
            ),
            (
                ServerMessage::ResumeTask {
                    task_id: TID.into(),
                    log_offset: 7,
                },
                format!(r#"{{"type":"resume_task","task_id":"{TID}","log_offset":7}}"#),
            ),
            (
                ServerMessage::ClaimRefused {
                    task_id: TID.into(),
                    reason: "cancelled".into(),
                },
                format!(r#"{{"type":"claim_refused","task_id":"{TID}","reason":"cancelled"}}"#),
            ),
        ];
        for (m, text) in cases {
            assert_eq!(serde_json::to_string(&m).unwrap(), text);
            assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), m);
        }
    }

    #[test]
    fn hello_version_probe() {
        assert_eq!(
            hello_version(r#"{"type":"hello","protocol_version":7,"whatever":1}"#),
            Some(7)
        );
        assert_eq!(
            hello_version(r#"{"type":"accept","protocol_version":1}"#),
            None
        );
        assert_eq!(hello_version("nope"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_frame_round_trips(
            log in proptest::bool::ANY,
            channel in 1u8..=5,
            ts in proptest::num::u64::ANY,
            id in "[0-9A-F]{64}",
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            let h = FrameHeader {
                kind: if log { FrameKind::Log } else { FrameKind::Artifact },
                channel: if log { channel } else { 0 },
                timestamp_us: ts,
                task_id: id,
            };
            let bytes = encode_frame(&h, &payload);
            let (h2, p2) = decode_frame(&bytes).unwrap();
            proptest::prop_assert_eq!(h2, h);
            proptest::prop_assert_eq!(p2, &payload[..]);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode_frame(&bytes);
        }
    }

    #[test]
    fn ids() {
        assert!(is_task_id(TID));
        assert_eq!(event_of_task(TID), Some(&TID[..32]));
        assert!(!is_event_id("../../etc/passwd"));
        assert!(!is_task_id(&TID.to_lowercase()));
    }
}
