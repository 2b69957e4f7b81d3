//! The Watcher applies what happens to executions — the executor's events and the
//! Dispatcher's own verdicts — to the store, forward only, and announces each final
//! status once it is written: to the LogFanout (ending the stream), to the other
//! replicas (their log sessions end too), to the Notifier (callback URL, webhooks,
//! Slack) and, for a scheduled run, to the Mailer. It also
//! takes over the runs this replica claims from others ([`Adopt`]).

use actix::prelude::*;

use super::log_fanout::{Drain, Finished, LogFanout, Open, UpstreamGone};
use super::mailer::{Mailer, Notify};
use super::notifier::{Deliver, Notifier};
use crate::executor::{Adoption, Executor, RunEvent};
use crate::model::{ExecutionName, Status};
use crate::store::{
    Announcement, Bus, Claimed, Execution, ExecutionStore, LogStore, StoreError, Transition,
};

/// A change to apply: a status step (or only an attempt count when `status` is `None`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Option<Execution>, StoreError>")]
pub struct Apply {
    pub execution: ExecutionName,
    pub status: Option<Status>,
    pub change: Transition,
}

impl From<RunEvent> for Apply {
    fn from(event: RunEvent) -> Self {
        let status = event.status();
        let (change, execution) = match event {
            RunEvent::Running { execution, attempt } => (
                Transition {
                    attempts: Some(attempt as i32),
                    ..Default::default()
                },
                execution,
            ),
            RunEvent::AttemptFailed {
                execution,
                attempt,
                exit_code,
                reason,
            } => {
                tracing::info!(%execution, attempt, ?exit_code, %reason, "attempt failed; retrying");
                (
                    Transition {
                        attempts: Some(attempt as i32),
                        ..Default::default()
                    },
                    execution,
                )
            }
            RunEvent::Succeeded {
                execution,
                attempts,
            } => (
                Transition {
                    exit_code: Some(0),
                    attempts: Some(attempts as i32),
                    ..Default::default()
                },
                execution,
            ),
            RunEvent::Failed {
                execution,
                exit_code,
                reason,
                attempts,
            } => (
                Transition {
                    reason: Some(reason),
                    exit_code,
                    attempts: (attempts > 0).then_some(attempts as i32),
                },
                execution,
            ),
            RunEvent::TimedOut {
                execution,
                reason,
                attempts,
            } => (
                Transition {
                    reason: Some(reason),
                    attempts: Some(attempts as i32),
                    ..Default::default()
                },
                execution,
            ),
            RunEvent::Cancelled { execution, reason } => (
                Transition {
                    reason: Some(reason),
                    ..Default::default()
                },
                execution,
            ),
        };
        Apply {
            execution,
            status,
            change,
        }
    }
}

/// Takes over runs this replica has just claimed: re-attaches those still going (their
/// logs resumed after the last stored line) and settles the others; answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct Adopt {
    pub claimed: Vec<Claimed>,
    /// Claimed at the start of the only replica there is (the embedded default).
    pub restarted: bool,
}

pub struct Watcher {
    executions: ExecutionStore,
    logs: LogStore,
    executor: std::sync::Arc<dyn Executor>,
    fanout: Addr<LogFanout>,
    mailer: Addr<Mailer>,
    notifier: Addr<Notifier>,
    bus: Bus,
}

impl Watcher {
    pub fn new(
        executions: ExecutionStore,
        logs: LogStore,
        executor: std::sync::Arc<dyn Executor>,
        fanout: Addr<LogFanout>,
        (mailer, notifier): (Addr<Mailer>, Addr<Notifier>),
        bus: Bus,
    ) -> Self {
        Self {
            executions,
            logs,
            executor,
            fanout,
            mailer,
            notifier,
            bus,
        }
    }
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Supervised for Watcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Watcher restarting");
        crate::telemetry::report("the Watcher actor restarted", &[("actor", "Watcher")]);
    }
}

/// Writes the change; a final status is announced only after it is written, and only
/// by the write that made it.
impl Handler<Apply> for Watcher {
    type Result = ResponseFuture<Result<Option<Execution>, StoreError>>;

    fn handle(&mut self, msg: Apply, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!("execution", execution = %msg.execution);
        Box::pin(tracing::Instrument::instrument(
            apply(self.announcer(), msg),
            span,
        ))
    }
}

/// What applying a change needs, cloned out of the actor.
#[derive(Clone)]
struct Announcer {
    executions: ExecutionStore,
    fanout: Addr<LogFanout>,
    mailer: Addr<Mailer>,
    notifier: Addr<Notifier>,
    bus: Bus,
}

impl Watcher {
    fn announcer(&self) -> Announcer {
        Announcer {
            executions: self.executions.clone(),
            fanout: self.fanout.clone(),
            mailer: self.mailer.clone(),
            notifier: self.notifier.clone(),
            bus: self.bus.clone(),
        }
    }
}

async fn apply(to: Announcer, msg: Apply) -> Result<Option<Execution>, StoreError> {
    let name = msg.execution.as_str();
    let Some(status) = msg.status else {
        if let Some(attempts) = msg.change.attempts {
            to.executions.set_attempts(name, attempts).await?;
        }
        return Ok(None);
    };
    if status.is_final() {
        // A final status comes with the complete stored log.
        to.fanout
            .send(Drain {
                execution: msg.execution.clone(),
            })
            .await
            .map_err(|e| StoreError::Task(format!("the LogFanout is unavailable: {e}")))?;
    }
    let written = to.executions.transition(name, status, msg.change).await?;
    if let Some(execution) = &written {
        tracing::info!(execution = name, %status, reason = execution.reason.as_deref().unwrap_or(""), "status written");
        record_metrics(execution);
        if status.is_final() {
            to.fanout.do_send(Finished {
                execution: msg.execution.clone(),
                status,
            });
            to.bus.publish(Announcement::Ended {
                execution: msg.execution.to_string(),
                status,
            });
            if execution.callback_url.is_some() || !execution.notify.is_empty() {
                to.notifier.do_send(Deliver {
                    execution: execution.clone(),
                });
            }
            if execution.schedule_id.is_some() {
                to.mailer.do_send(Notify {
                    execution: execution.clone(),
                });
            }
        }
    } else if status.is_final()
        && let Some(stored) = to.executions.get(name).await?
        && stored.status.is_final()
    {
        // Already ended another way (cancelled from another replica, settled by a new
        // owner): the stream here ends with what is stored.
        to.fanout.do_send(Finished {
            execution: msg.execution.clone(),
            status: stored.status,
        });
    }
    Ok(written)
}

/// Counts a written status: runs going, runs ended by status, how long they took.
fn record_metrics(execution: &Execution) {
    use crate::telemetry::names;
    let status = execution.status;
    if status == Status::Running {
        metrics::gauge!(names::EXECUTIONS_RUNNING).increment(1.0);
    }
    if !status.is_final() {
        return;
    }
    if execution.started_at.is_some() {
        metrics::gauge!(names::EXECUTIONS_RUNNING).decrement(1.0);
    }
    let labels = [
        ("proc", execution.proc_name.clone()),
        ("status", status.as_str().to_owned()),
    ];
    metrics::counter!(names::EXECUTIONS_FINISHED, &labels).increment(1);
    if let Some(finished) = execution.finished_at {
        let started = execution.started_at.unwrap_or(execution.created_at);
        let seconds = (finished - started).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(names::EXECUTION_DURATION, &labels).record(seconds);
    }
}

/// Opens the log stream of each claimed run (numbered on from its stored lines), hands
/// the runs to the executor, and applies the events that settle those that are over.
impl Handler<Adopt> for Watcher {
    type Result = ResponseFuture<Result<usize, StoreError>>;

    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) -> Self::Result {
        let logs = self.logs.clone();
        let executor = self.executor.clone();
        let to = self.announcer();
        Box::pin(async move {
            let mut adoptions = Vec::new();
            for claimed in msg.claimed {
                let Ok(execution) = ExecutionName::parse(&claimed.name) else {
                    tracing::error!(execution = %claimed.name, "a stored execution name is invalid; left as it is");
                    continue;
                };
                let next_seq = logs.last_seq(&claimed.id).await? + 1;
                let resume = match claimed.executor.as_str() {
                    "kubernetes" => logs.resume_points(&claimed.id).await?,
                    _ => Default::default(),
                };
                // Before the executor can send a line of it.
                to.fanout.do_send(Open {
                    execution: execution.clone(),
                    execution_id: claimed.id.clone(),
                    next_seq,
                });
                adoptions.push(Adoption {
                    execution,
                    status: claimed.status,
                    previous_owner: claimed.previous_owner,
                    restarted: msg.restarted,
                    resume,
                });
            }
            let count = adoptions.len();
            for event in executor.adopt(adoptions).await {
                if event.status().is_some_and(Status::is_final) {
                    to.fanout.do_send(UpstreamGone {
                        execution: event.execution().clone(),
                    });
                }
                apply(to.clone(), Apply::from(event)).await?;
            }
            Ok(count)
        })
    }
}
