//! The live change feed: one stream of typed change messages (events
//! created and changed, task states, builders, log bytes appended) for
//! sai-web, served on `GET /api/changes` (websocket, service token).
//!
//! Every change gets the next sequence number and goes into a bounded ring
//! ([`RING`] entries). A subscriber names the last sequence it saw and gets
//! everything after it; one that asks for a sequence older than the ring (it
//! was away too long) gets [`FeedItem::Resync`] and must re-read the state it
//! shows. Publishing never waits for subscribers and never grows memory: a
//! slow subscriber falls behind the ring and is told to resync.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

/// Changes kept for subscribers that reconnect.
pub const RING: usize = 8192;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A push was stored.
    EventCreated {
        /// Event id.
        event: String,
        /// Project.
        project: String,
    },
    /// An event's state changed, or it was deleted (`state` = `deleted`).
    EventChanged {
        /// Event id.
        event: String,
        /// New state.
        state: String,
    },
    /// A task's state (or its run record) changed.
    TaskChanged {
        /// Task id.
        task: String,
        /// New state.
        state: String,
    },
    /// A builder connected, went away or changed its offer.
    BuilderChanged {
        /// Builder name.
        builder: String,
        /// Connected now.
        online: bool,
    },
    /// Log bytes were stored for a task: `[offset, offset + len)`.
    LogAppended {
        /// Task id.
        task: String,
        /// First new byte.
        offset: u64,
        /// Bytes added.
        len: u64,
    },
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FeedItem {
    /// A change with its sequence number.
    Change {
        /// Sequence number (starts at 1, increases by 1).
        seq: u64,
        /// The change.
        change: Change,
    },
    /// Changes after the subscriber's resume point are gone: re-read all
    /// state, then continue from `seq`.
    Resync {
        /// The newest sequence number now.
        seq: u64,
    },
}

struct Ring {
    /// Sequence number of `items[0]`.
    first: u64,
    items: VecDeque<Change>,
}

/// The feed.
pub struct ChangeFeed {
    /// Names this server process: sequence numbers restart with it, so a
    /// subscriber that sees a new epoch re-reads everything.
    pub epoch: String,
    ring: Mutex<Ring>,
    newest: watch::Sender<u64>,
    capacity: usize,
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed::with_capacity(RING)
    }
}

impl ChangeFeed {
    /// A feed keeping `capacity` changes.
    pub fn with_capacity(capacity: usize) -> ChangeFeed {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        ChangeFeed {
            epoch: format!("{nanos:x}-{}", std::process::id()),
            ring: Mutex::new(Ring {
                first: 1,
                items: VecDeque::with_capacity(capacity.min(1024)),
            }),
            newest: watch::channel(0).0,
            capacity: capacity.max(1),
        }
    }

    /// Publish a change; returns its sequence number.
    pub fn publish(&self, change: Change) -> u64 {
        let seq = {
            let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            r.items.push_back(change);
            while r.items.len() > self.capacity {
                r.items.pop_front();
                r.first += 1;
            }
            r.first + r.items.len() as u64 - 1
        };
        self.newest.send_replace(seq);
        seq
    }

    /// The newest sequence number (0 before any change).
    pub fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    /// Everything after `after`, or a resync if some of it is gone.
    pub fn since(&self, after: u64) -> Vec<FeedItem> {
        let r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let newest = r.first + r.items.len() as u64 - 1;
        if after >= newest {
            return Vec::new();
        }
        if after + 1 < r.first {
            return vec![FeedItem::Resync { seq: newest }];
        }
        let skip = (after + 1 - r.first) as usize;
        r.items
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, c)| FeedItem::Change {
                seq: r.first + i as u64,
                change: c.clone(),
            })
            .collect()
    }

    /// Wakes when a change is published.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

/// Serve the feed on an upgraded websocket, starting after `after`: first
/// `{"t":"hello","epoch":..,"seq":..}`, then JSON text messages, one
/// [`FeedItem`] each. Returns when the peer goes away or
/// the server shuts down.
pub async fn serve_subscriber(
    feed: std::sync::Arc<ChangeFeed>,
    ws: warp::ws::WebSocket,
    mut after: u64,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use futures_util::{SinkExt, StreamExt};
    let (mut tx, mut rx) = ws.split();
    let mut wake = feed.watch();
    let hello = serde_json::json!({"t": "hello", "epoch": feed.epoch, "seq": feed.newest()});
    if tx
        .send(warp::ws::Message::text(hello.to_string()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        for item in feed.since(after) {
            after = match &item {
                FeedItem::Change { seq, .. } | FeedItem::Resync { seq } => *seq,
            };
            let text = serde_json::to_string(&item).unwrap_or_default();
            if tx.send(warp::ws::Message::text(text)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(warp::ws::Message::close_with(1001u16, "sai-server is shutting down")).await;
                return;
            }
            changed = wake.changed() => if changed.is_err() { return },
            incoming = rx.next() => match incoming {
                Some(Ok(m)) if !m.is_close() => {}
                _ => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(n: u32) -> Change {
        Change::TaskChanged {
            task: format!("T{n}"),
            state: "running".into(),
        }
    }

    #[test]
    fn a_subscriber_resumes_after_its_last_sequence() {
        let f = ChangeFeed::with_capacity(4);
        assert_eq!(f.since(0), vec![]);
        for n in 1..=3 {
            assert_eq!(f.publish(task(n)), n as u64);
        }
        let got = f.since(1);
        assert_eq!(
            got,
            vec![
                FeedItem::Change {
                    seq: 2,
                    change: task(2)
                },
                FeedItem::Change {
                    seq: 3,
                    change: task(3)
                },
            ]
        );
        assert_eq!(f.since(3), vec![]);
    }

    #[test]
    fn one_too_far_behind_is_told_to_resync_and_memory_stays_bounded() {
        let f = ChangeFeed::with_capacity(4);
        for n in 1..=10 {
            f.publish(task(n));
        }
        assert_eq!(f.since(2), vec![FeedItem::Resync { seq: 10 }]);
        // 7..=10 are kept: resuming after 6 is complete, after 5 is not.
        assert_eq!(f.since(5), vec![FeedItem::Resync { seq: 10 }]);
        assert_eq!(f.since(6).len(), 4);
        assert_eq!(f.ring.lock().unwrap().items.len(), 4);
        assert_eq!(f.newest(), 10);
    }

    #[test]
    fn items_serialise_with_their_kind() {
        let v = serde_json::to_value(FeedItem::Change {
            seq: 7,
            change: Change::LogAppended {
                task: "T".into(),
                offset: 10,
                len: 5,
            },
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"t": "change", "seq": 7, "change": {"kind": "log_appended", "task": "T", "offset": 10, "len": 5}})
        );
    }
}
