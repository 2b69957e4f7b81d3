//! The Redis pool (procs and secrets in production), sized by
//! PROCTOR_REDIS_MAX_ACTIVE_CONNECTIONS, with every key under one prefix.

use std::time::Duration;

use crate::config::RedisSettings;

use super::StoreError;

#[derive(Clone)]
pub struct Redis {
    pool: r2d2::Pool<redis::Client>,
    prefix: String,
}

impl Redis {
    /// Builds the pool without connecting, so proctord starts (and reports 503 on
    /// `/health/ready`) while Redis is down.
    pub fn open(settings: &RedisSettings) -> Result<Self, StoreError> {
        let client = redis::Client::open(settings.url.expose().as_str()).map_err(|e| {
            StoreError::RedisUnavailable(format!(
                "PROCTOR_REDIS_ADDRESS is not usable: {:?}",
                e.kind()
            ))
        })?;
        let pool = r2d2::Pool::builder()
            .max_size(settings.max_active_connections)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(3))
            .error_handler(Box::new(r2d2::LoggingErrorHandler))
            .build_unchecked(client);
        Ok(Self {
            pool,
            prefix: settings.key_prefix.clone(),
        })
    }

    /// The full key for `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut redis::Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.run_within(None, f).await
    }

    /// `PING` within `timeout`: the readiness check.
    pub async fn check(&self, timeout: Duration) -> Result<(), StoreError> {
        self.run_within(Some(timeout), |conn| {
            redis::cmd("PING").query::<String>(conn)?;
            Ok(())
        })
        .await
    }

    async fn run_within<T, F>(&self, timeout: Option<Duration>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut redis::Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        crate::telemetry::spawn_blocking_with_tracing(move || {
            let conn = match timeout {
                Some(timeout) => pool.get_timeout(timeout),
                None => pool.get(),
            };
            let mut conn = conn.map_err(|e| StoreError::RedisUnavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Every key matching `pattern`, by SCAN (never the blocking KEYS).
pub fn scan_keys(conn: &mut redis::Connection, pattern: &str) -> Result<Vec<String>, StoreError> {
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(500)
        .clone()
        .iter::<String>(conn)?
        .collect::<Result<_, _>>()?;
    Ok(keys)
}

/// Escapes glob characters so a prefix matches itself in a SCAN pattern.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
