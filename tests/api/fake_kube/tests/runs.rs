//! Pods over time: watchers, resumed and expired watches, logs, retries, deadlines.

use std::pin::pin;
use std::time::Duration;

use futures_util::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

use super::super::Script;
use super::{
    JOBS, LIMIT, PROCTOR_RUNS, api_error, condition, create, eventually, job, phase, start,
    until_complete,
};

#[tokio::test]
async fn a_shared_pod_watcher_sees_a_job_pod_go_from_pending_to_succeeded() {
    let (fake, client) = start();
    let config = watcher::Config::default().labels(PROCTOR_RUNS);
    let pods = watcher(Api::<Pod>::all(client.clone()), config).default_backoff();
    let mut pods = pin!(pods.applied_objects());
    create(&client, job("watched", "busybox", json!({}))).await;
    let mut phases: Vec<String> = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while let Some(pod) = pods.try_next().await.unwrap() {
            assert_eq!(pod.metadata.labels.as_ref().unwrap()["job-name"], "watched");
            if phases.last() != Some(&phase(&pod)) {
                phases.push(phase(&pod));
            }
            if phase(&pod) == "Succeeded" {
                break;
            }
        }
    })
    .await
    .expect("the pod succeeds in time");
    assert_eq!(phases, ["Pending", "Running", "Succeeded"]);
    let complete = || {
        fake.job("default", "watched")
            .and_then(|j| condition(&j, "Complete"))
    };
    eventually("the Job to complete", complete).await;
    assert_eq!(fake.pods_of("watched").len(), 1);
}

#[tokio::test]
async fn log_stream_follows_the_scripted_lines_in_order_while_the_pod_runs() {
    let (fake, client) = start();
    let script = Script {
        line_interval: Duration::from_millis(100),
        ..Script::printing(["one", "two", "three"])
    };
    fake.set_script_for_image("printer:1", script);
    create(&client, job("printer", "printer:1", json!({}))).await;
    let running = || {
        fake.pods_of("printer")
            .into_iter()
            .find(|p| phase(p) == "Running")
    };
    let pod = eventually("the pod to run", running).await;
    let name = pod.metadata.name.unwrap();
    let params = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let pods: Api<Pod> = Api::default_namespaced(client);
    let mut lines = pods.log_stream(&name, &params).await.unwrap().lines();
    let first = tokio::time::timeout(LIMIT, lines.try_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("one"));
    assert_eq!(
        phase(&fake.pods_of("printer")[0]),
        "Running",
        "lines arrive as printed"
    );
    let rest: Vec<String> = tokio::time::timeout(LIMIT, lines.try_collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rest,
        ["two", "three"],
        "the stream ends when the container does"
    );
    let whole = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert_eq!(whole, "one\ntwo\nthree\n");
}

#[tokio::test]
async fn a_dropped_watch_is_resumed_by_the_watcher_without_losing_an_event() {
    let (fake, client) = start();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().labels(PROCTOR_RUNS);
    let mut stream = pin!(watcher(jobs, config).default_backoff().applied_objects());
    create(&client, job("before", "busybox", json!({}))).await;
    until_complete(&mut stream, "before").await;
    assert_eq!(fake.open_watches(), 1);
    fake.drop_watches();
    // The watcher is not polled until the second Job is done: all of it happens
    // while its connection is down, and must come from the replayed history.
    create(&client, job("during", "busybox", json!({}))).await;
    let done = || {
        fake.job("default", "during")
            .and_then(|j| condition(&j, "Complete"))
    };
    eventually("the second Job to complete", done).await;
    until_complete(&mut stream, "during").await;
    let requests = fake.requests();
    assert_eq!(
        requests.count(JOBS) - requests.watch_count(JOBS),
        1,
        "resumed, not relisted"
    );
    assert_eq!(requests.watch_count(JOBS), 2);
}

#[tokio::test]
async fn a_watcher_resuming_from_an_expired_resource_version_relists() {
    let (fake, client) = start();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().labels(PROCTOR_RUNS);
    let mut stream = pin!(watcher(jobs, config).default_backoff().applied_objects());
    create(&client, job("first", "busybox", json!({}))).await;
    until_complete(&mut stream, "first").await;
    fake.expire_history();
    fake.drop_watches();
    create(&client, job("second", "busybox", json!({}))).await;
    let done = || {
        fake.job("default", "second")
            .and_then(|j| condition(&j, "Complete"))
    };
    eventually("the second Job to complete", done).await;
    let errors = until_complete(&mut stream, "second").await;
    let gone = |e: &watcher::Error| matches!(e, watcher::Error::WatchError(s) if s.code == 410);
    assert!(
        errors.iter().any(gone),
        "the watcher reported the 410: {errors:?}"
    );
    let requests = fake.requests();
    let lists = requests.count(JOBS) - requests.watch_count(JOBS);
    assert_eq!(lists, 2, "the 410 made the watcher list again");
}

#[tokio::test]
async fn a_watch_from_an_expired_resource_version_gets_410_gone() {
    let (fake, client) = start();
    create(&client, job("old", "busybox", json!({}))).await;
    fake.expire_history();
    let jobs: Api<Job> = Api::default_namespaced(client);
    let mut events = jobs
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(LIMIT, events.try_next())
        .await
        .unwrap()
    {
        Ok(Some(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let list = jobs.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut events = jobs
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let next = tokio::time::timeout(LIMIT, events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !matches!(next, Some(WatchEvent::Error(_))),
        "a fresh resourceVersion still works"
    );
}

#[tokio::test]
async fn a_failing_script_with_backoff_limit_2_makes_3_pods_then_backoff_limit_exceeded() {
    let (fake, client) = start();
    fake.set_script_for_job("flaky", Script::printing(["boom"]).exiting(1));
    create(&client, job("flaky", "busybox", json!({"backoffLimit": 2}))).await;
    let failed = || {
        fake.job("default", "flaky")
            .filter(|j| condition(j, "Failed").is_some())
    };
    let job = eventually("the Job to fail", failed).await;
    assert_eq!(
        condition(&job, "Failed").unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(job.status.unwrap().failed, Some(3));
    let pods = fake.pods_of("flaky");
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert_eq!(phase(pod), "Failed");
        let state = pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .state
            .clone();
        let terminated = state.unwrap().terminated.unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (1, Some("Error"))
        );
    }
}

#[tokio::test]
async fn an_unpullable_image_stays_pending_until_the_deadline_fails_the_job() {
    let (fake, client) = start();
    let script = Script {
        image_pull_error: true,
        ..Script::default()
    };
    fake.set_script_for_image("nope:404", script);
    create(
        &client,
        job("stuck", "nope:404", json!({"activeDeadlineSeconds": 1})),
    )
    .await;
    let waiting_reason = |pod: &Pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses[0].state.as_ref()?.waiting.as_ref()?.reason.clone()
    };
    let backoff = || {
        let pod = fake.pods_of("stuck").pop()?;
        (waiting_reason(&pod).as_deref() == Some("ImagePullBackOff")).then_some(pod)
    };
    let pod = eventually("ImagePullBackOff", backoff).await;
    assert_eq!(phase(&pod), "Pending");
    let pods: Api<Pod> = Api::default_namespaced(client);
    let refused = pods
        .logs(pod.metadata.name.as_deref().unwrap(), &LogParams::default())
        .await;
    assert_eq!(
        api_error(refused.unwrap_err()),
        (400, "BadRequest".into()),
        "no logs before it runs"
    );
    let failed = || {
        fake.job("default", "stuck")
            .and_then(|j| condition(&j, "Failed"))
    };
    assert_eq!(
        eventually("the deadline", failed).await.reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert_eq!(phase(&fake.pods_of("stuck")[0]), "Failed");
}

#[tokio::test]
async fn held_pods_keep_running_until_released_then_all_succeed() {
    let (fake, client) = start();
    let script = Script {
        hold: true,
        ..Script::printing(["started"])
    };
    fake.set_script_for_image("held:1", script);
    for name in ["held-a", "held-b"] {
        create(&client, job(name, "held:1", json!({}))).await;
    }
    let running = || {
        let pods: Vec<Pod> = ["held-a", "held-b"]
            .iter()
            .flat_map(|name| fake.pods_of(name))
            .collect();
        (pods.len() == 2 && pods.iter().all(|p| phase(p) == "Running")).then_some(())
    };
    eventually("both pods to run", running).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["held-a", "held-b"] {
        assert_eq!(phase(&fake.pods_of(name)[0]), "Running", "{name} is held");
        assert!(condition(&fake.job("default", name).unwrap(), "Complete").is_none());
    }
    let events = fake.requests().watch_events;
    fake.release_held();
    for name in ["held-a", "held-b"] {
        let complete = || {
            fake.job("default", name)
                .filter(|j| condition(j, "Complete").is_some())
        };
        eventually("the released Job to complete", complete).await;
        assert_eq!(phase(&fake.pods_of(name)[0]), "Succeeded");
    }
    assert_eq!(fake.requests().watch_events, events, "no watch was open");
}
