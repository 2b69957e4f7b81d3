//! The actors: each owns one thing and talks by messages. [`start`] builds the
//! supervision tree and connects the executor's channels.

use std::sync::Arc;

use actix::prelude::*;

use crate::config::Settings;
use crate::executor::{Executor, ExecutorStreams};
use crate::store::Stores;

pub mod dispatcher;
pub mod log_fanout;
pub mod mailer;
pub mod ticker;
pub mod watcher;

pub use dispatcher::{Cancel, DispatchError, Dispatcher, Execute, RunDefaults};
pub use log_fanout::LogFanout;
pub use mailer::Mailer;
pub use ticker::Ticker;
pub use watcher::Watcher;

/// The addresses of the running actors.
#[derive(Clone)]
pub struct Actors {
    pub dispatcher: Addr<Dispatcher>,
    pub watcher: Addr<Watcher>,
    pub fanout: Addr<LogFanout>,
    pub mailer: Addr<Mailer>,
    /// `None` on a replica with PROCTOR_SCHEDULER=off.
    pub ticker: Option<Addr<Ticker>>,
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
    let logs = stores.logs.clone();
    let fanout = Supervisor::start(move |_| LogFanout::new(logs));
    let mailer = {
        let (schedules, logs) = (stores.schedules.clone(), stores.logs.clone());
        let mail = settings.mail.clone();
        Supervisor::start(move |_| Mailer::new(&mail, schedules, logs))
    };
    let watcher = {
        let (executions, logs, executor, fanout, mailer) = (
            stores.executions.clone(),
            stores.logs.clone(),
            executor.clone(),
            fanout.clone(),
            mailer.clone(),
        );
        Supervisor::start(move |_| Watcher::new(executions, logs, executor, fanout, mailer))
    };
    let dispatcher = {
        let (executions, secrets, watcher, fanout) = (
            stores.executions.clone(),
            stores.secrets.clone(),
            watcher.clone(),
            fanout.clone(),
        );
        Supervisor::start(move |_| {
            Dispatcher::new(executions, secrets, executor, watcher, fanout, defaults)
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
        Supervisor::start(move |_| Ticker::new(schedules, procs, dispatcher, sync, grace))
    });

    let ExecutorStreams {
        mut events,
        mut logs,
    } = streams;
    let to_watcher = watcher.clone();
    actix::spawn(async move {
        while let Some(event) = events.recv().await {
            let execution = event.execution().clone();
            match to_watcher.send(watcher::Apply::from(event)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(%execution, error = %e, "cannot write a run event"),
                Err(e) => tracing::error!(%execution, error = %e, "the Watcher is unavailable"),
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
        ticker,
    }
}
