//! Proctor's benchmarks: a real `proctord` process on loopback, driven over HTTP and
//! websockets, measured from outside. Prints a table; never fails on a slow machine.
//!
//! `cargo bench --bench proctor` runs the full scenarios; `cargo test --bench proctor`
//! (what CI runs) runs each in a smoke mode of a few seconds. Add scenario names
//! (`dispatch fanout scheduling footprint kubernetes replicas stats retention peer
//! kube-scale schedules-scale log-scale ingest latency`) to run only those, and a backend
//! name (`sqlite`, `postgres+redis`) to measure only that one.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

// The fake Kubernetes API server of the tests, shared (its own tests compile to nothing here).
#[path = "../tests/api/fake_kube/mod.rs"]
#[allow(dead_code, unused_imports)]
mod fake_kube;
mod ingest;
mod latency;
mod peer;
mod scale;

/// Lines a second in the paced fan-out runs: with 100 subscribers, the 2,000,000
/// deliveries a second of the target.
const FANOUT_PACED_RATE: u32 = 20_000;

/// Sizes of one run of the suite.
struct Plan {
    smoke: bool,
    dispatch_requests: usize,
    sustained_for: Duration,
    fanout_lines: usize,
    fanout_subscribers: &'static [usize],
    schedules_firing: usize,
    firing_for: Duration,
    schedules_idle: usize,
    /// Wait after loading the schedules before measuring idle CPU: past the first sync,
    /// which reloads everything because the schedules just changed.
    idle_settle: Duration,
    /// How long idle CPU is measured: a whole number of full reloads (every 6th sync).
    idle_for: Duration,
    idle_sessions: usize,
    kube_runs: usize,
    /// Lines a run prints (20 ms apart) while its log is read on two replicas.
    replica_lines: usize,
    /// Runs in flight whose leases one beat renews.
    leased_runs: usize,
    /// The lease of the takeover measurements (the default in a full run).
    lease_seconds: u64,
    /// Executions loaded for the overview and history reads, spread over 30 days.
    stats_executions: usize,
    /// Requests of each kind measured on them.
    stats_requests: usize,
    /// Lines of the run whose page is opened in Chromium.
    console_lines: usize,
    /// Lines stored to measure the bytes a stored line costs, in runs of 100,000.
    retention_lines: usize,
    /// Old finished runs, and lines each, for the purge to remove while runs are
    /// dispatched.
    retention_old_runs: usize,
    retention_old_lines: usize,
    /// How long dispatch is measured without the purge, beside it, and without again.
    retention_window: Duration,
    /// Runs of the `peer` workload submitted one after another, and by 8 clients at once.
    peer_sequential: usize,
    peer_runs: usize,
    /// Kubernetes runs held in flight at once.
    kube_scale_runs: usize,
    /// Schedules stored, and how many of them fire every second.
    scale_schedules: usize,
    scale_schedules_firing: usize,
    /// Lines stored for one run, read back page by page and whole.
    scale_log_lines: usize,
    /// Lines of the `ingest` run, and the live subscribers of each measurement.
    ingest_lines: usize,
    ingest_subscribers: &'static [usize],
    /// Three-line runs measured one after another (`latency`).
    latency_runs: usize,
}

impl Plan {
    fn new(smoke: bool) -> Self {
        if smoke {
            Plan {
                smoke,
                dispatch_requests: 50,
                sustained_for: Duration::from_secs(2),
                fanout_lines: 10_000,
                fanout_subscribers: &[1, 10],
                schedules_firing: 20,
                firing_for: Duration::from_secs(3),
                schedules_idle: 200,
                idle_settle: Duration::from_secs(1),
                idle_for: Duration::from_secs(2),
                idle_sessions: 50,
                kube_runs: 10,
                replica_lines: 50,
                leased_runs: 100,
                lease_seconds: 2,
                stats_executions: 5_000,
                stats_requests: 20,
                console_lines: 20_000,
                retention_lines: 20_000,
                retention_old_runs: 1_000,
                retention_old_lines: 50,
                retention_window: Duration::from_secs(1),
                peer_sequential: 5,
                peer_runs: 16,
                kube_scale_runs: 50,
                scale_schedules: 2_000,
                scale_schedules_firing: 20,
                scale_log_lines: 20_000,
                ingest_lines: 5_000,
                ingest_subscribers: &[0, 3],
                latency_runs: 10,
            }
        } else {
            Plan {
                smoke,
                dispatch_requests: 3_000,
                sustained_for: Duration::from_secs(30),
                fanout_lines: 200_000,
                fanout_subscribers: &[1, 10, 100],
                schedules_firing: 1_000,
                firing_for: Duration::from_secs(30),
                schedules_idle: 10_000,
                idle_settle: Duration::from_secs(11),
                idle_for: Duration::from_secs(60),
                idle_sessions: 1_000,
                kube_runs: 100,
                replica_lines: 1_000,
                leased_runs: 1_000,
                lease_seconds: 10,
                stats_executions: 1_000_000,
                stats_requests: 200,
                console_lines: 1_000_000,
                retention_lines: 1_000_000,
                retention_old_runs: 10_000,
                retention_old_lines: 100,
                retention_window: Duration::from_secs(10),
                peer_sequential: 50,
                peer_runs: 200,
                kube_scale_runs: 10_000,
                scale_schedules: 100_000,
                scale_schedules_firing: 1_000,
                scale_log_lines: 1_000_000,
                ingest_lines: 1_000_000,
                ingest_subscribers: &[0, 100],
                latency_runs: 300,
            }
        }
    }
}

/// One printed row.
struct Row {
    scenario: &'static str,
    backend: String,
    metric: String,
    value: String,
    target: &'static str,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values
}

/// A proctord process with its own data directory (and database, on PostgreSQL).
struct Server {
    child: Child,
    base: String,
    port: u16,
    data_dir: std::path::PathBuf,
    database: Option<String>,
    started_in: Duration,
    /// Its settings, for a second replica on the same stores ([`Server::beside`]).
    env: Vec<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn postgres_url() -> String {
    std::env::var("PROCTOR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(url: &str, sql: &str) -> bool {
    Command::new("psql")
        .args([url, "-qc", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Server {
    async fn start(backend: &str, extra: &[(&str, String)]) -> Server {
        let port = free_port();
        let data_dir = std::env::temp_dir().join(format!("proctor-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("PROCTOR_APP_PORT".into(), port.to_string()),
            (
                "PROCTOR_DATA_DIR".into(),
                data_dir.to_string_lossy().into_owned(),
            ),
            ("PROCTOR_AUTH".into(), "off".into()),
            ("PROCTOR_LOG_LEVEL".into(), "error".into()),
            ("PROCTOR_LOCAL_MAX_CONCURRENT_RUNS".into(), "64".into()),
        ];
        let mut database = None;
        if backend == "postgres+redis" {
            let name = format!("proctor_bench_{}", uuid::Uuid::new_v4().simple());
            assert!(
                psql(&postgres_url(), &format!("CREATE DATABASE {name}")),
                "create the bench database"
            );
            let url = format!("{}/{name}", postgres_url().rsplit_once('/').unwrap().0);
            env.extend([
                ("PROCTOR_DATABASE_URL".into(), url),
                ("PROCTOR_REDIS_ADDRESS".into(), "127.0.0.1:6379".into()),
                ("PROCTOR_REDIS_KEY_PREFIX".into(), format!("{name}:")),
                (
                    "PROCTOR_SECRETS_KEY".into(),
                    "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=".into(),
                ),
                ("PROCTOR_POSTGRES_MAX_CONNECTIONS".into(), "20".into()),
            ]);
            let migrated = Command::new(env!("CARGO_BIN_EXE_proctord"))
                .arg("migrate")
                .envs(env.clone())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(migrated.success());
            database = Some(name);
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Self::spawn(env, port, data_dir, database).await
    }

    /// Another replica on the same PostgreSQL and Redis, with `extra` on top.
    async fn beside(other: &Server, extra: &[(&str, String)]) -> Server {
        let port = free_port();
        let data_dir = std::env::temp_dir().join(format!("proctor-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut env = other.env.clone();
        env.retain(|(k, _)| k != "PROCTOR_APP_PORT" && k != "PROCTOR_DATA_DIR");
        env.push(("PROCTOR_APP_PORT".into(), port.to_string()));
        env.push((
            "PROCTOR_DATA_DIR".into(),
            data_dir.to_string_lossy().into_owned(),
        ));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Self::spawn(env, port, data_dir, None).await
    }

    async fn spawn(
        env: Vec<(String, String)>,
        port: u16,
        data_dir: std::path::PathBuf,
        database: Option<String>,
    ) -> Server {
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_proctord"))
            .arg("serve")
            .envs(env.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "proctord did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Server {
            child,
            base,
            port,
            data_dir,
            database,
            started_in: started.elapsed(),
            env,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid())
    }

    /// User + system CPU seconds used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = fields
            .get(11)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        ticks / 100.0
    }

    /// Runs `proc` with no args; its execution's name.
    async fn execute(&self, client: &reqwest::Client, proc: &str) -> String {
        let body: Value = client
            .post(format!("{}/jobs/execute", self.base))
            .json(&json!({"name": proc}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["name"].as_str().unwrap().to_owned()
    }

    async fn register(&self, client: &reqwest::Client, name: &str, command: Value, args: &[&str]) {
        let args: Vec<Value> = args.iter().map(|a| json!({"name": a})).collect();
        let proc = json!({"name": name, "image_name": "alpine:3", "command": command, "env_vars": {"args": args}});
        let response = client
            .post(format!("{}/jobs/metadata", self.base))
            .json(&proc)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(name) = &self.database {
            psql(
                &postgres_url(),
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

async fn execution(client: &reqwest::Client, base: &str, name: &str) -> Value {
    client
        .get(format!("{base}/api/v1/executions/{name}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn seconds_between(a: &Value, b: &Value) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(a.as_str()?).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b.as_str()?).ok()?;
    Some((b - a).num_microseconds()? as f64 / 1e6)
}

/// Sends `count` requests at a fixed 100 a second, one at a time, and hands each
/// response to `take`. Answers the latencies (ms, until the response's head arrived),
/// sorted.
async fn at_100_per_second(
    count: usize,
    request: impl Fn() -> reqwest::RequestBuilder,
    mut take: impl AsyncFnMut(reqwest::Response),
) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..count {
        tick.tick().await;
        let sent = Instant::now();
        let response = request().send().await.unwrap();
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        take(response).await;
    }
    sorted(latencies)
}

async fn dispatch(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    server.register(&client, "noop", json!(["true"]), &[]).await;
    // The floor under any request's latency with this client on this machine: GET
    // /ping (no store, no actor) at the same rate.
    let pings = at_100_per_second(
        (plan.dispatch_requests / 3).max(1),
        || client.get(format!("{}/ping", server.base)),
        async |response| {
            assert_eq!(response.status().as_u16(), 200);
            response.bytes().await.unwrap();
        },
    )
    .await;
    let mut names = Vec::new();
    let latencies = at_100_per_second(
        plan.dispatch_requests,
        || {
            client
                .post(format!("{}/jobs/execute", server.base))
                .json(&json!({"name": "noop"}))
        },
        async |response| {
            assert_eq!(response.status().as_u16(), 201);
            let body: Value = response.json().await.unwrap();
            names.push(body["name"].as_str().unwrap().to_owned());
        },
    )
    .await;
    let mut to_running = Vec::new();
    for name in names.iter().step_by((names.len() / 200).max(1)) {
        let mut record = execution(&client, &server.base, name).await;
        for _ in 0..200 {
            if record["status"] == "SUCCEEDED" || record["status"] == "FAILED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            record = execution(&client, &server.base, name).await;
        }
        if let Some(s) = seconds_between(&record["created_at"], &record["started_at"]) {
            to_running.push(s * 1000.0);
        }
    }
    let to_running = sorted(to_running);
    let b = backend.to_owned();
    rows.push(Row {
        scenario: "dispatch",
        backend: b.clone(),
        metric: "HTTP floor: GET /ping at 100/s, p50 / p99 (ms)".into(),
        value: format!(
            "{:.2} / {:.2}",
            percentile(&pings, 50.0),
            percentile(&pings, 99.0)
        ),
        target: "",
    });
    rows.push(Row {
        scenario: "dispatch",
        backend: b.clone(),
        metric: "submit → 201 at 100/s, p50 / p99 (ms)".into(),
        value: format!(
            "{:.2} / {:.2}",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        ),
        target: "≤ 1.0 / ≤ 10",
    });
    rows.push(Row {
        scenario: "dispatch",
        backend: b.clone(),
        metric: "submit → RUNNING, p50 / p99 (ms)".into(),
        value: format!(
            "{:.2} / {:.2}",
            percentile(&to_running, 50.0),
            percentile(&to_running, 99.0)
        ),
        target: "",
    });

    // The sustained rate: 32 clients submitting as fast as they are answered.
    let deadline = Instant::now() + plan.sustained_for;
    let started = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, base) = (client.clone(), server.base.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut last) = (0usize, 0usize, None);
                while Instant::now() < deadline {
                    match client
                        .post(format!("{base}/jobs/execute"))
                        .json(&json!({"name": "noop"}))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 201 => {
                            ok += 1;
                            last = r
                                .json::<Value>()
                                .await
                                .ok()
                                .and_then(|b| b["name"].as_str().map(str::to_owned));
                        }
                        _ => errors += 1,
                    }
                }
                (ok, errors, last)
            })
        })
        .collect();
    let (mut accepted, mut errors, mut lasts) = (0, 0, Vec::new());
    for worker in workers {
        let (ok, err, last) = worker.await.unwrap();
        accepted += ok;
        errors += err;
        lasts.extend(last);
    }
    let submitting = started.elapsed();
    for name in &lasts {
        for _ in 0..3000 {
            let record = execution(&client, &server.base, name).await;
            if !["RECEIVED", "CREATED", "RUNNING"]
                .contains(&record["status"].as_str().unwrap_or(""))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let completed_in = started.elapsed();
    rows.push(Row {
        scenario: "dispatch",
        backend: b.clone(),
        metric: format!(
            "sustained, {}s: accepted/s, completed/s, errors",
            plan.sustained_for.as_secs()
        ),
        value: format!(
            "{:.0}, {:.0}, {errors}",
            accepted as f64 / submitting.as_secs_f64(),
            accepted as f64 / completed_in.as_secs_f64()
        ),
        target: "completed ≥ 1,500 (Postgres)",
    });
}

/// A websocket subscriber: counts lines, checks their order, records arrival latency.
async fn subscribe(
    port: u16,
    name: String,
) -> (usize, bool, Vec<f64>, Option<Instant>, Option<Instant>) {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/jobs/logs?job_name={name}"
    ))
    .await
    .unwrap();
    let (mut count, mut ordered, mut latencies, mut first, mut last) =
        (0usize, true, Vec::new(), None, None);
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Text(text) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                let mut parts = text.split(' ');
                let seq: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                count += 1;
                ordered &= seq == count;
                if count % 100 == 0
                    && let Some(written) = parts.next().and_then(|t| t.parse::<f64>().ok())
                {
                    let arrived = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64();
                    latencies.push((arrived - written) * 1000.0);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    (count, ordered, latencies, first, last)
}

async fn fanout(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    // Each line carries its number and the time it was written. A rate of 0 writes
    // them as fast as Python can (a flood); otherwise a few every millisecond,
    // flushed as written, so the latency measured is proctord's and not a buffer's.
    let script = r#"import os, sys, time
time.sleep(1.5)
n, rate = int(os.environ['LINES']), float(os.environ['RATE'])
out = sys.stdout
if rate == 0:
    for i in range(1, n + 1):
        out.write(f'{i} {time.time():.6f}\n')
else:
    start, i = time.time(), 1
    while i <= n:
        due = min(n, int((time.time() - start) * rate))
        while i <= due:
            out.write(f'{i} {time.time():.6f}\n')
            i += 1
        out.flush()
        time.sleep(0.001)
"#;
    server
        .register(
            &client,
            "firehose",
            json!(["python3", "-c", script]),
            &["LINES", "RATE"],
        )
        .await;
    let runs = plan.fanout_subscribers.iter().map(|&s| (s, 0)).chain(
        plan.fanout_subscribers
            .iter()
            .map(|&s| (s, FANOUT_PACED_RATE)),
    );
    for (subscribers, rate) in runs {
        let response = client
            .post(format!("{}/jobs/execute", server.base))
            .json(&json!({"name": "firehose", "args": {"LINES": plan.fanout_lines.to_string(), "RATE": rate.to_string()}}))
            .send()
            .await
            .unwrap();
        let name = response.json::<Value>().await.unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let rss_before = server.rss_kib();
        let tasks: Vec<_> = (0..subscribers)
            .map(|_| tokio::spawn(subscribe(server.port, name.clone())))
            .collect();
        // Samples RSS through the whole run: the peak is while lines are in flight.
        let pid = server.pid();
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = tokio::spawn({
            let sampling = sampling.clone();
            async move {
                let mut peak = rss_before;
                while sampling.load(Ordering::Relaxed) {
                    peak = peak.max(rss_kib_of(pid));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak
            }
        });
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        sampling.store(false, Ordering::Relaxed);
        let peak_rss = sampler.await.unwrap();
        let complete = results
            .iter()
            .all(|(count, ordered, ..)| *count == plan.fanout_lines && *ordered);
        let first = results.iter().filter_map(|r| r.3).min().unwrap();
        let last = results.iter().filter_map(|r| r.4).max().unwrap();
        let delivered: usize = results.iter().map(|r| r.0).sum();
        let latencies = sorted(results.into_iter().flat_map(|r| r.2).collect());
        let how = if rate == 0 {
            "flood".to_owned()
        } else {
            format!("at {rate} lines/s")
        };
        rows.push(Row {
            scenario: "fan-out",
            backend: backend.to_owned(),
            metric: format!("{} lines {how} × {subscribers} subscribers: deliveries/s, latency p50/p99 (ms), all complete & ordered, peak RSS (MiB)", plan.fanout_lines),
            value: format!("{:.0}, {:.1}/{:.1}, {complete}, {:.1}", delivered as f64 / (last - first).as_secs_f64(), percentile(&latencies, 50.0), percentile(&latencies, 99.0), peak_rss as f64 / 1024.0),
            target: match (subscribers, rate) {
                (100, 0) => "≥ 2,000,000",
                (100, _) => "p99 ≤ 50",
                _ => "",
            },
        });
    }
}

async fn scheduling(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    server
        .register(&client, "tick", json!(["true"]), &["N"])
        .await;
    let create = |n: usize, time: &'static str| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let body = json!({"name": "tick", "args": {"N": n.to_string()}, "time": time, "tags": "bench", "group_name": "bench"});
            let response = client
                .post(format!("{base}/jobs/schedule"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 201);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut ids = Vec::new();
    for n in 0..plan.schedules_firing {
        ids.push(create(n, "* * * * * *").await);
    }
    tokio::time::sleep(plan.firing_for).await;
    for id in &ids {
        client
            .post(format!("{}/jobs/schedule/{id}/disable", server.base))
            .send()
            .await
            .unwrap();
    }
    let (delays, fires, lost_or_doubled) = fire_history(&client, &server.base, &ids).await;
    let delays = sorted(delays);
    rows.push(Row {
        scenario: "scheduling",
        backend: backend.to_owned(),
        metric: format!(
            "{} schedules every second for {}s: fires, gaps or doubles, due → claimed p50/p99 (ms)",
            plan.schedules_firing,
            plan.firing_for.as_secs()
        ),
        value: format!(
            "{fires}, {lost_or_doubled}, {:.1}/{:.1}",
            percentile(&delays, 50.0),
            percentile(&delays, 99.0)
        ),
        target: "0 lost; p99 ≤ 100",
    });
    drop(server);

    let server = Server::start(backend, &[]).await;
    server
        .register(&client, "tick", json!(["true"]), &["N"])
        .await;
    let loading = Instant::now();
    for chunk in (0..plan.schedules_idle).collect::<Vec<_>>().chunks(64) {
        let futures: Vec<_> = chunk.iter().map(|n| {
            let (client, base) = (client.clone(), server.base.clone());
            let n = *n;
            async move {
                let body = json!({"name": "tick", "args": {"N": n.to_string()}, "time": "0 0 0 1 1 *", "tags": "bench", "group_name": "bench"});
                client.post(format!("{base}/jobs/schedule")).json(&body).send().await.unwrap();
            }
        }).collect();
        futures_util::future::join_all(futures).await;
    }
    let loaded_in = loading.elapsed();
    tokio::time::sleep(plan.idle_settle).await;
    let cpu_before = server.cpu_seconds();
    tokio::time::sleep(plan.idle_for).await;
    let cpu = (server.cpu_seconds() - cpu_before) / plan.idle_for.as_secs_f64() * 100.0;
    rows.push(Row {
        scenario: "scheduling",
        backend: backend.to_owned(),
        metric: format!(
            "idle CPU with {} schedules loaded (% of a core; created in {:.1}s)",
            plan.schedules_idle,
            loaded_in.as_secs_f64()
        ),
        value: format!("{cpu:.2}"),
        target: "≤ 1",
    });
}

async fn footprint(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.rss_kib();
    let client = reqwest::Client::new();
    server
        .register(&client, "sleeper", json!(["sleep", "60"]), &[])
        .await;
    let name = server.execute(&client, "sleeper").await;
    let with_run = server.rss_kib();
    let mut sessions = Vec::new();
    for _ in 0..plan.idle_sessions {
        let (socket, _) = tokio_tungstenite::connect_async(format!(
            "ws://127.0.0.1:{}/jobs/logs?job_name={name}",
            server.port
        ))
        .await
        .unwrap();
        sessions.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_sessions = server.rss_kib();
    let per_session = (with_sessions.saturating_sub(with_run)) as f64 * 1024.0
        / plan.idle_sessions as f64
        / 1000.0;
    rows.push(Row {
        scenario: "footprint",
        backend: backend.to_owned(),
        metric: "start-up to ready (ms), idle RSS (MiB)".into(),
        value: format!(
            "{:.0}, {:.1}",
            server.started_in.as_secs_f64() * 1000.0,
            idle as f64 / 1024.0
        ),
        target: "≤ 200 (SQLite), ≤ 25",
    });
    rows.push(Row {
        scenario: "footprint",
        backend: backend.to_owned(),
        metric: format!(
            "RSS with {} idle websocket sessions (MiB), per session (KB)",
            plan.idle_sessions
        ),
        value: format!("{:.1}, {per_session:.1}", with_sessions as f64 / 1024.0),
        target: "≤ 32 KB",
    });
    drop(sessions);
}

async fn kubernetes(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let fake = fake_kube::FakeKube::start();
    fake.set_script_for_image("bench/noop:1", fake_kube::Script::printing(["done"]));
    let server = Server::start(
        backend,
        &[
            ("PROCTOR_EXECUTOR", "kubernetes".into()),
            ("PROCTOR_KUBE_CLUSTER_HOST_NAME", fake.url().to_owned()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let proc = json!({"name": "kube-noop", "image_name": "bench/noop:1"});
    client
        .post(format!("{}/jobs/metadata", server.base))
        .json(&proc)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fake.requests();
    let mut names = Vec::new();
    for _ in 0..plan.kube_runs {
        names.push(server.execute(&client, "kube-noop").await);
    }
    for name in &names {
        for _ in 0..500 {
            let record = execution(&client, &server.base, name).await;
            if record["status"] == "SUCCEEDED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = fake.requests();
    let per_run = (after.total - before.total) as f64 / plan.kube_runs as f64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_start = fake.requests().total;
    tokio::time::sleep(plan.idle_for).await;
    let idle = (fake.requests().total - idle_start) as f64 / plan.idle_for.as_secs_f64() * 60.0;
    rows.push(Row {
        scenario: "kubernetes",
        backend: backend.to_owned(),
        metric: "API requests per execution, per idle minute (beyond open watches)".into(),
        value: format!("{per_run:.2}, {idle:.1}"),
        target: "≤ 4, 0",
    });
}

/// Loads `count` finished executions of 20 procs, one every 30 days / `count` back
/// from now (the newest 200 still RUNNING; 10% FAILED, 3% TIMED_OUT, 1% CANCELLED),
/// with one bulk INSERT … SELECT: `generate_series` on PostgreSQL, a recursive CTE on
/// SQLite.
fn load_executions(server: &Server, backend: &str, count: usize) -> Duration {
    let started = Instant::now();
    let status = "CASE WHEN i <= 200 THEN 'RUNNING' WHEN (i / 20) % 100 < 10 THEN 'FAILED' \
                  WHEN (i / 20) % 100 < 13 THEN 'TIMED_OUT' WHEN (i / 20) % 100 = 13 THEN 'CANCELLED' \
                  ELSE 'SUCCEEDED' END";
    let columns = "id, name, proc_name, image, args, status, executor, user_email, \
                   created_at, updated_at, started_at, finished_at, attempts";
    let shared = "'bench-' || i, 'bench-' || i, 'proc-' || (i % 20), 'bench/noop:1', '{}', st, \
                  'local', 'user' || (i % 7) || '@example.com', t, t";
    if backend == "postgres+redis" {
        let sql = format!(
            "INSERT INTO executions ({columns}) \
             SELECT {shared}, t + interval '50 milliseconds', \
             CASE WHEN st = 'RUNNING' THEN NULL \
             ELSE t + interval '50 milliseconds' + (i % 97) * interval '100 milliseconds' END, 1 \
             FROM (SELECT i, {status} AS st, \
             (now() AT TIME ZONE 'UTC') - i * (interval '30 days' / {count}) AS t \
             FROM generate_series(1, {count}) AS i) s; ANALYZE executions"
        );
        assert!(psql(&database_url(server), &sql), "load the executions");
    } else {
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        let path = server.data_dir.join("proctor.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        let step = 2_592_000.0 / count as f64;
        let sql = format!(
            "PRAGMA busy_timeout = 10000; \
             INSERT INTO executions ({columns}) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             SELECT {shared}, strftime('%Y-%m-%d %H:%M:%f', t, '+0.05 seconds'), \
             CASE WHEN st = 'RUNNING' THEN NULL \
             ELSE strftime('%Y-%m-%d %H:%M:%f', t, printf('+%.3f seconds', 0.05 + (i % 97) * 0.1)) END, 1 \
             FROM (SELECT i, {status} AS st, \
             strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%.3f seconds', i * {step})) AS t FROM n); \
             ANALYZE;"
        );
        conn.batch_execute(&sql).expect("load the executions");
    }
    started.elapsed()
}

/// The console's reads over many executions: the overview (`GET /api/v1/stats`, the
/// last 24 hours by hour, and the last 30 days by day) and a filtered history page.
async fn stats(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    let loaded_in = load_executions(&server, backend, plan.stats_executions);
    let client = reqwest::Client::new();
    let measure = async |path: &str, count: usize| {
        at_100_per_second(
            count,
            || client.get(format!("{}{path}", server.base)),
            async |response| {
                assert_eq!(response.status().as_u16(), 200, "{path}");
                response.bytes().await.unwrap();
            },
        )
        .await
    };
    let day = measure("/api/v1/stats", plan.stats_requests).await;
    let month = measure(
        "/api/v1/stats?bucket=day",
        (plan.stats_requests / 20).max(3),
    )
    .await;
    let history = measure(
        "/api/v1/executions?proc=proc-3&status=CANCELLED",
        plan.stats_requests,
    )
    .await;
    // On PostgreSQL the overview reads an index alone only where VACUUM has marked the
    // pages all-visible: just after a bulk load none is; in steady state autovacuum
    // (tuned by migration 7) has marked all but the newest. Both are measured.
    let vacuumed = if backend == "postgres+redis" {
        assert!(
            psql(&database_url(&server), "VACUUM executions"),
            "vacuum the executions"
        );
        Some((
            measure("/api/v1/stats", plan.stats_requests).await,
            measure(
                "/api/v1/stats?bucket=day",
                (plan.stats_requests / 20).max(3),
            )
            .await,
        ))
    } else {
        None
    };
    let n = plan.stats_executions;
    let mut measured = vec![];
    if let Some((day, month)) = vacuumed {
        measured.push((
            format!(
                "GET /api/v1/stats (24 h by hour) over {n} executions after VACUUM, p50 / p99 (ms)"
            ),
            day,
            "",
        ));
        measured.push((
            format!(
                "GET /api/v1/stats?bucket=day (30 days, every row) over {n} executions after VACUUM, p50 / p99 (ms)"
            ),
            month,
            "",
        ));
    }
    for (metric, latencies, target) in [
        (
            format!(
                "GET /api/v1/stats (24 h by hour) over {n} executions, p50 / p99 (ms; loaded in {:.1}s)",
                loaded_in.as_secs_f64()
            ),
            day,
            "",
        ),
        (
            format!(
                "GET /api/v1/stats?bucket=day (30 days, every row) over {n} executions, p50 / p99 (ms)"
            ),
            month,
            "",
        ),
        (
            format!(
                "GET /api/v1/executions?proc=&status= (1% of one proc's runs) over {n} executions, p50 / p99 (ms)"
            ),
            history,
            "",
        ),
    ]
    .into_iter()
    .chain(measured)
    {
        rows.push(Row {
            scenario: "stats",
            backend: backend.to_owned(),
            metric,
            value: format!(
                "{:.2} / {:.2}",
                percentile(&latencies, 50.0),
                percentile(&latencies, 99.0)
            ),
            target,
        });
    }
}

/// The web console's log viewer on a run of many lines, in Debian's Chromium driven by
/// `benches/console_bench.py`: time to the first lines, time to jump to the end, and
/// the tab's JS heap after scrolling through the whole log. Skipped (said so) where
/// Chromium or Playwright for Python is missing, except with CI=true.
async fn console(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/console_bench.py");
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && Command::new("python3")
            .args(["-c", "import playwright"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs Chromium and Playwright for the console bench"
        );
        eprintln!("SKIPPING the console bench: apt-get install chromium; pip install playwright");
        return;
    }
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    let n = plan.console_lines;
    server
        .register(
            &client,
            "long-log",
            json!([
                "sh",
                "-c",
                format!("seq 1 {n} | sed 's/^/log line number /'")
            ]),
            &[],
        )
        .await;
    let name = server.execute(&client, "long-log").await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let run = execution(&client, &server.base, &name).await;
        if run["status"] == "SUCCEEDED" {
            break;
        }
        assert!(
            Instant::now() < deadline && run["status"] != "FAILED",
            "the long run did not succeed: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = Command::new("python3")
        .arg(script)
        .env("PROCTOR_URL", &server.base)
        .env("PROCTOR_EXECUTION", &name)
        .env("PROCTOR_LINES", n.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "console_bench.py printed no result: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(out.status.success(), "console_bench.py failed: {result}");
    let mib = |key: &str| result[key].as_f64().unwrap_or(f64::NAN) / 1_048_576.0;
    rows.push(Row {
        scenario: "console",
        backend: backend.to_owned(),
        metric: format!(
            "run page of {n} lines in Chromium: first lines, jump to the end (ms); JS heap after scrolling top to bottom in {} jumps, after GC (MiB); slowest round trip (ms)",
            result["scroll_steps"]
        ),
        value: format!(
            "{:.0}, {:.0}; {:.1}, {:.1}; {:.0}",
            result["first_line_ms"].as_f64().unwrap_or(f64::NAN),
            result["end_ms"].as_f64().unwrap_or(f64::NAN),
            mib("heap_used_bytes"),
            mib("heap_after_gc_bytes"),
            result["max_roundtrip_ms"].as_f64().unwrap_or(f64::NAN),
        ),
        target: "≤ 1000, ≤ 1000; ≤ 200",
    });
}

/// 32 clients submitting `noop` as fast as they are answered for `window`: accepted
/// a second, and errors.
async fn sustained_noop(server: &Server, window: Duration) -> (f64, usize) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, base) = (client.clone(), server.base.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0usize, 0usize);
                while Instant::now() < deadline {
                    match client
                        .post(format!("{base}/jobs/execute"))
                        .json(&json!({"name": "noop"}))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 201 => ok += 1,
                        _ => errors += 1,
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let (mut accepted, mut errors) = (0, 0);
    for worker in workers {
        let (ok, err) = worker.await.unwrap();
        accepted += ok;
        errors += err;
    }
    (accepted as f64 / started.elapsed().as_secs_f64(), errors)
}

/// The bytes the database holds: PostgreSQL's `execution_logs` with its index, or the
/// SQLite file after a checkpoint folds the WAL into it.
fn database_bytes(server: &Server, backend: &str) -> u64 {
    if backend == "postgres+redis" {
        psql_value(
            &database_url(server),
            "SELECT pg_total_relation_size('execution_logs')",
        )
        .parse()
        .unwrap()
    } else {
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        let path = server.data_dir.join("proctor.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let wal = std::fs::metadata(server.data_dir.join("proctor.db-wal")).map_or(0, |m| m.len());
        std::fs::metadata(&path).unwrap().len() + wal
    }
}

/// The old runs' records and lines still stored.
fn old_rows(server: &Server, backend: &str) -> u64 {
    let sql = "SELECT (SELECT COUNT(*) FROM executions WHERE id LIKE 'old-%') + \
               (SELECT COUNT(*) FROM execution_logs WHERE execution_id LIKE 'old-%') AS n";
    if backend == "postgres+redis" {
        psql_value(&database_url(server), sql).parse().unwrap()
    } else {
        use diesel::Connection as _;
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let path = server.data_dir.join("proctor.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n as u64
    }
}

/// `runs` finished runs of `lines` lines each, half finished 400 days ago (removed
/// whole by the default retention), half 40 days ago (their lines only).
fn load_old_runs(server: &Server, backend: &str, runs: usize, lines: usize) {
    let columns = "id, name, proc_name, image, args, status, executor, user_email, \
                   created_at, updated_at, started_at, finished_at, attempts";
    if backend == "postgres+redis" {
        let sql = format!(
            "INSERT INTO executions ({columns}) \
             SELECT 'old-' || i, 'old-' || i, 'proc-' || (i % 20), 'bench/noop:1', '{{}}', \
             'SUCCEEDED', 'local', 'old@example.com', t, t, t, t, 1 \
             FROM (SELECT i, (now() AT TIME ZONE 'UTC') - CASE WHEN i % 2 = 0 \
             THEN interval '400 days' ELSE interval '40 days' END - i * interval '1 second' AS t \
             FROM generate_series(1, {runs}) AS i) s; \
             INSERT INTO execution_logs (execution_id, seq, line, logged_at) \
             SELECT 'old-' || i, j, 'old log line number ' || j, now() AT TIME ZONE 'UTC' \
             FROM generate_series(1, {runs}) AS i, generate_series(1, {lines}) AS j; \
             ANALYZE executions; ANALYZE execution_logs"
        );
        assert!(psql(&database_url(server), &sql), "load the old runs");
    } else {
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        let path = server.data_dir.join("proctor.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        let sql = format!(
            "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
             INSERT INTO executions ({columns}) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs}) \
             SELECT 'old-' || i, 'old-' || i, 'proc-' || (i % 20), 'bench/noop:1', '{{}}', \
             'SUCCEEDED', 'local', 'old@example.com', t, t, t, t, 1 \
             FROM (SELECT i, strftime('%Y-%m-%d %H:%M:%f', 'now', \
             CASE WHEN i % 2 = 0 THEN '-400 days' ELSE '-40 days' END, \
             printf('-%d seconds', i)) AS t FROM n); \
             INSERT INTO execution_logs (execution_id, seq, line, logged_at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs}), \
             m(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM m WHERE j < {lines}) \
             SELECT 'old-' || i, j, 'old log line number ' || j, \
             strftime('%Y-%m-%d %H:%M:%f', 'now') FROM n, m; ANALYZE;"
        );
        conn.batch_execute(&sql).expect("load the old runs");
    }
}

/// Prints how the database runs the purge's looks and the history's reads on the
/// loaded executions (EXPLAIN), for BENCHMARKS.md.
fn explain_purge(server: &Server, backend: &str) {
    let cutoff_pg = "(now() AT TIME ZONE 'UTC') - interval '20 days'";
    let whole_pg = "(now() AT TIME ZONE 'UTC') - interval '25 days'";
    let cutoff_lite = "strftime('%Y-%m-%d %H:%M:%f', 'now', '-20 days')";
    let whole_lite = "strftime('%Y-%m-%d %H:%M:%f', 'now', '-25 days')";
    let queries = |cutoff: &str, whole: &str| {
        [
            format!(
                "SELECT id FROM executions WHERE created_at < {cutoff} AND finished_at < {cutoff} ORDER BY created_at LIMIT 1000"
            ),
            format!(
                "SELECT id FROM executions WHERE finished_at < {cutoff} AND logs_purged_at IS NULL AND finished_at >= {whole} ORDER BY finished_at LIMIT 1000"
            ),
            format!(
                "SELECT id FROM executions WHERE created_at < {cutoff} AND finished_at < {cutoff} AND proc_name = 'proc-3' ORDER BY created_at LIMIT 1000"
            ),
            "SELECT * FROM executions WHERE user_email = 'user3@example.com' ORDER BY created_at DESC, name DESC LIMIT 51".to_owned(),
        ]
    };
    if backend == "postgres+redis" {
        for query in queries(cutoff_pg, whole_pg) {
            let plan = Command::new("psql")
                .args([
                    &database_url(server),
                    "-Atqc",
                    &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}"),
                ])
                .output()
                .unwrap();
            eprintln!(
                "PLAN {backend}: {query}\n{}",
                String::from_utf8_lossy(&plan.stdout)
            );
        }
    } else {
        let path = server.data_dir.join("proctor.db");
        for query in queries(cutoff_lite, whole_lite) {
            let plan = Command::new("sqlite3")
                .args([
                    path.to_str().unwrap(),
                    &format!("EXPLAIN QUERY PLAN {query}"),
                ])
                .output();
            if let Ok(plan) = plan {
                eprintln!(
                    "PLAN {backend}: {query}\n{}",
                    String::from_utf8_lossy(&plan.stdout)
                );
            }
        }
    }
}

/// Retention: the bytes a stored line costs; how fast the purge removes old runs and
/// lines while runs are dispatched, and how much it slows them; the history list on
/// many executions (with the purge's indexes in place).
async fn retention(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let b = backend.to_owned();
    // The server keeps everything (its own passes remove nothing); `proctord purge`,
    // a process of its own with the default retention, is the purge measured.
    let keep = [
        ("PROCTOR_EXECUTION_RETENTION_DAYS", "0".to_owned()),
        ("PROCTOR_LOG_RETENTION_DAYS", "0".to_owned()),
    ];
    let server = Server::start(backend, &keep).await;
    let client = reqwest::Client::new();

    // Bytes per stored line: runs of up to 100,000 lines of 20-26 characters.
    let per_run = plan.retention_lines.min(100_000);
    let runs = plan.retention_lines / per_run;
    server
        .register(
            &client,
            "lines",
            json!([
                "sh",
                "-c",
                format!("seq 1 {per_run} | sed 's/^/log line number /'")
            ]),
            &[],
        )
        .await;
    let before = database_bytes(&server, backend);
    let mut names = Vec::new();
    for _ in 0..runs {
        names.push(server.execute(&client, "lines").await);
    }
    for name in &names {
        let deadline = Instant::now() + Duration::from_secs(600);
        while execution(&client, &server.base, name).await["status"] != "SUCCEEDED" {
            assert!(Instant::now() < deadline, "the lines run did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let after = database_bytes(&server, backend);
    let stored = runs * per_run;
    rows.push(Row {
        scenario: "retention",
        backend: b.clone(),
        metric: format!(
            "bytes of database per stored log line ({stored} lines of 17-{} characters; {})",
            16 + per_run.to_string().len() + 1,
            if backend == "sqlite" {
                "file + WAL after a checkpoint"
            } else {
                "pg_total_relation_size('execution_logs')"
            }
        ),
        value: format!(
            "{:.0}",
            (after.saturating_sub(before)) as f64 / stored as f64
        ),
        target: "",
    });

    // The purge beside dispatch.
    server.register(&client, "noop", json!(["true"]), &[]).await;
    load_old_runs(
        &server,
        backend,
        plan.retention_old_runs,
        plan.retention_old_lines,
    );
    // Settle after the bulk load (SQLite: fold the WAL into the file; PostgreSQL:
    // vacuum and analyze), then a window not measured: the first after a load is slow.
    database_bytes(&server, backend);
    if backend == "postgres+redis" {
        psql(
            &database_url(&server),
            "VACUUM ANALYZE executions; VACUUM ANALYZE execution_logs",
        );
    }
    let window = plan.retention_window;
    sustained_noop(&server, window / 4).await;
    // Windows alone and beside a purge, interleaved (the machine's other work moves
    // any one window more than the purge does): alone, beside, alone, ... alone. Each
    // purge is a `proctord purge` killed when its window ends (its statement is rolled
    // back, its lock released); the rows it removed are counted in the database.
    let mut env = server.env.clone();
    env.retain(|(k, _)| !k.contains("RETENTION_DAYS"));
    let old_before = old_rows(&server, backend);
    let (mut alone, mut beside, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut purging = Duration::ZERO;
    for _ in 0..3 {
        let (rate, e) = sustained_noop(&server, window).await;
        alone.push(rate);
        errors += e;
        let started = Instant::now();
        let mut purge = Command::new(env!("CARGO_BIN_EXE_proctord"))
            .arg("purge")
            .envs(env.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (rate, e) = sustained_noop(&server, window).await;
        beside.push(rate);
        errors += e;
        let early = purge.try_wait().unwrap();
        let _ = purge.kill();
        let output = purge.wait_with_output().unwrap();
        purging += started.elapsed();
        if let Some(status) = early {
            assert!(
                status.success(),
                "proctord purge failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            // Smoke mode loads few rows; a full run must purge through every window.
            assert!(plan.smoke, "load more old rows: the purge ran out of them");
        }
    }
    let (rate, e) = sustained_noop(&server, window).await;
    alone.push(rate);
    errors += e;
    let removed = old_before - old_rows(&server, backend);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(Row {
        scenario: "retention",
        backend: b.clone(),
        metric: format!(
            "purge beside sustained dispatch (old runs of {} lines, half due whole, half lines only): rows/s (runs + lines removed / seconds purging)",
            plan.retention_old_lines
        ),
        value: format!(
            "{:.0} ({removed} in {:.1} s)",
            removed as f64 / purging.as_secs_f64(),
            purging.as_secs_f64()
        ),
        target: "",
    });
    rows.push(Row {
        scenario: "retention",
        backend: b.clone(),
        metric: format!(
            "sustained dispatch, {}s windows interleaved: accepted/s alone; beside the purge; slowdown (means); errors",
            window.as_secs()
        ),
        value: format!(
            "{}; {}; {:.1} %; {errors}",
            list(&alone),
            list(&beside),
            (1.0 - mean(&beside) / mean(&alone)) * 100.0
        ),
        target: "≤ 10 %, 0",
    });
    drop(server);

    // The history list on many executions.
    let server = Server::start(backend, &keep).await;
    let loaded_in = load_executions(&server, backend, plan.stats_executions);
    if !plan.smoke {
        explain_purge(&server, backend);
    }
    let n = plan.stats_executions;
    for (path, what) in [
        ("/api/v1/executions", "newest page"),
        ("/api/v1/executions?proc=proc-3", "one proc"),
        (
            "/api/v1/executions?proc=proc-3&status=FAILED",
            "one proc, one status",
        ),
        ("/api/v1/executions?status=CANCELLED", "one status"),
        ("/api/v1/executions?user=user3@example.com", "one user"),
        (
            "/api/v1/executions?since=2026-01-01T00:00:00Z&offset=450&limit=50",
            "a since, 10th page",
        ),
    ] {
        let latencies = at_100_per_second(
            plan.stats_requests,
            || client.get(format!("{}{path}", server.base)),
            async |response| {
                assert_eq!(response.status().as_u16(), 200, "{path}");
                response.bytes().await.unwrap();
            },
        )
        .await;
        rows.push(Row {
            scenario: "retention",
            backend: b.clone(),
            metric: format!(
                "history GET {path} ({what}) over {n} executions (loaded in {:.0}s), p50 / p99 (ms)",
                loaded_in.as_secs_f64()
            ),
            value: format!(
                "{:.2} / {:.2}",
                percentile(&latencies, 50.0),
                percentile(&latencies, 99.0)
            ),
            target: "p99 ≤ 50",
        });
    }
}

/// The database URL a server was given.
fn database_url(server: &Server) -> String {
    server
        .env
        .iter()
        .find(|(k, _)| k == "PROCTOR_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("a PostgreSQL server")
}

/// One value of a query, through psql.
fn psql_value(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-Atqc", sql])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Reads a log websocket to its end: each line's arrival time, by line number.
async fn arrivals(port: u16, name: String) -> Vec<(usize, Instant)> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/jobs/logs?job_name={name}"
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Text(text) => {
                let number = text
                    .strip_prefix("line ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                seen.push((number, Instant::now()));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    seen
}

/// Waits until `execution`'s owner is `owner` (or 60 s pass); how long it took.
async fn owned_by(url: &str, execution: &str, owner: &str, since: Instant) -> Option<Duration> {
    let sql = format!("SELECT owner FROM executions WHERE name = '{execution}'");
    while since.elapsed() < Duration::from_secs(60) {
        if psql_value(url, &sql) == owner {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Several replicas on one PostgreSQL and Redis: how far a live log read on a replica
/// that does not follow the run trails the one that does, how long a dead or stopping
/// replica's runs wait for a new owner, and what renewing leases costs.
async fn replicas(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    if backend != "postgres+redis" {
        return;
    }
    let client = reqwest::Client::new();
    let lease = plan.lease_seconds.to_string();

    // Live-log lag: one local run printing every 20 ms, read on both replicas.
    let a = Server::start(
        backend,
        &[
            ("PROCTOR_REPLICA_ID", "bench-a".into()),
            ("PROCTOR_SCHEDULER", "off".into()),
        ],
    )
    .await;
    let b = Server::beside(&a, &[("PROCTOR_REPLICA_ID", "bench-b".into())]).await;
    let script = format!(
        "sleep 0.5; for i in $(seq 1 {}); do echo line $i; sleep 0.02; done",
        plan.replica_lines
    );
    a.register(&client, "ticker", json!(["sh", "-c", script]), &[])
        .await;
    let name = a.execute(&client, "ticker").await;
    let (on_a, on_b) = tokio::join!(
        arrivals(a.port, name.clone()),
        arrivals(b.port, name.clone())
    );
    let at_a: BTreeMap<usize, Instant> = on_a.into_iter().collect();
    let complete =
        on_b.len() == plan.replica_lines && on_b.iter().enumerate().all(|(i, (n, _))| *n == i + 1);
    let lags = sorted(
        on_b.iter()
            .filter_map(|(n, at)| {
                Some(at.saturating_duration_since(*at_a.get(n)?).as_secs_f64() * 1000.0)
            })
            .collect(),
    );
    rows.push(Row {
        scenario: "replicas",
        backend: backend.to_owned(),
        metric: format!(
            "live line on the other replica, behind the owner's: p50 / p99 ({} lines{})",
            plan.replica_lines,
            if complete {
                ", all in order"
            } else {
                ", SOME MISSING"
            }
        ),
        value: format!(
            "{:.1} / {:.1} ms",
            percentile(&lags, 50.0),
            percentile(&lags, 99.0)
        ),
        target: "p99 ≤ 50 ms",
    });

    // Lease beats with many runs in flight: rows owned by A that A does not follow
    // (a beat renews every unfinished run its replica owns).
    let url = database_url(&a);
    psql(
        &url,
        &format!(
            "INSERT INTO executions (id, name, proc_name, image, args, status, executor, user_email, created_at, updated_at, attempts, owner, lease_expires_at)              SELECT 'bench-' || i, 'leased-' || i, 'leased', 'x', '{{}}', 'RUNNING', 'kubernetes', 'bench@example.com', now(), now(), 1, 'bench-a', now() + interval '1 hour'              FROM generate_series(1, {}) AS i",
            plan.leased_runs
        ),
    );
    let beats = |server: &Server| {
        let client = client.clone();
        let base = server.base.clone();
        async move {
            let text = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (
                value("proctor_lease_beat_seconds_count"),
                value("proctor_lease_beat_seconds_sum"),
            )
        }
    };
    let (count0, sum0) = beats(&a).await;
    let window = plan.idle_for.max(Duration::from_secs(5));
    let cpu0 = a.cpu_seconds();
    tokio::time::sleep(window).await;
    let (count1, sum1) = beats(&a).await;
    let cpu = (a.cpu_seconds() - cpu0) / window.as_secs_f64() * 100.0;
    let per_second = (count1 - count0) / window.as_secs_f64();
    let beat_ms = if count1 > count0 {
        (sum1 - sum0) / (count1 - count0) * 1000.0
    } else {
        0.0
    };
    rows.push(Row {
        scenario: "replicas",
        backend: backend.to_owned(),
        metric: format!(
            "lease upkeep, {} runs in flight: statements/s per replica (beats + claims), one beat, CPU",
            plan.leased_runs
        ),
        value: format!(
            "{:.2} + 1.00, {beat_ms:.2} ms, {cpu:.2} %",
            per_second
        ),
        target: "one statement per beat",
    });
    psql(&url, "DELETE FROM executions WHERE proc_name = 'leased'");
    drop(b);
    drop(a);

    // Takeover after kill -9 and after SIGTERM: Kubernetes runs, which outlive a replica.
    for how in ["kill -9", "SIGTERM"] {
        let fake = fake_kube::FakeKube::start();
        fake.set_script_for_image(
            "bench/long:1",
            fake_kube::Script {
                line_interval: Duration::from_millis(200),
                ..fake_kube::Script::printing((1..=200).map(|i| format!("line {i}")))
            },
        );
        let kube = [
            ("PROCTOR_EXECUTOR", "kubernetes".to_owned()),
            ("PROCTOR_KUBE_CLUSTER_HOST_NAME", fake.url().to_owned()),
            ("PROCTOR_LEASE_SECONDS", lease.clone()),
            ("PROCTOR_SCHEDULER", "off".into()),
        ];
        let mut a = Server::start(
            backend,
            &[&kube[..], &[("PROCTOR_REPLICA_ID", "bench-a".into())]].concat(),
        )
        .await;
        let b = Server::beside(&a, &[("PROCTOR_REPLICA_ID", "bench-b".into())]).await;
        client
            .post(format!("{}/jobs/metadata", a.base))
            .json(&json!({"name": "long", "image_name": "bench/long:1"}))
            .send()
            .await
            .unwrap();
        let name = a.execute(&client, "long").await;
        // Renewed at least once, so the kill lands a whole beat after the last renewal
        // at most (the worst case is the lease itself).
        tokio::time::sleep(Duration::from_secs(plan.lease_seconds / 4 + 1)).await;
        let url = database_url(&a);
        let since = Instant::now();
        match how {
            "kill -9" => {
                let _ = a.child.kill();
                let _ = a.child.wait();
            }
            _ => {
                // SAFETY: sends SIGTERM to the proctord this bench started.
                unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
            }
        }
        let took = owned_by(&url, &name, "bench-b", since).await;
        rows.push(Row {
            scenario: "replicas",
            backend: backend.to_owned(),
            metric: format!(
                "{how} of the owner → its Kubernetes run owned again (lease {lease} s)"
            ),
            value: took.map_or("never (60 s)".into(), |t| {
                format!("{:.2} s", t.as_secs_f64())
            }),
            target: if how == "SIGTERM" {
                "≤ 2 s"
            } else {
                "≤ 15 s"
            },
        });
        drop(b);
    }
}

fn production_available() -> bool {
    psql(&postgres_url(), "SELECT 1") && std::net::TcpStream::connect("127.0.0.1:6379").is_ok()
}

fn main() {
    proctor::store::init_libpq_tls();
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --bench proctor` does not: smoke mode.
    let plan = Plan::new(!args.iter().any(|a| a == "--bench"));
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    const BACKENDS: [&str; 2] = ["sqlite", "postgres+redis"];
    let (wanted_backends, wanted): (Vec<&str>, Vec<&str>) =
        wanted.into_iter().partition(|a| BACKENDS.contains(a));
    let runs = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let mut backends = vec!["sqlite"];
    if production_available() {
        backends.push("postgres+redis");
    } else {
        eprintln!("PostgreSQL or Redis is not reachable: measuring the embedded default only");
    }
    backends.retain(|b| wanted_backends.is_empty() || wanted_backends.contains(b));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        for backend in &backends {
            if runs("dispatch") {
                dispatch(&plan, backend, &mut rows).await;
            }
            if runs("fanout") {
                fanout(&plan, backend, &mut rows).await;
            }
            if runs("scheduling") {
                scheduling(&plan, backend, &mut rows).await;
            }
            if runs("footprint") {
                footprint(&plan, backend, &mut rows).await;
            }
            if runs("kubernetes") {
                kubernetes(&plan, backend, &mut rows).await;
            }
            if runs("replicas") {
                replicas(&plan, backend, &mut rows).await;
            }
            if runs("stats") {
                stats(&plan, backend, &mut rows).await;
            }
            if runs("ingest") {
                ingest::ingest(&plan, backend, &mut rows).await;
            }
            if runs("latency") {
                latency::latency(&plan, backend, &mut rows).await;
            }
            if runs("retention") {
                retention(&plan, backend, &mut rows).await;
            }
            if runs("peer") {
                peer::peer(&plan, backend, &mut rows).await;
            }
            if runs("kube-scale") {
                scale::kube_scale(&plan, backend, &mut rows).await;
            }
            if runs("schedules-scale") {
                scale::schedules_scale(&plan, backend, &mut rows).await;
            }
            if runs("log-scale") {
                scale::log_scale(&plan, backend, &mut rows).await;
            }
            // The browser's side is measured once: the server's reads are in `stats`.
            if runs("console") && *backend == "sqlite" {
                console(&plan, backend, &mut rows).await;
            }
        }
    });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nProctor benchmarks ({}; {cores} cores; {})",
        if plan.smoke { "smoke mode" } else { "full" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("| scenario | backend | metric | value | target |\n|---|---|---|---|---|");
    let mut seen = BTreeMap::new();
    for row in &rows {
        *seen.entry(row.scenario).or_insert(0) += 1;
        println!(
            "| {} | {} | {} | {} | {} |",
            row.scenario, row.backend, row.metric, row.value, row.target
        );
    }
}

/// What the schedules `ids` recorded: every fire's due → claimed delay (ms), the fires,
/// and the gaps or doubled seconds between consecutive fires (each fires every second).
pub(crate) async fn fire_history(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
) -> (Vec<f64>, usize, usize) {
    let (mut delays, mut fires, mut lost_or_doubled) = (Vec::new(), 0usize, 0usize);
    for id in ids {
        let history: Value = client
            .get(format!("{base}/jobs/schedule/{id}/executions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut at = Vec::new();
        for fire in history["fires"].as_array().unwrap() {
            if let Some(delay) = seconds_between(&fire["fire_at"], &fire["claimed_at"]) {
                delays.push(delay * 1000.0);
            }
            if let Some(t) = fire["fire_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                at.push(t);
            }
        }
        at.sort();
        fires += at.len();
        lost_or_doubled += at
            .windows(2)
            .filter(|w| (w[1] - w[0]).num_seconds() != 1)
            .count();
    }
    (delays, fires, lost_or_doubled)
}

/// A process's resident set in KiB (0 once it is gone).
fn rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
