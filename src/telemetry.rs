//! Logging (tracing), Sentry, and running blocking work inside the caller's span.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber at PROCTOR_LOG_LEVEL (RUST_LOG, when set, wins),
/// as text or JSON lines on stderr. Safe to call twice: the second call does nothing.
pub fn init_tracing(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},actix_server=warn,r2d2=error",
            level = settings.log_level
        ))
    });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    drop(result);
}

/// Starts Sentry when PROCTOR_SENTRY_DSN is set; keep the guard alive for the process.
/// Call before the actix `System` starts so panics in workers are reported too.
pub fn init_sentry(settings: &Settings) -> Option<sentry::ClientInitGuard> {
    let dsn = settings.sentry_dsn.as_ref()?;
    let mut options = sentry::ClientOptions::default();
    options.release = sentry::release_name!();
    options.send_default_pii = false;
    options.before_send = Some(std::sync::Arc::new(|event| Some(scrub(event))));
    let guard = sentry::init((dsn.expose().as_str(), options));
    guard.is_enabled().then_some(guard)
}

/// Removes what may hold credentials before an event leaves: request headers, cookies
/// and query strings, and any environment variables.
fn scrub(mut event: sentry::protocol::Event<'static>) -> sentry::protocol::Event<'static> {
    if let Some(request) = event.request.as_mut() {
        request.headers.retain(|name, _| {
            !matches!(
                name.to_ascii_lowercase().as_str(),
                "access-token" | "authorization" | "cookie" | "proxy-authorization"
            )
        });
        request.cookies = None;
        request.query_string = None;
        request.env.clear();
        request.data = None;
    }
    event
        .extra
        .retain(|key, _| !key.to_ascii_lowercase().contains("secret"));
    event
}

/// `spawn_blocking` that keeps the current span, so a query's logs stay with its request.
pub fn spawn_blocking_with_tracing<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

/// The process-wide Prometheus recorder, installed on first use; `GET /metrics`
/// renders it.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = &[
            0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
        ];
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(seconds)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe_metrics();
        handle
    })
}

/// The metrics proctord exports, each described once.
pub mod names {
    pub const EXECUTIONS_STARTED: &str = "proctor_executions_started_total";
    pub const EXECUTIONS_FINISHED: &str = "proctor_executions_finished_total";
    pub const EXECUTION_DURATION: &str = "proctor_execution_duration_seconds";
    pub const DISPATCH_LATENCY: &str = "proctor_dispatch_latency_seconds";
    pub const EXECUTIONS_RUNNING: &str = "proctor_executions_running";
    pub const WEBSOCKET_SUBSCRIBERS: &str = "proctor_websocket_subscribers";
    pub const LOG_LINES: &str = "proctor_log_lines_total";
    pub const SCHEDULE_FIRES: &str = "proctor_schedule_fires_total";
    pub const MAILS: &str = "proctor_mails_total";
    pub const NOTIFICATIONS: &str = "proctor_notifications_total";
    pub const HTTP_REQUESTS: &str = "proctor_http_requests_total";
    pub const DB_POOL_CONNECTIONS: &str = "proctor_db_pool_connections";
    pub const LEASE_BEAT: &str = "proctor_lease_beat_seconds";
    pub const RUNS_TAKEN_OVER: &str = "proctor_runs_taken_over_total";
    pub const REFUSED_CREDENTIALS: &str = "proctor_refused_credentials_total";
    pub const AUDIT_WRITE_FAILURES: &str = "proctor_audit_write_failures_total";
    pub const PURGED_ROWS: &str = "proctor_purged_rows_total";
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(EXECUTIONS_STARTED, "Executions submitted, by proc");
    describe_counter!(
        EXECUTIONS_FINISHED,
        "Executions that reached a final status, by proc and status"
    );
    describe_histogram!(
        EXECUTION_DURATION,
        metrics::Unit::Seconds,
        "From start to final status, by proc and status"
    );
    describe_histogram!(
        DISPATCH_LATENCY,
        metrics::Unit::Seconds,
        "From request to the executor accepting the run"
    );
    describe_gauge!(
        EXECUTIONS_RUNNING,
        "Executions running now (on this replica's writes)"
    );
    describe_gauge!(WEBSOCKET_SUBSCRIBERS, "Open log websocket sessions");
    describe_histogram!(
        LEASE_BEAT,
        metrics::Unit::Seconds,
        "How long renewing this replica's leases took (one statement per beat)"
    );
    describe_counter!(
        RUNS_TAKEN_OVER,
        "Runs this replica claimed after their owner's lease expired"
    );
    describe_counter!(LOG_LINES, "Log lines received from runs");
    describe_counter!(
        PURGED_ROWS,
        "Rows removed by retention, by table (executions, execution_logs, schedule_fires)"
    );
    describe_counter!(
        SCHEDULE_FIRES,
        "Schedule fires, by outcome (dispatched, backfilled, skipped, failed, claimed_elsewhere)"
    );
    describe_counter!(MAILS, "Notification mails, by result (sent, failed)");
    describe_counter!(
        NOTIFICATIONS,
        "Webhook, Slack and callback notifications, by kind and result (delivered, failed)"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by method, route and status");
    describe_counter!(
        REFUSED_CREDENTIALS,
        "Bad or expired tokens refused (headers and console sign-ins)"
    );
    describe_counter!(
        AUDIT_WRITE_FAILURES,
        "Changes made whose audit record could not be written after retries"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (idle, in_use)"
    );
}

/// Reports an error to Sentry (when configured) with the execution, proc and user as
/// tags. Messages never carry secret values.
pub fn report(message: &str, tags: &[(&str, &str)]) {
    sentry::with_scope(
        |scope| {
            for (key, value) in tags {
                scope.set_tag(key, value);
            }
        },
        || sentry::capture_message(message, sentry::Level::Error),
    );
}
