//! `GET /api/builders`: connected builders first (from the scheduler's
//! published fleet), then the ones seen before.

use sai_core::api::{Builder, BuilderPlatform};
use sai_core::protocol::PlatformOffer;

use super::{Res, ok};
use crate::Server;

/// Every builder.
pub fn list(server: &Server) -> Res {
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
    ok(&out)
}
