//! Where runs happen. An [`Executor`] launches a [`RunSpec`], reports the run's
//! lifecycle as [`RunEvent`]s on one shared channel (one watch over every run, as a
//! Kubernetes watch by label selector is) and its output as [`LogEvent`]s on another.
//! No actix types here: the actors consume the channels.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::sync::mpsc;

use crate::config::Sensitive;
use crate::model::{ExecutionName, ProcName, Status};

pub mod guard;
pub mod kubernetes;
pub mod local;

pub use kubernetes::KubernetesExecutor;
pub use local::LocalExecutor;

/// Everything an executor needs to run one execution.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub execution: ExecutionName,
    pub proc_name: ProcName,
    pub image: String,
    /// The program and its arguments (the local executor needs it; Kubernetes runs the
    /// image's entrypoint when it is absent).
    pub command: Option<Vec<String>>,
    /// The execution's args, as environment variables.
    pub args: BTreeMap<String, String>,
    /// The proc's secrets in the clear, as environment variables.
    pub secrets: BTreeMap<String, Sensitive<String>>,
    /// The whole run's deadline, all attempts together.
    pub deadline: Duration,
    /// How many times a failed attempt is tried again.
    pub retries: u32,
}

/// What happened to a run. Facts, in the order they happened for one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// Attempt `attempt` (from 1) started.
    Running {
        execution: ExecutionName,
        attempt: u32,
    },
    /// An attempt failed and another one will follow.
    AttemptFailed {
        execution: ExecutionName,
        attempt: u32,
        exit_code: Option<i32>,
        reason: String,
    },
    Succeeded {
        execution: ExecutionName,
        attempts: u32,
    },
    Failed {
        execution: ExecutionName,
        exit_code: Option<i32>,
        reason: String,
        attempts: u32,
    },
    TimedOut {
        execution: ExecutionName,
        reason: String,
        attempts: u32,
    },
    Cancelled {
        execution: ExecutionName,
        reason: String,
    },
}

impl RunEvent {
    pub fn execution(&self) -> &ExecutionName {
        match self {
            RunEvent::Running { execution, .. }
            | RunEvent::AttemptFailed { execution, .. }
            | RunEvent::Succeeded { execution, .. }
            | RunEvent::Failed { execution, .. }
            | RunEvent::TimedOut { execution, .. }
            | RunEvent::Cancelled { execution, .. } => execution,
        }
    }

    /// The status this event moves the execution to, if any.
    pub fn status(&self) -> Option<Status> {
        match self {
            RunEvent::Running { .. } => Some(Status::Running),
            RunEvent::AttemptFailed { .. } => None,
            RunEvent::Succeeded { .. } => Some(Status::Succeeded),
            RunEvent::Failed { .. } => Some(Status::Failed),
            RunEvent::TimedOut { .. } => Some(Status::TimedOut),
            RunEvent::Cancelled { .. } => Some(Status::Cancelled),
        }
    }
}

/// A run's output: lines in the order they were printed, then the end of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Lines {
        execution: ExecutionName,
        lines: Vec<(String, NaiveDateTime)>,
    },
    /// No more lines will come for this execution.
    Ended { execution: ExecutionName },
}

/// The ends of the channels an executor writes to.
#[derive(Clone)]
pub struct ExecutorSinks {
    pub events: mpsc::Sender<RunEvent>,
    pub logs: mpsc::Sender<LogEvent>,
}

/// The ends the actors read from.
pub struct ExecutorStreams {
    pub events: mpsc::Receiver<RunEvent>,
    pub logs: mpsc::Receiver<LogEvent>,
}

/// Log batches in flight between an executor and the LogFanout: a bound on memory,
/// and the back-pressure that slows a run's output when storage falls behind.
pub const LOG_CHANNEL_BATCHES: usize = 256;
const EVENT_CHANNEL: usize = 4096;

/// The two channels every executor reports on.
pub fn channels() -> (ExecutorSinks, ExecutorStreams) {
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let (logs_tx, logs_rx) = mpsc::channel(LOG_CHANNEL_BATCHES);
    (
        ExecutorSinks {
            events: events_tx,
            logs: logs_tx,
        },
        ExecutorStreams {
            events: events_rx,
            logs: logs_rx,
        },
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The executor refused the run (becomes CREATION_FAILED).
    #[error("{0}")]
    Refused(String),
    /// The executor could not be reached (a retry may succeed).
    #[error("the executor is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// `local` or `kubernetes`, as stored on each execution.
    fn kind(&self) -> &'static str;

    /// Whether a proc must have a `command` to run here.
    fn needs_command(&self) -> bool;

    /// Accepts the run; its events and lines follow on the sinks.
    async fn launch(&self, spec: RunSpec) -> Result<(), ExecutorError>;

    /// Stops the run and returns once it is stopped (`false` when it was unknown).
    async fn cancel(&self, execution: &ExecutionName, reason: &str) -> Result<bool, ExecutorError>;

    /// Whether the executor's backend answers (the readiness check); `Err` says why not.
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// At shutdown: stops what cannot outlive proctord (local runs end FAILED as
    /// interrupted); runs that can (Kubernetes Jobs) go on and are re-attached later.
    async fn shutdown(&self) {}

    /// At start-up: settles or re-attaches each execution left unfinished by a previous
    /// proctord; returns the events that settle them.
    async fn reconcile(&self, unfinished: &[ExecutionName]) -> Vec<RunEvent>;
}
