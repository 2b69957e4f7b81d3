//! The Cluster keeps this replica's leases: it renews them on a beat (one statement for
//! every run it follows), claims runs whose lease expired (a replica died, or stopped
//! and let them go), hands what it claims to the Watcher to re-attach or settle, and
//! lets go of the runs it can hand over when proctord stops. A run whose lease another
//! replica took (this one was cut off longer than the lease) is abandoned here.
//!
//! Timing, with PROCTOR_LEASE_SECONDS = L (10 by default): a beat every L/4; a look for
//! expired leases every second (or L/4 when shorter), and at once when a replica
//! announces that it let its runs go. A replica killed just after a beat has its runs
//! owned again by another at most L + 1 s later; a stopping one, within about a second.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::dispatcher::{Cancel, Dispatcher};
use super::log_fanout::{Forget, LogFanout};
use super::watcher::{Adopt, Watcher};
use crate::executor::Executor;
use crate::model::ExecutionName;
use crate::store::{Announcement, Bus, Claimed, LeaseStore, StoreError};

/// The longest wait between two looks for expired leases.
const CLAIM_EVERY: Duration = Duration::from_secs(1);

/// Claims the runs whose lease expired now; answers how many were taken.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct ClaimNow {
    /// The embedded default's start: the only replica there is takes every unfinished
    /// run, whatever its lease (it was this proctord's, before it restarted).
    pub everything: bool,
}

/// proctord is stopping: stop renewing, and end the leases of `runs` (which go on
/// without this replica) so another replica takes them at once.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Release {
    pub runs: Vec<ExecutionName>,
}

pub struct Cluster {
    leases: LeaseStore,
    executor: Arc<dyn Executor>,
    watcher: Addr<Watcher>,
    fanout: Addr<LogFanout>,
    dispatcher: Addr<Dispatcher>,
    bus: Bus,
    /// Whether other replicas may exist (PostgreSQL); SQLite is one replica.
    shared: bool,
    beating: bool,
    claiming: bool,
    stopping: bool,
}

impl Cluster {
    pub fn new(
        leases: LeaseStore,
        executor: Arc<dyn Executor>,
        watcher: Addr<Watcher>,
        fanout: Addr<LogFanout>,
        dispatcher: Addr<Dispatcher>,
        bus: Bus,
        shared: bool,
    ) -> Self {
        Self {
            leases,
            executor,
            watcher,
            fanout,
            dispatcher,
            bus,
            shared,
            beating: false,
            claiming: false,
            stopping: false,
        }
    }

    fn me(&self) -> &str {
        &self.leases.ownership().replica
    }

    /// Renews every lease this replica holds; abandons the runs it followed that it
    /// no longer owns.
    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.beating || self.stopping {
            return;
        }
        self.beating = true;
        // Taken before the renewal: a run launched after it began was inserted after
        // it too, and must not count as lost.
        let following = self.executor.following();
        let leases = self.leases.clone();
        let started = std::time::Instant::now();
        let renew = async move { leases.renew().await };
        ctx.spawn(renew.into_actor(self).map(move |renewed, act, _| {
            act.beating = false;
            metrics::histogram!(crate::telemetry::names::LEASE_BEAT).record(started.elapsed());
            let renewed: HashSet<String> = match renewed {
                Ok(renewed) => renewed.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this replica's leases; trying again at the next beat");
                    return;
                }
            };
            let lost: Vec<ExecutionName> = following
                .into_iter()
                .filter(|execution| !renewed.contains(execution.as_str()))
                .collect();
            for execution in lost {
                act.abandon(execution);
            }
        }));
    }

    /// Stops following a run another replica owns now, unless it has just ended.
    fn abandon(&self, execution: ExecutionName) {
        let executor = self.executor.clone();
        let fanout = self.fanout.clone();
        actix::spawn(async move {
            tracing::warn!(%execution, "another replica owns this run now; no longer following it");
            executor.abandon(&execution).await;
            fanout.do_send(Forget { execution });
        });
    }

    /// Claims expired leases unless a claim is under way.
    fn claim(&mut self, everything: bool, ctx: &mut Context<Self>) {
        if self.claiming || self.stopping {
            return;
        }
        self.claiming = true;
        let claimed = claim(
            self.leases.clone(),
            self.executor.kind(),
            self.watcher.clone(),
            everything,
        );
        ctx.spawn(claimed.into_actor(self).map(|result, act, _| {
            act.claiming = false;
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot claim expired leases; trying again shortly");
            }
        }));
    }

    /// An announcement from another replica (or this one).
    fn heard(&mut self, announcement: Announcement, ctx: &mut Context<Self>) {
        match announcement {
            Announcement::Released { replica } if replica != self.me() => self.claim(false, ctx),
            Announcement::Cancel {
                execution,
                owner,
                by,
            } if owner == self.me() => {
                let Ok(execution) = ExecutionName::parse(&execution) else {
                    return;
                };
                let cancel = self.dispatcher.send(Cancel {
                    execution: execution.clone(),
                    by,
                });
                actix::spawn(async move {
                    match cancel.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(%execution, error = %e, "a cancel asked by another replica failed")
                        }
                        Err(e) => {
                            tracing::warn!(%execution, error = %e, "the Dispatcher is unavailable")
                        }
                    }
                });
            }
            _ => {}
        }
    }
}

/// Claims this replica's kind of runs whose lease expired and has the Watcher take
/// them over; answers how many.
pub async fn claim(
    leases: LeaseStore,
    kind: &'static str,
    watcher: Addr<Watcher>,
    everything: bool,
) -> Result<usize, StoreError> {
    let mut claimed = leases.claim_expired(&[kind], everything).await?;
    // A run promoted from a queue but never launched goes back to its place in the
    // queue (the next promotion starts it), rather than being settled as lost.
    let (queued, launched): (Vec<Claimed>, Vec<Claimed>) = claimed
        .into_iter()
        .partition(|run| run.status == crate::model::Status::Queued);
    if !queued.is_empty() {
        let names = queued.iter().map(|run| run.name.clone()).collect();
        let requeued = leases.requeue(names).await?;
        tracing::warn!(
            requeued,
            "put runs promoted by a replica that is gone back in their queue"
        );
    }
    claimed = launched;
    if claimed.is_empty() {
        return Ok(queued.len());
    }
    for run in &claimed {
        tracing::warn!(
            execution = %run.name,
            previous_owner = run.previous_owner.as_deref().unwrap_or("none"),
            "took over a run whose lease expired"
        );
    }
    metrics::counter!(crate::telemetry::names::RUNS_TAKEN_OVER).increment(claimed.len() as u64);
    watcher
        .send(Adopt {
            claimed,
            restarted: everything,
        })
        .await
        .map_err(|e| StoreError::Task(format!("the Watcher is unavailable: {e}")))?
}

impl Actor for Cluster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let lease = self.leases.ownership().lease;
        ctx.run_interval(lease / 4, |act, ctx| act.beat(ctx));
        if self.shared {
            ctx.run_interval(CLAIM_EVERY.min(lease / 4), |act, ctx| act.claim(false, ctx));
            let heard = futures_util::stream::unfold(self.bus.listen(), |mut heard| async move {
                loop {
                    match heard.recv().await {
                        Ok(announcement) => return Some((announcement, heard)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            ctx.add_stream(heard);
        }
    }
}

impl Supervised for Cluster {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Cluster restarting");
        crate::telemetry::report("the Cluster actor restarted", &[("actor", "Cluster")]);
    }
}

/// Announcements from the other replicas.
impl StreamHandler<Announcement> for Cluster {
    fn handle(&mut self, announcement: Announcement, ctx: &mut Context<Self>) {
        self.heard(announcement, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Claims now and answers once the claimed runs are taken over.
impl Handler<ClaimNow> for Cluster {
    type Result = ResponseFuture<Result<usize, StoreError>>;

    fn handle(&mut self, msg: ClaimNow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(claim(
            self.leases.clone(),
            self.executor.kind(),
            self.watcher.clone(),
            msg.everything,
        ))
    }
}

/// Stops the beats and claims, ends the leases of the runs that go on, and tells the
/// other replicas to claim them.
impl Handler<Release> for Cluster {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let leases = self.leases.clone();
        let bus = self.bus.clone();
        let me = self.me().to_owned();
        Box::pin(async move {
            let names: Vec<String> = msg.runs.iter().map(|e| e.to_string()).collect();
            if names.is_empty() {
                return;
            }
            match leases.release(names).await {
                Ok(released) => {
                    tracing::info!(
                        released,
                        "let go of the runs that keep going; another replica takes them over"
                    );
                    bus.publish(Announcement::Released { replica: me });
                    // The publish is sent from a task of its own: give it a moment
                    // before the runtime stops.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release the leases; other replicas take the runs over when they expire")
                }
            }
        })
    }
}
