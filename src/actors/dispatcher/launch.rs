//! Launching a run the Dispatcher has admitted (a new one, or one promoted from its
//! proc's queue): open its log stream, hand it to the executor, write CREATED — or
//! settle it before it starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{DispatchError, Dispatcher, RunDefaults};
use crate::actors::log_fanout::{LogFanout, Open, UpstreamGone};
use crate::actors::watcher::{Apply, Watcher};
use crate::executor::{Executor, RunSpec};
use crate::model::{ExecutionName, ProcMetadata, Status};
use crate::store::{Execution, ExecutionStore, StoreError, Transition};
use crate::telemetry::names;

/// What launching a run needs, cloned out of the Dispatcher.
#[derive(Clone)]
pub(super) struct Launcher {
    pub(super) executor: Arc<dyn Executor>,
    executions: ExecutionStore,
    watcher: Addr<Watcher>,
    fanout: Addr<LogFanout>,
    defaults: RunDefaults,
}

impl Dispatcher {
    pub(super) fn launcher(&self) -> Launcher {
        Launcher {
            executions: self.executions.clone(),
            executor: self.executor.clone(),
            watcher: self.watcher.clone(),
            fanout: self.fanout.clone(),
            defaults: self.defaults.clone(),
        }
    }
}

impl Launcher {
    /// Writes a final status reached before the run started; answers the execution.
    pub(super) async fn settle(
        &self,
        received: Execution,
        status: Status,
        reason: String,
    ) -> Result<Execution, DispatchError> {
        let name = ExecutionName::parse(&received.name).map_err(StoreError::Corrupt)?;
        let written = self
            .watcher
            .send(Apply {
                execution: name.clone(),
                status: Some(status),
                change: Transition {
                    reason: Some(reason),
                    ..Default::default()
                },
            })
            .await??;
        match written {
            Some(execution) => Ok(execution),
            None => Ok(self
                .executions
                .get(name.as_str())
                .await?
                .unwrap_or(received)),
        }
    }

    /// Opens the log stream and hands the run to the executor; answers once it has
    /// accepted (CREATED) or refused (CREATION_FAILED).
    pub(super) async fn launch(
        &self,
        received: Execution,
        proc: &ProcMetadata,
        args: BTreeMap<String, String>,
        secrets: BTreeMap<String, crate::config::Sensitive<String>>,
        received_at: std::time::Instant,
    ) -> Result<Execution, DispatchError> {
        let name = ExecutionName::parse(&received.name).map_err(StoreError::Corrupt)?;
        let (executions, executor, watcher, fanout) = (
            &self.executions,
            &self.executor,
            &self.watcher,
            &self.fanout,
        );
        // Queued ahead of any line of the run (the LogFanout's mailbox is in
        // order and the run starts below).
        fanout.do_send(Open {
            execution: name.clone(),
            execution_id: received.id.clone(),
            next_seq: 1,
        });
        let spec = RunSpec {
            execution: name.clone(),
            proc_name: proc.name.clone(),
            image: proc.image_name.clone(),
            command: proc.command.clone(),
            args,
            secrets,
            deadline: proc
                .active_deadline_seconds
                .map_or(self.defaults.deadline, Duration::from_secs),
            retries: self.defaults.retries,
            pod: proc.pod.clone(),
        };
        let applied = match executor.launch(spec).await {
            Ok(()) => {
                metrics::histogram!(names::DISPATCH_LATENCY).record(received_at.elapsed());
                metrics::counter!(names::EXECUTIONS_STARTED, "proc" => proc.name.to_string())
                    .increment(1);
                // The run is the executor's now and its record is stored: answer
                // without waiting for CREATED to be written. Whichever order it
                // and the run's own events are written in, a step the run is
                // already past is refused.
                let created = watcher.send(Apply {
                    execution: name.clone(),
                    status: Some(Status::Created),
                    change: Transition::default(),
                });
                if received.status == Status::Queued {
                    // A promoted run may have been cancelled while it was launched:
                    // CREATED is then refused, and the run is stopped here.
                    if created.await??.is_none()
                        && let Some(now) = executions.get(name.as_str()).await?
                        && now.status == Status::Cancelled
                    {
                        let reason = now.reason.clone().unwrap_or_default();
                        let _ = executor.cancel(&name, &reason).await;
                        return Ok(now);
                    }
                    return Ok(Execution {
                        status: Status::Created,
                        ..received
                    });
                }
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
                        ("proc", proc.name.as_str()),
                        ("user", &received.user_email),
                    ],
                );
                fanout.do_send(UpstreamGone {
                    execution: name.clone(),
                });
                watcher
                    .send(Apply {
                        execution: name.clone(),
                        status: Some(Status::CreationFailed),
                        change: Transition {
                            reason: Some(e.to_string()),
                            ..Default::default()
                        },
                    })
                    .await??
            }
        };
        match applied {
            Some(execution) => Ok(execution),
            // Already further along (the run started before CREATED was written).
            None => Ok(executions.get(name.as_str()).await?.unwrap_or(received)),
        }
    }
}
