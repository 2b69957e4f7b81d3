//! A fake Kubernetes API server on 127.0.0.1 speaking the real REST + watch wire
//! format, so the real kube-rs client code runs unchanged against it.
//!
//! It serves `batch/v1` Jobs (create, get, list, watch, delete with propagation),
//! `v1` Pods (get, list, watch, logs with `follow`) and `v1` Secrets (create, get,
//! list, watch, delete), with one resourceVersion counter and an event history that
//! watches replay from. A simulated job controller and kubelet (`controller.rs`) run
//! each Job's pod through a [`Script`] chosen by the test. Faults are injected with
//! [`FakeKube::drop_watches`] and [`FakeKube::expire_history`]; every request is
//! counted ([`FakeKube::requests`]).
//!
//! Files: `store.rs` (objects, history, open watches, logs), `watch.rs` (selectors,
//! list and watch bodies), `server.rs` (routes and handlers), `logs.rs` (pod logs),
//! `objects.rs` (the k8s-openapi objects it builds), `controller.rs` (pods over
//! time), `tests/` (the fake driven by the real kube client).

mod controller;
mod logs;
mod objects;
mod server;
mod store;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};

use store::{Kind, Shared};

/// What a Job's pod does once scheduled, registered before the Job is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Lines the container prints, one every `line_interval`.
    pub lines: Vec<String>,
    pub line_interval: Duration,
    /// 0 ends the pod `Succeeded` (reason `Completed`), anything else `Failed` (`Error`).
    pub exit_code: i32,
    /// How long the pod stays `Pending` (`ContainerCreating`) before it runs.
    pub pending_for: Duration,
    /// The image never pulls: `ErrImagePull`, then `ImagePullBackOff`, forever.
    pub image_pull_error: bool,
    /// After its lines the container keeps running until [`FakeKube::release_held`]
    /// (then ends with `exit_code`), so many runs can be held in flight at once.
    pub hold: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            lines: Vec::new(),
            line_interval: Duration::from_millis(50),
            exit_code: 0,
            pending_for: Duration::from_millis(50),
            image_pull_error: false,
            hold: false,
        }
    }
}

impl Script {
    /// Prints `lines` then exits 0, with the default short durations.
    pub fn printing<S: Into<String>>(lines: impl IntoIterator<Item = S>) -> Self {
        Script {
            lines: lines.into_iter().map(Into::into).collect(),
            ..Script::default()
        }
    }

    pub fn exiting(mut self, exit_code: i32) -> Self {
        self.exit_code = exit_code;
        self
    }

    /// The script of a job nobody scripted: one line `hello from <job>`, exit 0.
    fn fallback(job: &str) -> Self {
        Script::printing([format!("hello from {job}")])
    }
}

/// A snapshot of the requests the server received.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// Every HTTP request, whatever its path.
    pub total: u64,
    /// Per `"METHOD path-pattern"`, e.g. `"GET /api/v1/namespaces/{ns}/pods/{name}/log"`;
    /// unknown paths are counted under their raw path.
    pub by_route: BTreeMap<String, u64>,
    /// The watches among them (`GET` with `watch=true|1`), per `"GET path-pattern"`.
    pub watches: BTreeMap<String, u64>,
    /// Events sent on open watches so far (each event once per watch it went to).
    pub watch_events: u64,
    /// Each request as `"METHOD /path?query"`, in arrival order.
    pub log: Vec<String>,
}

impl Requests {
    /// How many requests `"METHOD path-pattern"` received (watches included).
    pub fn count(&self, route: &str) -> u64 {
        self.by_route.get(route).copied().unwrap_or(0)
    }

    /// How many of them were watches.
    pub fn watch_count(&self, route: &str) -> u64 {
        self.watches.get(route).copied().unwrap_or(0)
    }

    fn record(&mut self, route: String, watch: bool, line: String) {
        self.total += 1;
        if watch {
            *self.watches.entry(route.clone()).or_default() += 1;
        }
        *self.by_route.entry(route).or_default() += 1;
        self.log.push(line);
    }
}

/// The running fake; dropping it stops the server.
pub struct FakeKube {
    shared: Arc<Shared>,
    url: String,
    server: ServerHandle,
}

impl FakeKube {
    /// Starts the server on 127.0.0.1 on a port of its own, on its own thread and
    /// runtime, so it outlives any test runtime.
    pub fn start() -> FakeKube {
        let shared = Arc::new(Shared::default());
        let (url, server) = server::start(shared.clone());
        FakeKube {
            shared,
            url,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A real kube client for this server, default namespace `default`. Call it
    /// inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("the fake's url is a uri"));
        kube::Client::try_from(config).expect("a kube client for the fake")
    }

    /// The script the pods of Job `job` follow (it wins over one set for the image).
    pub fn set_script_for_job(&self, job: &str, script: Script) {
        self.shared.lock().scripts_by_job.insert(job.into(), script);
    }

    /// The script the pods of Jobs whose first container runs `image` follow.
    pub fn set_script_for_image(&self, image: &str, script: Script) {
        self.shared
            .lock()
            .scripts_by_image
            .insert(image.into(), script);
    }

    pub fn job(&self, namespace: &str, name: &str) -> Option<Job> {
        self.shared.lock().get_as(Kind::Job, namespace, name)
    }

    /// Every Job, in every namespace.
    pub fn jobs(&self) -> Vec<Job> {
        self.shared.lock().all_as(Kind::Job)
    }

    /// The pods labelled `job-name=<job>` in any namespace, oldest first.
    pub fn pods_of(&self, job: &str) -> Vec<Pod> {
        let state = self.shared.lock();
        let mut pods: Vec<(u64, Pod)> = state.all_created(Kind::Pod);
        pods.retain(|(_, pod)| {
            pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")) == Some(&job.into())
        });
        pods.sort_by_key(|(created, _)| *created);
        pods.into_iter().map(|(_, pod)| pod).collect()
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.shared.lock().get_as(Kind::Secret, namespace, name)
    }

    /// Closes every open watch connection abruptly (no final chunk), as a restarted
    /// API server or a load balancer would.
    pub fn drop_watches(&self) {
        self.shared.lock().drop_watches();
    }

    /// Forgets the event history: the next watch from an older resourceVersion gets
    /// an `ERROR` event with a 410 `Expired` Status.
    pub fn expire_history(&self) {
        self.shared.lock().expire_history();
    }

    /// How many watch connections are open now.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches()
    }

    pub fn requests(&self) -> Requests {
        self.shared.lock().requests.clone()
    }

    /// Ends the containers held by a [`Script::hold`] (and those held from now on):
    /// they all finish at once.
    pub fn release_held(&self) {
        self.shared.lock().released.send_replace(true);
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        // The stop command is sent at once; its completion is not awaited.
        drop(self.server.stop(false));
    }
}
