//! The objects the fake writes, from k8s-openapi types: `Status` errors, a Job's
//! defaults and validation, the pods of a Job and their container states.

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Status, StatusCause, StatusDetails, Time,
};
use k8s_openapi::jiff::Timestamp;
use rand::Rng as _;

use super::store::Kind;

pub(super) fn now() -> Time {
    Time(Timestamp::now())
}

/// RFC 3339 with nanoseconds, as `timestamps=true` log lines start.
pub(super) fn now_precise() -> String {
    Timestamp::now().to_string()
}

fn failure(code: i32, reason: &str, message: String, details: Option<StatusDetails>) -> Status {
    Status {
        code: Some(code),
        details,
        message: Some(message),
        metadata: Default::default(),
        reason: Some(reason.into()),
        status: Some("Failure".into()),
    }
}

fn details(kind: Kind, name: &str) -> Option<StatusDetails> {
    Some(StatusDetails {
        name: Some(name.into()),
        group: Some(kind.group().into()).filter(|g: &String| !g.is_empty()),
        kind: Some(kind.plural().into()),
        ..Default::default()
    })
}

pub(super) fn not_found(kind: Kind, name: &str) -> Status {
    let message = format!("{} \"{name}\" not found", kind.qualified());
    failure(404, "NotFound", message, details(kind, name))
}

pub(super) fn already_exists(kind: Kind, name: &str) -> Status {
    let message = format!("{} \"{name}\" already exists", kind.qualified());
    failure(409, "AlreadyExists", message, details(kind, name))
}

pub(super) fn bad_request(message: String) -> Status {
    failure(400, "BadRequest", message, None)
}

pub(super) fn not_found_path() -> Status {
    let message = "the server could not find the requested resource".to_owned();
    failure(404, "NotFound", message, Some(StatusDetails::default()))
}

pub(super) fn method_not_allowed(method: &str) -> Status {
    let message =
        format!("the server does not allow this method on the requested resource ({method})");
    failure(
        405,
        "MethodNotAllowed",
        message,
        Some(StatusDetails::default()),
    )
}

/// 422 `Invalid`, e.g. `Job.batch "x" is invalid: spec.template...: Required value`.
pub(super) fn invalid(kind: Kind, name: &str, field: &str, problem: &str) -> Status {
    let qualified = match kind.group() {
        "" => kind.kind().to_owned(),
        group => format!("{}.{group}", kind.kind()),
    };
    let message = format!("{qualified} \"{name}\" is invalid: {field}: {problem}");
    let details = StatusDetails {
        name: Some(name.into()),
        group: Some(kind.group().into()).filter(|g: &String| !g.is_empty()),
        kind: Some(kind.kind().into()),
        causes: Some(vec![StatusCause {
            field: Some(field.into()),
            message: Some(problem.into()),
            reason: Some("FieldValueInvalid".into()),
        }]),
        ..Default::default()
    };
    failure(422, "Invalid", message, Some(details))
}

/// The watch error for a resourceVersion older than the history kept.
pub(super) fn expired(from: u64, oldest: u64) -> Status {
    let message = format!("too old resource version: {from} ({oldest})");
    failure(410, "Expired", message, None)
}

/// The answer to a delete that removed the object at once.
pub(super) fn deleted(kind: Kind, name: &str, uid: &str) -> Status {
    let mut details = details(kind, name).unwrap_or_default();
    details.uid = Some(uid.into());
    Status {
        details: Some(details),
        status: Some("Success".into()),
        ..Default::default()
    }
}

/// Whether `name` is a DNS-1123 subdomain of at most `max` characters.
pub(super) fn name_problem(name: &str, max: usize) -> Option<String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if name.len() > max {
        Some(format!(
            "Invalid value: \"{name}\": must be no more than {max} characters"
        ))
    } else if !chars_ok || !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        Some(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    } else {
        None
    }
}

/// Five random lowercase letters, as a `generateName` suffix.
pub(super) fn suffix() -> String {
    const LETTERS: &[u8] = b"bcdfghjklmnpqrstvwxz";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// Checks a Job as the API server would: `Err((field, problem))`.
pub(super) fn validate_job(job: &Job) -> Result<(), (&'static str, String)> {
    let Some(spec) = job.spec.as_ref() else {
        return Err(("spec.template.spec.containers", "Required value".into()));
    };
    let pod = spec.template.spec.as_ref();
    let containers = pod.map(|p| p.containers.as_slice()).unwrap_or_default();
    if containers.is_empty() {
        return Err(("spec.template.spec.containers", "Required value".into()));
    }
    if containers
        .iter()
        .any(|c| c.image.as_deref().unwrap_or_default().is_empty())
    {
        return Err((
            "spec.template.spec.containers[0].image",
            "Required value".into(),
        ));
    }
    match pod.and_then(|p| p.restart_policy.as_deref()) {
        Some("Never" | "OnFailure") => Ok(()),
        Some(other) => Err((
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: \"{other}\": supported values: \"OnFailure\", \"Never\""),
        )),
        None => Err((
            "spec.template.spec.restartPolicy",
            "Required value: valid values: \"OnFailure\", \"Never\"".into(),
        )),
    }
}

/// The API server's defaults for a new Job with uid `uid`.
pub(super) fn default_job(job: &mut Job, uid: &str) {
    let name = job.metadata.name.clone().unwrap_or_default();
    job.metadata.uid = Some(uid.into());
    job.metadata.generation = Some(1);
    let spec = job.spec.get_or_insert_with(Default::default);
    spec.backoff_limit.get_or_insert(6);
    spec.completions.get_or_insert(1);
    spec.parallelism.get_or_insert(1);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    let controller = [("batch.kubernetes.io/controller-uid", uid)];
    spec.selector = Some(LabelSelector {
        match_labels: Some(
            controller
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    });
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", uid),
        ("job-name", &name),
    ] {
        labels.insert(key.into(), value.into());
    }
}

/// A new pod of `job`, `Pending` on the fake node with its containers creating.
pub(super) fn job_pod(job: &Job) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let template = job.spec.clone().unwrap_or_default().template;
    let template_meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some("fake-node".into());
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{job_name}-{}", suffix())),
            generate_name: Some(format!("{job_name}-")),
            namespace: job.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: job_name,
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(PodStatus {
            host_ip: Some("10.0.0.10".into()),
            qos_class: Some("BestEffort".into()),
            start_time: Some(now()),
            ..Default::default()
        }),
    };
    let creating = ContainerStateWaiting {
        reason: Some("ContainerCreating".into()),
        message: None,
    };
    set_state(&mut pod, "Pending", waiting(creating));
    pod
}

pub(super) fn waiting(state: ContainerStateWaiting) -> ContainerState {
    ContainerState {
        waiting: Some(state),
        ..Default::default()
    }
}

pub(super) fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(now()),
        }),
        ..Default::default()
    }
}

/// The state of a container that exited with `exit_code` (137 for a kill).
pub(super) fn terminated(pod: &Pod, exit_code: i32) -> ContainerState {
    let started_at = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| {
            c.first()?
                .state
                .as_ref()?
                .running
                .as_ref()?
                .started_at
                .clone()
        });
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(container_id(pod)),
            exit_code,
            finished_at: Some(now()),
            reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
            started_at: started_at.or_else(|| Some(now())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_id(pod: &Pod) -> String {
    let uid = pod
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .replace('-', "");
    format!("containerd://{uid}{uid}")
}

/// Puts every container of `pod` in `state` and the pod in `phase`, with the
/// conditions, readiness and ids a kubelet reports alongside.
pub(super) fn set_state(pod: &mut Pod, phase: &str, state: ContainerState) {
    let is_running = state.running.is_some();
    let started = state.waiting.is_none();
    let id = started.then(|| container_id(pod));
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase = Some(phase.into());
    if started {
        status.pod_ip.get_or_insert_with(|| "10.244.0.17".into());
    }
    let condition = |type_: &str, on: bool| PodCondition {
        type_: type_.into(),
        status: if on { "True" } else { "False" }.into(),
        last_transition_time: Some(now()),
        ..Default::default()
    };
    status.conditions = Some(vec![
        condition("PodReadyToStartContainers", started),
        condition("Initialized", true),
        condition("Ready", is_running),
        condition("ContainersReady", is_running),
        condition("PodScheduled", true),
    ]);
    let statuses = containers.iter().map(|container| {
        let image = container.image.clone().unwrap_or_default();
        ContainerStatus {
            name: container.name.clone(),
            image_id: if started {
                format!("{image}@sha256:{}", "0".repeat(64))
            } else {
                String::new()
            },
            image,
            container_id: id.clone(),
            ready: is_running,
            restart_count: 0,
            started: Some(is_running),
            state: Some(state.clone()),
            ..Default::default()
        }
    });
    status.container_statuses = Some(statuses.collect());
}

/// A `True` Job condition of `type_`.
pub(super) fn job_condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now()),
        last_transition_time: Some(now()),
    }
}
