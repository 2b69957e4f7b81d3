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
    let guard = sentry::init((dsn.expose().as_str(), options));
    guard.is_enabled().then_some(guard)
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
