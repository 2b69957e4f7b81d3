//! Run queues: a proc's `max_concurrent_runs` bounds its runs at once, on one replica
//! and across two replicas sharing PostgreSQL and Redis; runs beyond it wait QUEUED and
//! start in submit order; a queued run can be cancelled and then never runs; a proc
//! without the field is unaffected; bad values are 400s. And a schedule's Replace
//! policy cancels the previous run, then starts the new one.
//!
//! Each run's script appends `start <N> <ns>` and `end <N> <ns>` to a file, so the
//! tests read what really ran and when, not only the statuses.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TEST_SECRETS_KEY, TestApp, backends, clear_redis_prefix, drop_postgres_database,
    error_message, json_body, migrated_postgres_database, redis_url, register_script, spawn_app,
    temp_dir,
};
use crate::replica::Replica;

const WAIT: Duration = Duration::from_secs(60);

/// A script that records its start and end (by arg N) in `file`, sleeping between.
fn recording_script(file: &Path, sleep: &str) -> String {
    let file = file.display();
    format!(
        "echo \"start $N $(date +%s%N)\" >> {file}; sleep {sleep}; echo \"end $N $(date +%s%N)\" >> {file}"
    )
}

/// Like [`recording_script`], but a run waits after its start until `gate` exists (at
/// most 60 s), so a test decides when the runs in flight may end: what it checks while
/// they hold their slots does not depend on how fast a busy machine submits.
fn gated_script(file: &Path, gate: &Path, sleep: &str) -> String {
    let (file, gate) = (file.display(), gate.display());
    format!(
        "echo \"start $N $(date +%s%N)\" >> {file}; i=0; while [ ! -e {gate} ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; sleep {sleep}; echo \"end $N $(date +%s%N)\" >> {file}"
    )
}

/// Lets the gated runs go on.
fn open_gate(gate: &Path) {
    std::fs::write(gate, b"").unwrap();
}

/// Waits until `count` runs have written their start to `file`.
async fn wait_for_starts(file: &Path, count: usize) {
    let deadline = Instant::now() + WAIT;
    while starts(&read_record(file)).len() < count {
        assert!(
            Instant::now() < deadline,
            "{count} runs did not start within {WAIT:?}: {:?}",
            read_record(file)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(kind, n, ns)` per line of a record file.
fn read_record(file: &Path) -> Vec<(String, u32, u128)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "a record line: {line:?}");
            (
                parts[0].to_owned(),
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
            )
        })
        .collect()
}

/// The most runs that were between their start and their end at once.
fn most_at_once(record: &[(String, u32, u128)]) -> usize {
    let mut events: Vec<(u128, i32)> = record
        .iter()
        .map(|(kind, _, ns)| (*ns, if kind == "start" { 1 } else { -1 }))
        .collect();
    // At the same instant an end frees its slot before a start takes one.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

/// The run numbers in the order they started, with their start times.
fn starts(record: &[(String, u32, u128)]) -> Vec<(u32, u128)> {
    let mut starts: Vec<(u32, u128)> = record
        .iter()
        .filter(|(kind, _, _)| kind == "start")
        .map(|(_, n, ns)| (*n, *ns))
        .collect();
    starts.sort_by_key(|(_, ns)| *ns);
    starts
}

/// Runs are promoted strictly in queue order (under the database lock), but two runs
/// that start at the same moment (two free slots, or two replicas) may reach their
/// first line a few milliseconds apart on a busy machine: the order of starts is
/// checked within 250 ms.
fn assert_started_in_order(started: &[(u32, u128)]) {
    for (i, (n, ns)) in started.iter().enumerate() {
        for (m, later) in &started[i + 1..] {
            assert!(
                m > n || ns.abs_diff(*later) < 250_000_000,
                "run {m} started well before run {n}: {started:?}"
            );
        }
    }
}

async fn submit(app: &TestApp, proc: &str, n: u32) -> Value {
    json_body(
        app.execute(
            &json!({"name": proc, "args": {"N": n.to_string()}}),
            &app.admin,
        )
        .await,
        201,
    )
    .await
}

#[actix_web::test]
async fn a_proc_with_max_concurrent_runs_runs_at_most_that_many_in_submit_order() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let file = app.data_dir.join("record");
        let gate = app.data_dir.join("gate");
        register_script(
            &app,
            "bounded",
            &gated_script(&file, &gate, "0.2"),
            &["N"],
            json!({"max_concurrent_runs": 2}),
        )
        .await;
        let mut names = Vec::new();
        let mut queued = Vec::new();
        for n in 1..=6 {
            let answer = submit(&app, "bounded", n).await;
            names.push(answer["name"].as_str().unwrap().to_owned());
            queued.push((answer["status"].clone(), answer["queue_position"].clone()));
        }
        for (i, (status, position)) in queued.iter().enumerate().skip(2) {
            assert_eq!(status, "QUEUED", "{backend:?}: run {} waits", i + 1);
            assert_eq!(
                position,
                &json!(i - 2),
                "{backend:?}: run {} has {} ahead",
                i + 1,
                i - 2
            );
        }
        let waiting = app.execution(&names[5]).await;
        assert!(
            waiting["status"] == "QUEUED" && waiting["queue_position"].is_i64(),
            "{backend:?}: the last run shows as queued with its position: {waiting}"
        );
        open_gate(&gate);
        for name in &names {
            let ended = app.wait_until_final(name, WAIT).await;
            assert_eq!(ended["status"], "SUCCEEDED", "{backend:?}: {ended}");
            assert!(ended.get("queue_position").is_none(), "{ended}");
        }
        let record = read_record(&file);
        assert_eq!(record.len(), 12, "{backend:?}: every run started and ended");
        assert_eq!(
            most_at_once(&record),
            2,
            "{backend:?}: two at once, never more: {record:?}"
        );
        let started = starts(&record);
        assert_eq!(started.len(), 6, "{backend:?}");
        assert_started_in_order(&started);
    }
}

#[actix_web::test]
async fn a_queued_run_is_cancelled_at_once_and_never_runs() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let file = app.data_dir.join("record");
        let gate = app.data_dir.join("gate");
        register_script(
            &app,
            "single",
            &gated_script(&file, &gate, "0.2"),
            &["N"],
            json!({"max_concurrent_runs": 1}),
        )
        .await;
        let mut names = Vec::new();
        for n in 1..=3 {
            names.push(
                submit(&app, "single", n).await["name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(app.execution(&names[1]).await["status"], "QUEUED");
        let cancelled = json_body(app.cancel(&names[1], &app.admin).await, 200).await;
        assert_eq!(cancelled["status"], "CANCELLED", "{backend:?}: {cancelled}");
        assert!(
            cancelled["reason"]
                .as_str()
                .is_some_and(|r| r.contains("admin@example.com")),
            "{cancelled}"
        );
        let third = app.execution(&names[2]).await;
        assert_eq!(
            third["queue_position"], 0,
            "{backend:?}: it moved up: {third}"
        );
        open_gate(&gate);
        for (name, expected) in names.iter().zip(["SUCCEEDED", "CANCELLED", "SUCCEEDED"]) {
            let ended = app.wait_until_final(name, WAIT).await;
            assert_eq!(ended["status"], expected, "{backend:?}: {ended}");
        }
        let ran: Vec<u32> = starts(&read_record(&file))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(ran, [1, 3], "{backend:?}: the cancelled run never ran");
        let cancelled = app.execution(&names[1]).await;
        assert!(cancelled["started_at"].is_null(), "{cancelled}");
    }
}

#[actix_web::test]
async fn a_proc_without_max_concurrent_runs_is_unaffected() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let file = app.data_dir.join("record");
        let gate = app.data_dir.join("gate");
        register_script(
            &app,
            "free",
            &gated_script(&file, &gate, "0.1"),
            &["N"],
            json!({}),
        )
        .await;
        let described = json_body(app.describe("free", &app.admin).await, 200).await;
        assert!(
            described.get("max_concurrent_runs").is_none(),
            "{backend:?}: not written when not set: {described}"
        );
        let mut names = Vec::new();
        for n in 1..=3 {
            let answer = submit(&app, "free", n).await;
            assert_ne!(answer["status"], "QUEUED", "{backend:?}: {answer}");
            names.push(answer["name"].as_str().unwrap().to_owned());
        }
        // All three start while none has ended (a bound would hold the third back).
        wait_for_starts(&file, 3).await;
        open_gate(&gate);
        for name in &names {
            let ended = app.wait_until_final(name, WAIT).await;
            assert_eq!(ended["status"], "SUCCEEDED", "{backend:?}: {ended}");
        }
        assert_eq!(
            most_at_once(&read_record(&file)),
            3,
            "{backend:?}: all three at once"
        );
    }
}

#[actix_web::test]
async fn bad_max_concurrent_runs_are_rejected_with_400() {
    let cases = [
        (
            json!(0),
            "max_concurrent_runs must be between 1 and 1000, not 0",
        ),
        (
            json!(1001),
            "max_concurrent_runs must be between 1 and 1000, not 1001",
        ),
        (json!(-1), "max_concurrent_runs"),
        (json!("two"), "max_concurrent_runs"),
    ];
    let app = spawn_app(Backend::Embedded).await;
    for (value, expected) in cases {
        let mut proc = crate::helpers::sample_proc("limited");
        proc["max_concurrent_runs"] = value.clone();
        let message = error_message(app.register(&proc, &app.admin).await, 400).await;
        assert!(message.contains(expected), "{value}: {message}");
    }
    let mut proc = crate::helpers::sample_proc("limited");
    proc["max_concurrent_runs"] = json!(1000);
    json_body(app.register(&proc, &app.admin).await, 201).await;
    let described = json_body(app.describe("limited", &app.admin).await, 200).await;
    assert_eq!(described["max_concurrent_runs"], 1000);
    let spec = json_body(
        app.request(Method::GET, "/openapi.json", None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let schemas = &spec["components"]["schemas"];
    assert!(
        schemas["ProcMetadata"]["properties"]["max_concurrent_runs"].is_object(),
        "the OpenAPI document shows max_concurrent_runs"
    );
    assert!(
        schemas["Status"].to_string().contains("QUEUED"),
        "the OpenAPI document shows QUEUED"
    );
    assert!(
        schemas["ExecuteResponse"]["properties"]["queue_position"].is_object(),
        "the OpenAPI document shows queue_position"
    );
}

/// Two proctord processes on one fresh PostgreSQL database and Redis prefix.
struct TwoReplicas {
    database: String,
    prefix: String,
    replicas: Vec<Replica>,
}

impl TwoReplicas {
    async fn start(dir: &Path, extra: &[(&str, &str)]) -> Option<TwoReplicas> {
        let (database, url) = migrated_postgres_database().await?;
        let prefix = format!("proctor-test:{}:", uuid::Uuid::new_v4().simple());
        let mut replicas = Vec::new();
        for id in ["queue-a", "queue-b"] {
            let env: Vec<(String, String)> = [
                ("PROCTOR_DATABASE_URL", url.as_str()),
                ("PROCTOR_REDIS_ADDRESS", &redis_url()),
                ("PROCTOR_REDIS_KEY_PREFIX", &prefix),
                ("PROCTOR_SECRETS_KEY", TEST_SECRETS_KEY),
                ("PROCTOR_AUTH", "off"),
                ("PROCTOR_REPLICA_ID", id),
                ("PROCTOR_SCHEDULER", "off"),
                ("PROCTOR_DATA_DIR", &dir.join(id).display().to_string()),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            replicas.push(Replica::start(id, &env).await);
        }
        Some(TwoReplicas {
            database,
            prefix,
            replicas,
        })
    }
}

impl Drop for TwoReplicas {
    fn drop(&mut self) {
        self.replicas.clear();
        drop_postgres_database(&self.database);
        clear_redis_prefix(&self.prefix);
    }
}

#[actix_web::test]
async fn the_queue_holds_order_and_bound_across_two_replicas_on_postgresql() {
    let dir = temp_dir("queue-replicas");
    let Some(cluster) = TwoReplicas::start(&dir, &[]).await else {
        return;
    };
    let client = crate::helpers::http_client();
    let file = dir.join("record");
    let gate = dir.join("gate");
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    let proc = json!({
        "name": "shared",
        "image_name": "alpine:3",
        "env_vars": {"args": [{"name": "N"}], "secrets": []},
        "command": ["sh", "-c", gated_script(&file, &gate, "0.3")],
        "max_concurrent_runs": 2
    });
    let registered = client
        .post(a.url("/jobs/metadata"))
        .json(&proc)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    // Submitted in turn through one replica and the other.
    let mut names = Vec::new();
    for n in 1..=8u32 {
        let replica = if n % 2 == 1 { a } else { b };
        let answer: Value = client
            .post(replica.url("/jobs/execute"))
            .json(&json!({"name": "shared", "args": {"N": n.to_string()}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if n > 2 {
            assert_eq!(answer["status"], "QUEUED", "run {n}: {answer}");
        }
        names.push(answer["name"].as_str().unwrap().to_owned());
    }
    open_gate(&gate);
    let deadline = Instant::now() + WAIT;
    for (i, name) in names.iter().enumerate() {
        loop {
            // Read through the other replica half of the time.
            let replica = if i % 2 == 0 { b } else { a };
            let execution: Value = client
                .get(replica.url(&format!("/api/v1/executions/{name}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let status = execution["status"].as_str().unwrap().to_owned();
            if status == "SUCCEEDED" {
                break;
            }
            assert!(
                ["QUEUED", "RECEIVED", "CREATED", "RUNNING"].contains(&status.as_str())
                    && Instant::now() < deadline,
                "{name}: {execution}\nA:\n{}\nB:\n{}",
                a.log(),
                b.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let record = read_record(&file);
    assert_eq!(record.len(), 16, "every run started and ended: {record:?}");
    assert_eq!(
        most_at_once(&record),
        2,
        "two at once across both replicas, never more: {record:?}"
    );
    let started = starts(&record);
    assert_started_in_order(&started);
    let strict: Vec<u32> = started.iter().map(|(n, _)| *n).collect();
    eprintln!("start order across replicas: {strict:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn get_execution(replica: &Replica, name: &str) -> Value {
    crate::helpers::http_client()
        .get(replica.url(&format!("/api/v1/executions/{name}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn submit_to(replica: &Replica, proc: &str, n: u32) -> Value {
    crate::helpers::http_client()
        .post(replica.url("/jobs/execute"))
        .json(&json!({"name": proc, "args": {"N": n.to_string()}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_replica_killed_in_the_middle_of_a_queue_does_not_strand_it() {
    let dir = temp_dir("queue-kill");
    let Some(mut cluster) = TwoReplicas::start(&dir, &[("PROCTOR_LEASE_SECONDS", "4")]).await
    else {
        return;
    };
    let file = dir.join("record");
    let proc = json!({
        "name": "lonely",
        "image_name": "alpine:3",
        "env_vars": {"args": [{"name": "N"}], "secrets": []},
        "command": ["sh", "-c", recording_script(&file, "3")],
        "max_concurrent_runs": 1
    });
    let registered = crate::helpers::http_client()
        .post(cluster.replicas[0].url("/jobs/metadata"))
        .json(&proc)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let first = submit_to(&cluster.replicas[0], "lonely", 1).await;
    let deadline = Instant::now() + WAIT;
    while read_record(&file).is_empty() {
        assert!(Instant::now() < deadline, "run 1 never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = submit_to(&cluster.replicas[1], "lonely", 2).await;
    let third = submit_to(&cluster.replicas[0], "lonely", 3).await;
    assert_eq!(second["status"], "QUEUED", "{second}");
    assert_eq!(third["status"], "QUEUED", "{third}");
    // The replica running run 1 dies: the other settles run 1 once its lease expires,
    // and the queue moves on there.
    cluster.replicas[0].kill9().await;
    let b = &cluster.replicas[1];
    let mut ended = Vec::new();
    for answer in [&first, &second, &third] {
        let name = answer["name"].as_str().unwrap();
        let execution = loop {
            let execution = get_execution(b, name).await;
            let status = execution["status"].as_str().unwrap().to_owned();
            if !["QUEUED", "RECEIVED", "CREATED", "RUNNING"].contains(&status.as_str()) {
                break execution;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never ended: {execution}\n{}",
                b.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ended.push(execution["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(ended, ["FAILED", "SUCCEEDED", "SUCCEEDED"], "{}", b.log());
    let record = read_record(&file);
    let order: Vec<u32> = starts(&record).into_iter().map(|(n, _)| n).collect();
    assert_eq!(order, [1, 2, 3], "{record:?}");
    let later: Vec<_> = record.into_iter().filter(|(_, n, _)| *n > 1).collect();
    assert_eq!(
        most_at_once(&later),
        1,
        "runs 2 and 3 one at a time: {later:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_web::test]
async fn replace_cancels_the_previous_run_then_starts_the_new_one() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "sleeper", "sleep 60", &[], json!({})).await;
        let created = json_body(
            app.request(Method::POST, "/jobs/schedule", Some(&app.admin))
                .json(&json!({
                    "name": "sleeper",
                    "args": {},
                    "time": "*/2 * * * * *",
                    "tags": "replace",
                    "group_name": "ops",
                    "concurrency_policy": "Replace",
                }))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        assert_eq!(created["concurrency_policy"], "Replace", "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        // Wait for a second run to be going.
        let deadline = Instant::now() + Duration::from_secs(20);
        let history = loop {
            let history = json_body(
                app.schedule_call(Method::GET, &format!("/{id}/executions"))
                    .await,
                200,
            )
            .await;
            let executions = history["executions"].as_array().unwrap();
            if executions.len() >= 2 && executions[0]["status"] == "RUNNING" {
                break history;
            }
            assert!(Instant::now() < deadline, "{backend:?}: {history}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        json_body(
            app.schedule_call(Method::POST, &format!("/{id}/disable"))
                .await,
            200,
        )
        .await;
        let executions = history["executions"].as_array().unwrap();
        let (newest, previous) = (&executions[0], &executions[1]);
        let previous = app
            .wait_until_final(previous["name"].as_str().unwrap(), WAIT)
            .await;
        assert_eq!(previous["status"], "CANCELLED", "{backend:?}: {previous}");
        assert!(
            previous["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&format!("schedule {id} (Replace)"))),
            "{backend:?}: {previous}"
        );
        // The new run started only once the previous one had ended.
        let started =
            |e: &Value| chrono::DateTime::parse_from_rfc3339(e.as_str().unwrap()).unwrap();
        let newest = app.execution(newest["name"].as_str().unwrap()).await;
        assert!(
            started(&newest["created_at"]) >= started(&previous["finished_at"]),
            "{backend:?}: created after the previous run ended: {previous} {newest}"
        );
        json_body(
            app.cancel(newest["name"].as_str().unwrap(), &app.admin)
                .await,
            200,
        )
        .await;
    }
}
