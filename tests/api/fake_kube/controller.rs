//! The job controller and the kubelet, simulated: a Job gets a pod that goes
//! Pending → Running → Succeeded | Failed following its [`Script`], the Job's status
//! follows, a failed pod is replaced while `failed <= backoffLimit`, and a Job
//! active longer than `activeDeadlineSeconds` has its pod killed and fails.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, Pod};
use tokio::time::{Instant, sleep_until};

use super::Script;
use super::objects::{self, job_condition, now, set_state};
use super::store::{Kind, Shared, State};

/// How long a failed pod waits before its replacement (10 s and up in a cluster).
const RETRY_DELAY: Duration = Duration::from_millis(20);
/// How often a held container looks whether its pod is gone or its deadline passed.
const HOLD_CHECK: Duration = Duration::from_secs(5);

/// Why a pod stopped before its script ended.
enum Stop {
    /// The pod (or its Job) was deleted.
    Gone,
    /// The Job's activeDeadlineSeconds passed.
    Deadline,
}

/// Starts the controller of a freshly created Job on the server's runtime.
pub(super) fn spawn(shared: Arc<Shared>, job: &Job) {
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    actix_web::rt::spawn(run_job(shared, namespace, name, uid));
}

/// The script for `job`: set for its name, else for its first image, else the fallback.
fn script_for(shared: &Shared, job: &Job) -> Script {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let image = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref()?.containers.first()?.image.clone())
        .unwrap_or_default();
    let state = shared.lock();
    let scripted = state.scripts_by_job.get(name);
    let scripted = scripted.or_else(|| state.scripts_by_image.get(&image));
    scripted.cloned().unwrap_or_else(|| Script::fallback(name))
}

/// The Job a controller task looks after; it stops when the Job with its uid is gone.
struct Run {
    shared: Arc<Shared>,
    namespace: String,
    name: String,
    uid: String,
}

impl Run {
    /// Changes the Job's status, announced as `MODIFIED`; `false` when the Job is gone.
    fn update(&self, change: impl FnOnce(&mut JobStatus)) -> bool {
        let mut state = self.shared.lock();
        self.update_in(&mut state, change)
    }

    fn update_in(&self, state: &mut State, change: impl FnOnce(&mut JobStatus)) -> bool {
        let current = state.get_as::<Job>(Kind::Job, &self.namespace, &self.name);
        if current.and_then(|j| j.metadata.uid).as_deref() != Some(self.uid.as_str()) {
            return false;
        }
        let updated = state.update::<Job>(Kind::Job, &self.namespace, &self.name, |job| {
            change(job.status.get_or_insert_with(Default::default));
        });
        updated.is_some()
    }

    /// Creates the next pod of `job` and counts it active, in one step; `None` when
    /// the Job is gone.
    fn start_pod(&self, job: &Job) -> Option<String> {
        let mut state = self.shared.lock();
        let active = self.update_in(&mut state, |status| {
            status.active = Some(1);
            status.ready = Some(0);
            status.terminating = Some(0);
            status.start_time.get_or_insert_with(now);
            status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        });
        if !active {
            return None;
        }
        let stored = state.put(Kind::Pod, &objects::job_pod(job));
        let pod = stored["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        state.open_log(&self.namespace, &pod);
        Some(pod)
    }

    fn succeed(&self) {
        self.update(|status| {
            status.active = None;
            status.ready = Some(0);
            status.succeeded = Some(1);
            status.completion_time = Some(now());
            let reason = "CompletionsReached";
            let message = "Reached expected number of succeeded pods";
            status.conditions = Some(vec![
                job_condition("SuccessCriteriaMet", reason, message),
                job_condition("Complete", reason, message),
            ]);
        });
    }

    /// Counts `failed` pods and, with a `reason`, fails the Job for good.
    fn fail(&self, failed: i32, reason: Option<&str>) {
        self.update(|status| {
            status.active = None;
            status.ready = Some(0);
            status.failed = Some(failed);
            let Some(reason) = reason else { return };
            let message = match reason {
                "DeadlineExceeded" => "Job was active longer than specified deadline",
                _ => "Job has reached the specified backoff limit",
            };
            status.conditions = Some(vec![
                job_condition("FailureTarget", reason, message),
                job_condition("Failed", reason, message),
            ]);
        });
    }
}

async fn run_job(shared: Arc<Shared>, namespace: String, name: String, uid: String) {
    let Some(job) = shared.lock().get_as::<Job>(Kind::Job, &namespace, &name) else {
        return;
    };
    let script = script_for(&shared, &job);
    let spec = job.spec.clone().unwrap_or_default();
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Instant::now() + Duration::from_secs(s.max(0).unsigned_abs()));
    let run = Run {
        shared,
        namespace,
        name,
        uid,
    };
    let mut failed = 0;
    while let Some(pod) = run.start_pod(&job) {
        let set_ready = |ready| {
            run.update(|status| status.ready = Some(ready));
        };
        let outcome = run_pod(
            &run.shared,
            &run.namespace,
            &pod,
            &script,
            deadline,
            &set_ready,
        );
        match outcome.await {
            Ok(0) => return run.succeed(),
            Ok(_) => failed += 1,
            Err(Stop::Gone) => return,
            Err(Stop::Deadline) => {
                kill(&run.shared, &run.namespace, &pod);
                return run.fail(failed + 1, Some("DeadlineExceeded"));
            }
        }
        if failed > backoff_limit {
            return run.fail(failed, Some("BackoffLimitExceeded"));
        }
        run.fail(failed, None);
        let retry_at = Instant::now() + RETRY_DELAY;
        sleep_until(deadline.map_or(retry_at, |d| d.min(retry_at))).await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return run.fail(failed, Some("DeadlineExceeded"));
        }
    }
}

/// Runs one pod through `script`; `Ok(exit code)` when its container ended.
async fn run_pod(
    shared: &Shared,
    namespace: &str,
    pod: &str,
    script: &Script,
    deadline: Option<Instant>,
    set_ready: &dyn Fn(i32),
) -> Result<i32, Stop> {
    let pause = move |duration: Duration| async move {
        let wake = Instant::now() + duration;
        sleep_until(deadline.map_or(wake, |d| d.min(wake))).await;
        if shared.lock().get(Kind::Pod, namespace, pod).is_none() {
            Err(Stop::Gone)
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Err(Stop::Deadline)
        } else {
            Ok(())
        }
    };
    let change = |phase: &str, state: &dyn Fn(&Pod) -> ContainerState| {
        let mut store = shared.lock();
        let updated = store.update::<Pod>(Kind::Pod, namespace, pod, |p| {
            let new_state = state(p);
            set_state(p, phase, new_state);
        });
        updated.map(|_| ()).ok_or(Stop::Gone)
    };
    if script.image_pull_error {
        pause(script.pending_for).await?;
        let image = shared
            .lock()
            .get_as::<Pod>(Kind::Pod, namespace, pod)
            .and_then(|p| p.spec?.containers.first()?.image.clone())
            .unwrap_or_default();
        let pull_failed = format!("failed to pull and unpack image \"{image}\": not found");
        change("Pending", &|_| {
            objects::waiting(waiting("ErrImagePull", &pull_failed))
        })?;
        pause(script.pending_for).await?;
        let backoff = format!("Back-off pulling image \"{image}\": ErrImagePull: {pull_failed}");
        change("Pending", &|_| {
            objects::waiting(waiting("ImagePullBackOff", &backoff))
        })?;
        loop {
            pause(Duration::from_secs(3600)).await?;
        }
    }
    pause(script.pending_for).await?;
    change("Running", &|_| objects::running())?;
    set_ready(1);
    for line in &script.lines {
        pause(script.line_interval).await?;
        shared.lock().print(namespace, pod, line);
    }
    if script.hold {
        let mut released = shared.lock().released.subscribe();
        while !*released.borrow_and_update() {
            // Wakes at the release, or every few seconds to notice a deleted pod or
            // a passed deadline.
            let _ = tokio::time::timeout(HOLD_CHECK, released.changed()).await;
            pause(Duration::ZERO).await?;
        }
    }
    let phase = if script.exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let mut state = shared.lock();
    let ended = state.update::<Pod>(Kind::Pod, namespace, pod, |p| {
        let terminated = objects::terminated(p, script.exit_code);
        set_state(p, phase, terminated);
    });
    state.end_log(namespace, pod);
    ended.map(|_| script.exit_code).ok_or(Stop::Gone)
}

fn waiting(reason: &str, message: &str) -> ContainerStateWaiting {
    ContainerStateWaiting {
        reason: Some(reason.into()),
        message: Some(message.into()),
    }
}

/// The deadline passed: the pod's containers are killed and the pod fails.
fn kill(shared: &Shared, namespace: &str, pod: &str) {
    let mut state = shared.lock();
    state.update::<Pod>(Kind::Pod, namespace, pod, |p| {
        let current = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref()?.first()?.state.clone())
            .unwrap_or_default();
        let state = match current.running {
            Some(_) => objects::terminated(p, 137),
            None => current,
        };
        set_state(p, "Failed", state);
        let status = p.status.get_or_insert_with(Default::default);
        status.reason = Some("DeadlineExceeded".into());
        status.message =
            Some("Pod was active on the node longer than the specified deadline".into());
    });
    state.end_log(namespace, pod);
}
