//! Sending one delivery: signed, retried with backoff on 5xx, 429 and network errors,
//! each attempt recorded in the delivery log.

use std::sync::Arc;

use backon::{ExponentialBuilder, Retryable as _};
use tokio::sync::Semaphore;

use super::message::signature;
use super::{DELIVERY_HEADER, MAX_ATTEMPTS, SIGNATURE_HEADER};
use crate::model::NotifyKind;
use crate::model::notify::mask_url;
use crate::store::{Attempt, NotificationStore};

/// Why an attempt failed.
#[derive(Debug)]
struct Failure {
    status_code: Option<u16>,
    message: String,
    /// 5xx, 429, a timeout or a network error.
    retryable: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A request error in words, with its causes and without its URL.
fn describe(e: reqwest::Error, url: &str) -> String {
    let mut message = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let e = e.without_url();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message.replace(url, &mask_url(url))
}

/// One target to tell.
pub(super) struct Delivery {
    pub(super) kind: NotifyKind,
    pub(super) url: String,
    /// Its index in the execution's `notify`, -1 for `callback_url`.
    pub(super) index: i32,
    pub(super) body: Vec<u8>,
}

/// Which run a delivery tells of.
pub(super) struct Run {
    pub(super) execution_id: String,
    pub(super) execution: String,
    pub(super) proc: String,
    pub(super) user: String,
}

/// What one delivery's task needs.
pub(super) struct Sender {
    pub(super) http: reqwest::Client,
    pub(super) deliveries: NotificationStore,
    pub(super) signing_key: Option<Arc<Vec<u8>>>,
    pub(super) retry: ExponentialBuilder,
    pub(super) permits: Arc<Semaphore>,
}

impl Sender {
    pub(super) async fn send(self, delivery: Delivery, run: Run, resumed: Option<(i64, i32)>) {
        let Run {
            execution_id,
            execution,
            proc,
            user,
        } = run;
        let target = mask_url(&delivery.url);
        let kind = delivery.kind.as_str();
        let (log_id, done) = match resumed {
            Some((id, done)) => (Some(id), done),
            None => match self
                .deliveries
                .start(&execution_id, kind, &target, delivery.index)
                .await
            {
                Ok(id) => (Some(id), 0),
                Err(e) => {
                    tracing::error!(error = %e, "cannot record the notification in the delivery log; sending it anyway");
                    (None, 0)
                }
            },
        };
        // A taken-over delivery has the attempts left of its budget (at least one).
        let retry = self
            .retry
            .with_max_times((MAX_ATTEMPTS - done).max(1) as usize - 1);
        let delivery_id = log_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let attempts = std::sync::atomic::AtomicI32::new(done);
        let post = || async {
            let _permit = self.permits.acquire().await.expect("never closed");
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut request = self
                .http
                .post(&delivery.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, &delivery_id)
                .body(delivery.body.clone());
            if let Some(key) = &self.signing_key {
                let now = chrono::Utc::now().timestamp();
                request = request.header(SIGNATURE_HEADER, signature(key, now, &delivery.body));
            }
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
                Ok(response) => {
                    let code = response.status();
                    Err(Failure {
                        status_code: Some(code.as_u16()),
                        message: format!("the receiver answered {code}"),
                        retryable: code.is_server_error()
                            || code == reqwest::StatusCode::TOO_MANY_REQUESTS,
                    })
                }
                Err(e) => Err(Failure {
                    status_code: None,
                    message: describe(e, &delivery.url),
                    retryable: true,
                }),
            };
            if let (Err(failure), Some(id)) = (&outcome, log_id)
                && failure.retryable
            {
                let _ = self
                    .deliveries
                    .record(
                        id,
                        Attempt {
                            attempts: attempt,
                            status_code: failure.status_code.map(i32::from),
                            error: Some(failure.message.clone()),
                            status: "pending",
                        },
                    )
                    .await;
            }
            outcome
        };
        let sent = post
            .retry(retry)
            .when(|f: &Failure| f.retryable)
            .notify(|f, after| tracing::warn!(error = %f, ?after, "notification not delivered yet; retrying"))
            .await;
        let attempts = attempts.load(std::sync::atomic::Ordering::SeqCst);
        let record = match &sent {
            Ok(code) => {
                metrics::counter!(crate::telemetry::names::NOTIFICATIONS, "kind" => kind, "result" => "delivered").increment(1);
                tracing::info!(attempts, status_code = code, "notification delivered");
                Attempt {
                    attempts,
                    status_code: Some(i32::from(*code)),
                    error: None,
                    status: "delivered",
                }
            }
            Err(failure) => {
                metrics::counter!(crate::telemetry::names::NOTIFICATIONS, "kind" => kind, "result" => "failed").increment(1);
                tracing::error!(attempts, error = %failure, "notification failed");
                crate::telemetry::report(
                    &format!("a {kind} notification for {execution} to {target} failed: {failure}"),
                    &[("execution", &execution), ("proc", &proc), ("user", &user)],
                );
                Attempt {
                    attempts,
                    status_code: failure.status_code.map(i32::from),
                    error: Some(failure.message.clone()),
                    status: "failed",
                }
            }
        };
        if let Some(id) = log_id
            && let Err(e) = self.deliveries.record(id, record).await
        {
            tracing::error!(error = %e, "cannot record the notification's outcome in the delivery log");
        }
    }
}
