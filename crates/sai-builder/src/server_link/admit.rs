//! Accepting or declining an offer: the platform must be offered on this
//! link, the disk under the home must have room, and one of the platform's
//! instances must be free.

use sai_core::protocol::TaskOffer;
use tokio::sync::OwnedSemaphorePermit;

use super::config::LinkConfig;
use super::shared::Shared;
use crate::housekeeping::{free_disk_bytes, has_room};
use crate::task::TaskContext;

/// Why this builder cannot take an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decline(pub(super) String);

/// Decide on an offer: a slot permit and the task context, or why not.
pub(super) fn admit(
    task: &TaskOffer,
    lc: &LinkConfig,
    shared: &Shared,
) -> Result<(OwnedSemaphorePermit, TaskContext), Decline> {
    let name = &task.offer_platform;
    let platform = match shared.platforms.get(name) {
        Some(p) if lc.platforms.iter().any(|n| n == name) => p,
        _ => {
            return Err(Decline(format!(
                "platform {name} is not offered on this connection"
            )));
        }
    };
    let home = shared.layout.home();
    if shared.min_free_disk_bytes > 0 {
        match has_room(home, shared.min_free_disk_bytes) {
            Ok(true) => {}
            Ok(false) => {
                let free = free_disk_bytes(home).unwrap_or(0);
                return Err(Decline(format!(
                    "only {free} bytes free under {}, {} needed",
                    home.display(),
                    shared.min_free_disk_bytes
                )));
            }
            Err(e) => {
                return Err(Decline(format!(
                    "cannot check free space of {}: {e}",
                    home.display()
                )));
            }
        }
    }
    let permit = platform.slots.clone().try_acquire_owned().map_err(|_| {
        Decline(format!(
            "all {} instances of platform {name} are busy",
            platform.instances
        ))
    })?;
    Ok((permit, platform.ctx.clone()))
}
