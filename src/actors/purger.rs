//! The Purger applies retention (PROCTOR_EXECUTION_RETENTION_DAYS,
//! PROCTOR_LOG_RETENTION_DAYS, a proc's own): a pass a minute after start-up, then
//! every PROCTOR_PURGE_INTERVAL_MINUTES, one at a time. The pass itself is the store's
//! ([`crate::store::purge`]): small batches, short transactions, a rest between
//! statements, and on PostgreSQL one replica at a time. Rows removed are counted in
//! `proctor_purged_rows_total{table}`. At shutdown a pass stops after its statement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::store::purge::OnRemoved;
use crate::store::{PurgeReport, PurgeStore, StoreError};

/// The first pass waits this long after start-up (or the interval, when shorter), so
/// that it does not compete with a replica's start.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Runs one pass now and answers what it removed; `None` when another replica is
/// purging. A dry run counts what would go and removes nothing.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Option<PurgeReport>, StoreError>")]
pub struct PurgeNow {
    pub dry_run: bool,
}

/// proctord is stopping: end the pass under way after its statement, start no other.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop;

pub struct Purger {
    store: PurgeStore,
    interval: Duration,
    /// Whether a timed pass is under way.
    running: bool,
    stop: Arc<AtomicBool>,
}

/// Counts removed rows in `proctor_purged_rows_total{table}`.
pub fn count_removed() -> OnRemoved {
    Arc::new(|table, rows| {
        metrics::counter!(crate::telemetry::names::PURGED_ROWS, "table" => table).increment(rows)
    })
}

impl Purger {
    pub fn new(store: PurgeStore, interval: Duration) -> Self {
        Self {
            store,
            interval,
            running: false,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A timed pass, unless one is under way or proctord is stopping.
    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.stop.load(Ordering::Relaxed) {
            return;
        }
        self.running = true;
        let (store, stop) = (self.store.clone(), self.stop.clone());
        let started = std::time::Instant::now();
        let pass = async move { store.run(false, stop, count_removed()).await };
        ctx.spawn(pass.into_actor(self).map(move |result, act, _| {
            act.running = false;
            match result {
                Ok(Some(report)) if report.removed.is_empty() => {
                    tracing::debug!("retention: nothing to remove")
                }
                Ok(Some(report)) => tracing::info!(
                    executions = report.rows("executions"),
                    execution_logs = report.rows("execution_logs"),
                    runs_without_lines = report.runs_without_lines,
                    removed = ?report.removed,
                    interrupted = report.interrupted,
                    seconds = started.elapsed().as_secs_f64(),
                    "retention: removed old runs and lines"
                ),
                Ok(None) => tracing::debug!("retention: another replica is purging"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "retention: the purge failed; the next pass goes on where it stopped"
                ),
            }
        }));
    }
}

impl Actor for Purger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let interval = self.interval;
        ctx.run_later(FIRST_PASS_AFTER.min(interval), move |act, ctx| {
            act.pass(ctx);
            ctx.run_interval(interval, |act, ctx| act.pass(ctx));
        });
    }
}

impl Supervised for Purger {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Purger restarting");
        self.running = false;
    }
}

/// Runs a pass at once, beside a timed one if there is one (both only remove what is
/// due; on PostgreSQL the second answers `None`).
impl Handler<PurgeNow> for Purger {
    type Result = ResponseFuture<Result<Option<PurgeReport>, StoreError>>;

    fn handle(&mut self, msg: PurgeNow, _: &mut Context<Self>) -> Self::Result {
        let (store, stop) = (self.store.clone(), self.stop.clone());
        Box::pin(async move { store.run(msg.dry_run, stop, count_removed()).await })
    }
}

/// Stops the pass under way after its statement.
impl Handler<Stop> for Purger {
    type Result = ();

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
