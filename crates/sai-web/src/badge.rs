//! Status badges: `/status/<project>.svg` (latest event of the project) and
//! `/status/<project>/<branch>.svg` (latest event of that branch). Only
//! public events count: a badge is served to anyone.

use crate::upstream::{Event, EventState};

/// What a badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All tasks passed.
    Passing,
    /// Some task failed.
    Failing,
    /// Tasks still waiting or running.
    Running,
    /// Cancelled.
    Cancelled,
    /// No visible event.
    Unknown,
}

impl Status {
    /// Of an event state name.
    pub fn of(event: Option<&Event>) -> Status {
        match event.map(|e| e.state) {
            Some(EventState::Success) => Status::Passing,
            Some(EventState::Failed | EventState::RunningWithFailures) => Status::Failing,
            Some(EventState::Cancelled) => Status::Cancelled,
            Some(EventState::Waiting | EventState::Running) => Status::Running,
            None => Status::Unknown,
        }
    }

    fn label_colour(self) -> (&'static str, &'static str) {
        match self {
            Status::Passing => ("passing", "#2e7d32"),
            Status::Failing => ("failing", "#c62828"),
            Status::Running => ("running", "#b28704"),
            Status::Cancelled => ("cancelled", "#6d6d6d"),
            Status::Unknown => ("unknown", "#9e9e9e"),
        }
    }
}

/// The newest event of `branch` (any branch when `None`) among `events`
/// (newest first).
pub fn latest<'a>(events: &'a [Event], branch: Option<&str>) -> Option<&'a Event> {
    events.iter().find(|e| {
        !e.sec
            && match branch {
                None => true,
                Some(b) => {
                    e.git_ref == format!("refs/heads/{b}") || e.git_ref == format!("refs/tags/{b}")
                }
            }
    })
}

/// The SVG of a badge.
pub fn svg(status: Status) -> String {
    let (label, colour) = status.label_colour();
    let left = 30;
    let right = 8 + 7 * label.len();
    let w = left + right;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="sai: {label}"><title>sai: {label}</title><rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{colour}"/><g fill="#fff" font-family="DejaVu Sans,Verdana,sans-serif" font-size="11"><text x="6" y="14">sai</text><text x="{tx}" y="14">{label}</text></g></svg>"##,
        tx = left + 4
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(r: &str, state: EventState, sec: bool) -> Event {
        crate::test_fixtures::event(r, state, sec)
    }

    #[test]
    fn the_newest_public_event_of_the_branch_decides() {
        let events = vec![
            ev("refs/heads/dev", EventState::Failed, false),
            ev("refs/heads/main", EventState::Failed, true),
            ev("refs/heads/main", EventState::Success, false),
        ];
        assert_eq!(Status::of(latest(&events, None)), Status::Failing);
        assert_eq!(Status::of(latest(&events, Some("main"))), Status::Passing);
        assert_eq!(Status::of(latest(&events, Some("nope"))), Status::Unknown);
        assert!(svg(Status::Passing).contains(">passing<"));
    }
}
