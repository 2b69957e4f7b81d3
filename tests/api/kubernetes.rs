//! proctord with the Kubernetes executor against the fake API server: the real kube-rs
//! client over real HTTP.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::fake_kube::{FakeKube, Script};
use crate::helpers::{Backend, TestApp, backends, json_body, spawn_app_with};
use proctor::model::{ExecutionName, Status};
use proctor::store::{NewExecution, Transition};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "kube-secret-value-never-in-a-job-spec";

async fn spawn_on(fake: &FakeKube, backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("executor", "kubernetes"),
        ("kube_cluster_host_name", fake.url()),
        ("default_namespace", "default"),
        ("job_pod_annotations", r#"{"team": "ops"}"#),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(backend, &settings).await
}

/// Registers `name` running `image`, with arg NAME and secret TOKEN set.
async fn register(app: &TestApp, name: &str, image: &str, extra: Value) {
    let mut proc = json!({
        "name": name,
        "description": "runs on Kubernetes",
        "image_name": image,
        "env_vars": {"args": [{"name": "NAME"}], "secrets": [{"name": "TOKEN"}]},
    });
    if let (Some(proc), Value::Object(extra)) = (proc.as_object_mut(), extra) {
        proc.extend(extra);
    }
    json_body(app.register(&proc, &app.admin).await, 201).await;
    let secrets = json!({"job_name": name, "secrets": {"TOKEN": SECRET}});
    json_body(app.set_secrets(&secrets, &app.admin).await, 201).await;
}

#[actix_web::test]
async fn a_run_is_a_job_with_its_secret_apart_and_its_log_streams_live() {
    let fake = FakeKube::start();
    for backend in backends() {
        let app = spawn_on(
            &fake,
            backend,
            &[
                ("kube_job_retries", "2"),
                ("kube_job_active_deadline_seconds", "600"),
            ],
        )
        .await;
        let image = format!("registry.example/hello-{backend:?}:1").to_lowercase();
        fake.set_script_for_image(
            &image,
            Script {
                lines: (1..=20).map(|i| format!("line {i}")).collect(),
                line_interval: Duration::from_millis(20),
                ..Script::default()
            },
        );
        register(&app, "hello-kube", &image, json!({})).await;
        let name = app.run("hello-kube", json!({"NAME": "Ada"})).await;
        let socket = app.logs_socket(&name, &app.admin).await;
        let transcript = socket.read_to_end(WAIT).await;
        assert_eq!(
            transcript.lines,
            crate::helpers::numbered(20),
            "{backend:?}"
        );
        assert_eq!(transcript.close_reason, "SUCCEEDED", "{backend:?}");
        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "SUCCEEDED");
        assert_eq!(execution["executor"], "kubernetes");
        assert_eq!(execution["attempts"], 1);

        let job = fake.job("default", &name).expect("the Job exists");
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "proctor");
        assert_eq!(labels["proctor.io/execution"], name);
        assert_eq!(labels["proctor.io/proc"], "hello-kube");
        let spec = job.spec.clone().unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let template = spec.template;
        assert_eq!(
            template.metadata.unwrap().annotations.unwrap()["team"],
            "ops"
        );
        let pod = template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some(image.as_str()));
        let env: Vec<(String, Option<String>)> = container
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert!(
            env.contains(&("NAME".into(), Some("Ada".into()))),
            "{env:?}"
        );
        assert!(env.contains(&("PROCTOR_EXECUTION_NAME".into(), Some(name.clone()))));
        let env_from = container.env_from.clone().unwrap();
        assert_eq!(env_from[0].secret_ref.as_ref().unwrap().name, name);
        let job_json = serde_json::to_string(&job).unwrap();
        assert!(!job_json.contains(SECRET), "no secret value in the Job");

        let secret = fake
            .secret("default", &name)
            .expect("the execution's Secret");
        let owner = &secret.metadata.owner_references.clone().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Job", name.as_str())
        );
        assert_eq!(Some(owner.uid.clone()), job.metadata.uid);
        assert_eq!(secret.data.unwrap()["TOKEN"].0, SECRET.as_bytes());
    }
}

#[actix_web::test]
async fn failures_retries_deadlines_and_bad_images_end_the_run_with_the_reason() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, &[("kube_job_retries", "2")]).await;

    fake.set_script_for_image("example/fails:1", Script::printing(["trying"]).exiting(3));
    register(&app, "fails", "example/fails:1", json!({})).await;
    let name = app.run("fails", json!({"NAME": "x"})).await;
    let execution = app.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    assert_eq!(execution["exit_code"], 3);
    assert_eq!(execution["reason"], "exited with code 3");
    assert_eq!(execution["attempts"], 3);
    assert_eq!(fake.pods_of(&name).len(), 3, "backoffLimit 2: three pods");
    assert_eq!(app.stored_logs(&name).await, ["trying", "trying", "trying"]);

    fake.set_script_for_image(
        "example/slow:1",
        Script {
            lines: vec!["tick".into(); 100],
            line_interval: Duration::from_millis(100),
            ..Script::default()
        },
    );
    register(
        &app,
        "slow",
        "example/slow:1",
        json!({"active_deadline_seconds": 1}),
    )
    .await;
    let name = app.run("slow", json!({"NAME": "x"})).await;
    let execution = app.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "TIMED_OUT", "{execution}");
    assert_eq!(execution["reason"], "exceeded its deadline of 1s");

    fake.set_script_for_image(
        "example/missing:1",
        Script {
            image_pull_error: true,
            ..Script::default()
        },
    );
    register(&app, "missing-image", "example/missing:1", json!({})).await;
    let name = app.run("missing-image", json!({"NAME": "x"})).await;
    let execution = app.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = execution["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("image example/missing:1 cannot be pulled (ErrImagePull"),
        "{reason}"
    );
    for _ in 0..100 {
        if fake.job("default", &name).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fake.job("default", &name).is_none(),
        "the stuck Job is deleted"
    );
}

#[actix_web::test]
async fn cancel_deletes_the_job_and_ends_cancelled() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, &[]).await;
    fake.set_script_for_image(
        "example/long:1",
        Script {
            lines: vec!["working".into(); 600],
            line_interval: Duration::from_millis(50),
            ..Script::default()
        },
    );
    register(&app, "long", "example/long:1", json!({})).await;
    let name = app.run("long", json!({"NAME": "x"})).await;
    app.wait_for_status(&name, "RUNNING", WAIT).await;
    let body = json_body(app.cancel(&name, &app.admin).await, 200).await;
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["reason"], "cancelled by admin@example.com");
    assert!(fake.job("default", &name).is_none(), "the Job is gone");
    assert!(fake.pods_of(&name).is_empty(), "and its pods");
    assert!(fake.secret("default", &name).is_none(), "and its Secret");
}

#[actix_web::test]
async fn dropped_and_expired_watches_lose_no_status_change() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, &[]).await;
    fake.set_script_for_image(
        "example/steady:1",
        Script {
            lines: vec!["a".into(), "b".into(), "c".into()],
            line_interval: Duration::from_millis(200),
            pending_for: Duration::from_millis(300),
            ..Script::default()
        },
    );
    register(&app, "steady", "example/steady:1", json!({})).await;
    let name = app.run("steady", json!({"NAME": "x"})).await;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if round == 2 {
            // The next resume finds its resourceVersion gone: 410, then a relist.
            fake.expire_history();
        }
        fake.drop_watches();
    }
    let execution = app.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(app.stored_logs(&name).await, ["a", "b", "c"]);
}

#[actix_web::test]
async fn a_restart_reattaches_to_running_jobs_and_settles_missing_ones() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, &[]).await;
    fake.set_script_for_job(
        "orphan-aaaaaaaaaaaaaa",
        Script {
            lines: vec!["still here".into()],
            line_interval: Duration::from_millis(300),
            ..Script::default()
        },
    );
    // Two runs a previous proctord left RUNNING: one Job still exists, one is gone.
    for name in ["orphan-aaaaaaaaaaaaaa", "orphan-bbbbbbbbbbbbbb"] {
        app.stores
            .executions
            .insert(NewExecution {
                name: ExecutionName::parse(name).unwrap(),
                proc_name: "orphan".into(),
                image: "example/orphan:1".into(),
                args: Default::default(),
                executor: "kubernetes".into(),
                user_email: "admin@example.com".into(),
                schedule_id: None,
                callback_url: None,
                notify: vec![],
            })
            .await
            .unwrap();
        app.stores
            .executions
            .transition(name, Status::Running, Transition::default())
            .await
            .unwrap();
    }
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "orphan-aaaaaaaaaaaaaa", "labels": {
            "app.kubernetes.io/managed-by": "proctor", "proctor.io/execution": "orphan-aaaaaaaaaaaaaa", "proctor.io/proc": "orphan"}},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "proctor", "proctor.io/execution": "orphan-aaaaaaaaaaaaaa"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "proc", "image": "example/orphan:1"}]}}}
    }))
    .unwrap();
    Api::<Job>::namespaced(fake.client(), "default")
        .create(&PostParams::default(), &job)
        .await
        .unwrap();

    let restarted = proctor::app::Application::build(app.settings.clone())
        .await
        .unwrap();
    actix_web::rt::spawn(restarted.run_until_stopped());
    let gone = app.wait_until_final("orphan-bbbbbbbbbbbbbb", WAIT).await;
    assert_eq!(gone["status"], "FAILED");
    assert!(
        gone["reason"]
            .as_str()
            .unwrap()
            .starts_with("its Job no longer exists"),
        "{gone}"
    );
    let reattached = app.wait_until_final("orphan-aaaaaaaaaaaaaa", WAIT).await;
    assert_eq!(reattached["status"], "SUCCEEDED", "{reattached}");
}

#[actix_web::test]
async fn a_hundred_concurrent_runs_cost_a_bounded_number_of_api_requests() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, &[]).await;
    fake.set_script_for_image("example/many:1", Script::printing(["done"]));
    register(&app, "many", "example/many:1", json!({})).await;
    let before = fake.requests();
    let names: Vec<String> =
        futures_util::future::join_all((0..100).map(|_| app.run("many", json!({"NAME": "x"}))))
            .await;
    for name in &names {
        let execution = app.wait_until_final(name, Duration::from_secs(60)).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    }
    let after = fake.requests();
    let spent = after.total - before.total;
    let watches: u64 = after.watches.values().sum::<u64>() - before.watches.values().sum::<u64>();
    eprintln!(
        "100 executions: {spent} API requests ({watches} of them watches): {:.2} per execution",
        spent as f64 / 100.0
    );
    // Secret, Job, the Secret's owner, the pod's log: four per run, plus the shared watches.
    assert!(
        spent - watches <= 4 * 100,
        "{spent} requests: {:?}",
        after.by_route
    );
    assert!(watches <= 10, "the watches are shared: {watches}");
}

#[actix_web::test]
async fn readiness_checks_the_cluster_too() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, &[]).await;
    let body = json_body(app.ready().await, 200).await;
    assert_eq!(body["checks"]["kubernetes"], "ok");

    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("executor", "kubernetes"),
            ("kube_cluster_host_name", &dead),
        ],
    )
    .await;
    let body = json_body(app.ready().await, 503).await;
    assert_eq!(body["error"], "kubernetes unavailable");
    assert_eq!(body["detail"]["checks"]["database"], "ok");
}

/// The allowlists the pod-option tests run under.
const POD_POLICY: &[(&str, &str)] = &[
    (
        "kube_default_resources",
        r#"{"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}"#,
    ),
    ("kube_allowed_service_accounts", "reporter, backup"),
    ("kube_allowed_image_pull_secrets", "registry-creds"),
    ("kube_allowed_node_selectors", "node-pool"),
    ("kube_allowed_tolerations", "dedicated"),
    ("kube_allowed_labels", "team,cost-center"),
];

#[actix_web::test]
async fn the_job_carries_the_procs_pod_options_over_the_default_resources() {
    let fake = FakeKube::start();
    for backend in backends() {
        let app = spawn_on(&fake, backend, POD_POLICY).await;
        let image = format!("registry.example/pod-options-{backend:?}:1").to_lowercase();
        fake.set_script_for_image(
            &image,
            Script {
                lines: vec!["hi".into()],
                ..Script::default()
            },
        );
        let pod = json!({
            "resources": {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": "1"}},
            "nodeSelector": {"node-pool": "batch"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
            "serviceAccountName": "reporter",
            "imagePullSecrets": [{"name": "registry-creds"}],
            "labels": {"team": "ops", "cost-center": "42"}
        });
        register(&app, "pod-options", &image, json!({ "pod": pod })).await;
        let described = json_body(app.describe("pod-options", &app.admin).await, 200).await;
        assert_eq!(described["pod"], pod, "{backend:?}: stored as given");

        let name = app.run("pod-options", json!({"NAME": "Ada"})).await;
        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{backend:?}");
        let job = fake.job("default", &name).expect("the Job exists");
        let job_labels = job.metadata.labels.clone().unwrap();
        assert_eq!(job_labels["team"], "ops");
        assert_eq!(job_labels["proctor.io/execution"], name);
        let template = job.spec.clone().unwrap().template;
        let pod_labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels["cost-center"], "42");
        assert_eq!(pod_labels["app.kubernetes.io/managed-by"], "proctor");
        let spec = serde_json::to_value(template.spec.unwrap()).unwrap();
        assert_eq!(spec["serviceAccountName"], "reporter");
        assert_eq!(spec["nodeSelector"], json!({"node-pool": "batch"}));
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}])
        );
        assert_eq!(
            spec["imagePullSecrets"],
            json!([{"name": "registry-creds"}])
        );
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({
                "requests": {"cpu": "500m", "memory": "64Mi"},
                "limits": {"memory": "256Mi", "nvidia.com/gpu": "1"}
            }),
            "the proc's resources over the defaults, key by key"
        );

        // A proc without pod options gets the default resources and nothing else.
        register(&app, "plain", &image, json!({})).await;
        let name = app.run("plain", json!({"NAME": "Bo"})).await;
        app.wait_until_final(&name, WAIT).await;
        let job = fake.job("default", &name).expect("the Job exists");
        let spec = serde_json::to_value(job.spec.unwrap().template.spec.unwrap()).unwrap();
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
        );
        assert!(spec.get("serviceAccountName").is_none(), "{spec}");
        assert!(spec.get("nodeSelector").is_none(), "{spec}");
    }
}

#[actix_web::test]
async fn pod_options_outside_the_allowlist_are_refused_at_registration() {
    let fake = FakeKube::start();
    let app = spawn_on(&fake, Backend::Embedded, POD_POLICY).await;
    let cases = [
        (
            json!({"serviceAccountName": "cluster-admin"}),
            "pod.serviceAccountName: service account \"cluster-admin\" is not allowed (PROCTOR_KUBE_ALLOWED_SERVICE_ACCOUNTS allows: reporter, backup)",
            "an arbitrary service account",
        ),
        (
            json!({"imagePullSecrets": [{"name": "someone-elses"}]}),
            "secret \"someone-elses\" is not allowed (PROCTOR_KUBE_ALLOWED_IMAGE_PULL_SECRETS",
            "another pull secret",
        ),
        (
            json!({"nodeSelector": {"kubernetes.io/hostname": "control-plane"}}),
            "node label \"kubernetes.io/hostname\" is not allowed",
            "pinning to a node",
        ),
        (
            json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}),
            "pod.tolerations[0].key: taint key \"node-role.kubernetes.io/control-plane\" is not allowed",
            "tolerating the control plane",
        ),
        (
            json!({"tolerations": [{"operator": "Exists"}]}),
            "needs PROCTOR_KUBE_ALLOWED_TOLERATIONS=*",
            "tolerating everything",
        ),
        (
            json!({"labels": {"app.kubernetes.io/managed-by": "me"}}),
            "set by proctord itself",
            "proctord's own label",
        ),
        (
            json!({"labels": {"owner": "me"}}),
            "label \"owner\" is not allowed",
            "a label outside the list",
        ),
        (
            json!({"resources": {"limits": {"memory": "a lot"}}}),
            "pod.resources.limits.memory",
            "a bad quantity",
        ),
        (
            json!({"hostNetwork": true}),
            "unknown field `hostNetwork`",
            "an option proctord does not offer",
        ),
    ];
    for (pod, expected, why) in cases {
        let proc = json!({"name": "greedy", "image_name": "alpine:3", "pod": pod});
        // An option proctord does not offer breaks the document (400); the rest are the
        // operator's allowlists and Kubernetes' own rules, stated in words (422).
        let status = if expected.starts_with("unknown field") {
            400
        } else {
            422
        };
        let message =
            crate::helpers::error_message(app.register(&proc, &app.admin).await, status).await;
        assert!(message.contains(expected), "{why}: {message}");
    }
    let missing = app.describe("greedy", &app.admin).await;
    assert_eq!(missing.status().as_u16(), 404, "nothing was stored");
}

#[actix_web::test]
async fn a_run_whose_pod_options_are_no_longer_allowed_ends_creation_failed() {
    let fake = FakeKube::start();
    let before = spawn_on(&fake, Backend::Embedded, POD_POLICY).await;
    register(
        &before,
        "narrowed",
        "registry.example/narrowed:1",
        json!({"pod": {"serviceAccountName": "reporter"}}),
    )
    .await;
    // The same database, served after the operator emptied the allowlist.
    let data_dir = before.data_dir.to_string_lossy().into_owned();
    let after = spawn_on(&fake, Backend::Embedded, &[("data_dir", &data_dir)]).await;
    let name = after.run("narrowed", json!({"NAME": "Ada"})).await;
    let execution = after.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "CREATION_FAILED", "{execution}");
    let reason = execution["reason"].as_str().unwrap();
    assert!(
        reason.contains("service account \"reporter\" is not allowed"),
        "{reason}"
    );
    assert!(fake.job("default", &name).is_none(), "no Job was created");
}
