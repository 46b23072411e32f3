//! The hello: the first message of a builder connection, checked against
//! its token, and the answers to the tasks it claims back in it.

use std::sync::Arc;

use sai_core::platform::Platform;
use sai_core::protocol::{
    BuilderMessage, CLOSE_POLICY, CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED_VERSION,
    PROTOCOL_VERSION, ServerMessage, TaskResult, hello_version,
};

use crate::auth::{Identity, token_allows};
use crate::sched::{ConnId, Lookup};
use crate::state::Server;

/// The hello, if it is one this server takes from this token's builder;
/// else the close code and reason.
pub(super) fn check_hello(ident: &Identity, text: &str) -> Result<BuilderMessage, (u16, String)> {
    match hello_version(text) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        Some(v) => {
            return Err((
                CLOSE_UNSUPPORTED_VERSION,
                format!("unsupported protocol version {v}; this server speaks {PROTOCOL_VERSION}"),
            ));
        }
        None => {
            return Err((
                CLOSE_PROTOCOL_ERROR,
                "first message must be a hello with protocol_version".into(),
            ));
        }
    }
    let msg: BuilderMessage = serde_json::from_str(text)
        .map_err(|e| (CLOSE_PROTOCOL_ERROR, format!("bad hello: {e}")))?;
    let BuilderMessage::Hello {
        builder, platforms, ..
    } = &msg
    else {
        return Err((CLOSE_PROTOCOL_ERROR, "first message must be a hello".into()));
    };
    if *builder != ident.name {
        return Err((
            CLOSE_POLICY,
            format!(
                "hello names builder {builder:?} but the token is for {:?}",
                ident.name
            ),
        ));
    }
    if platforms.is_empty() {
        return Err((CLOSE_POLICY, "hello offers no platform".into()));
    }
    for p in platforms {
        if Platform::parse(&p.name).is_err() {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?} is not a valid platform name", p.name),
            ));
        }
        if p.instances == 0 || p.instances > 256 {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?}: instances must be 1..=256", p.name),
            ));
        }
        if !ident.platforms.iter().any(|g| token_allows(g, &p.name)) {
            return Err((
                CLOSE_POLICY,
                format!("platform {:?} is not allowed by the builder token", p.name),
            ));
        }
    }
    Ok(msg)
}

/// The answer to one task a builder claims back in its hello: resume its
/// log from the builder bytes stored, or refuse (the builder kills it). A
/// claim whose stored log cannot be read is handed back (requeued without
/// counting) and refused.
pub(super) async fn resume_answer(
    server: &Arc<Server>,
    cid: ConnId,
    builder: &str,
    held: &sai_core::protocol::HeldTask,
    claim: Result<(), String>,
) -> ServerMessage {
    let task_id = held.task_id.clone();
    let refuse = |reason: String| {
        tracing::info!(builder, task = %task_id, %reason, "claim refused");
        ServerMessage::ClaimRefused {
            task_id: task_id.clone(),
            reason,
        }
    };
    if let Err(reason) = claim {
        return refuse(reason);
    }
    let lookup = server.sched().lookup(cid, &task_id);
    let stored = match lookup {
        Lookup::Assigned(db, _) => server
            .logs
            .received(db, task_id.clone())
            .await
            .map_err(|e| e.to_string()),
        _ => Err("the task was taken back meanwhile".into()),
    };
    match stored {
        Ok(offset) if offset <= held.log_bytes => {
            tracing::info!(builder, task = %task_id, offset, "task claimed back after a restart");
            ServerMessage::ResumeTask {
                task_id,
                log_offset: offset,
            }
        }
        other => {
            let reason = match other {
                Ok(offset) => format!(
                    "the server stored {offset} bytes of its log, the builder says it produced {}",
                    held.log_bytes
                ),
                Err(e) => format!("its stored log cannot be read: {e}"),
            };
            let back = TaskResult::HandedBack {
                reason: reason.clone(),
            };
            server.sched_do(|s, now| s.finished(now, cid, &task_id, &back));
            refuse(reason)
        }
    }
}
