//! The embedded default's executor: each run is a child process in its own process
//! group and working directory, its stdout and stderr read line by line, its deadline
//! and cancellation enforced on the whole group.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::{
    Adoption, Executor, ExecutorError, ExecutorSinks, LogEvent, OutputLine, RunEvent, RunSpec,
    guard,
};
use crate::model::ExecutionName;

/// The longest line kept whole; longer output is split into lines of this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines sent to the LogFanout in one batch at most.
const MAX_BATCH: usize = 512;
/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for the output pipes to close once the process has exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub const RESTART_REASON: &str = "proctord restarted while the execution was running";

/// One run in progress: how to stop it and how to know it stopped.
struct Handle {
    cancel: watch::Sender<Option<StopRequest>>,
    finished: watch::Receiver<bool>,
}

pub struct LocalExecutor {
    runs_dir: PathBuf,
    permits: Arc<Semaphore>,
    sinks: ExecutorSinks,
    running: Arc<Mutex<HashMap<ExecutionName, Handle>>>,
    janitor: Janitor,
}

impl LocalExecutor {
    /// Runs go in `<data_dir>/runs/<execution>`; at most `max_concurrent` at once.
    pub fn new(data_dir: &std::path::Path, max_concurrent: usize, sinks: ExecutorSinks) -> Self {
        Self {
            runs_dir: data_dir.join("runs"),
            permits: Arc::new(Semaphore::new(max_concurrent)),
            sinks,
            running: Arc::default(),
            janitor: Janitor::start(),
        }
    }
}

#[async_trait::async_trait]
impl Executor for LocalExecutor {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn needs_command(&self) -> bool {
        true
    }

    async fn launch(&self, spec: RunSpec) -> Result<(), ExecutorError> {
        let command = match &spec.command {
            Some(command) if !command.is_empty() => command.clone(),
            _ => {
                return Err(ExecutorError::Refused(format!(
                    "proc {} has no command for the local executor",
                    spec.proc_name
                )));
            }
        };
        // Made when the run gets its slot (not here, on the submission's path; a queued
        // run has no directory yet).
        let workdir = self.runs_dir.join(spec.execution.as_str());
        let (cancel_tx, cancel_rx) = watch::channel(None);
        let (finished_tx, finished_rx) = watch::channel(false);
        self.running.lock().expect("not poisoned").insert(
            spec.execution.clone(),
            Handle {
                cancel: cancel_tx,
                finished: finished_rx,
            },
        );
        let run = Run {
            spec,
            command,
            workdir,
            janitor: self.janitor.clone(),
            sinks: self.sinks.clone(),
            cancel: cancel_rx,
        };
        let permits = self.permits.clone();
        let running = self.running.clone();
        let span = tracing::info_span!("execution", execution = %run.spec.execution);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let execution = run.spec.execution.clone();
                run.run(permits).await;
                running.lock().expect("not poisoned").remove(&execution);
                let _ = finished_tx.send(true);
            },
            span,
        ));
        Ok(())
    }

    async fn cancel(&self, execution: &ExecutionName, reason: &str) -> Result<bool, ExecutorError> {
        let finished = {
            let running = self.running.lock().expect("not poisoned");
            let Some(handle) = running.get(execution) else {
                return Ok(false);
            };
            let _ = handle
                .cancel
                .send(Some(StopRequest::Cancel(reason.to_owned())));
            handle.finished.clone()
        };
        let mut finished = finished;
        let _ = finished.wait_for(|done| *done).await;
        Ok(true)
    }

    async fn shutdown(&self) -> Vec<ExecutionName> {
        let finished: Vec<watch::Receiver<bool>> = {
            let running = self.running.lock().expect("not poisoned");
            running
                .values()
                .map(|handle| {
                    let _ = handle
                        .cancel
                        .send(Some(StopRequest::Interrupt(SHUTDOWN_REASON.to_owned())));
                    handle.finished.clone()
                })
                .collect()
        };
        for mut done in finished {
            let _ = done.wait_for(|d| *d).await;
        }
        // Local runs end with proctord: nothing is left to hand over.
        Vec::new()
    }

    fn following(&self) -> Vec<ExecutionName> {
        self.running
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }

    async fn adopt(&self, runs: Vec<Adoption>) -> Vec<RunEvent> {
        // A child process does not outlive the proctord that started it (see
        // `guard`): a run taken over is over. What it left in its working directory
        // goes too (when it ran on this machine).
        runs.into_iter()
            .map(|run| {
                self.janitor
                    .remove(self.runs_dir.join(run.execution.as_str()));
                RunEvent::Failed {
                    reason: run.lost_reason(),
                    execution: run.execution,
                    exit_code: None,
                    attempts: 0,
                }
            })
            .collect()
    }

    async fn abandon(&self, execution: &ExecutionName) {
        let finished = {
            let running = self.running.lock().expect("not poisoned");
            let Some(handle) = running.get(execution) else {
                return;
            };
            let _ = handle.cancel.send(Some(StopRequest::Abandon));
            handle.finished.clone()
        };
        let mut finished = finished;
        let _ = finished.wait_for(|done| *done).await;
    }
}

struct Run {
    spec: RunSpec,
    command: Vec<String>,
    workdir: PathBuf,
    janitor: Janitor,
    sinks: ExecutorSinks,
    cancel: watch::Receiver<Option<StopRequest>>,
}

/// Why a run is stopped from outside.
#[derive(Debug, Clone)]
enum StopRequest {
    /// A user cancelled it: CANCELLED.
    Cancel(String),
    /// proctord is shutting down: FAILED, as the run did not complete.
    Interrupt(String),
    /// Another replica owns the run now and has settled it: stop, report nothing.
    Abandon,
}

impl StopRequest {
    /// The run's final event; `None` when nothing is to be reported.
    fn into_event(self, execution: ExecutionName, attempts: u32) -> Option<RunEvent> {
        match self {
            StopRequest::Cancel(reason) => Some(RunEvent::Cancelled { execution, reason }),
            StopRequest::Interrupt(reason) => Some(RunEvent::Failed {
                execution,
                exit_code: None,
                reason,
                attempts,
            }),
            StopRequest::Abandon => None,
        }
    }
}

/// The reason of a run that proctord's shutdown ended.
pub const SHUTDOWN_REASON: &str = "interrupted: proctord shut down while the execution was running";

/// Why an attempt stopped.
enum Stop {
    Exited(ExitStatus),
    Deadline,
    Stopped(StopRequest),
    SpawnFailed(String),
}

impl Run {
    async fn run(mut self, permits: Arc<Semaphore>) {
        let execution = self.spec.execution.clone();
        // Queued runs stay CREATED until a slot frees up; cancel works while queued.
        let permit = tokio::select! {
            permit = permits.acquire_owned() => permit.ok(),
            request = wait_cancelled(&mut self.cancel) => {
                if let Some(event) = request.into_event(execution, 0) {
                    self.finish(event).await;
                }
                return;
            }
        };
        let deadline = Instant::now() + self.spec.deadline;
        let attempts = self.spec.retries + 1;
        for attempt in 1..=attempts {
            let stop = self.attempt(attempt, deadline).await;
            let event = match stop {
                Stop::Exited(status) if status.success() => RunEvent::Succeeded {
                    execution: execution.clone(),
                    attempts: attempt,
                },
                Stop::Exited(status) if attempt < attempts => RunEvent::AttemptFailed {
                    execution: execution.clone(),
                    attempt,
                    exit_code: status.code(),
                    reason: describe(status),
                },
                Stop::SpawnFailed(reason) if attempt < attempts => RunEvent::AttemptFailed {
                    execution: execution.clone(),
                    attempt,
                    exit_code: None,
                    reason,
                },
                Stop::Exited(status) => RunEvent::Failed {
                    execution: execution.clone(),
                    exit_code: status.code(),
                    reason: describe(status),
                    attempts: attempt,
                },
                Stop::SpawnFailed(reason) => RunEvent::Failed {
                    execution: execution.clone(),
                    exit_code: None,
                    reason,
                    attempts: attempt,
                },
                Stop::Deadline => RunEvent::TimedOut {
                    execution: execution.clone(),
                    reason: format!("exceeded its deadline of {}s", self.spec.deadline.as_secs()),
                    attempts: attempt,
                },
                Stop::Stopped(request) => match request.into_event(execution.clone(), attempt) {
                    Some(event) => event,
                    None => {
                        self.janitor.remove(self.workdir.clone());
                        return;
                    }
                },
            };
            if matches!(event, RunEvent::AttemptFailed { .. }) {
                let _ = self.sinks.events.send(event).await;
                continue;
            }
            drop(permit);
            self.finish(event).await;
            return;
        }
    }

    /// The end of the stream, then the final event; then the working directory goes to
    /// the janitor.
    async fn finish(&self, event: RunEvent) {
        let execution = self.spec.execution.clone();
        let _ = self.sinks.logs.send(LogEvent::Ended { execution }).await;
        let _ = self.sinks.events.send(event).await;
        self.janitor.remove(self.workdir.clone());
    }

    async fn attempt(&mut self, attempt: u32, deadline: Instant) -> Stop {
        if let Err(e) = std::fs::create_dir_all(&self.workdir) {
            return Stop::SpawnFailed(format!(
                "cannot create its working directory {}: {e}",
                self.workdir.display()
            ));
        }
        let mut child = match self.spawn(attempt) {
            Ok(child) => child,
            Err(e) => {
                return Stop::SpawnFailed(format!("cannot start {:?}: {e}", self.command[0]));
            }
        };
        let pgid = child.id().map(|pid| pid as libc::pid_t);
        // The leader's pid is its group's id (`process_group(0)`): from here the group
        // dies with proctord, even on `kill -9`.
        if let Some(pgid) = pgid {
            guard::watch(pgid);
        }
        let _ = self
            .sinks
            .events
            .send(RunEvent::Running {
                execution: self.spec.execution.clone(),
                attempt,
            })
            .await;
        let stdout = child.stdout.take().map(|out| self.read_lines(out));
        let stderr = child.stderr.take().map(|err| self.read_lines(err));

        let stop = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => Stop::Exited(status),
                Err(e) => Stop::SpawnFailed(format!("lost track of the process: {e}")),
            },
            () = tokio::time::sleep_until(deadline) => Stop::Deadline,
            request = wait_cancelled(&mut self.cancel) => Stop::Stopped(request),
        };
        if let Some(pgid) = pgid {
            // The leader is gone or going: stop whatever it left behind in its group.
            let graceful = !matches!(stop, Stop::Exited(_));
            kill_group(pgid, &mut child, graceful).await;
            guard::forget(pgid);
        }
        for reader in [stdout, stderr].into_iter().flatten() {
            if tokio::time::timeout(DRAIN_TIMEOUT, reader).await.is_err() {
                tracing::warn!(execution = %self.spec.execution, "output pipe still open after the process ended");
            }
        }
        stop
    }

    fn spawn(&self, attempt: u32) -> std::io::Result<Child> {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        // The program is looked up here, in the PATH the run gets: given a bare name and
        // a PATH of its own, std would fork proctord (copying its page tables) instead of
        // using posix_spawn, which costs more the more memory proctord maps. An arg
        // named PATH overrides it (args are set after it below). A name with a slash is
        // a path already; a name not found is left for spawn to report.
        let given = &self.command[0];
        let program = if given.contains('/') {
            given.into()
        } else {
            let lookup = self.spec.args.get("PATH").map_or(path.clone(), Into::into);
            which::which_in(given, Some(&lookup), &self.workdir)
                .map_or_else(|_| given.into(), |found| found.into_os_string())
        };
        let mut command = Command::new(program);
        command
            .args(&self.command[1..])
            .current_dir(&self.workdir)
            // Nothing of proctord's own environment (its keys, its database URL) leaks.
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.workdir)
            .env("LANG", "C.UTF-8")
            .envs(&self.spec.args)
            .envs(self.spec.secrets.iter().map(|(k, v)| (k, v.expose())))
            .env("PROCTOR_EXECUTION_NAME", self.spec.execution.as_str())
            .env("PROCTOR_PROC_NAME", self.spec.proc_name.as_str())
            .env("PROCTOR_IMAGE", &self.spec.image)
            .env("PROCTOR_ATTEMPT", attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command.spawn()
    }

    /// Reads `output` line by line into batches for the LogFanout.
    fn read_lines(
        &self,
        output: impl AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let logs = self.sinks.logs.clone();
        let execution = self.spec.execution.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, output);
            let mut buf = Vec::with_capacity(256);
            let mut batch = Vec::new();
            loop {
                buf.clear();
                let read = {
                    let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64);
                    limited.read_until(b'\n', &mut buf).await
                };
                let done = !matches!(read, Ok(n) if n > 0);
                if !done {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                        if buf.last() == Some(&b'\r') {
                            buf.pop();
                        }
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    batch.push(OutputLine::now(line));
                }
                let more_ready = !reader.buffer().is_empty();
                if !batch.is_empty() && (done || batch.len() >= MAX_BATCH || !more_ready) {
                    let lines = std::mem::take(&mut batch);
                    let event = LogEvent::Lines {
                        execution: execution.clone(),
                        lines,
                    };
                    if logs.send(event).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        })
    }
}

/// Removes ended runs' working directories, and whatever the runs left in them
/// (scratch space: a run's output is in the store), one after another on a thread of
/// its own. Removing takes a lock on the shared `runs/` directory and a journal
/// handle (an `rmdir` took ~0.14 ms here, more while the databases fsync): done on
/// each run's way to its final status, behind the blocking pool, it cut Postgres's
/// completed runs per second from ~920 to ~570. Failing to remove is logged, never
/// fatal. The thread ends with the executor.
#[derive(Clone)]
struct Janitor(std::sync::mpsc::Sender<PathBuf>);

impl Janitor {
    fn start() -> Self {
        let (queue, pending) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("run-janitor".into())
            .spawn(move || {
                while let Ok(workdir) = pending.recv() {
                    match std::fs::remove_dir_all(&workdir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(workdir = %workdir.display(), error = %e, "cannot remove a run's working directory")
                        }
                    }
                }
            })
            .expect("the run janitor thread starts");
        Self(queue)
    }

    fn remove(&self, workdir: PathBuf) {
        // The thread only stops when every sender is gone, so this cannot fail while
        // `self` exists.
        let _ = self.0.send(workdir);
    }
}

/// Resolves with the request once the run is to stop.
async fn wait_cancelled(cancel: &mut watch::Receiver<Option<StopRequest>>) -> StopRequest {
    let reason = cancel
        .wait_for(Option::is_some)
        .await
        .map(|request| request.clone().expect("waited for Some"));
    match reason {
        Ok(reason) => reason,
        // The executor is gone: nobody can cancel any more.
        Err(_) => std::future::pending().await,
    }
}

/// Signals the whole process group: SIGTERM then, after a grace period, SIGKILL (or
/// SIGKILL at once when not `graceful`); reaps the leader.
async fn kill_group(pgid: libc::pid_t, child: &mut Child, graceful: bool) {
    let signal = |sig| {
        // SAFETY: killpg only sends a signal; a group that no longer exists is ESRCH.
        unsafe { libc::killpg(pgid, sig) }
    };
    if graceful && signal(libc::SIGTERM) == 0 {
        let deadline = Instant::now() + KILL_GRACE;
        loop {
            // Reap the leader as soon as it exits, so only live members keep the group.
            let _ = child.try_wait();
            if !group_alive(pgid) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    signal(libc::SIGKILL);
    let _ = child.wait().await;
}

/// Whether any process is left in the group.
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended without an exit code".to_owned(),
    }
}
