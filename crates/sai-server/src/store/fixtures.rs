//! The event and task spec the store's unit tests push.

use sai_core::saifile::TaskSpec;
use sai_core::task::{Event, EventId, RunRecord, Task};

use super::{CreatedEvent, Store};

/// The id of [`event`].
pub(crate) fn event_id() -> EventId {
    EventId::parse("0123456789ABCDEF0123456789ABCDEF").unwrap()
}

/// A push of project `p`, commit `abc`, with the id [`event_id`].
pub(crate) fn event() -> Event {
    Event::new(
        event_id(),
        "p",
        "refs/heads/main",
        "abc",
        "https://x",
        None,
        false,
    )
}

/// A one-step task of configuration `configuration` on `linux`.
pub(crate) fn spec(configuration: &str) -> TaskSpec {
    TaskSpec {
        configuration: configuration.into(),
        platform: "linux".into(),
        steps: vec!["true".into()],
        artifacts: vec![],
        packages: vec![],
        test_reports: vec![],
    }
}

/// Task `i` of [`event`] as the store keeps it: configuration `c<i>` on
/// `linux`, one step `make`, created at 1, never run.
pub(super) fn task(i: u8) -> Task {
    Task {
        id: event_id().task([i; 16]),
        idx: i64::from(i),
        spec: TaskSpec {
            steps: vec!["make".into()],
            ..spec(&format!("c{i}"))
        },
        priority: false,
        created: 1,
        last_updated: 1,
        run: RunRecord::new(),
    }
}

/// A store in a new temporary folder holding [`event`] with one task: id
/// `event_id().task([0xAA; 16])`, [`spec`] `c`.
pub(super) fn store_with_one_task() -> (tempfile::TempDir, Store, CreatedEvent) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let task = event_id().task([0xAA; 16]);
    let created = store
        .create_event(event(), vec![(task, spec("c"), false)], false)
        .unwrap()
        .unwrap();
    (dir, store, created)
}
