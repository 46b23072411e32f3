//! The event and task spec the store's unit tests push.

use sai_core::saifile::TaskSpec;
use sai_core::task::{Event, EventId};

/// The id of [`event`].
pub(super) fn event_id() -> EventId {
    EventId::parse("0123456789ABCDEF0123456789ABCDEF").unwrap()
}

/// A push of project `p`, commit `abc`, with the id [`event_id`].
pub(super) fn event() -> Event {
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
pub(super) fn spec(configuration: &str) -> TaskSpec {
    TaskSpec {
        configuration: configuration.into(),
        platform: "linux".into(),
        steps: vec!["true".into()],
        artifacts: vec![],
        packages: vec![],
        test_reports: vec![],
    }
}
