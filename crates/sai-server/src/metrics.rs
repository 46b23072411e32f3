//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format,
//! encoded by `prometheus-client`.
//!
//! Counters and histograms are updated where things happen (hooks, log
//! frames, task ends, commit status deliveries). Gauges are set at scrape
//! time from snapshots others publish, so a scrape never takes the
//! scheduler lock: the builders ([`crate::state::Server::fleet`]), the waiting
//! queue ([`crate::state::Server::queue`]) and the store figures a background
//! task refreshes every [`STORE_REFRESH`] ([`StoreFigures`]).
//!
//! With `metrics_token_file` in the config, a scrape must send
//! `Authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use sai_core::task::TaskState;

use crate::sched::{Fleet, QueueStats};

/// How often the store figures (events per state, bytes on disk) are
/// recomputed in the background.
pub const STORE_REFRESH: Duration = Duration::from_secs(15);

/// Content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Label = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];

type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

/// Buckets from 1 s to about 4.5 h, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// `metric` (a handle sharing its value) once registered in `r` as `name`.
fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

fn l(k: &'static str, v: impl Into<String>) -> Label {
    [(k, v.into())]
}

/// What the store holds, as last counted in the background.
#[derive(Debug, Clone, Default)]
pub struct StoreFigures {
    /// Events per state.
    pub events: BTreeMap<String, i64>,
    /// Bytes of every file under the data directory.
    pub bytes: u64,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Hook requests by result: accepted, duplicate, ignored, refused.
    hooks: Family<Label, Counter>,
    /// Log bytes received from builders.
    log_bytes: Counter,
    /// Tasks that ended, by result.
    tasks_ended: Family<Label, Counter>,
    /// Task run time (start of the last attempt to the end) by result.
    task_seconds: HistogramFamily,
    /// Commit status and webhook deliveries by kind and outcome.
    deliveries: Family<Labels2, Counter>,
    events: Family<Label, Gauge>,
    tasks: Family<Label, Gauge>,
    queue_depth: Family<Label, Gauge>,
    oldest_waiting: Family<Label, Gauge<f64, AtomicU64>>,
    builders: Gauge,
    instances: Family<Labels2, Gauge>,
    store_bytes: Gauge,
    figures: RwLock<StoreFigures>,
    /// One scrape at a time sets the gauges and encodes.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, all at zero.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("sai_server");
        Metrics {
            hooks: registered(
                &mut r,
                "hooks",
                "Hook requests by result (accepted, duplicate, ignored, refused)",
                Family::default(),
            ),
            log_bytes: registered(
                &mut r,
                "log_bytes_received",
                "Log bytes received from builders",
                Counter::default(),
            ),
            tasks_ended: registered(
                &mut r,
                "tasks_ended",
                "Tasks that ended, by result",
                Family::default(),
            ),
            task_seconds: registered(
                &mut r,
                "task_duration_seconds",
                "Run time of ended tasks (last attempt), by result",
                Family::new_with_constructor(duration_histogram),
            ),
            deliveries: registered(
                &mut r,
                "forge_deliveries",
                "Commit status and webhook delivery attempts by kind and outcome",
                Family::default(),
            ),
            events: registered(
                &mut r,
                "events",
                "Stored events by state",
                Family::default(),
            ),
            tasks: registered(
                &mut r,
                "tasks",
                "Tasks of the events not yet ended, by state",
                Family::default(),
            ),
            queue_depth: registered(
                &mut r,
                "queue_depth",
                "Waiting tasks by requested platform",
                Family::default(),
            ),
            oldest_waiting: registered(
                &mut r,
                "oldest_waiting_seconds",
                "Age of the oldest waiting task by requested platform",
                Family::default(),
            ),
            builders: registered(
                &mut r,
                "builders_connected",
                "Connected builders",
                Gauge::default(),
            ),
            instances: registered(
                &mut r,
                "instances",
                "Instances of connected builders by offered platform and state (busy, free)",
                Family::default(),
            ),
            store_bytes: registered(
                &mut r,
                "store_bytes",
                "Bytes under the data directory (databases, logs, artifacts)",
                Gauge::default(),
            ),
            figures: RwLock::new(StoreFigures::default()),
            scrape: Mutex::new(()),
            registry: r,
        }
    }

    /// A hook request ended with `result`.
    pub fn hook(&self, result: &str) {
        self.hooks.get_or_create(&l("result", result)).inc();
    }

    /// Log bytes arrived.
    pub fn log_bytes(&self, n: u64) {
        self.log_bytes.inc_by(n);
    }

    /// A task ended with `state` after `ms` milliseconds (if known).
    pub fn task_ended(&self, state: TaskState, ms: Option<i64>) {
        let label = l("result", state.as_str());
        self.tasks_ended.get_or_create(&label).inc();
        if let Some(ms) = ms {
            self.task_seconds
                .get_or_create(&label)
                .observe(ms.max(0) as f64 / 1000.0);
        }
    }

    /// A delivery of `kind` (commit_status, webhook) ended with `outcome`
    /// (delivered, failed).
    pub fn delivery(&self, kind: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&[("kind", kind.to_string()), ("outcome", outcome.to_string())])
            .inc();
    }

    /// New store figures (from the background task).
    pub fn set_store_figures(&self, f: StoreFigures) {
        *self.figures.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// The text exposition, with the gauges set from the snapshots.
    pub fn render(&self, fleet: &Fleet, queue: &QueueStats, now_ms: i64) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let figures = self
            .figures
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.events.clear();
        for (state, n) in &figures.events {
            self.events
                .get_or_create(&l("state", state.clone()))
                .set(*n);
        }
        self.store_bytes
            .set(i64::try_from(figures.bytes).unwrap_or(i64::MAX));
        self.tasks.clear();
        for &st in TaskState::ALL {
            let n = queue.tasks.get(&st).copied().unwrap_or(0);
            self.tasks
                .get_or_create(&l("state", st.as_str()))
                .set(n as i64);
        }
        self.queue_depth.clear();
        self.oldest_waiting.clear();
        for (platform, (n, oldest)) in &queue.waiting {
            self.queue_depth
                .get_or_create(&l("platform", platform.clone()))
                .set(*n as i64);
            self.oldest_waiting
                .get_or_create(&l("platform", platform.clone()))
                .set((now_ms - oldest).max(0) as f64 / 1000.0);
        }
        self.builders.set(fleet.builders.len() as i64);
        self.instances.clear();
        let mut per: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for b in &fleet.builders {
            for p in &b.platforms {
                let busy = p.running.as_ref().map_or(0, Vec::len) as i64;
                let e = per.entry(p.name.as_str()).or_default();
                e.0 += busy;
                e.1 += (i64::from(p.instances) - busy).max(0);
            }
        }
        for (platform, (busy, free)) in per {
            for (state, n) in [("busy", busy), ("free", free)] {
                self.instances
                    .get_or_create(&[("platform", platform.to_string()), ("state", state.into())])
                    .set(n);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Sum of the sizes of the files under `dir` (symlinks not followed).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}
