//! Redis (procs and secrets in production): one multiplexed connection, driven by
//! tokio, that every request pipelines onto, with every key under one prefix. At most
//! PROCTOR_REDIS_MAX_ACTIVE_CONNECTIONS commands are in flight at once. A `rediss://`
//! address speaks TLS through rustls, always verifying the server's certificate.
//!
//! The connection is made on first use and remade in the background when it drops.
//! A command that fails because the connection dropped (Redis restarted, a proxy
//! closed it) is sent once more on the new connection, so a restart does not fail
//! requests. Every command Proctor sends leaves the same data when applied twice (GET,
//! MGET, SCAN, MSET, HSET, HGETALL, DEL); the one visible effect of a resend is that a
//! deletion whose first reply was lost in flight reports the proc as already gone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;

use super::StoreError;

/// How long a connection attempt may take, and how long a command may wait for its reply.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnection attempts per drop before pending commands fail (then the next command
/// tries again): bounds how long a request waits while Redis is down (about 2 s).
const RECONNECT_ATTEMPTS: usize = 2;

#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    /// Behind an `Arc`: with its TLS parameters a client is a few hundred bytes.
    client: Arc<redis::Client>,
    prefix: String,
}

impl Redis {
    /// Sets the connection up without connecting, so proctord starts (and reports 503
    /// on `/health/ready`) while Redis is down. Must run inside the tokio runtime.
    pub fn open(settings: &RedisSettings) -> Result<Self, StoreError> {
        let unusable = |e: redis::RedisError| {
            StoreError::RedisUnavailable(format!(
                "PROCTOR_REDIS_ADDRESS is not usable: {:?}",
                e.kind()
            ))
        };
        let url = settings.url.expose().as_str();
        // rediss://: rustls (ring) verifies the server's certificate against the CA file,
        // or else the public web roots.
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(url),
        }
        .map_err(unusable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_ATTEMPTS)
            .set_max_delay(Duration::from_millis(500))
            .set_concurrency_limit(settings.max_active_connections as usize);
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unusable)?;
        Ok(Self {
            conn,
            client: Arc::new(client),
            prefix: settings.key_prefix.clone(),
        })
    }

    /// The full key for `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The client, for a connection of its own (the bus's subscription).
    pub fn client(&self) -> redis::Client {
        (*self.client).clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sends one command and reads its reply.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.resend_once_if_dropped(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Sends a pipeline (a MULTI/EXEC transaction when built with `.atomic()`).
    pub async fn query_pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.resend_once_if_dropped(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// `PING` within `timeout`: the readiness check.
    pub async fn check(&self, timeout: Duration) -> Result<(), StoreError> {
        match tokio::time::timeout(timeout, self.query::<String>(&redis::cmd("PING"))).await {
            Ok(answer) => answer.map(drop),
            Err(_) => Err(StoreError::RedisUnavailable(format!(
                "no answer to PING within {timeout:?}"
            ))),
        }
    }

    /// Every key matching `pattern`, by SCAN (never the blocking KEYS).
    pub async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500);
            let (next, batch): (u64, Vec<String>) = self.query(&scan).await?;
            keys.extend(batch);
            if next == 0 {
                // SCAN may return a key more than once.
                keys.sort();
                keys.dedup();
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Runs `send` on the connection; when that fails because the connection dropped,
    /// runs it once more (on the connection the manager is remaking).
    async fn resend_once_if_dropped<T, F, Fut>(&self, send: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match send(self.conn.clone()).await {
            Err(e) if e.is_unrecoverable_error() => {
                tracing::debug!(error = %e, "Redis connection dropped; sending again");
                Ok(send(self.conn.clone()).await?)
            }
            other => Ok(other?),
        }
    }
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
