//! The Notifier tells how a run ended over HTTP: to its `callback_url` (the original's
//! `{"name", "status"}`) and to its `notify` targets — webhooks (the run as JSON) and
//! Slack incoming webhooks (a readable message linking to the run). Every request is
//! signed (`Proctor-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`)
//! when PROCTOR_WEBHOOK_SIGNING_KEY is set, retried with backoff on 5xx, 429 and
//! network errors (never on another 4xx), and recorded in the delivery log.
//!
//! As the Mailer: sending happens off the actor's turn, one task per delivery with at
//! most [`MAX_IN_FLIGHT`] requests at once, so a slow or dead receiver delays nothing
//! else. A URL is never logged nor stored in the delivery log in full (a Slack URL is a
//! credential).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use backon::{ExponentialBuilder, Retryable as _};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::config::NotifySettings;
use crate::model::notify::mask_url;
use crate::model::{NotifyKind, Status};
use crate::store::{Attempt, Execution, ExecutionStore, NotificationStore};

/// Requests being sent at once, across all deliveries.
pub const MAX_IN_FLIGHT: usize = 32;
/// Requests made for one delivery at most (the first and its retries).
pub const MAX_ATTEMPTS: i32 = 6;
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Proctor-Signature";
/// The header carrying the delivery's id (the same on every retry, for de-duplication).
pub const DELIVERY_HEADER: &str = "Proctor-Delivery";

/// An execution has ended (its final status is written): tell its targets.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    pub execution: Execution,
}

pub struct Notifier {
    http: reqwest::Client,
    deliveries: NotificationStore,
    signing_key: Option<Arc<Vec<u8>>>,
    public_url: Option<String>,
    retry: ExponentialBuilder,
    permits: Arc<Semaphore>,
    executions: ExecutionStore,
    /// How long a pending delivery may go without progress before it is taken over.
    takeover: Duration,
    sweeping: bool,
}

impl Notifier {
    pub fn new(
        settings: &NotifySettings,
        deliveries: NotificationStore,
        executions: ExecutionStore,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            // A redirect would send the signed body somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("proctor/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with timeouts builds");
        Self {
            http,
            deliveries,
            signing_key: settings
                .webhook_signing_key
                .as_ref()
                .map(|key| Arc::new(key.expose().as_bytes().to_vec())),
            public_url: settings.public_url.clone(),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(30))
                .with_max_times(MAX_ATTEMPTS as usize - 1),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            executions,
            takeover: settings.takeover,
            sweeping: false,
        }
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    /// Looks for deliveries to take over every quarter of the takeover time (at most
    /// every 30 s).
    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.takeover / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        ctx.run_interval(every, |_, ctx| ctx.notify(Sweep));
    }
}

impl Supervised for Notifier {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Notifier restarting");
        crate::telemetry::report("the Notifier actor restarted", &[("actor", "Notifier")]);
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under key>`: the timestamp is
/// signed with the body, so a receiver can refuse old (replayed) requests.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The run's page in the web console, when the public URL is known.
fn link(public_url: Option<&str>, execution: &Execution) -> Option<String> {
    public_url.map(|base| format!("{base}/runs/{}", execution.name))
}

fn rfc3339(t: Option<chrono::NaiveDateTime>) -> Option<String> {
    t.map(|t| {
        t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

/// How long the run took, in seconds (from its start, or its creation if it never ran).
fn duration_seconds(execution: &Execution) -> Option<f64> {
    let finished = execution.finished_at?;
    let started = execution.started_at.unwrap_or(execution.created_at);
    Some((finished - started).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The JSON body a target of `kind` gets.
pub fn body(kind: NotifyKind, execution: &Execution, public_url: Option<&str>) -> Value {
    let url = link(public_url, execution);
    match kind {
        NotifyKind::Callback => json!({"name": execution.name, "status": execution.status}),
        NotifyKind::Webhook => json!({
            "event": "execution.finished",
            "name": execution.name,
            "proc_name": execution.proc_name,
            "status": execution.status,
            "reason": execution.reason,
            "exit_code": execution.exit_code,
            "args": execution.args,
            "user_email": execution.user_email,
            "schedule_id": execution.schedule_id,
            "attempts": execution.attempts,
            "created_at": rfc3339(Some(execution.created_at)),
            "started_at": rfc3339(execution.started_at),
            "finished_at": rfc3339(execution.finished_at),
            "duration_seconds": duration_seconds(execution),
            "url": url,
        }),
        NotifyKind::Slack => {
            let icon = if execution.status == Status::Succeeded {
                ":white_check_mark:"
            } else {
                ":x:"
            };
            let took = duration_seconds(execution)
                .map(|s| format!(" in {s:.0}s"))
                .unwrap_or_default();
            let mut text = format!(
                "{icon} *{proc}* {status}{took}: run `{name}` by {who}",
                proc = execution.proc_name,
                status = execution.status,
                name = execution.name,
                who = execution.user_email,
            );
            if let Some(reason) = &execution.reason {
                text.push_str(&format!("\n> {reason}"));
            }
            if let Some(url) = url {
                text.push_str(&format!("\n<{url}|Open the run>"));
            }
            json!({ "text": text })
        }
    }
}

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
struct Delivery {
    kind: NotifyKind,
    url: String,
    /// Its index in the execution's `notify`, -1 for `callback_url`.
    index: i32,
    body: Vec<u8>,
}

/// Sends the notifications of an ended run, each in a task of its own.
impl Handler<Deliver> for Notifier {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let execution = msg.execution;
        let status = execution.status;
        if let Some(url) = &execution.callback_url {
            self.spawn_delivery(&execution, NotifyKind::Callback, url.clone(), -1, None);
        }
        for (index, target) in execution.notify.iter().enumerate() {
            if target.on.matches(status) {
                self.spawn_delivery(
                    &execution,
                    target.kind,
                    target.url.clone(),
                    index as i32,
                    None,
                );
            }
        }
    }
}

/// Resumes the pending deliveries nobody has moved on for `takeover` (another replica
/// died or stopped while sending them).
#[derive(Message)]
#[rtype(result = "()")]
struct Sweep;

impl Handler<Sweep> for Notifier {
    type Result = ();

    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let (deliveries, executions) = (self.deliveries.clone(), self.executions.clone());
        let cutoff = crate::store::now()
            - chrono::TimeDelta::from_std(self.takeover).unwrap_or(chrono::TimeDelta::MAX);
        let work = async move {
            let claimed = deliveries.claim_stale(cutoff, 100).await?;
            let mut found = Vec::new();
            for (delivery, name) in claimed {
                let execution = executions.get(&name).await?;
                found.push((delivery, execution));
            }
            Ok::<_, crate::store::StoreError>(found)
        };
        ctx.spawn(
            actix::fut::wrap_future(work).map(|found, act: &mut Self, _| {
                act.sweeping = false;
                match found {
                    Ok(found) => {
                        for (delivery, execution) in found {
                            act.resume(delivery, execution);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look for notifications to take over")
                    }
                }
            }),
        );
    }
}

impl Notifier {
    /// Sends one taken-over delivery on from where it stopped.
    fn resume(&self, delivery: crate::store::Delivery, execution: Option<Execution>) {
        let target = execution
            .as_ref()
            .and_then(|e| match delivery.target_index {
                -1 => e
                    .callback_url
                    .clone()
                    .map(|url| (NotifyKind::Callback, url)),
                i => e.notify.get(i as usize).map(|t| (t.kind, t.url.clone())),
            });
        let (Some(execution), Some((kind, url))) = (execution, target) else {
            let store = self.deliveries.clone();
            actix::spawn(async move {
                let _ = store
                    .record(
                        delivery.id,
                        Attempt {
                            attempts: delivery.attempts,
                            status_code: delivery.last_status_code,
                            error: Some("its execution or target is gone".into()),
                            status: "failed",
                        },
                    )
                    .await;
            });
            return;
        };
        tracing::info!(execution = %execution.name, delivery = delivery.id, attempts = delivery.attempts, "taking over a notification left pending");
        self.spawn_delivery(
            &execution,
            kind,
            url,
            delivery.target_index,
            Some((delivery.id, delivery.attempts)),
        );
    }

    /// Sends `kind`'s body about `execution` to `url` in a task of its own; `resumed`:
    /// the delivery log row and the attempts already made.
    fn spawn_delivery(
        &self,
        execution: &Execution,
        kind: NotifyKind,
        url: String,
        index: i32,
        resumed: Option<(i64, i32)>,
    ) {
        let body = body(kind, execution, self.public_url.as_deref());
        let delivery = Delivery {
            kind,
            url,
            index,
            body: serde_json::to_vec(&body).expect("JSON serializes"),
        };
        let task = Sender {
            http: self.http.clone(),
            deliveries: self.deliveries.clone(),
            signing_key: self.signing_key.clone(),
            retry: self.retry,
            permits: self.permits.clone(),
        };
        let run = Run {
            execution_id: execution.id.clone(),
            execution: execution.name.clone(),
            proc: execution.proc_name.clone(),
            user: execution.user_email.clone(),
        };
        let span = tracing::info_span!("notification", execution = %run.execution, kind = kind.as_str(), target = %mask_url(&delivery.url));
        actix::spawn(tracing::Instrument::instrument(
            task.send(delivery, run, resumed),
            span,
        ));
    }
}

/// Which run a delivery tells of.
struct Run {
    execution_id: String,
    execution: String,
    proc: String,
    user: String,
}

/// What one delivery's task needs.
struct Sender {
    http: reqwest::Client,
    deliveries: NotificationStore,
    signing_key: Option<Arc<Vec<u8>>>,
    retry: ExponentialBuilder,
    permits: Arc<Semaphore>,
}

impl Sender {
    async fn send(self, delivery: Delivery, run: Run, resumed: Option<(i64, i32)>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = signature(b"key", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(b"key", 1_700_000_001, b"{}"));
        assert_ne!(a, signature(b"key", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{}"));
    }
}
