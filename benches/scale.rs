//! Scale scenarios (issue 18): 10,000 Kubernetes runs in flight at once
//! (`kube-scale`), 100,000 schedules loaded (`schedules-scale`) and a run of 1,000,000
//! stored log lines read back page by page and whole (`log-scale`).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{
    Plan, Row, Server, at_100_per_second, database_url, execution, fake_kube, fire_history,
    load_executions, percentile, psql, psql_value, sorted,
};

/// Prints a row at once (the table comes at the end of the whole suite), then keeps it.
fn push(rows: &mut Vec<Row>, row: Row) {
    eprintln!(
        "| {} | {} | {} | {} | {} |",
        row.scenario, row.backend, row.metric, row.value, row.target
    );
    rows.push(row);
}

/// One integer a query answers (its column named `n`).
fn sql_i64(server: &Server, backend: &str, sql: &str) -> i64 {
    if backend == "postgres+redis" {
        psql_value(&database_url(server), sql).parse().unwrap_or(-1)
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
        diesel::sql_query("PRAGMA busy_timeout = 10000")
            .execute(&mut conn)
            .ok();
        diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .map_or(-1, |c| c.n)
    }
}

/// The texts a query answers (its one column named `id`), one per row.
fn sql_texts(server: &Server, backend: &str, sql: &str) -> Vec<String> {
    if backend == "postgres+redis" {
        psql_value(&database_url(server), sql)
            .lines()
            .map(str::to_owned)
            .collect()
    } else {
        use diesel::Connection as _;
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        let path = server.data_dir.join("proctor.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query(sql)
            .load::<Id>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }
}

/// Runs statements on the server's database (SQLite: beside the running proctord).
fn sql_run(server: &Server, backend: &str, sql: &str) {
    if backend == "postgres+redis" {
        assert!(psql(&database_url(server), sql), "{sql}");
    } else {
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        let path = server.data_dir.join("proctor.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.batch_execute(&format!("PRAGMA busy_timeout = 10000; {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Waits until `sql` (a count) answers at least `want`, or `limit` passes; the time taken.
async fn until_count(
    server: &Server,
    backend: &str,
    sql: &str,
    want: i64,
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if sql_i64(server, backend, sql) >= want {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Many Kubernetes runs in flight at once, against the fake API server: each pod prints
/// a line and keeps running until the bench releases them all together.
pub(crate) async fn kube_scale(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    // PROCTOR_BENCH_KUBE_SCALE_RUNS overrides the count (to profile at other sizes).
    let n = std::env::var("PROCTOR_BENCH_KUBE_SCALE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(plan.kube_scale_runs);
    let fake = fake_kube::FakeKube::start();
    fake.set_script_for_image(
        "bench/held:1",
        fake_kube::Script {
            hold: true,
            ..fake_kube::Script::printing(["started"])
        },
    );
    // No setting caps Kubernetes runs in flight (PROCTOR_LOCAL_MAX_CONCURRENT_RUNS is
    // the local executor's; a proc without max_concurrent_runs has no queue). The
    // deadline is raised so a slow machine's runs are not TIMED_OUT while held.
    let server = Server::start(
        backend,
        &[
            ("PROCTOR_EXECUTOR", "kubernetes".into()),
            ("PROCTOR_KUBE_CLUSTER_HOST_NAME", fake.url().to_owned()),
            ("PROCTOR_KUBE_JOB_ACTIVE_DEADLINE_SECONDS", "7200".into()),
            ("PROCTOR_SCHEDULER", "off".into()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let proc = json!({"name": "kube-held", "image_name": "bench/held:1"});
    let response = client
        .post(format!("{}/jobs/metadata", server.base))
        .json(&proc)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kib();
    let requests_before = fake.requests().total;

    // Submitted by 64 clients at once.
    let started = Instant::now();
    let base = server.base.clone();
    let submitted: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                client
                    .post(format!("{base}/jobs/execute"))
                    .json(&json!({"name": "kube-held"}))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let accepted = submitted.iter().filter(|s| **s == 201).count();
    let submitting = started.elapsed();
    let running = "SELECT COUNT(*) AS n FROM executions WHERE status = 'RUNNING'";
    let all_running = until_count(
        &server,
        backend,
        running,
        n as i64,
        Duration::from_millis(250),
        Duration::from_secs(600),
    )
    .await;
    let to_running = started.elapsed();
    // Settled: every log follower open, the first line stored.
    tokio::time::sleep(Duration::from_secs(if plan.smoke { 1 } else { 5 })).await;
    let in_flight_rss = server.rss_kib();
    let in_flight = sql_i64(&server, backend, running);
    let requests_running = fake.requests();
    let per_run_kb = in_flight_rss.saturating_sub(idle_rss) as f64 * 1024.0 / n as f64 / 1000.0;
    push(
        rows,
        Row {
            scenario: "kube-scale",
            backend: backend.to_owned(),
            metric: format!(
                "{n} runs submitted ({accepted} accepted in {:.1}s), all RUNNING after (s); RSS idle → {in_flight} in flight (MiB); per run (KB)",
                submitting.as_secs_f64()
            ),
            value: format!(
                "{}; {:.1} → {:.1}; {per_run_kb:.1}",
                all_running.map_or("not within 600 s".into(), |_| format!(
                    "{:.1}",
                    to_running.as_secs_f64()
                )),
                idle_rss as f64 / 1024.0,
                in_flight_rss as f64 / 1024.0
            ),
            target: "≤ 20 KB per run; ≤ 250 MiB",
        },
    );

    // All released at once: until every final status is stored.
    let cpu_before = server.cpu_seconds();
    let released = Instant::now();
    fake.release_held();
    let finals = "SELECT COUNT(*) AS n FROM executions WHERE status IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')";
    let settled = until_count(
        &server,
        backend,
        finals,
        n as i64,
        Duration::from_millis(50),
        Duration::from_secs(600),
    )
    .await;
    let settling = released.elapsed();
    let cpu = server.cpu_seconds() - cpu_before;
    let requests_after = fake.requests();
    let succeeded = sql_i64(
        &server,
        backend,
        "SELECT COUNT(*) AS n FROM executions WHERE status = 'SUCCEEDED'",
    );
    let events = requests_after.watch_events - requests_running.watch_events;
    let after_rss = server.rss_kib();
    push(
        rows,
        Row {
            scenario: "kube-scale",
            backend: backend.to_owned(),
            metric: format!(
                "{n} held runs released together: all final (s); watch events handled/s (events to proctord's watches / that time); SUCCEEDED; proctord CPU (s); RSS after (MiB)"
            ),
            value: format!(
                "{}; {:.0} ({events}); {succeeded}; {cpu:.1}; {:.1}",
                settled.map_or("not within 600 s".into(), |t| format!(
                    "{:.2}",
                    t.as_secs_f64()
                )),
                events as f64 / settling.as_secs_f64(),
                after_rss as f64 / 1024.0
            ),
            target: "",
        },
    );
    let total = requests_after.total - requests_before;
    let watches: u64 = requests_after.watches.values().sum();
    let mut by_route: Vec<String> = requests_after
        .by_route
        .iter()
        .map(|(route, count)| format!("{route}: {count}"))
        .collect();
    by_route.sort();
    eprintln!(
        "kube-scale {backend} requests by route: {}",
        by_route.join(", ")
    );
    push(
        rows,
        Row {
            scenario: "kube-scale",
            backend: backend.to_owned(),
            metric: format!(
                "API requests to the server for {n} runs: total, per run (watches opened in all: {watches})"
            ),
            value: format!("{total}, {:.2}", total as f64 / n as f64),
            target: "≤ 4 per run",
        },
    );
}

/// Stops `server`'s proctord and starts it again on the same data directory and
/// database: how long until it answered ready.
async fn restart(server: &mut Server) -> Duration {
    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut fresh = Server::spawn(
        server.env.clone(),
        server.port,
        server.data_dir.clone(),
        None,
    )
    .await;
    std::mem::swap(&mut server.child, &mut fresh.child);
    server.started_in = fresh.started_in;
    // `fresh` now holds the dead process; it must not remove the shared data directory.
    fresh.data_dir = std::env::temp_dir().join(format!("proctor-gone-{}", uuid::Uuid::new_v4()));
    drop(fresh);
    server.started_in
}

/// 100,000 schedules stored (bulk-loaded as copies of one made through the API): start-up,
/// RSS, idle CPU, and the fire delay of the 1,000 of them that fire every second.
pub(crate) async fn schedules_scale(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let (n, firing) = (plan.scale_schedules, plan.scale_schedules_firing);
    let mut server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    server
        .register(&client, "tick", json!(["true"]), &["N"])
        .await;
    let idle_rss_empty = server.rss_kib();
    // One schedule made through the API: the template of every row loaded.
    let body = json!({"name": "tick", "args": {"N": "0"}, "time": "0 0 0 1 1 *", "tags": "bench", "group_name": "bench"});
    let response = client
        .post(format!("{}/jobs/schedule", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let template = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Copies 1..n-1 of the template, args N=i; the first `firing` fire every second,
    // stored disabled (enabled below, after the idle measurement); the others once a
    // year, at 1,440 different minutes (so that they do not all share one parsed cron).
    let loading = Instant::now();
    let copy = |id: &str, range: &str, enabled: &str| {
        format!(
            "INSERT INTO schedules (id, proc_name, args, cron, time_zone, notification_emails, tags, \
             group_name, user_email, enabled, created_at, updated_at, concurrency_policy, notify) \
             SELECT {id}, proc_name, '{{\"N\":\"' || i || '\"}}', \
             CASE WHEN i <= {firing} THEN '* * * * * *' \
             ELSE '0 ' || (i % 60) || ' ' || (i % 24) || ' 1 1 *' END, time_zone, \
             notification_emails, tags, group_name, user_email, \
             CASE WHEN i <= {firing} THEN {enabled} ELSE enabled END, created_at, updated_at, \
             concurrency_policy, notify FROM schedules, {range} WHERE schedules.id = '{template}'"
        )
    };
    if backend == "postgres+redis" {
        let sql = copy(
            "gen_random_uuid()::text",
            &format!("generate_series(1, {}) AS i", n - 1),
            "false",
        );
        sql_run(&server, backend, &format!("{sql}; ANALYZE schedules"));
    } else {
        let uuid = "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
                    substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || \
                    hex(randomblob(6)))";
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) {}",
            n - 1,
            copy(uuid, "n", "0")
        );
        sql_run(&server, backend, &format!("{sql}; ANALYZE;"));
    }
    let loaded_in = loading.elapsed();
    let stored = sql_i64(&server, backend, "SELECT COUNT(*) AS n FROM schedules");
    assert_eq!(stored, n as i64, "the schedules loaded");

    let started_in = restart(&mut server).await;
    let after_start = server.rss_kib();
    tokio::time::sleep(plan.idle_settle).await;
    let settled_rss = server.rss_kib();
    let cpu_before = server.cpu_seconds();
    tokio::time::sleep(plan.idle_for).await;
    let cpu = (server.cpu_seconds() - cpu_before) / plan.idle_for.as_secs_f64() * 100.0;
    let b = backend.to_owned();
    push(
        rows,
        Row {
            scenario: "schedules-scale",
            backend: b.clone(),
            metric: format!(
                "{n} schedules stored ({} enabled, loaded in {:.1}s): restart to ready (ms)",
                n - firing,
                loaded_in.as_secs_f64()
            ),
            value: format!("{:.0}", started_in.as_secs_f64() * 1000.0),
            target: "≤ 2000",
        },
    );
    push(
        rows,
        Row {
            scenario: "schedules-scale",
            backend: b.clone(),
            metric: format!(
                "RSS (MiB): empty; at ready; {}s later with {n} schedules held; per schedule (KB)",
                plan.idle_settle.as_secs()
            ),
            value: format!(
                "{:.1}; {:.1}; {:.1}; {:.2}",
                idle_rss_empty as f64 / 1024.0,
                after_start as f64 / 1024.0,
                settled_rss as f64 / 1024.0,
                settled_rss.saturating_sub(idle_rss_empty) as f64 * 1024.0 / n as f64 / 1000.0
            ),
            target: "",
        },
    );
    push(
        rows,
        Row {
            scenario: "schedules-scale",
            backend: b.clone(),
            metric: format!(
                "idle CPU with {n} schedules (% of a core over {}s)",
                plan.idle_for.as_secs()
            ),
            value: format!("{cpu:.2}"),
            target: "≤ 1",
        },
    );

    // The every-second ones enabled through the API (each applies at once).
    let ids: Vec<String> = sql_texts(
        &server,
        backend,
        "SELECT id FROM schedules WHERE cron = '* * * * * *'",
    );
    assert_eq!(ids.len(), firing);
    let switch = async |what: &str| {
        let base = server.base.clone();
        futures_util::stream::iter(ids.iter())
            .map(|id| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let r = client
                        .post(format!("{base}/jobs/schedule/{id}/{what}"))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{what} {id}");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    };
    switch("enable").await;
    tokio::time::sleep(plan.firing_for).await;
    switch("disable").await;
    let (delays, fires, lost_or_doubled) = fire_history(&client, &server.base, &ids).await;
    let delays = sorted(delays);
    push(
        rows,
        Row {
            scenario: "schedules-scale",
            backend: b,
            metric: format!(
                "{firing} of the {n} firing every second for {}s: fires, gaps or doubles, due → claimed p50/p99 (ms)",
                plan.firing_for.as_secs()
            ),
            value: format!(
                "{fires}, {lost_or_doubled}, {:.1}/{:.1}",
                percentile(&delays, 50.0),
                percentile(&delays, 99.0)
            ),
            target: "0 lost; p99 ≤ 100",
        },
    );
}

/// One run with many stored lines (bulk-loaded after a real run made its record):
/// pages at the start, middle and end, and the whole log downloaded; then the history
/// on many executions (as `stats` and `retention` measure it) in the same database.
pub(crate) async fn log_scale(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let lines = plan.scale_log_lines;
    let keep = [
        ("PROCTOR_EXECUTION_RETENTION_DAYS", "0".to_owned()),
        ("PROCTOR_LOG_RETENTION_DAYS", "0".to_owned()),
    ];
    let server = Server::start(backend, &keep).await;
    let client = reqwest::Client::new();
    server
        .register(
            &client,
            "one-line",
            json!(["echo", "log line number 1"]),
            &[],
        )
        .await;
    let name = server.execute(&client, "one-line").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = execution(&client, &server.base, &name).await;
        if record["status"] == "SUCCEEDED" {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not succeed: {record}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = sql_texts(
        &server,
        backend,
        &format!("SELECT id FROM executions WHERE name = '{name}'"),
    )
    .remove(0);
    assert_eq!(record["name"], name.as_str());
    // Its one line replaced by `lines` lines numbered 1..=lines, as a run printing them
    // would have stored them.
    let loading = Instant::now();
    if backend == "postgres+redis" {
        sql_run(
            &server,
            backend,
            &format!(
                "DELETE FROM execution_logs WHERE execution_id = '{id}'; \
                 INSERT INTO execution_logs (execution_id, seq, line, logged_at) \
                 SELECT '{id}', j, 'log line number ' || j, now() AT TIME ZONE 'UTC' \
                 FROM generate_series(1, {lines}) AS j; ANALYZE execution_logs"
            ),
        );
    } else {
        sql_run(
            &server,
            backend,
            &format!(
                "DELETE FROM execution_logs WHERE execution_id = '{id}'; \
                 INSERT INTO execution_logs (execution_id, seq, line, logged_at) \
                 WITH RECURSIVE m(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM m WHERE j < {lines}) \
                 SELECT '{id}', j, 'log line number ' || j, strftime('%Y-%m-%d %H:%M:%f', 'now') \
                 FROM m; ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);"
            ),
        );
    }
    let loaded_in = loading.elapsed();
    let b = backend.to_owned();
    let page = 1_000;
    for (from, where_) in [(0, "start"), (lines / 2, "middle"), (lines - page, "end")] {
        let path = format!("/api/v1/executions/{name}/logs?since_seq={from}&limit={page}");
        let latencies = at_100_per_second(
            plan.stats_requests,
            || client.get(format!("{}{path}", server.base)),
            async |response| {
                assert_eq!(response.status().as_u16(), 200, "{path}");
                let text = response.text().await.unwrap();
                assert_eq!(text.lines().count(), page, "{path}");
            },
        )
        .await;
        push(
            rows,
            Row {
                scenario: "log-scale",
                backend: b.clone(),
                metric: format!(
                    "GET .../logs?since_seq={from}&limit={page} ({where_} of {lines} stored lines, loaded in {:.0}s), p50 / p99 (ms)",
                    loaded_in.as_secs_f64()
                ),
                value: format!(
                    "{:.2} / {:.2}",
                    percentile(&latencies, 50.0),
                    percentile(&latencies, 99.0)
                ),
                target: "",
            },
        );
    }
    let mut downloads = Vec::new();
    let mut size = 0;
    for _ in 0..if plan.smoke { 1 } else { 3 } {
        let started = Instant::now();
        let response = client
            .get(format!(
                "{}/api/v1/executions/{name}/logs?download=true",
                server.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body = response.bytes().await.unwrap();
        downloads.push(started.elapsed().as_secs_f64());
        assert_eq!(
            body.iter().filter(|b| **b == b'\n').count(),
            lines,
            "every line downloaded"
        );
        size = body.len();
    }
    let downloads = sorted(downloads);
    let median = downloads[downloads.len() / 2];
    push(
        rows,
        Row {
            scenario: "log-scale",
            backend: b.clone(),
            metric: format!(
                "GET .../logs?download=true ({lines} lines, {:.1} MB): seconds (median of {}), MB/s",
                size as f64 / 1e6,
                downloads.len()
            ),
            value: format!("{median:.2}, {:.1}", size as f64 / 1e6 / median),
            target: "",
        },
    );

    // The history on many executions, as `stats` and `retention` measure it.
    let executions = plan.stats_executions;
    let loaded_in = load_executions(&server, backend, executions);
    let mut values = Vec::new();
    for path in ["/api/v1/executions", "/api/v1/executions?status=CANCELLED"] {
        let latencies = at_100_per_second(
            plan.stats_requests,
            || client.get(format!("{}{path}", server.base)),
            async |response| {
                assert_eq!(response.status().as_u16(), 200, "{path}");
                response.bytes().await.unwrap();
            },
        )
        .await;
        values.push(format!(
            "{:.2} / {:.2}",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        ));
    }
    push(
        rows,
        Row {
            scenario: "log-scale",
            backend: b,
            metric: format!(
                "history GET /api/v1/executions (newest page; ?status=CANCELLED) over {executions} executions (loaded in {:.0}s; all filters: see retention), p50 / p99 (ms)",
                loaded_in.as_secs_f64()
            ),
            value: values.join("; "),
            target: "p99 ≤ 50",
        },
    );
}
