//! Several real proctord processes sharing PostgreSQL and Redis, as production runs
//! them: a replica killed (`kill -9`) or stopped (SIGTERM) in the middle of runs, a
//! replacement starting beside a live replica, live logs read through a replica that
//! does not follow the run, and PostgreSQL's connections cut in the middle of runs.
//! Kubernetes runs go to the fake API server, whose pods print a line at a time.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_kube::{FakeKube, Script};
use crate::helpers::{
    TEST_SECRETS_KEY, clear_redis_prefix, drop_postgres_database, migrated_postgres_database,
    numbered, redis_url,
};
use crate::replica::{Replica, TcpProxy, through_proxy, upstream_of};

/// The lease the tests' replicas hold: short, so a dead replica's runs move quickly.
const LEASE_SECONDS: u64 = 4;
const WAIT: Duration = Duration::from_secs(60);

/// A fresh database and Redis prefix shared by the replicas of one test; `None` (with
/// the reason printed) when PostgreSQL and Redis are not there, except under CI=true.
struct Shared {
    database: String,
    url: String,
    prefix: String,
}

impl Shared {
    async fn new() -> Option<Shared> {
        let (database, url) = migrated_postgres_database().await?;
        let prefix = format!("proctor-test:{}:", uuid::Uuid::new_v4().simple());
        Some(Shared {
            database,
            url,
            prefix,
        })
    }

    /// The settings of replica `id`, with `extra`.
    fn env(&self, id: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PROCTOR_DATABASE_URL", self.url.as_str()),
            ("PROCTOR_REDIS_ADDRESS", &redis_url()),
            ("PROCTOR_REDIS_KEY_PREFIX", &self.prefix),
            ("PROCTOR_SECRETS_KEY", TEST_SECRETS_KEY),
            ("PROCTOR_AUTH", "off"),
            ("PROCTOR_REPLICA_ID", id),
            ("PROCTOR_LEASE_SECONDS", &LEASE_SECONDS.to_string()),
            ("PROCTOR_SCHEDULER", "off"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn kube_env(&self, id: &str, fake: &FakeKube) -> Vec<(String, String)> {
        self.env(
            id,
            &[
                ("PROCTOR_EXECUTOR", "kubernetes"),
                ("PROCTOR_KUBE_CLUSTER_HOST_NAME", fake.url()),
                ("PROCTOR_KUBE_POD_LIST_WAIT_TIME", "10"),
            ],
        )
    }

    /// The owner of an execution, read from the database.
    fn owner(&self, execution: &str) -> Option<String> {
        use proctor::store::schema::executions;
        let mut conn = diesel::PgConnection::establish(&self.url).expect("PostgreSQL is up");
        executions::table
            .filter(executions::name.eq(execution))
            .select(executions::owner)
            .first(&mut conn)
            .expect("the execution exists")
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        drop_postgres_database(&self.database);
        clear_redis_prefix(&self.prefix);
    }
}

fn client() -> reqwest::Client {
    crate::helpers::http_client()
}

async fn register(replica: &Replica, proc: Value) {
    let response = client()
        .post(replica.url("/jobs/metadata"))
        .json(&proc)
        .send()
        .await
        .expect("register");
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

async fn execute(replica: &Replica, proc: &str) -> String {
    let response = client()
        .post(replica.url("/jobs/execute"))
        .json(&json!({"name": proc, "args": {}}))
        .send()
        .await
        .expect("execute");
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.expect("JSON");
    body["name"].as_str().expect("a name").to_owned()
}

async fn execution(replica: &Replica, name: &str) -> Value {
    client()
        .get(replica.url(&format!("/api/v1/executions/{name}")))
        .send()
        .await
        .expect("get the execution")
        .json()
        .await
        .expect("JSON")
}

async fn stored_logs(replica: &Replica, name: &str) -> Vec<String> {
    let text = client()
        .get(replica.url(&format!(
            "/api/v1/executions/{name}/logs?since_seq=0&limit=50000"
        )))
        .send()
        .await
        .expect("get the stored log")
        .text()
        .await
        .expect("text");
    text.lines().map(str::to_owned).collect()
}

/// Waits until `name` has at least `lines` stored lines.
async fn wait_for_lines(replica: &Replica, name: &str, lines: usize) {
    let deadline = Instant::now() + WAIT;
    while stored_logs(replica, name).await.len() < lines {
        assert!(
            Instant::now() < deadline,
            "{name} never stored {lines} lines"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_final(replica: &Replica, name: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let execution = execution(replica, name).await;
        let status = execution["status"].as_str().unwrap_or_default().to_owned();
        if !["RECEIVED", "QUEUED", "CREATED", "RUNNING"].contains(&status.as_str()) {
            return execution;
        }
        assert!(Instant::now() < deadline, "{name} never ended: {execution}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a log websocket to its close frame: (lines, close code, close reason).
async fn read_socket(url: String) -> (Vec<String>, Option<u16>, String) {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket opens");
    let mut lines = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(WAIT, socket.next()).await {
        match message {
            Ok(Message::Text(text)) => lines.push(text.to_string()),
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                    .unwrap_or((None, String::new()));
                return (lines, code, reason);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (lines, None, String::new())
}

/// A proc whose pods print `lines` lines, one every `every`.
fn slow_proc(fake: &FakeKube, name: &str, lines: usize, every: Duration) -> Value {
    let image = format!("proctor/{name}:1");
    fake.set_script_for_image(
        &image,
        Script {
            line_interval: every,
            ..Script::printing(numbered(lines))
        },
    );
    json!({"name": name, "image_name": image, "description": "prints slowly"})
}

/// Every run ends SUCCEEDED and its stored log is every line once, in order.
async fn assert_complete(replica: &Replica, names: &[String], lines: usize) {
    for name in names {
        let execution = wait_final(replica, name).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
        assert_eq!(
            stored_logs(replica, name).await,
            numbered(lines),
            "{name}: every line exactly once, in order"
        );
    }
}

#[actix_web::test]
async fn kill_9_of_the_launching_replica_hands_its_kubernetes_runs_over_with_every_line_once() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    let fake = FakeKube::start();
    let mut a = Replica::start("a", &shared.kube_env("replica-a", &fake)).await;
    let b = Replica::start("b", &shared.kube_env("replica-b", &fake)).await;
    register(&a, slow_proc(&fake, "slow", 19, Duration::from_millis(300))).await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(execute(&a, "slow").await);
    }
    // A live log read through B, which does not follow the run (until it takes it over).
    let socket = tokio::spawn(read_socket(
        b.ws_url(&format!("/jobs/logs?job_name={}", names[0])),
    ));
    for name in &names {
        wait_for_lines(&b, name, 3).await;
    }
    a.kill9().await;
    let killed = Instant::now();
    for name in &names {
        while shared.owner(name).as_deref() != Some("replica-b") {
            assert!(
                killed.elapsed() < Duration::from_secs(LEASE_SECONDS + 5),
                "{name} is still owned by {:?}",
                shared.owner(name)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_complete(&b, &names, 19).await;
    let (lines, code, reason) = socket.await.expect("the reader ends");
    assert_eq!(
        lines,
        numbered(19),
        "the websocket on B got every line in order"
    );
    assert_eq!((code, reason.as_str()), (Some(1000), "SUCCEEDED"));
    assert_eq!(fake.jobs().len(), 3, "one Job per execution, ever");
    assert!(
        b.log().contains("took over a run whose lease expired"),
        "{}",
        b.log()
    );
}

#[actix_web::test]
async fn sigterm_of_a_replica_hands_its_kubernetes_runs_over_within_about_a_second() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    let fake = FakeKube::start();
    let mut a = Replica::start("a", &shared.kube_env("replica-a", &fake)).await;
    let b = Replica::start("b", &shared.kube_env("replica-b", &fake)).await;
    register(
        &a,
        slow_proc(&fake, "rolling", 19, Duration::from_millis(300)),
    )
    .await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(execute(&a, "rolling").await);
    }
    for name in &names {
        wait_for_lines(&b, name, 3).await;
    }
    a.sigterm();
    let stopped = Instant::now();
    let status = a.wait_exit(Duration::from_secs(25)).await;
    assert!(status.success(), "a clean exit: {status}\n{}", a.log());
    for name in &names {
        while shared.owner(name).as_deref() != Some("replica-b") {
            assert!(
                stopped.elapsed() < Duration::from_secs(3),
                "{name} is not taken over within 3 s of SIGTERM: owner {:?}",
                shared.owner(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_complete(&b, &names, 19).await;
    assert_eq!(fake.jobs().len(), 3, "one Job per execution, ever");
}

#[actix_web::test]
async fn a_replacement_replica_takes_nothing_a_live_replica_owns_and_serves_its_live_logs() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    let fake = FakeKube::start();
    let a = Replica::start("a", &shared.kube_env("replica-a", &fake)).await;
    register(
        &a,
        slow_proc(&fake, "steady", 12, Duration::from_millis(250)),
    )
    .await;
    let names = vec![execute(&a, "steady").await, execute(&a, "steady").await];
    wait_for_lines(&a, &names[0], 2).await;
    let c = Replica::start("c", &shared.kube_env("replica-c", &fake)).await;
    let socket = tokio::spawn(read_socket(
        c.ws_url(&format!("/jobs/logs?job_name={}", names[0])),
    ));
    assert_complete(&a, &names, 12).await;
    for name in &names {
        assert_eq!(shared.owner(name).as_deref(), Some("replica-a"), "{name}");
    }
    assert!(
        !c.log().contains("took over"),
        "the replacement took nothing over:\n{}",
        c.log()
    );
    let (lines, code, reason) = socket.await.expect("the reader ends");
    assert_eq!(
        lines,
        numbered(12),
        "every line, in order, through replica C"
    );
    assert_eq!((code, reason.as_str()), (Some(1000), "SUCCEEDED"));
}

/// Replicas A and B with the local executor, and a run of `sh -c script` launched on A
/// whose first line B has read from the store: (A, B, the execution's name).
async fn local_run_on_a(
    shared: &Shared,
    a_env: Vec<(String, String)>,
    script: &str,
) -> (Replica, Replica, String) {
    let a = Replica::start("a", &a_env).await;
    let b = Replica::start(
        "b",
        &shared.env("replica-b", &[("PROCTOR_EXECUTOR", "local")]),
    )
    .await;
    register(
        &a,
        json!({"name": "script", "image_name": "alpine:3", "command": ["sh", "-c", script]}),
    )
    .await;
    let name = execute(&a, "script").await;
    wait_for_lines(&b, &name, 1).await;
    (a, b, name)
}

#[actix_web::test]
async fn a_dead_replicas_local_run_is_settled_failed_by_a_survivor_within_the_lease() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    let a_env = shared.env("replica-a", &[("PROCTOR_EXECUTOR", "local")]);
    let (mut a, b, name) = local_run_on_a(&shared, a_env, "echo started; sleep 300").await;
    a.kill9().await;
    let killed = Instant::now();
    let execution = wait_final(&b, &name).await;
    assert!(
        killed.elapsed() < Duration::from_secs(LEASE_SECONDS + 3),
        "settled {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = execution["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("replica-a"),
        "the reason names the lost replica: {reason}"
    );
    assert_eq!(shared.owner(&name).as_deref(), Some("replica-b"));
    assert_eq!(stored_logs(&b, &name).await, ["started"]);
}

#[actix_web::test]
async fn cutting_postgres_connections_mid_run_loses_no_final_status_and_no_line() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    let proxy = TcpProxy::start(upstream_of(&shared.url));
    let url = through_proxy(&shared.url, proxy.port());
    let mut env = shared.env("replica-a", &[("PROCTOR_EXECUTOR", "local")]);
    env.retain(|(k, _)| k != "PROCTOR_DATABASE_URL");
    env.push(("PROCTOR_DATABASE_URL".into(), url));
    let a = Replica::start("a", &env).await;
    register(
        &a,
        json!({"name": "printer", "image_name": "alpine:3",
               "command": ["sh", "-c", "for i in $(seq 1 30); do echo line $i; sleep 0.1; done"]}),
    )
    .await;
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(execute(&a, "printer").await);
    }
    wait_for_lines(&a, &names[0], 5).await;
    // A restart, as the clients see it: every connection dropped, none taken for 2 s.
    proxy.refuse(true);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = client()
        .get(a.url("/health/ready"))
        .send()
        .await
        .expect("readiness answers");
    assert_eq!(
        ready.status().as_u16(),
        503,
        "not ready while the database is away"
    );
    proxy.refuse(false);
    assert_complete(&a, &names, 30).await;
    assert!(
        a.log().contains("retrying"),
        "the writers met the outage:\n{}",
        a.log()
    );
}

#[actix_web::test]
async fn a_cancel_sent_to_a_replica_that_does_not_own_the_run_reaches_its_owner() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    let a_env = shared.env("replica-a", &[("PROCTOR_EXECUTOR", "local")]);
    let (a, b, name) = local_run_on_a(&shared, a_env, "echo started; sleep 300").await;
    let socket = tokio::spawn(read_socket(
        b.ws_url(&format!("/jobs/logs?job_name={name}")),
    ));
    let response = client()
        .post(b.url(&format!("/api/v1/executions/{name}/cancel")))
        .send()
        .await
        .expect("cancel through B");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "CANCELLED", "{body}");
    let execution = execution(&a, &name).await;
    assert_eq!(execution["status"], "CANCELLED");
    assert_eq!(
        shared.owner(&name).as_deref(),
        Some("replica-a"),
        "A stopped it itself"
    );
    let (lines, code, reason) = socket.await.expect("the reader ends");
    assert_eq!(lines, ["started"]);
    assert_eq!((code, reason.as_str()), (Some(1000), "CANCELLED"));
    let again = client()
        .post(b.url(&format!("/api/v1/executions/{name}/cancel")))
        .send()
        .await
        .expect("cancel again");
    assert_eq!(
        again.status().as_u16(),
        200,
        "cancelling a cancelled run is idempotent"
    );
}

#[actix_web::test]
async fn a_replica_cut_off_longer_than_its_lease_gives_its_runs_up_to_the_new_owner() {
    let Some(shared) = Shared::new().await else {
        return;
    };
    // A reaches PostgreSQL through a proxy the test cuts; B directly.
    let proxy = TcpProxy::start(upstream_of(&shared.url));
    let mut env = shared.env("replica-a", &[("PROCTOR_EXECUTOR", "local")]);
    env.retain(|(k, _)| k != "PROCTOR_DATABASE_URL");
    env.push((
        "PROCTOR_DATABASE_URL".into(),
        through_proxy(&shared.url, proxy.port()),
    ));
    let script = "echo started; while true; do echo still here; sleep 0.2; done";
    let (a, b, name) = local_run_on_a(&shared, env, script).await;
    proxy.refuse(true);
    proxy.cut();
    // B takes the run over once A's lease runs out, and settles it: a local run cannot
    // move to another replica.
    let settled = wait_final(&b, &name).await;
    assert_eq!(settled["status"], "FAILED", "{settled}");
    assert!(
        settled["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("replica-a"),
        "{settled}"
    );
    let stored = stored_logs(&b, &name).await;
    proxy.refuse(false);
    // A learns at its next beat that it lost the run: it stops it and writes nothing more.
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS + 10);
    while !crate::orphans::processes_of(&name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "A never stopped the run it lost:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        a.log().contains("another replica owns this run now"),
        "{}",
        a.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = execution(&b, &name).await;
    assert_eq!(
        after["status"], "FAILED",
        "the new owner's verdict stands: {after}"
    );
    assert_eq!(after["reason"], settled["reason"]);
    assert_eq!(
        stored_logs(&b, &name).await,
        stored,
        "A added no line to a run it no longer owns"
    );
}
