//! The actors: each owns one thing and talks by messages. [`start`] builds the
//! supervision tree and connects the executor's channels.

use std::sync::Arc;

use actix::prelude::*;

use crate::config::Settings;
use crate::executor::{Executor, ExecutorStreams, RunEvent};
use crate::store::Stores;

pub mod cluster;
pub mod dispatcher;
pub mod log_fanout;
pub mod mailer;
pub mod notifier;
pub mod purger;
pub mod ticker;
pub mod watcher;

pub use cluster::Cluster;
pub use dispatcher::{Cancel, DispatchError, Dispatcher, Execute, Promote, RunDefaults};
pub use log_fanout::LogFanout;
pub use mailer::Mailer;
pub use notifier::Notifier;
pub use purger::Purger;
pub use ticker::Ticker;
pub use watcher::Watcher;

/// The addresses of the running actors.
#[derive(Clone)]
pub struct Actors {
    pub dispatcher: Addr<Dispatcher>,
    pub watcher: Addr<Watcher>,
    pub fanout: Addr<LogFanout>,
    pub mailer: Addr<Mailer>,
    pub notifier: Addr<Notifier>,
    pub cluster: Addr<Cluster>,
    /// `None` on a replica with PROCTOR_SCHEDULER=off.
    pub ticker: Option<Addr<Ticker>>,
    /// Retention's background purge.
    pub purger: Addr<Purger>,
    /// The threads of the LogFanout and the Ticker, stopped when the last copy of
    /// these addresses goes.
    _threads: Arc<Threads>,
}

/// Arbiters (threads with an event loop each) that outlive the System that started
/// them unless stopped: when an app in a process that goes on (the tests start many)
/// is dropped, its Ticker would otherwise keep syncing against a database that is
/// gone, every 10 s, for as long as the process lives.
struct Threads(Vec<ArbiterHandle>);

impl Drop for Threads {
    fn drop(&mut self) {
        for arbiter in &self.0 {
            arbiter.stop();
        }
    }
}

/// How many executions' events are written at once.
const EVENT_LANES: usize = 64;

fn lane_of(execution: &crate::model::ExecutionName) -> usize {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    execution.hash(&mut hasher);
    (hasher.finish() % EVENT_LANES as u64) as usize
}

/// Starts every actor under a supervisor and pipes the executor's events to the
/// Watcher and its output to the LogFanout, one message at a time and in order (a
/// full mailbox slows the executor down rather than growing memory).
pub fn start(
    settings: &Settings,
    stores: &Stores,
    executor: Arc<dyn Executor>,
    streams: ExecutorStreams,
    defaults: RunDefaults,
) -> Actors {
    let (logs, bus) = (stores.logs.clone(), stores.bus.clone());
    // The LogFanout and the Ticker get threads of their own: a flood of log lines or
    // of status writes must not delay a schedule's fire, and the reverse.
    let mut threads = Vec::new();
    let mut thread = || {
        let handle = Arbiter::new().handle();
        threads.push(handle.clone());
        handle
    };
    let fanout = Supervisor::start_in_arbiter(&thread(), move |_| LogFanout::new(logs, bus));
    let mailer = {
        let (schedules, logs) = (stores.schedules.clone(), stores.logs.clone());
        let mail = settings.mail.clone();
        Supervisor::start(move |_| Mailer::new(&mail, schedules, logs))
    };
    let notifier = {
        let (settings, deliveries, executions) = (
            settings.notify.clone(),
            stores.notifications.clone(),
            stores.executions.clone(),
        );
        Supervisor::start(move |_| Notifier::new(&settings, deliveries, executions))
    };
    let watcher = {
        let (executions, logs, executor, fanout, tell, bus) = (
            stores.executions.clone(),
            stores.logs.clone(),
            executor.clone(),
            fanout.clone(),
            (mailer.clone(), notifier.clone()),
            stores.bus.clone(),
        );
        Supervisor::start(move |_| Watcher::new(executions, logs, executor, fanout, tell, bus))
    };
    let dispatcher = {
        let (executions, procs, secrets, leases, bus, watcher, fanout, executor) = (
            stores.executions.clone(),
            stores.procs.clone(),
            stores.secrets.clone(),
            stores.leases.clone(),
            stores.bus.clone(),
            watcher.clone(),
            fanout.clone(),
            executor.clone(),
        );
        Supervisor::start(move |_| {
            Dispatcher::new(
                executions, procs, secrets, leases, bus, executor, watcher, fanout, defaults,
            )
        })
    };
    let cluster = {
        let (leases, bus, watcher, fanout, dispatcher) = (
            stores.leases.clone(),
            stores.bus.clone(),
            watcher.clone(),
            fanout.clone(),
            dispatcher.clone(),
        );
        let shared = settings.database.kind == crate::config::DatabaseKind::Postgres;
        Supervisor::start(move |_| {
            Cluster::new(leases, executor, watcher, fanout, dispatcher, bus, shared)
        })
    };
    let ticker = settings.scheduler.then(|| {
        let (schedules, procs, dispatcher) = (
            stores.schedules.clone(),
            stores.procs.clone(),
            dispatcher.clone(),
        );
        let (sync, grace) = (
            settings.schedule_sync_interval,
            settings.schedule_misfire_grace,
        );
        Supervisor::start_in_arbiter(&thread(), move |_| {
            Ticker::new(schedules, procs, dispatcher, sync, grace)
        })
    });

    let purger = {
        let (store, interval) = (stores.purge.clone(), settings.retention.interval);
        Supervisor::start(move |_| Purger::new(store, interval))
    };

    let ExecutorStreams {
        mut events,
        mut logs,
    } = streams;
    // Events go through lanes chosen by execution: one execution's events are applied
    // in order, different executions' side by side (a status write waits for the
    // database; one lane for everything would cap throughput at one write at a time).
    let lanes: Vec<tokio::sync::mpsc::Sender<RunEvent>> = (0..EVENT_LANES)
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<RunEvent>(256);
            let to_watcher = watcher.clone();
            actix::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let execution = event.execution().clone();
                    match to_watcher.send(watcher::Apply::from(event)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(%execution, error = %e, "cannot write a run event")
                        }
                        Err(e) => {
                            tracing::error!(%execution, error = %e, "the Watcher is unavailable")
                        }
                    }
                }
            });
            tx
        })
        .collect();
    actix::spawn(async move {
        while let Some(event) = events.recv().await {
            let lane = lane_of(event.execution());
            if lanes[lane].send(event).await.is_err() {
                tracing::error!("an event lane closed");
            }
        }
    });
    let to_fanout = fanout.clone();
    actix::spawn(async move {
        while let Some(event) = logs.recv().await {
            if let Err(e) = to_fanout.send(log_fanout::Incoming(event)).await {
                tracing::error!(error = %e, "the LogFanout is unavailable");
            }
        }
    });

    Actors {
        dispatcher,
        watcher,
        fanout,
        mailer,
        notifier,
        cluster,
        ticker,
        purger,
        _threads: Arc::new(Threads(threads)),
    }
}
