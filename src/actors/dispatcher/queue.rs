//! The run queues of procs with `max_concurrent_runs`. A run that finds its proc's
//! slots taken is stored QUEUED with no owner (the store's `admit`); when a run of the
//! proc ends on any replica, its `Ended` announcement reaches every replica, and each
//! tries to promote the oldest waiting runs into the freed slots (the store's
//! `promote`, under a per-proc lock, so only free slots are taken whoever tries). The
//! replica that promotes a run owns it and launches it, in queue order. A sweep every
//! few seconds promotes whatever an announcement missed (a replica crashed before
//! promoting, an announcement was lost), so a queue is never stranded.

use std::collections::HashSet;
use std::time::Duration;

use actix::prelude::*;

use super::{Dispatcher, Launcher, unmet_requirement};
use crate::model::{ProcName, Status};
use crate::store::{Announcement, Execution, ExecutionStore, ProcStore, SecretStore, StoreError};

/// How often every queue is looked at even without an announcement.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Start the oldest waiting runs of `proc` (every proc with runs waiting when `None`)
/// that fit in its free slots.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Promote {
    pub proc: Option<String>,
}

/// proctord is stopping: promote nothing more here.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PauseQueue;

/// The promotions asked for while one was under way.
#[derive(Debug, Default)]
pub(super) struct Pending {
    paused: bool,
    running: bool,
    all: bool,
    procs: HashSet<String>,
}

impl Dispatcher {
    /// Sweeps on a timer and listens for ended runs.
    pub(super) fn start_queue(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_EVERY, |_, ctx| {
            ctx.notify(Promote { proc: None });
        });
        let heard = futures_util::stream::unfold(self.bus.listen(), |mut heard| async move {
            loop {
                match heard.recv().await {
                    Ok(Announcement::Ended { execution, .. }) => {
                        return Some((proc_of(&execution), heard));
                    }
                    Ok(_) => continue,
                    // Missed some: look at every queue.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        return Some((None, heard));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        ctx.add_stream(heard);
    }

    /// Runs the pending promotions one batch at a time (so runs start in queue order).
    fn promote_pending(&mut self, ctx: &mut Context<Self>) {
        if self.queue.paused
            || self.queue.running
            || (!self.queue.all && self.queue.procs.is_empty())
        {
            return;
        }
        self.queue.running = true;
        let all = std::mem::take(&mut self.queue.all);
        let procs = std::mem::take(&mut self.queue.procs);
        let work = promote(
            self.executions.clone(),
            self.procs.clone(),
            self.secrets.clone(),
            self.launcher(),
            all,
            procs,
        );
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.queue.running = false;
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot promote queued runs; the next sweep tries again");
            }
            act.promote_pending(ctx);
        }));
    }
}

/// The proc of an execution named `<proc>-<suffix>`.
fn proc_of(execution: &str) -> Option<String> {
    execution.rsplit_once('-').map(|(proc, _)| proc.to_owned())
}

/// Promotes and launches the waiting runs that fit, proc by proc.
async fn promote(
    executions: ExecutionStore,
    procs: ProcStore,
    secrets: SecretStore,
    launcher: Launcher,
    all: bool,
    mut names: HashSet<String>,
) -> Result<(), StoreError> {
    if all {
        names.extend(executions.queued_procs().await?);
    }
    for name in names {
        if !all && !executions.has_waiting(&name).await? {
            continue;
        }
        let proc = match ProcName::parse(&name) {
            Ok(proc_name) => procs.get(&proc_name).await?,
            Err(_) => None,
        };
        let max = proc.as_ref().and_then(|p| p.max_concurrent_runs);
        let promoted = executions.promote(&name, max).await?;
        for run in promoted {
            tracing::info!(execution = %run.name, "promoted from the queue");
            start(&launcher, &secrets, proc.as_ref(), run).await;
        }
    }
    Ok(())
}

/// Launches a promoted run (with the proc's metadata as it is now), or settles it when
/// it cannot start.
async fn start(
    launcher: &Launcher,
    secrets: &SecretStore,
    proc: Option<&crate::model::ProcMetadata>,
    run: Execution,
) {
    let name = run.name.clone();
    let received_at = std::time::Instant::now();
    let result = match proc {
        None => {
            let reason = format!("proc {} no longer exists", run.proc_name);
            launcher
                .settle(run, Status::RequirementNotMet, reason)
                .await
        }
        Some(proc) => match unmet_requirement(proc, launcher.executor.as_ref(), secrets).await {
            Err(reason) => {
                launcher
                    .settle(run, Status::RequirementNotMet, reason)
                    .await
            }
            Ok(values) => {
                let args = run.args.clone();
                launcher.launch(run, proc, args, values, received_at).await
            }
        },
    };
    if let Err(e) = result {
        tracing::warn!(execution = %name, error = %e, "a promoted run did not start");
    }
}

/// Queues the promotion and starts it unless one is under way.
impl Handler<Promote> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Promote, ctx: &mut Context<Self>) {
        match msg.proc {
            Some(proc) => {
                self.queue.procs.insert(proc);
            }
            None => self.queue.all = true,
        }
        self.promote_pending(ctx);
    }
}

/// Stops promoting (a promotion under way finishes its launches).
impl Handler<PauseQueue> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: PauseQueue, _: &mut Context<Self>) {
        self.queue.paused = true;
    }
}

/// A run ended somewhere: its proc's queue may move.
impl StreamHandler<Option<String>> for Dispatcher {
    fn handle(&mut self, proc: Option<String>, ctx: &mut Context<Self>) {
        <Self as Handler<Promote>>::handle(self, Promote { proc }, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_execution_names_its_proc_before_its_suffix() {
        assert_eq!(
            super::proc_of("nightly-report-abcdefghijklmn").as_deref(),
            Some("nightly-report")
        );
        assert_eq!(super::proc_of("nodash"), None);
    }
}
