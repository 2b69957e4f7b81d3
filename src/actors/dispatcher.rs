//! The Dispatcher starts and stops executions: it writes each one RECEIVED, checks
//! what the run needs (a command for the local executor, the proc's secrets), opens its
//! log stream and hands it to the executor; and it cancels runs on request: its own
//! runs itself, another replica's through that replica (asked over the bus), and a
//! dead replica's after taking them over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::log_fanout::{LogFanout, Open, UpstreamGone};
use super::watcher::{Apply, Watcher};
use crate::executor::{Executor, RunSpec};
use crate::model::{ExecutionName, ProcMetadata, Status};
use crate::store::{
    Announcement, Bus, Execution, ExecutionStore, LeaseStore, NewExecution, SecretStore,
    StoreError, Transition,
};
use crate::telemetry::names;

/// Runs `proc` with `args` for `user_email`.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, DispatchError>")]
pub struct Execute {
    pub proc: ProcMetadata,
    pub args: BTreeMap<String, String>,
    pub user_email: String,
    pub callback_url: Option<String>,
    /// Where its end is told (webhooks, Slack), checked by the caller.
    pub notify: Vec<crate::model::NotifyTarget>,
    pub schedule_id: Option<String>,
}

/// Stops a run; answers the execution as it ends up.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, DispatchError>")]
pub struct Cancel {
    pub execution: ExecutionName,
    pub by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no execution named {0}")]
    NotFound(ExecutionName),
    #[error("execution {name} already ended {status}")]
    AlreadyEnded { name: ExecutionName, status: Status },
    #[error("an actor is unavailable: {0}")]
    Mailbox(#[from] MailboxError),
    /// The replica that runs the execution did not act on the request.
    #[error("{0}")]
    OwnerUnreachable(String),
}

/// How long a cancel asked of another replica may take to show in the store (a
/// Kubernetes cancel waits up to 30 s for its Job's deletion).
const REMOTE_CANCEL_WAIT: Duration = Duration::from_secs(40);

/// Defaults for every run.
#[derive(Debug, Clone)]
pub struct RunDefaults {
    pub deadline: Duration,
    pub retries: u32,
}

pub struct Dispatcher {
    executions: ExecutionStore,
    secrets: SecretStore,
    leases: LeaseStore,
    bus: Bus,
    executor: Arc<dyn Executor>,
    watcher: Addr<Watcher>,
    fanout: Addr<LogFanout>,
    defaults: RunDefaults,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        executions: ExecutionStore,
        secrets: SecretStore,
        leases: LeaseStore,
        bus: Bus,
        executor: Arc<dyn Executor>,
        watcher: Addr<Watcher>,
        fanout: Addr<LogFanout>,
        defaults: RunDefaults,
    ) -> Self {
        Self {
            executions,
            secrets,
            leases,
            bus,
            executor,
            watcher,
            fanout,
            defaults,
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl Supervised for Dispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Dispatcher restarting");
        crate::telemetry::report("the Dispatcher actor restarted", &[("actor", "Dispatcher")]);
    }
}

/// Why a run cannot start, in words for its user; `None` when it can.
async fn unmet_requirement(
    proc: &ProcMetadata,
    executor: &dyn Executor,
    secrets: &SecretStore,
) -> Result<BTreeMap<String, crate::config::Sensitive<String>>, String> {
    if executor.needs_command() && proc.command.is_none() {
        return Err(format!(
            "the {} executor runs a proc's command, and proc {} has none: add \"command\": [\"program\", \"arg\", ...] to its metadata",
            executor.kind(),
            proc.name
        ));
    }
    let values = secrets
        .reveal(&proc.name)
        .await
        .map_err(|e| format!("the secrets of proc {} cannot be read: {e}", proc.name))?;
    let missing: Vec<&str> = proc
        .env_vars
        .secrets
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| !values.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "proc {} needs secret(s) {} which are not set: set them with POST /jobs/secrets",
            proc.name,
            missing.join(", ")
        ));
    }
    Ok(values)
}

/// Writes RECEIVED, checks the requirements, opens the log stream and launches; answers
/// once the executor has accepted (CREATED) or the run has been refused.
impl Handler<Execute> for Dispatcher {
    type Result = ResponseFuture<Result<Execution, DispatchError>>;

    fn handle(&mut self, msg: Execute, _: &mut Context<Self>) -> Self::Result {
        let executions = self.executions.clone();
        let secrets = self.secrets.clone();
        let executor = self.executor.clone();
        let watcher = self.watcher.clone();
        let fanout = self.fanout.clone();
        let defaults = self.defaults.clone();
        let received_at = std::time::Instant::now();
        let span = tracing::info_span!("execution", proc = %msg.proc.name, execution = tracing::field::Empty);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let name = ExecutionName::generate(&msg.proc.name);
                tracing::Span::current().record("execution", name.as_str());
                let record = executions.insert(NewExecution {
                    name: name.clone(),
                    proc_name: msg.proc.name.to_string(),
                    image: msg.proc.image_name.clone(),
                    args: msg.args.clone(),
                    executor: executor.kind().to_owned(),
                    user_email: msg.user_email,
                    schedule_id: msg.schedule_id,
                    callback_url: msg.callback_url,
                    notify: msg.notify,
                });
                // The record is written while the proc's secrets are read.
                let (received, requirement) = tokio::join!(
                    record,
                    unmet_requirement(&msg.proc, executor.as_ref(), &secrets)
                );
                let received = received?;
                let settle = |status, reason: String| Apply {
                    execution: name.clone(),
                    status: Some(status),
                    change: Transition {
                        reason: Some(reason),
                        ..Default::default()
                    },
                };
                let secrets = match requirement {
                    Ok(secrets) => secrets,
                    Err(reason) => {
                        let written = watcher
                            .send(settle(Status::RequirementNotMet, reason))
                            .await??;
                        return Ok(written.unwrap_or(received));
                    }
                };
                // Queued ahead of any line of the run (the LogFanout's mailbox is in
                // order and the run starts below).
                fanout.do_send(Open {
                    execution: name.clone(),
                    execution_id: received.id.clone(),
                    next_seq: 1,
                });
                let spec = RunSpec {
                    execution: name.clone(),
                    proc_name: msg.proc.name.clone(),
                    image: msg.proc.image_name.clone(),
                    command: msg.proc.command.clone(),
                    args: msg.args,
                    secrets,
                    deadline: msg
                        .proc
                        .active_deadline_seconds
                        .map_or(defaults.deadline, Duration::from_secs),
                    retries: defaults.retries,
                    pod: msg.proc.pod.clone(),
                };
                let applied = match executor.launch(spec).await {
                    Ok(()) => {
                        metrics::histogram!(names::DISPATCH_LATENCY).record(received_at.elapsed());
                        metrics::counter!(names::EXECUTIONS_STARTED, "proc" => msg.proc.name.to_string()).increment(1);
                        // The run is the executor's now and its record is stored: answer
                        // without waiting for CREATED to be written. Whichever order it
                        // and the run's own events are written in, a step the run is
                        // already past is refused.
                        let created = watcher.send(Apply {
                            execution: name.clone(),
                            status: Some(Status::Created),
                            change: Transition::default(),
                        });
                        let execution = name.clone();
                        actix::spawn(async move {
                            match created.await {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => {
                                    tracing::warn!(%execution, error = %e, "CREATED not written; the run's next status will be")
                                }
                                Err(e) => {
                                    tracing::warn!(%execution, error = %e, "CREATED not written: the Watcher is unavailable")
                                }
                            }
                        });
                        return Ok(Execution {
                            status: Status::Created,
                            ..received
                        });
                    }
                    Err(e) => {
                        crate::telemetry::report(
                            &format!("the executor refused execution {name}: {e}"),
                            &[
                                ("execution", name.as_str()),
                                ("proc", msg.proc.name.as_str()),
                                ("user", &received.user_email),
                            ],
                        );
                        fanout.do_send(UpstreamGone {
                            execution: name.clone(),
                        });
                        watcher
                            .send(settle(Status::CreationFailed, e.to_string()))
                            .await??
                    }
                };
                match applied {
                    Some(execution) => Ok(execution),
                    // Already further along (the run started before CREATED was written).
                    None => Ok(executions.get(name.as_str()).await?.unwrap_or(received)),
                }
            },
            span,
        ))
    }
}

/// Stops the run (the executor kills it) and writes CANCELLED; idempotent.
impl Handler<Cancel> for Dispatcher {
    type Result = ResponseFuture<Result<Execution, DispatchError>>;

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) -> Self::Result {
        let executions = self.executions.clone();
        let executor = self.executor.clone();
        let watcher = self.watcher.clone();
        let fanout = self.fanout.clone();
        let leases = self.leases.clone();
        let bus = self.bus.clone();
        Box::pin(async move {
            let name = msg.execution;
            let ended = |execution: Execution| match execution.status {
                Status::Cancelled => Ok(execution),
                status => Err(DispatchError::AlreadyEnded {
                    name: name.clone(),
                    status,
                }),
            };
            let Some(execution) = executions.get(name.as_str()).await? else {
                return Err(DispatchError::NotFound(name));
            };
            if execution.status.is_final() {
                return ended(execution);
            }
            let me = leases.ownership().replica.clone();
            if let Some(owner) = execution.owner.as_deref().filter(|o| **o != *me) {
                let expired = execution
                    .lease_expires_at
                    .is_none_or(|until| until < crate::store::now());
                if expired {
                    // Its replica is gone: take it over first, then cancel it here.
                    super::cluster::claim(leases.clone(), executor.kind(), watcher.clone(), false)
                        .await?;
                } else {
                    if !bus.is_shared() {
                        return Err(DispatchError::OwnerUnreachable(format!(
                            "execution {name} runs on replica {owner}; cancelling it from another replica needs Redis (PROCTOR_REDIS_ADDRESS) to reach that replica"
                        )));
                    }
                    bus.publish(Announcement::Cancel {
                        execution: name.to_string(),
                        owner: owner.to_owned(),
                        by: msg.by.clone(),
                    });
                    let deadline = tokio::time::Instant::now() + REMOTE_CANCEL_WAIT;
                    while tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        match executions.get(name.as_str()).await? {
                            Some(execution) if execution.status.is_final() => {
                                return ended(execution);
                            }
                            Some(_) => {}
                            None => return Err(DispatchError::NotFound(name)),
                        }
                    }
                    return Err(DispatchError::OwnerUnreachable(format!(
                        "replica {owner}, which runs execution {name}, did not cancel it within {}s; try again",
                        REMOTE_CANCEL_WAIT.as_secs()
                    )));
                }
            }
            let reason = format!("cancelled by {}", msg.by);
            let known = executor
                .cancel(&name, &reason)
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
            if !known {
                fanout.do_send(UpstreamGone {
                    execution: name.clone(),
                });
            }
            let written = watcher
                .send(Apply {
                    execution: name.clone(),
                    status: Some(Status::Cancelled),
                    change: Transition {
                        reason: Some(reason),
                        ..Default::default()
                    },
                })
                .await??;
            match written {
                Some(execution) => Ok(execution),
                None => match executions.get(name.as_str()).await? {
                    Some(execution) if execution.status.is_final() => ended(execution),
                    Some(execution) => Ok(execution),
                    None => Err(DispatchError::NotFound(name)),
                },
            }
        })
    }
}
