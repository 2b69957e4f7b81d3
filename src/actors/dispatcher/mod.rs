//! The Dispatcher starts and stops executions: it writes each one RECEIVED, checks
//! what the run needs (a command for the local executor, the proc's secrets), opens its
//! log stream and hands it to the executor; and it cancels runs on request: its own
//! runs itself, another replica's through that replica (asked over the bus), and a
//! dead replica's after taking them over. It also keeps the run queues of procs with
//! `max_concurrent_runs` moving ([`queue`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::log_fanout::{LogFanout, UpstreamGone};
use super::watcher::{Apply, Watcher};
use crate::executor::Executor;
use crate::model::{ExecutionName, ProcMetadata, Status};
use crate::store::{
    Admitted, Announcement, Bus, Execution, ExecutionStore, LeaseStore, NewExecution, ProcStore,
    SecretStore, StoreError, Transition,
};

mod launch;
mod queue;

use self::launch::Launcher;

pub use self::queue::{PauseQueue, Promote};

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
    procs: ProcStore,
    secrets: SecretStore,
    leases: LeaseStore,
    bus: Bus,
    executor: Arc<dyn Executor>,
    watcher: Addr<Watcher>,
    fanout: Addr<LogFanout>,
    defaults: RunDefaults,
    /// The run queues to look at once the promotion under way is done (`None`: all).
    queue: queue::Pending,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        executions: ExecutionStore,
        procs: ProcStore,
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
            procs,
            secrets,
            leases,
            bus,
            executor,
            watcher,
            fanout,
            defaults,
            queue: Default::default(),
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_queue(ctx);
    }
}

impl Supervised for Dispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.queue = Default::default();
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

/// Writes RECEIVED (or QUEUED when the proc's `max_concurrent_runs` are all taken),
/// checks the requirements, opens the log stream and launches; answers once the
/// executor has accepted (CREATED), the run has been refused, or it waits in the queue.
impl Handler<Execute> for Dispatcher {
    type Result = ResponseFuture<Result<Execution, DispatchError>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) -> Self::Result {
        let executions = self.executions.clone();
        let secrets = self.secrets.clone();
        let launcher = self.launcher();
        let me = ctx.address();
        let received_at = std::time::Instant::now();
        let span = tracing::info_span!("execution", proc = %msg.proc.name, execution = tracing::field::Empty);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let name = ExecutionName::generate(&msg.proc.name);
                tracing::Span::current().record("execution", name.as_str());
                let new = NewExecution {
                    name: name.clone(),
                    proc_name: msg.proc.name.to_string(),
                    image: msg.proc.image_name.clone(),
                    args: msg.args.clone(),
                    executor: launcher.executor.kind().to_owned(),
                    user_email: msg.user_email,
                    schedule_id: msg.schedule_id,
                    callback_url: msg.callback_url,
                    notify: msg.notify,
                };
                let record = async {
                    match msg.proc.max_concurrent_runs {
                        Some(max) => executions.admit(new, max).await,
                        None => executions.insert(new).await.map(|execution| Admitted {
                            execution,
                            promote: false,
                        }),
                    }
                };
                // The record is written while the proc's secrets are read.
                let (received, requirement) = tokio::join!(
                    record,
                    unmet_requirement(&msg.proc, launcher.executor.as_ref(), &secrets)
                );
                let Admitted {
                    execution: received,
                    promote,
                } = received?;
                let secrets = match requirement {
                    Ok(secrets) => secrets,
                    Err(reason) => {
                        return launcher
                            .settle(received, Status::RequirementNotMet, reason)
                            .await;
                    }
                };
                if received.status == Status::Queued {
                    tracing::info!(execution = %name, "queued: the proc's max_concurrent_runs are taken");
                    if promote {
                        me.do_send(Promote {
                            proc: Some(received.proc_name.clone()),
                        });
                    }
                    return Ok(received);
                }
                launcher
                    .launch(received, &msg.proc, msg.args, secrets, received_at)
                    .await
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
            // A waiting QUEUED run has no owner and is cancelled here; when another
            // replica promotes it meanwhile, the write is refused and the second pass
            // asks that replica.
            for pass in 0..2 {
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
                        super::cluster::claim(
                            leases.clone(),
                            executor.kind(),
                            watcher.clone(),
                            false,
                        )
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
                    Some(execution) => return Ok(execution),
                    None => match executions.get(name.as_str()).await? {
                        Some(execution) if execution.status.is_final() => return ended(execution),
                        Some(execution) if execution.status == Status::Queued && pass == 0 => {}
                        Some(execution) => return Ok(execution),
                        None => return Err(DispatchError::NotFound(name)),
                    },
                }
            }
            Err(DispatchError::OwnerUnreachable(format!(
                "execution {name} was promoted from the queue while it was cancelled; try again"
            )))
        })
    }
}
