//! The production executor: each execution is a `batch/v1` Job. One shared watch per
//! kind (Jobs, Pods) by the label selector `app.kubernetes.io/managed-by=proctor`
//! reports on every run; a pod's log is followed once it runs. No per-execution polling.
//!
//! Logs are read with the container runtime's timestamps: each stored line keeps its
//! pod and timestamp, so a replica that takes a run over ([`Executor::adopt`]) asks
//! for each pod's log from the second of the last stored line (`sinceTime` takes whole
//! seconds) and skips what is already stored — no line lost, none stored twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::watch;

use super::{
    Adoption, Executor, ExecutorError, ExecutorSinks, LogEvent, Origin, OutputLine, RunEvent,
    RunSpec,
};
use crate::config::KubeSettings;
use crate::model::{ExecutionName, Resume};

pub mod spec;

/// Waiting reasons that mean the image will never run.
const IMAGE_ERRORS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
/// How long the end of a run waits for its pods' logs to finish.
const LOG_DRAIN: Duration = Duration::from_secs(10);
/// How long a cancel waits for the Job's deletion to be seen.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// What the executor remembers of a run it launched or re-attached.
#[derive(Default)]
struct Tracked {
    /// Pods seen, in the order they appeared: each is an attempt.
    pods: Vec<String>,
    /// Pods whose logs are (or were) being followed.
    followed: BTreeSet<String>,
    followers: Vec<tokio::task::JoinHandle<()>>,
    last_exit_code: Option<i32>,
    cancel_reason: Option<String>,
    /// Set once the final event has been decided.
    done: Option<watch::Sender<bool>>,
    finished: bool,
    /// Where each pod's stored log ends (a run taken over from another replica).
    resume: HashMap<String, Resume>,
}

struct Shared {
    client: kube::Client,
    namespace: String,
    settings: KubeSettings,
    sinks: ExecutorSinks,
    runs: Mutex<HashMap<ExecutionName, Tracked>>,
}

pub struct KubernetesExecutor {
    shared: Arc<Shared>,
}

impl KubernetesExecutor {
    /// Connects with the client configuration PROCTOR_KUBE_* describe and starts the
    /// shared watches.
    pub async fn connect(settings: &KubeSettings, sinks: ExecutorSinks) -> Result<Self, String> {
        let config = spec::client_config(settings).await?;
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
        let shared = Arc::new(Shared {
            client,
            namespace: settings.namespace.clone(),
            settings: settings.clone(),
            sinks,
            runs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(watch_jobs(shared.clone()));
        tokio::spawn(watch_pods(shared.clone()));
        Ok(Self { shared })
    }
}

fn execution_of(
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<ExecutionName> {
    labels?
        .get(spec::EXECUTION_LABEL)
        .and_then(|name| ExecutionName::parse(name).ok())
}

fn api_error(e: kube::Error) -> ExecutorError {
    match e {
        kube::Error::Api(status) => ExecutorError::Refused(format!(
            "the cluster refused: {} ({})",
            status.message, status.code
        )),
        other => ExecutorError::Unavailable(other.to_string()),
    }
}

impl Shared {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Decides the run's end once: waits for its logs, ends the stream, reports.
    fn finish(
        self: &Arc<Self>,
        execution: &ExecutionName,
        event: impl FnOnce(&Tracked) -> RunEvent,
    ) {
        let (followers, event, done) = {
            let mut runs = self.runs.lock().expect("not poisoned");
            let Some(tracked) = runs.get_mut(execution) else {
                return;
            };
            if tracked.finished {
                return;
            }
            tracked.finished = true;
            let event = event(tracked);
            (
                std::mem::take(&mut tracked.followers),
                event,
                tracked.done.take(),
            )
        };
        let shared = self.clone();
        let execution = execution.clone();
        tokio::spawn(async move {
            for follower in followers {
                let _ = tokio::time::timeout(LOG_DRAIN, follower).await;
            }
            let _ = shared
                .sinks
                .logs
                .send(LogEvent::Ended {
                    execution: execution.clone(),
                })
                .await;
            let _ = shared.sinks.events.send(event).await;
            shared.runs.lock().expect("not poisoned").remove(&execution);
            if let Some(done) = done {
                let _ = done.send(true);
            }
        });
    }

    /// Applies what a Job's status says.
    fn on_job(self: &Arc<Self>, job: &Job, deleted: bool) {
        let Some(execution) = execution_of(job.metadata.labels.as_ref()) else {
            return;
        };
        let status = job.status.clone().unwrap_or_default();
        let condition = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"));
        let attempts = |t: &Tracked| t.pods.len().max(1) as u32;
        match condition {
            Some(c) if c.type_ == "Complete" => self.finish(&execution, |t| RunEvent::Succeeded {
                execution: execution.clone(),
                attempts: attempts(t),
            }),
            Some(c) if c.reason.as_deref() == Some("DeadlineExceeded") => {
                let deadline = job
                    .spec
                    .as_ref()
                    .and_then(|s| s.active_deadline_seconds)
                    .unwrap_or_default();
                self.finish(&execution, |t| RunEvent::TimedOut {
                    execution: execution.clone(),
                    reason: format!("exceeded its deadline of {deadline}s"),
                    attempts: attempts(t),
                })
            }
            Some(c) => self.finish(&execution, |t| RunEvent::Failed {
                execution: execution.clone(),
                exit_code: t.last_exit_code,
                reason: match t.last_exit_code {
                    Some(code) => format!("exited with code {code}"),
                    None => c
                        .message
                        .clone()
                        .or(c.reason.clone())
                        .unwrap_or_else(|| "the Job failed".into()),
                },
                attempts: attempts(t),
            }),
            None if deleted => self.finish(&execution, |t| match &t.cancel_reason {
                Some(reason) => RunEvent::Cancelled {
                    execution: execution.clone(),
                    reason: reason.clone(),
                },
                None => RunEvent::Failed {
                    execution: execution.clone(),
                    exit_code: None,
                    reason: "the Job was deleted outside Proctor".into(),
                    attempts: attempts(t),
                },
            }),
            None => {}
        }
    }

    /// Notes attempts, follows logs of running pods, fails runs whose image cannot be pulled.
    fn on_pod(self: &Arc<Self>, pod: &Pod) {
        let (Some(execution), Some(name)) = (
            execution_of(pod.metadata.labels.as_ref()),
            pod.metadata.name.clone(),
        ) else {
            return;
        };
        let status = pod.status.clone().unwrap_or_default();
        let container = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .next();
        let state = container.and_then(|c| c.state).unwrap_or_default();
        let image_error = state.waiting.as_ref().and_then(|w| {
            let reason = w.reason.clone().unwrap_or_default();
            IMAGE_ERRORS
                .contains(&reason.as_str())
                .then(|| (reason, w.message.clone().unwrap_or_default()))
        });
        let started = state.running.is_some() || state.terminated.is_some();
        let mut follow = None;
        let mut resume = None;
        {
            let mut runs = self.runs.lock().expect("not poisoned");
            let Some(tracked) = runs.get_mut(&execution) else {
                return;
            };
            if tracked.finished {
                return;
            }
            if !tracked.pods.contains(&name) {
                tracked.pods.push(name.clone());
            }
            if let Some(code) = state
                .terminated
                .as_ref()
                .map(|t| t.exit_code)
                .filter(|c| *c != 0)
            {
                tracked.last_exit_code = Some(code);
            }
            if started && tracked.followed.insert(name.clone()) {
                let attempt = tracked.pods.iter().position(|p| *p == name).unwrap_or(0) as u32 + 1;
                follow = Some(attempt);
                resume = tracked.resume.get(&name).copied();
            }
        }
        if let Some(attempt) = follow {
            let span = tracing::info_span!("execution", execution = %execution, pod = %name);
            let follow = follow_log(self.clone(), execution.clone(), name.clone(), resume);
            let handle = tokio::spawn(tracing::Instrument::instrument(follow, span));
            if let Some(tracked) = self.runs.lock().expect("not poisoned").get_mut(&execution) {
                tracked.followers.push(handle);
            }
            let events = self.sinks.events.clone();
            let running = RunEvent::Running {
                execution: execution.clone(),
                attempt,
            };
            tokio::spawn(async move {
                let _ = events.send(running).await;
            });
        }
        if let Some((reason, message)) = image_error {
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            self.finish(&execution, |t| RunEvent::Failed {
                execution: execution.clone(),
                exit_code: None,
                reason: format!("image {image} cannot be pulled ({reason}): {message}"),
                attempts: t.pods.len() as u32,
            });
            let jobs = self.jobs();
            tokio::spawn(async move {
                let params = DeleteParams::foreground();
                if let Err(e) = jobs.delete(execution.as_str(), &params).await {
                    tracing::warn!(%execution, error = %e, "cannot delete a Job whose image cannot be pulled");
                }
            });
        }
    }
}

/// Follows one pod's log until it ends, retrying while the container is not ready for
/// up to PROCTOR_KUBE_POD_LIST_WAIT_TIME; with `resume`, only the lines after it.
async fn follow_log(
    shared: Arc<Shared>,
    execution: ExecutionName,
    pod: String,
    resume: Option<Resume>,
) {
    let params = LogParams {
        follow: true,
        container: Some(spec::CONTAINER.to_owned()),
        timestamps: true,
        // Whole seconds only: from the start of the last stored line's second.
        since_time: resume.and_then(|r| {
            k8s_openapi::jiff::Timestamp::from_second(r.last_ns.div_euclid(1_000_000_000)).ok()
        }),
        ..Default::default()
    };
    let give_up = tokio::time::Instant::now() + shared.settings.pod_list_wait_time;
    let stream = loop {
        match shared.pods().log_stream(&pod, &params).await {
            Ok(stream) => break stream,
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(%execution, %pod, error = %e, "log not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(%execution, %pod, error = %e, "cannot follow the pod's log");
                return;
            }
        }
    };
    let origin: Arc<str> = pod.as_str().into();
    let mut seen_at_last = 0;
    let mut batches = stream.lines().ready_chunks(512);
    while let Some(batch) = batches.next().await {
        let lines: Vec<OutputLine> = batch
            .into_iter()
            .filter_map(Result::ok)
            .map(|line| stamped(line, &origin))
            .filter(|line| match (resume, &line.origin) {
                (Some(resume), Some(origin)) => resume.is_new(origin.emitted_ns, &mut seen_at_last),
                _ => true,
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        let event = LogEvent::Lines {
            execution: execution.clone(),
            lines,
        };
        if shared.sinks.logs.send(event).await.is_err() {
            return;
        }
    }
}

/// A line read with `timestamps=true`: `<RFC 3339 timestamp> <text>`. A line without a
/// readable timestamp is kept whole, with no origin.
fn stamped(line: String, pod: &Arc<str>) -> OutputLine {
    let parsed = line.split_once(' ').and_then(|(stamp, text)| {
        let at: k8s_openapi::jiff::Timestamp = stamp.parse().ok()?;
        let emitted_ns = i64::try_from(at.as_nanosecond()).ok()?;
        Some((text.to_owned(), emitted_ns))
    });
    match parsed {
        Some((text, emitted_ns)) => OutputLine {
            text,
            at: crate::store::now(),
            origin: Some(Origin {
                pod: pod.clone(),
                emitted_ns,
            }),
        },
        None => OutputLine::now(line),
    }
}

/// The one shared watch on proctord's Jobs.
async fn watch_jobs(shared: Arc<Shared>) {
    let config = watcher::Config::default().labels(spec::SELECTOR);
    let mut events = watcher(shared.jobs(), config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) => {
                shared.on_job(&job, false)
            }
            Ok(watcher::Event::Delete(job)) => shared.on_job(&job, true),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the Job watch failed; it resumes with backoff"),
        }
    }
}

/// The one shared watch on the pods of proctord's Jobs.
async fn watch_pods(shared: Arc<Shared>) {
    let config = watcher::Config::default().labels(spec::SELECTOR);
    let mut pods = watcher(shared.pods(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(pod) = pods.next().await {
        match pod {
            Ok(pod) => shared.on_pod(&pod),
            Err(e) => tracing::warn!(error = %e, "the Pod watch failed; it resumes with backoff"),
        }
    }
}

#[async_trait::async_trait]
impl Executor for KubernetesExecutor {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn needs_command(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        let version = self.shared.client.apiserver_version();
        match tokio::time::timeout(Duration::from_secs(2), version).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the API server did not answer within 2s".into()),
        }
    }

    async fn launch(&self, run: RunSpec) -> Result<(), ExecutorError> {
        let shared = &self.shared;
        let execution = run.execution.clone();
        shared
            .runs
            .lock()
            .expect("not poisoned")
            .insert(execution.clone(), Tracked::default());
        let created = async {
            // The allowlists may have narrowed since the proc was registered.
            if let Some(pod) = &run.pod {
                let problems = shared.settings.pod_policy.problems(pod);
                if !problems.is_empty() {
                    return Err(ExecutorError::Refused(format!(
                        "proc {}'s pod options are no longer allowed: {}",
                        run.proc_name,
                        problems.join("; ")
                    )));
                }
            }
            let secret = spec::secret(&run, &shared.namespace);
            if let Some(secret) = &secret {
                shared
                    .secrets()
                    .create(&PostParams::default(), secret)
                    .await
                    .map_err(api_error)?;
            }
            let job = match shared
                .jobs()
                .create(&PostParams::default(), &spec::job(&run, &shared.settings))
                .await
            {
                Ok(job) => job,
                Err(e) => {
                    if secret.is_some() {
                        let _ = shared
                            .secrets()
                            .delete(execution.as_str(), &DeleteParams::default())
                            .await;
                    }
                    return Err(api_error(e));
                }
            };
            if secret.is_some() {
                let owner =
                    serde_json::json!({"metadata": {"ownerReferences": [spec::owned_by(&job)?]}});
                shared
                    .secrets()
                    .patch(
                        execution.as_str(),
                        &PatchParams::default(),
                        &Patch::Merge(&owner),
                    )
                    .await
                    .map_err(api_error)?;
            }
            Ok(())
        };
        let result = created.await;
        if result.is_err() {
            shared.runs.lock().expect("not poisoned").remove(&execution);
        }
        result
    }

    async fn cancel(&self, execution: &ExecutionName, reason: &str) -> Result<bool, ExecutorError> {
        let shared = &self.shared;
        let mut done = {
            let mut runs = shared.runs.lock().expect("not poisoned");
            runs.get_mut(execution).map(|tracked| {
                tracked.cancel_reason = Some(reason.to_owned());
                let (tx, rx) = watch::channel(false);
                tracked.done = Some(tx);
                rx
            })
        };
        match shared
            .jobs()
            .delete(execution.as_str(), &DeleteParams::foreground())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(e) => return Err(api_error(e)),
        }
        if let Some(done) = &mut done {
            let _ = tokio::time::timeout(CANCEL_WAIT, done.wait_for(|d| *d)).await;
        }
        Ok(true)
    }

    async fn shutdown(&self) -> Vec<ExecutionName> {
        // The Jobs go on; another replica follows them once the leases are released.
        let runs = std::mem::take(&mut *self.shared.runs.lock().expect("not poisoned"));
        let mut released = Vec::new();
        for (execution, tracked) in runs {
            for follower in tracked.followers {
                follower.abort();
            }
            if !tracked.finished {
                released.push(execution);
            }
        }
        released
    }

    fn following(&self) -> Vec<ExecutionName> {
        let runs = self.shared.runs.lock().expect("not poisoned");
        runs.iter()
            .filter(|(_, tracked)| !tracked.finished)
            .map(|(execution, _)| execution.clone())
            .collect()
    }

    async fn adopt(&self, runs: Vec<Adoption>) -> Vec<RunEvent> {
        let shared = &self.shared;
        let mut settled = Vec::new();
        for run in runs {
            let execution = run.execution.clone();
            let job = match shared.jobs().get_opt(execution.as_str()).await {
                Ok(job) => job,
                Err(e) => {
                    // The lease is ours: the next beat keeps it, and the watch reports
                    // on the Job once the API server answers again.
                    tracing::warn!(%execution, error = %e, "cannot read the Job of a run taken over");
                    None
                }
            };
            let Some(job) = job else {
                settled.push(RunEvent::Failed {
                    execution: execution.clone(),
                    exit_code: None,
                    reason: match &run.previous_owner {
                        Some(owner) if !run.restarted => format!(
                            "its Job no longer exists (taken over from replica {owner}, which was lost)"
                        ),
                        _ => "its Job no longer exists (it ended or was removed while proctord was down)"
                            .into(),
                    },
                    attempts: 0,
                });
                continue;
            };
            shared.runs.lock().expect("not poisoned").insert(
                execution.clone(),
                Tracked {
                    resume: run.resume,
                    ..Tracked::default()
                },
            );
            // Its pods, oldest first (each is an attempt), followed from where the store
            // ends; then the Job's own state (it may have ended meanwhile).
            let selector = format!("{}={}", spec::EXECUTION_LABEL, execution);
            match shared
                .pods()
                .list(&ListParams::default().labels(&selector))
                .await
            {
                Ok(pods) => {
                    let mut pods = pods.items;
                    pods.sort_by(|a, b| {
                        let key = |p: &Pod| {
                            (
                                p.metadata.creation_timestamp.clone().map(|t| t.0),
                                p.metadata.name.clone(),
                            )
                        };
                        key(a).cmp(&key(b))
                    });
                    for pod in &pods {
                        shared.on_pod(pod);
                    }
                }
                Err(e) => {
                    tracing::warn!(%execution, error = %e, "cannot list the pods of a run taken over; the watch will report them")
                }
            }
            shared.on_job(&job, false);
            tracing::info!(%execution, previous_owner = run.previous_owner.as_deref().unwrap_or("none"), "re-attached to its Job");
        }
        settled
    }

    async fn abandon(&self, execution: &ExecutionName) {
        let tracked = self
            .shared
            .runs
            .lock()
            .expect("not poisoned")
            .remove(execution);
        if let Some(tracked) = tracked {
            for follower in tracked.followers {
                follower.abort();
            }
        }
    }
}
