//! Where runs happen. An [`Executor`] launches a [`RunSpec`], reports the run's
//! lifecycle as [`RunEvent`]s on one shared channel (one watch over every run, as a
//! Kubernetes watch by label selector is) and its output as [`LogEvent`]s on another.
//! No actix types here: the actors consume the channels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::sync::mpsc;

use crate::config::Sensitive;
use crate::model::{ExecutionName, ProcName, Resume, Status};

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
    /// The proc's pod options (the Kubernetes executor's; the local one ignores them).
    pub pod: Option<crate::model::PodOptions>,
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

/// Where a line came from, when the executor can say exactly (a Kubernetes pod): what a
/// new owner needs to resume the pod's log after the last stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub pod: Arc<str>,
    /// The container runtime's timestamp of the line, nanoseconds since the epoch.
    pub emitted_ns: i64,
}

/// One line of a run's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub text: String,
    /// When proctord read it.
    pub at: NaiveDateTime,
    pub origin: Option<Origin>,
}

impl OutputLine {
    /// A line read now, with no origin to resume from (a local process's output).
    pub fn now(text: String) -> Self {
        Self {
            text,
            at: crate::store::now(),
            origin: None,
        }
    }
}

/// A run's output: lines in the order they were printed, then the end of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Lines {
        execution: ExecutionName,
        lines: Vec<OutputLine>,
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

/// A run this replica takes over from another (or from a previous proctord).
#[derive(Debug, Clone)]
pub struct Adoption {
    pub execution: ExecutionName,
    pub status: Status,
    /// The replica that followed it before (`None`: one older than leases).
    pub previous_owner: Option<String>,
    /// Taken at the start of the only replica there is (the embedded default): the
    /// previous owner was this same proctord before it restarted.
    pub restarted: bool,
    /// Where each pod's stored log ends.
    pub resume: HashMap<String, Resume>,
}

impl Adoption {
    /// Why a run that could not outlive its replica ended, naming the replica.
    pub fn lost_reason(&self) -> String {
        match (&self.previous_owner, self.restarted) {
            (_, true) | (None, _) => local::RESTART_REASON.to_owned(),
            (Some(owner), false) => format!(
                "lost with replica {owner}: it stopped renewing its lease while the execution was running"
            ),
        }
    }
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
    /// interrupted); runs that can (Kubernetes Jobs) go on, no longer followed here,
    /// and returns them: their leases are released for another replica to take over.
    async fn shutdown(&self) -> Vec<ExecutionName> {
        Vec::new()
    }

    /// The runs this executor follows now.
    fn following(&self) -> Vec<ExecutionName>;

    /// Takes over runs that another replica (or a previous proctord) followed:
    /// re-attaches each one still going, its log resumed after the last stored line;
    /// returns the events that settle the others.
    async fn adopt(&self, runs: Vec<Adoption>) -> Vec<RunEvent>;

    /// Stops following a run whose lease another replica now holds, reporting nothing
    /// more on it (a local run's processes are killed: the new owner has settled it).
    async fn abandon(&self, execution: &ExecutionName);
}
