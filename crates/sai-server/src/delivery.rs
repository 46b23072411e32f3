//! Delivering the outbox's notes ([`crate::outbox`]): one dispatcher that
//! resolves each note's event and project, and one worker per event and
//! target that sends the latest state with retries. Kept apart from the
//! queue so that the server state owns the queue without the queue's
//! module reaching back up to the server.

use std::collections::HashMap;
use std::sync::Arc;

use sai_core::api::Delivery;
use sai_core::task::{Event, EventState};
use tokio::sync::watch;

use crate::outbox::{
    Kind, MAX_ATTEMPTS, REQUEST_TIMEOUT, RETRY_CAP, RETRY_INITIAL, event_url, lock, status_request,
    webhook_request,
};
use crate::state::Server;
use crate::store::now_ms;

/// Deliver the notes until shutdown; see the module doc.
pub async fn run(server: Arc<Server>) {
    let Some(mut rx) = lock(&server.outbox.rx).take() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(crate::state::SOFTWARE)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("no HTTP client for commit statuses: {e}");
            return;
        }
    };
    let mut events: HashMap<String, Arc<Event>> = HashMap::new();
    loop {
        let note = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => return },
            _ = server.shutdown.cancelled() => return,
        };
        let event = match events.get(&note.event) {
            Some(e) => e.clone(),
            None => {
                let s = server.clone();
                let id = note.event.clone();
                let row = tokio::task::spawn_blocking(move || s.store.event(&id)).await;
                match row {
                    Ok(Ok(Some(e))) => Arc::new(e),
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        tracing::warn!(event = %note.event, "commit status: reading the event: {e}");
                        continue;
                    }
                    Err(_) => continue,
                }
            }
        };
        let Some(targets) = server.targets.get(&event.project) else {
            continue;
        };
        if note.state.is_terminal() {
            events.remove(&note.event);
        } else {
            events.insert(note.event.clone(), event.clone());
        }
        if targets.status.is_some() {
            start_or_update(&server, &client, Kind::Status, &event, note.state);
        }
        if targets.webhook.is_some() && note.state.is_terminal() {
            start_or_update(&server, &client, Kind::Webhook, &event, note.state);
        }
    }
}

fn start_or_update(
    server: &Arc<Server>,
    client: &reqwest::Client,
    kind: Kind,
    event: &Arc<Event>,
    state: EventState,
) {
    let key = (kind, event.id.to_string());
    let mut workers = lock(&server.outbox.workers);
    if let Some(tx) = workers.get(&key)
        && tx.send(state).is_ok()
    {
        return;
    }
    let (tx, rx) = watch::channel(state);
    workers.insert(key.clone(), tx);
    tokio::spawn(worker(
        server.clone(),
        client.clone(),
        key,
        event.clone(),
        rx,
    ));
}

/// Deliver the latest state of one event to one target, retrying.
async fn worker(
    server: Arc<Server>,
    client: reqwest::Client,
    key: (Kind, String),
    event: Arc<Event>,
    mut rx: watch::Receiver<EventState>,
) {
    let (kind, id) = (key.0, key.1.clone());
    let link = event_url(server.settings.config.web_url.as_deref(), &id);
    'state: loop {
        let state = *rx.borrow_and_update();
        let Some(targets) = server.targets.get(&event.project) else {
            break;
        };
        let (req, bytes, shown) = match kind {
            Kind::Status => {
                let Some(t) = &targets.status else { break };
                match status_request(t, &event, state, link.as_deref()) {
                    Some(r) => {
                        let shown = r.body["state"].as_str().unwrap_or_default().to_string();
                        let bytes = serde_json::to_vec(&r.body).unwrap_or_default();
                        (r, bytes, shown)
                    }
                    None => {
                        if rx.changed().await.is_err() {
                            break;
                        }
                        continue;
                    }
                }
            }
            Kind::Webhook => {
                let Some(t) = &targets.webhook else { break };
                let (r, bytes) = webhook_request(t, &event, state, link.as_deref());
                (r, bytes, state.as_str().to_string())
            }
        };
        let mut delay = RETRY_INITIAL;
        for attempt in 1..=MAX_ATTEMPTS {
            let mut rb = client
                .post(&req.url)
                .header("Content-Type", "application/json")
                .body(bytes.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            let (delivered, http_status, error) = match rb.send().await {
                Ok(r) if r.status().is_success() => (true, Some(r.status().as_u16()), None),
                Ok(r) => {
                    let code = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    let text: String = text.chars().take(300).collect();
                    (false, Some(code), Some(format!("HTTP {code}: {text}")))
                }
                Err(e) => (false, None, Some(format!("{e}"))),
            };
            server.metrics.delivery(
                kind.as_str(),
                if delivered { "delivered" } else { "failed" },
            );
            let retry = !delivered && attempt < MAX_ATTEMPTS;
            server.outbox.record(
                kind,
                &id,
                Delivery {
                    state: shown.clone(),
                    attempts: attempt,
                    last_attempt: now_ms(),
                    delivered,
                    http_status,
                    error: error.clone(),
                    next_attempt: retry.then(|| now_ms() + delay.as_millis() as i64),
                },
            );
            if delivered {
                tracing::info!(event = %id, kind = kind.as_str(), state = %shown, "delivered");
                break;
            }
            tracing::warn!(
                event = %id,
                kind = kind.as_str(),
                state = %shown,
                attempt,
                "delivery failed: {}",
                error.unwrap_or_default()
            );
            if !retry {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                r = rx.changed() => {
                    if r.is_err() { break 'state; }
                    continue 'state;
                }
                _ = server.shutdown.cancelled() => break 'state,
            }
            delay = (delay * 2).min(RETRY_CAP);
        }
        // Done with this state: wait for a newer one, or end once the
        // event has ended (nothing newer comes then).
        let mut workers = lock(&server.outbox.workers);
        if rx.has_changed().unwrap_or(false) {
            continue;
        }
        if state.is_terminal() {
            workers.remove(&key);
            break;
        }
        drop(workers);
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = server.shutdown.cancelled() => break,
        }
    }
}
