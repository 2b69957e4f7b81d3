//! The fake driven by the real kube-rs client over real HTTP on 127.0.0.1:
//! `resources.rs` for the REST side, `runs.rs` for pods over time, watches and logs.

mod resources;
mod runs;

use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::FakeKube;

/// Every wait in these tests gives up after this long.
const LIMIT: Duration = Duration::from_secs(5);
const PROCTOR_RUNS: &str = "app.kubernetes.io/managed-by=proctor";
const JOBS: &str = "GET /apis/batch/v1/namespaces/{ns}/jobs";

fn start() -> (FakeKube, kube::Client) {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let fake = FakeKube::start();
    let client = fake.client();
    (fake, client)
}

/// A Job as Proctor makes them: one container, `restartPolicy: Never`, labelled.
fn job(name: &str, image: &str, spec: Value) -> Job {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "proctor"}},
        "spec": {"template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "proctor"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "proc", "image": image}]}
        }}
    });
    for (key, value) in spec.as_object().into_iter().flatten() {
        job["spec"][key] = value.clone();
    }
    serde_json::from_value(job).expect("a Job")
}

async fn create(client: &kube::Client, job: Job) -> Job {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("the Job is created")
}

/// Polls until `check` gives a value, failing after [`LIMIT`].
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn condition(job: &Job, type_: &str) -> Option<JobCondition> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Reads a Job watcher until it reports `name` complete; returns the errors it
/// yielded on the way (a watcher reports them, then recovers by itself).
async fn until_complete(
    stream: &mut (impl Stream<Item = Result<Job, watcher::Error>> + Unpin),
    name: &str,
) -> Vec<watcher::Error> {
    let mut errors = Vec::new();
    let wait = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(job) if job.metadata.name.as_deref() == Some(name) => {
                    if condition(&job, "Complete").is_some() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => errors.push(error),
            }
        }
    };
    tokio::time::timeout(LIMIT, wait)
        .await
        .expect("the watcher sees the Job complete");
    errors
}

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected a kube::Error::Api, got {other:?}"),
    }
}
