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
//! credential). A delivery left pending by a replica that died is taken over (`Sweep`).
//! `message.rs` says what is sent, `send.rs` how one delivery goes.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use backon::ExponentialBuilder;
use tokio::sync::Semaphore;

use self::message::body;
use self::send::{Delivery, Run, Sender};
use crate::config::NotifySettings;
use crate::model::NotifyKind;
use crate::model::notify::mask_url;
use crate::store::{Attempt, Execution, ExecutionStore, NotificationStore};

mod message;
mod send;

pub use self::message::signature;

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
        // A sweep in progress went with the old context.
        self.sweeping = false;
        tracing::warn!("Notifier restarting");
        crate::telemetry::report("the Notifier actor restarted", &[("actor", "Notifier")]);
    }
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
