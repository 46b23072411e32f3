//! The builder's Prometheus metrics (OpenMetrics text, `prometheus-client`)
//! and the optional local listener serving them at `GET /metrics`
//! (`metrics_listen` in the config).
//!
//! | metric | what |
//! |---|---|
//! | `sai_builder_tasks_total{result}` | tasks run to an end, by result (success, failed, cancelled, infra_error, handed_back) |
//! | `sai_builder_step_duration_seconds{exit}` | build step run time, by `ok` / `failed` |
//! | `sai_builder_mirror_fetch_duration_seconds{outcome}` | git mirror fetches, by `ok` / `failed` |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sai_core::protocol::TaskResult;
use tokio_util::sync::CancellationToken;

type Label = [(&'static str, &'static str); 1];
type Histograms = Family<Label, Histogram, fn() -> Histogram>;

/// Content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The builder's metrics.
pub struct BuilderMetrics {
    registry: Registry,
    tasks: Family<Label, Counter>,
    steps: Histograms,
    fetches: Histograms,
}

/// 0.1 s to about 55 min, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

static METRICS: LazyLock<BuilderMetrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sai_builder");
    let tasks = Family::<Label, Counter>::default();
    registry.register("tasks", "Tasks run to an end, by result", tasks.clone());
    let steps: Histograms = Family::new_with_constructor(seconds_histogram);
    registry.register(
        "step_duration_seconds",
        "Build step run time, by exit (ok, failed)",
        steps.clone(),
    );
    let fetches: Histograms = Family::new_with_constructor(seconds_histogram);
    registry.register(
        "mirror_fetch_duration_seconds",
        "Git mirror fetch time, by outcome (ok, failed)",
        fetches.clone(),
    );
    BuilderMetrics {
        registry,
        tasks,
        steps,
        fetches,
    }
});

/// The process's metrics.
pub fn metrics() -> &'static BuilderMetrics {
    &METRICS
}

impl BuilderMetrics {
    /// A task ended with `result`.
    pub fn task(&self, result: &TaskResult) {
        let r = match result {
            TaskResult::Success => "success",
            TaskResult::Failed { .. } => "failed",
            TaskResult::Cancelled => "cancelled",
            TaskResult::InfraError { .. } => "infra_error",
            TaskResult::HandedBack { .. } => "handed_back",
        };
        self.tasks.get_or_create(&[("result", r)]).inc();
    }

    /// A step ended with `exit_code` after `took`.
    pub fn step(&self, exit_code: i32, took: Duration) {
        let exit = if exit_code == 0 { "ok" } else { "failed" };
        self.steps
            .get_or_create(&[("exit", exit)])
            .observe(took.as_secs_f64());
    }

    /// A mirror fetch ended.
    pub fn fetch(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "failed" };
        self.fetches
            .get_or_create(&[("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serve `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let mut r = if req.uri().path() == "/metrics" && req.method() == hyper::Method::GET
                {
                    let mut r = Response::new(Full::new(Bytes::from(metrics().render())));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
                    );
                    r
                } else {
                    Response::new(Full::new(Bytes::from_static(b"GET /metrics only\n")))
                };
                if req.uri().path() != "/metrics" || req.method() != hyper::Method::GET {
                    *r.status_mut() = StatusCode::NOT_FOUND;
                }
                Ok::<_, Infallible>(r)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Bind `addr` for [`serve`].
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("metrics_listen {addr:?}: {e}"))?;
    tokio::net::TcpListener::bind(a)
        .await
        .map_err(|e| anyhow::anyhow!("metrics_listen {addr}: {e}"))
}
