//! What the server sends on a builder connection, and the senders of every
//! live connection (one writer task per connection drains its queue).

use std::collections::HashMap;
use std::sync::Mutex;

use sai_core::protocol::ServerMessage;
use tokio::sync::mpsc::UnboundedSender;

pub use crate::sched::ConnId;

/// What a connection's writer should send.
#[derive(Debug)]
pub enum Outgoing {
    /// A protocol message.
    Msg(ServerMessage),
    /// Return flow-control credit (sent as [`ServerMessage::Credit`]).
    Credit(u64),
    /// Close with code and reason.
    Close(u16, String),
}

/// The queues of the live connections.
#[derive(Default)]
pub struct Links {
    map: Mutex<HashMap<ConnId, UnboundedSender<Outgoing>>>,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, UnboundedSender<Outgoing>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection opened.
    pub fn insert(&self, conn: ConnId, tx: UnboundedSender<Outgoing>) {
        self.lock().insert(conn, tx);
    }

    /// A connection is gone: drop its queue.
    pub fn remove(&self, conn: ConnId) {
        self.lock().remove(&conn);
    }

    /// Queue `out` on `conn`, if it is still live.
    pub fn send(&self, conn: ConnId, out: Outgoing) {
        if let Some(tx) = self.lock().get(&conn) {
            let _ = tx.send(out);
        }
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No live connection.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
