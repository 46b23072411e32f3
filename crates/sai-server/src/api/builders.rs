//! `GET /api/builders`: connected builders first (from the scheduler's
//! published fleet), then the ones seen before. Anonymous callers get no
//! addresses and no ids of tasks of private events.

use sai_core::api::{Builder, BuilderPlatform};
use sai_core::protocol::{PlatformOffer, event_of_task};
use warp::http::HeaderMap;

use super::{Res, ok, user};
use crate::state::Server;

/// Every builder.
pub fn list(server: &Server, headers: &HeaderMap) -> Res {
    let fleet = server.fleet();
    let mut out: Vec<Builder> = fleet.builders.clone();
    for b in server.store.builders()? {
        if fleet.builders.iter().any(|o| o.name == b.name) {
            continue;
        }
        let platforms: Vec<PlatformOffer> = serde_json::from_str(&b.platforms).unwrap_or_default();
        out.push(Builder {
            name: b.name,
            online: false,
            peer: b.peer,
            software: b.software,
            since: b.last_seen,
            load: None,
            platforms: platforms
                .into_iter()
                .map(|p| BuilderPlatform {
                    name: p.name,
                    instances: p.instances,
                    running: None,
                })
                .collect(),
        });
    }
    if user(server, headers)?.is_none() {
        hide_private(server, &mut out)?;
    }
    ok(&out)
}

/// Drop what an anonymous caller may not see: peer addresses and running
/// tasks of private events.
fn hide_private(server: &Server, builders: &mut [Builder]) -> Result<(), crate::error::Error> {
    let running = builders
        .iter()
        .flat_map(|b| &b.platforms)
        .flat_map(|p| p.running.iter().flatten())
        .filter_map(|t| event_of_task(t));
    let private = server.store.private_events(running)?;
    for b in builders {
        b.peer = None;
        for p in &mut b.platforms {
            if let Some(running) = &mut p.running {
                running.retain(|t| event_of_task(t).is_none_or(|e| !private.contains(e)));
            }
        }
    }
    Ok(())
}
