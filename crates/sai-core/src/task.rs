//! The task model: ids, states, and the record of one task's run.
//!
//! Every other module names a state through [`TaskState`] or [`EventState`]
//! (their text form is the serde form, used in the databases and the API);
//! ids are checked once, by [`EventId::parse`] and [`TaskId::parse`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::saifile::TaskSpec;

/// Length of an event id: 32 uppercase hex characters.
pub const EVENT_ID_LEN: usize = 32;
/// Length of a task id: its event id followed by 32 more uppercase hex characters.
pub const TASK_ID_LEN: usize = 64;

fn is_upper_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn upper_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Text that is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {what}")]
pub struct BadId {
    /// The text given.
    pub text: String,
    /// What was expected.
    pub what: &'static str,
}

/// An event id: 32 uppercase hex characters (16 random bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

/// A task id: its event's id followed by 32 uppercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl EventId {
    /// Check `s`.
    pub fn parse(s: &str) -> Result<EventId, BadId> {
        if is_upper_hex(s, EVENT_ID_LEN) {
            Ok(EventId(s.to_string()))
        } else {
            Err(BadId {
                text: s.to_string(),
                what: "an event id (32 uppercase hex characters)",
            })
        }
    }

    /// The id made of 16 (random) bytes.
    pub fn from_bytes(random: [u8; 16]) -> EventId {
        EventId(upper_hex(&random))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A task id of this event made of 16 (random) bytes.
    pub fn task(&self, random: [u8; 16]) -> TaskId {
        TaskId(format!("{}{}", self.0, upper_hex(&random)))
    }
}

impl TaskId {
    /// Check `s`.
    pub fn parse(s: &str) -> Result<TaskId, BadId> {
        if is_upper_hex(s, TASK_ID_LEN) {
            Ok(TaskId(s.to_string()))
        } else {
            Err(BadId {
                text: s.to_string(),
                what: "a task id (64 uppercase hex characters)",
            })
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the event this task belongs to.
    pub fn event(&self) -> EventId {
        EventId(self.0[..EVENT_ID_LEN].to_string())
    }

    /// The event id part of a task id given as text, if it is one.
    pub fn event_of(task_id: &str) -> Option<&str> {
        is_upper_hex(task_id, TASK_ID_LEN).then(|| &task_id[..EVENT_ID_LEN])
    }
}

macro_rules! id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $t {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                <$t>::parse(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = BadId;
            fn try_from(s: String) -> Result<Self, BadId> {
                <$t>::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}
id_impls!(EventId);
id_impls!(TaskId);

/// Text that is not a state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {what} state (expected one of: {expected})")]
pub struct BadState {
    /// The text given.
    pub text: String,
    /// `task` or `event`.
    pub what: &'static str,
    /// The known names.
    pub expected: String,
}

macro_rules! state_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, terminal: [$($term:ident),*], { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v),*
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            /// The states nothing moves out of on its own.
            pub const TERMINAL: &'static [$name] = &[$($name::$term),*];

            /// The name used in the databases and the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),*
                }
            }

            /// Is this state final?
            pub fn is_terminal(self) -> bool {
                Self::TERMINAL.contains(&self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = BadState;
            fn from_str(s: &str) -> Result<Self, BadState> {
                match s {
                    $($s => Ok($name::$v),)*
                    _ => Err(BadState {
                        text: s.to_string(),
                        what: $what,
                        expected: [$($s),*].join(", "),
                    }),
                }
            }
        }
    };
}

state_enum!(
    /// State of one task.
    TaskState, "task", terminal: [Success, Failed, Cancelled], {
        /// Not yet offered (or requeued).
        Waiting = "waiting",
        /// Offered to or running on a builder.
        Running = "running",
        /// All steps passed.
        Success = "success",
        /// A step failed, or too many infrastructure failures.
        Failed = "failed",
        /// Cancelled by an operator or the builder.
        Cancelled = "cancelled",
    }
);

state_enum!(
    /// State of an event, derived from its tasks' states ([`EventState::of`]).
    EventState, "event", terminal: [Success, Failed, Cancelled], {
        /// No task started yet.
        Waiting = "waiting",
        /// Some task started or ended; none failed.
        Running = "running",
        /// Tasks remain and at least one failed.
        RunningWithFailures = "running-with-failures",
        /// Every task succeeded (or there were none).
        Success = "success",
        /// Every task ended and at least one failed.
        Failed = "failed",
        /// Every task ended, none failed, at least one was cancelled.
        Cancelled = "cancelled",
    }
);

/// How many tasks of an event are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts([usize; 5]);

impl StateCounts {
    fn slot(s: TaskState) -> usize {
        match s {
            TaskState::Waiting => 0,
            TaskState::Running => 1,
            TaskState::Success => 2,
            TaskState::Failed => 3,
            TaskState::Cancelled => 4,
        }
    }

    /// Count one more task in `s`.
    pub fn add(&mut self, s: TaskState) {
        self.0[Self::slot(s)] += 1;
    }

    /// A task moved from `from` to `to`.
    pub fn moved(&mut self, from: TaskState, to: TaskState) {
        self.0[Self::slot(from)] -= 1;
        self.0[Self::slot(to)] += 1;
    }

    /// Tasks in `s`.
    pub fn get(&self, s: TaskState) -> usize {
        self.0[Self::slot(s)]
    }
}

impl FromIterator<TaskState> for StateCounts {
    fn from_iter<I: IntoIterator<Item = TaskState>>(states: I) -> StateCounts {
        let mut c = StateCounts::default();
        for s in states {
            c.add(s);
        }
        c
    }
}

impl EventState {
    /// The event state given its tasks' states.
    pub fn of(c: &StateCounts) -> EventState {
        use TaskState as T;
        let open = c.get(T::Waiting) + c.get(T::Running);
        let started = c.get(T::Running) + c.get(T::Success);
        let failed = c.get(T::Failed);
        let cancelled = c.get(T::Cancelled);
        if open == 0 {
            if failed > 0 {
                EventState::Failed
            } else if cancelled > 0 {
                EventState::Cancelled
            } else {
                EventState::Success
            }
        } else if failed > 0 {
            EventState::RunningWithFailures
        } else if started > 0 || cancelled > 0 {
            EventState::Running
        } else {
            EventState::Waiting
        }
    }
}

/// The mutable part of a task: what happened to it so far. The store row
/// ([`Task`]) embeds it and writes it as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunRecord {
    /// Current state.
    pub state: TaskState,
    /// Builder that runs (or last ran) it.
    pub builder: Option<String>,
    /// The builder's offered platform (its instance slot) it was matched to.
    pub instance: Option<String>,
    /// Exit code of the failing step.
    pub exit_code: Option<i64>,
    /// 0-based index of the failing step.
    pub failed_step: Option<i64>,
    /// Why it is waiting again, failed or was cancelled.
    pub reason: Option<String>,
    /// Offers accepted so far (hand-backs do not count).
    pub attempt: i64,
    /// Infrastructure failures so far.
    pub infra_failures: i64,
    /// Steps started in the current attempt.
    pub build_step: i64,
    /// Start of the current attempt (unix ms).
    pub started: Option<i64>,
    /// End (unix ms).
    pub ended: Option<i64>,
}

impl RunRecord {
    /// The record of a task never run.
    pub fn new() -> RunRecord {
        RunRecord {
            state: TaskState::Waiting,
            builder: None,
            instance: None,
            exit_code: None,
            failed_step: None,
            reason: None,
            attempt: 0,
            infra_failures: 0,
            build_step: 0,
            started: None,
            ended: None,
        }
    }
}

impl Default for RunRecord {
    fn default() -> Self {
        RunRecord::new()
    }
}

/// One task as stored: what the saifile asked for plus its run record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Id.
    pub id: TaskId,
    /// Position in saifile order.
    pub idx: i64,
    /// What the saifile asked for: configuration, platform, steps,
    /// artifact globs, packages and test report globs.
    pub spec: TaskSpec,
    /// Failed on this platform in the previous event of the same ref.
    pub priority: bool,
    /// Creation time (unix ms).
    pub created: i64,
    /// Last change (unix ms).
    pub last_updated: i64,
    /// What happened so far.
    pub run: RunRecord,
}

impl Task {
    /// The event this task belongs to.
    pub fn event_id(&self) -> EventId {
        self.id.event()
    }
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Id.
    pub id: EventId,
    /// Project name.
    pub project: String,
    /// Pushed ref.
    pub git_ref: String,
    /// Commit hash.
    pub hash: String,
    /// Clone URL.
    pub fetch_url: String,
    /// Peer address of the push.
    pub source_ip: Option<String>,
    /// Creation time (unix ms).
    pub created: i64,
    /// Last change (unix ms).
    pub last_updated: i64,
    /// State.
    pub state: EventState,
    /// Private event.
    pub sec: bool,
    /// Number of tasks.
    pub task_count: i64,
    /// Insertion order (older events are dispatched first).
    pub seq: i64,
    /// The event this one builds again (`POST /api/events/{id}/again`).
    pub rebuild_of: Option<EventId>,
}

impl Event {
    /// A new event as pushed; the store sets its times, state, task count
    /// and sequence number when it commits it.
    pub fn new(
        id: EventId,
        project: &str,
        git_ref: &str,
        hash: &str,
        fetch_url: &str,
        source_ip: Option<String>,
        sec: bool,
    ) -> Event {
        Event {
            id,
            project: project.into(),
            git_ref: git_ref.into(),
            hash: hash.into(),
            fetch_url: fetch_url.into(),
            source_ip,
            created: 0,
            last_updated: 0,
            state: EventState::Waiting,
            sec,
            task_count: 0,
            seq: 0,
            rebuild_of: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn of<const N: usize>(s: [TaskState; N]) -> EventState {
        EventState::of(&s.into_iter().collect())
    }

    #[test]
    fn event_states() {
        assert_eq!(of([]), EventState::Success);
        assert_eq!(of([Waiting, Waiting]), EventState::Waiting);
        assert_eq!(of([Waiting, Running]), EventState::Running);
        assert_eq!(of([Success, Waiting]), EventState::Running);
        assert_eq!(of([Failed, Running]), EventState::RunningWithFailures);
        assert_eq!(of([Success, Success]), EventState::Success);
        assert_eq!(of([Success, Failed]), EventState::Failed);
        assert_eq!(of([Success, Cancelled]), EventState::Cancelled);
        assert_eq!(of([Failed, Cancelled]), EventState::Failed);
    }

    #[test]
    fn states_round_trip_and_unknown_text_is_refused() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in EventState::ALL {
            assert_eq!(s.as_str().parse::<EventState>().unwrap(), *s);
        }
        let e = "runing".parse::<TaskState>().unwrap_err();
        assert!(e.to_string().contains("waiting, running"), "{e}");
        assert!(serde_json::from_str::<TaskState>("\"bogus\"").is_err());
        assert!("running-with-failures".parse::<TaskState>().is_err());
        assert!(TaskState::TERMINAL.iter().all(|s| s.is_terminal()));
        assert!(!Waiting.is_terminal() && !Running.is_terminal());
        assert!(!EventState::RunningWithFailures.is_terminal());
    }

    #[test]
    fn ids_own_their_rules() {
        let e = EventId::from_bytes([0xab; 16]);
        assert_eq!(e.as_str(), "AB".repeat(16));
        let t = e.task([1; 16]);
        assert_eq!(t.len(), TASK_ID_LEN);
        assert_eq!(t.event(), e);
        assert_eq!(TaskId::event_of(&t), Some(e.as_str()));
        assert!(EventId::parse(&"ab".repeat(16)).is_err(), "lower case");
        assert!(EventId::parse("ABC").is_err());
        assert!(TaskId::parse(e.as_str()).is_err());
        assert!(serde_json::from_str::<TaskId>("\"x\"").is_err());
        let back: TaskId = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
