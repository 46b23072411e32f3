//! What the scheduler asks the server to do: its only output.

use sai_core::protocol::ServerMessage;
use sai_core::task::{EventId, EventState, RunRecord, TaskId};

use super::ConnId;

/// Something the server must do because the scheduler's state changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<D> {
    /// Write this task's run record to its event database.
    Persist {
        /// The event's database.
        db: D,
        /// The task.
        task: TaskId,
        /// Its whole run record.
        run: RunRecord,
    },
    /// Write an event's new state to the main database.
    EventState {
        /// The event.
        event: EventId,
        /// Its new state.
        state: EventState,
    },
    /// Send a protocol message on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ServerMessage,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Websocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connection is gone: drop everything held for it.
    Release {
        /// The connection.
        conn: ConnId,
    },
}
