//! Retention: old finished runs and their lines go, the lines of runs past the log
//! retention go while their records stay (and the logs API says so), recent and
//! unfinished runs stay, a proc's own retention wins, `proctord purge --dry-run` only
//! counts, and a purge beside runs writing their lines harms none of them.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use proctor::actors::purger::PurgeNow;
use proctor::store::schema::executions;
use proctor::store::{DbConnection, PurgeReport};
use reqwest::Method;
use serde_json::json;

use crate::admin::{proctord, stderr, stdout};
use crate::helpers::{
    Backend, TEST_SECRETS_KEY, TestApp, backends, error_message, json_body, register_script,
    spawn_app, spawn_app_with,
};
use crate::observability::{scrape, value};

const WAIT: Duration = Duration::from_secs(30);

fn days_ago(days: i64) -> NaiveDateTime {
    chrono::Utc::now().naive_utc() - TimeDelta::days(days)
}

/// Makes a run look created and finished `days` ago (finished a second later), or,
/// when `finished` is false, created then and still unfinished.
async fn backdate(app: &TestApp, name: &str, days: i64, finished: bool) {
    let name = name.to_owned();
    app.stores
        .db
        .run(move |conn| {
            let created = days_ago(days);
            let finished_at = finished.then(|| created + TimeDelta::seconds(1));
            let target = executions::table.filter(executions::name.eq(&name));
            let changed = match conn {
                DbConnection::Postgresql(c) => diesel::update(target)
                    .set((
                        executions::created_at.eq(created),
                        executions::finished_at.eq(finished_at),
                    ))
                    .execute(c)?,
                DbConnection::Sqlite(c) => diesel::update(target)
                    .set((
                        executions::created_at.eq(created),
                        executions::finished_at.eq(finished_at),
                    ))
                    .execute(c)?,
            };
            assert_eq!(changed, 1, "{name} exists");
            Ok(())
        })
        .await
        .unwrap();
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A `SELECT COUNT(*) AS n ...` on the app's database.
async fn count(app: &TestApp, sql: String) -> i64 {
    app.stores
        .db
        .run(move |conn| {
            let row = match conn {
                DbConnection::Postgresql(c) => diesel::sql_query(&sql).get_result::<Count>(c)?,
                DbConnection::Sqlite(c) => diesel::sql_query(&sql).get_result::<Count>(c)?,
            };
            Ok(row.n)
        })
        .await
        .unwrap()
}

async fn stored_lines(app: &TestApp) -> i64 {
    count(app, "SELECT COUNT(*) AS n FROM execution_logs".into()).await
}

/// Runs `proc` to its end; its name.
async fn finished_run(app: &TestApp, proc: &str) -> String {
    let name = app.run(proc, json!({})).await;
    let run = app.wait_until_final(&name, WAIT).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    name
}

/// One pass through the Purger actor (what its timer runs); waits out a timed pass
/// that holds PostgreSQL's purge lock.
async fn purge(app: &TestApp, dry_run: bool) -> PurgeReport {
    for _ in 0..100 {
        let report = app
            .actors
            .purger
            .send(PurgeNow { dry_run })
            .await
            .expect("the Purger answers")
            .expect("the purge succeeds");
        if let Some(report) = report {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the purge lock was never free")
}

async fn logs_answer(app: &TestApp, name: &str) -> reqwest::Response {
    app.request(
        Method::GET,
        &format!("/api/v1/executions/{name}/logs"),
        Some(&app.admin),
    )
    .send()
    .await
    .unwrap()
}

#[actix_web::test]
async fn old_runs_and_their_lines_go_while_recent_and_unfinished_ones_stay() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "fifty", "seq 1 50", &[], json!({})).await;
        register_script(&app, "long", "echo started; sleep 60", &[], json!({})).await;
        let old = finished_run(&app, "fifty").await;
        let lines_only = finished_run(&app, "fifty").await;
        let recent = finished_run(&app, "fifty").await;
        let running = app.run("long", json!({})).await;
        app.wait_for_status(&running, "RUNNING", WAIT).await;
        let deadline = std::time::Instant::now() + WAIT;
        while app.stored_logs(&running).await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the running run printed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        backdate(&app, &old, 400, true).await;
        backdate(&app, &lines_only, 40, true).await;
        backdate(&app, &running, 400, false).await;
        let before = scrape(&app).await;
        let lines_before = stored_lines(&app).await;
        assert_eq!(lines_before, 151, "{backend:?}");

        let report = purge(&app, false).await;
        assert_eq!(report.rows("executions"), 1, "{backend:?}: {report:?}");
        assert_eq!(
            report.rows("execution_logs"),
            100,
            "{backend:?}: {report:?}"
        );
        assert_eq!(report.runs_without_lines, 1, "{backend:?}: {report:?}");

        // The old run is gone, record and lines.
        let gone = app
            .request(
                Method::GET,
                &format!("/api/v1/executions/{old}"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status().as_u16(), 404, "{backend:?}");
        assert_eq!(stored_lines(&app).await, lines_before - 100, "{backend:?}");
        // The run past the log retention keeps its record, and its logs answer says
        // what happened to its lines.
        let kept = app.execution(&lines_only).await;
        assert_eq!(kept["status"], "SUCCEEDED", "{backend:?}");
        let purged_at = kept["logs_purged_at"]
            .as_str()
            .expect("logs_purged_at is set");
        let answer = logs_answer(&app, &lines_only).await;
        let body = json_body(answer, 410).await;
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("were removed by retention on"),
            "{backend:?}: {message}"
        );
        assert_eq!(
            body["detail"]["logs_purged_at"],
            purged_at[..19].to_owned() + "Z"
        );
        let socket = app
            .request(
                Method::GET,
                &format!("/jobs/logs?job_name={lines_only}"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            socket.status().as_u16(),
            410,
            "the websocket is refused too"
        );
        // The recent run, and the old run still running, are untouched.
        assert_eq!(app.stored_logs(&recent).await.len(), 50, "{backend:?}");
        assert!(
            app.execution(&recent).await.get("logs_purged_at").is_none(),
            "absent while the lines are stored"
        );
        assert_eq!(app.execution(&running).await["status"], "RUNNING");
        assert_eq!(app.stored_logs(&running).await, vec!["started"]);

        let after = scrape(&app).await;
        for (table, at_least) in [("executions", 1.0), ("execution_logs", 100.0)] {
            let series = format!(r#"proctor_purged_rows_total{{table="{table}"}}"#);
            assert!(
                value(&after, &series) - value(&before, &series) >= at_least,
                "{backend:?}: {series} grew by {at_least}"
            );
        }
        // A second pass finds nothing more: removal is idempotent.
        let again = purge(&app, false).await;
        assert!(again.removed.is_empty(), "{backend:?}: {again:?}");
        assert_eq!(again.runs_without_lines, 0);
        app.cancel(&running, &app.admin).await;
    }
}

#[actix_web::test]
async fn a_procs_own_retention_wins_over_the_settings() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "short-lived",
            "seq 1 5",
            &[],
            json!({"execution_retention_days": 7}),
        )
        .await;
        register_script(
            &app,
            "kept-for-ever",
            "seq 1 5",
            &[],
            json!({"execution_retention_days": 0, "log_retention_days": 0}),
        )
        .await;
        register_script(&app, "ordinary", "seq 1 5", &[], json!({})).await;
        let short = finished_run(&app, "short-lived").await;
        let ordinary = finished_run(&app, "ordinary").await;
        let ancient = finished_run(&app, "kept-for-ever").await;
        backdate(&app, &short, 10, true).await;
        backdate(&app, &ordinary, 10, true).await;
        backdate(&app, &ancient, 4000, true).await;

        let report = purge(&app, false).await;
        assert_eq!(report.rows("executions"), 1, "{backend:?}: {report:?}");
        let gone = app
            .request(
                Method::GET,
                &format!("/api/v1/executions/{short}"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            gone.status().as_u16(),
            404,
            "{backend:?}: 7 days for this proc"
        );
        assert_eq!(
            app.stored_logs(&ordinary).await.len(),
            5,
            "30 days of lines"
        );
        assert_eq!(app.stored_logs(&ancient).await.len(), 5, "0: for ever");

        // The override is part of the metadata, only when set.
        let described = json_body(app.describe("short-lived", &app.admin).await, 200).await;
        assert_eq!(described["execution_retention_days"], 7);
        assert!(described.get("log_retention_days").is_none(), "{described}");
        let plain = json_body(app.describe("ordinary", &app.admin).await, 200).await;
        assert!(plain.get("execution_retention_days").is_none(), "{plain}");

        // ... and of the OpenAPI document, with the logs' 410.
        let doc = json_body(
            app.request(Method::GET, "/openapi.json", None)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let fields = &doc["components"]["schemas"]["ProcMetadata"]["properties"];
        for field in ["execution_retention_days", "log_retention_days"] {
            assert!(fields[field].is_object(), "{field} in {fields}");
        }
        let logs = &doc["paths"]["/api/v1/executions/{name}/logs"]["get"]["responses"];
        assert!(logs["410"].is_object(), "{logs}");
    }
}

#[actix_web::test]
async fn a_retention_that_keeps_lines_longer_than_their_run_is_refused_by_name() {
    let app = spawn_app(Backend::Embedded).await;
    let cases = [
        (
            json!({"execution_retention_days": 7, "log_retention_days": 30}),
            "log_retention_days (30) must not be longer than execution_retention_days (7)",
        ),
        (
            json!({"log_retention_days": 40000}),
            "log_retention_days must be at most 36500",
        ),
    ];
    for (extra, expected) in cases {
        let mut proc = crate::helpers::sample_proc("bad-retention");
        proc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        // A bound is in the document (400); a rule between two fields is not (422).
        let status = if expected.contains("must not be longer") {
            422
        } else {
            400
        };
        let message = error_message(app.register(&proc, &app.admin).await, status).await;
        assert!(message.contains(expected), "{extra}: {message}");
    }
}

/// The environment `proctord` needs to open the app's stores.
fn env_of(app: &TestApp) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PROCTOR_DATA_DIR".to_owned(),
            app.data_dir.to_string_lossy().into_owned(),
        ),
        ("PROCTOR_LOG_LEVEL".to_owned(), "error".to_owned()),
    ];
    if app.backend == Backend::Production {
        env.extend([
            (
                "PROCTOR_DATABASE_URL".to_owned(),
                app.settings.database.url.expose().clone(),
            ),
            (
                "PROCTOR_REDIS_ADDRESS".to_owned(),
                crate::helpers::redis_url(),
            ),
            (
                "PROCTOR_REDIS_KEY_PREFIX".to_owned(),
                app.redis_prefix.clone().unwrap(),
            ),
            (
                "PROCTOR_SECRETS_KEY".to_owned(),
                TEST_SECRETS_KEY.to_owned(),
            ),
        ]);
    }
    env
}

#[actix_web::test]
async fn proctord_purge_dry_run_counts_and_removes_nothing_then_purge_removes() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "twelve", "seq 1 12", &[], json!({})).await;
        let old = finished_run(&app, "twelve").await;
        let lines_only = finished_run(&app, "twelve").await;
        backdate(&app, &old, 500, true).await;
        backdate(&app, &lines_only, 31, true).await;
        let env = env_of(&app);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lines_before = stored_lines(&app).await;

        let dry = proctord(&["purge", "--dry-run"], &env);
        assert!(dry.status.success(), "{backend:?}: {}", stderr(&dry));
        let printed = stdout(&dry);
        for expected in [
            "retention: runs 365 days, log lines 30 days",
            "would remove 1 row(s) of executions",
            "would remove 24 row(s) of execution_logs",
            "runs keeping their record without their lines: 1 (dry run: nothing was removed)",
        ] {
            assert!(
                printed.contains(expected),
                "{backend:?}: {expected} in {printed}"
            );
        }
        assert_eq!(
            stored_lines(&app).await,
            lines_before,
            "a dry run removes nothing"
        );
        assert_eq!(app.execution(&old).await["name"], old.as_str());

        let real = proctord(&["purge"], &env);
        assert!(real.status.success(), "{backend:?}: {}", stderr(&real));
        let printed = stdout(&real);
        for expected in [
            "removed 1 row(s) of executions",
            "removed 24 row(s) of execution_logs",
            "runs keeping their record without their lines: 1\n",
        ] {
            assert!(
                printed.contains(expected),
                "{backend:?}: {expected} in {printed}"
            );
        }
        assert_eq!(stored_lines(&app).await, lines_before - 24);
        let answer = logs_answer(&app, &lines_only).await;
        assert_eq!(answer.status().as_u16(), 410, "{backend:?}");
    }
}

#[actix_web::test]
async fn a_purge_beside_runs_writing_their_lines_harms_none_of_them() {
    for backend in backends() {
        let app = spawn_app_with(backend, &[("local_max_concurrent_runs", "16")]).await;
        register_script(&app, "chatty", "seq 1 3000", &[], json!({})).await;
        register_script(
            &app,
            "live",
            "for i in $(seq 1 40); do echo live $i; sleep 0.01; done",
            &[],
            json!({}),
        )
        .await;
        // Old runs with lines enough for several batches of each statement.
        let mut old = Vec::new();
        for _ in 0..6 {
            let name = finished_run(&app, "chatty").await;
            backdate(&app, &name, 400, true).await;
            old.push(name);
        }
        for _ in 0..4 {
            let name = finished_run(&app, "chatty").await;
            backdate(&app, &name, 45, true).await;
        }
        let mut live = Vec::new();
        for _ in 0..24 {
            live.push(app.run("live", json!({})).await);
        }
        let (mut removed, mut passes) = (0, 0);
        loop {
            let report = purge(&app, false).await;
            removed += report.rows("execution_logs");
            passes += 1;
            let mut open = 0;
            for name in &live {
                let run = app.execution(name).await;
                if ["RECEIVED", "CREATED", "RUNNING"].contains(&run["status"].as_str().unwrap()) {
                    open += 1;
                }
            }
            if open == 0 || passes > 200 {
                break;
            }
        }
        assert_eq!(removed, 30_000, "{backend:?}: every old line, once");
        for name in &live {
            let run = app.wait_until_final(name, WAIT).await;
            assert_eq!(run["status"], "SUCCEEDED", "{backend:?}: {run}");
            let lines = app.stored_logs(name).await;
            let expected: Vec<String> = (1..=40).map(|i| format!("live {i}")).collect();
            assert_eq!(lines, expected, "{backend:?}: {name} kept every line");
        }
        for name in &old {
            let gone = app
                .request(
                    Method::GET,
                    &format!("/api/v1/executions/{name}"),
                    Some(&app.admin),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(gone.status().as_u16(), 404, "{backend:?}");
        }
        let (one, two) = futures_util::join!(purge(&app, true), purge(&app, true));
        assert!(
            one.removed.is_empty() && two.removed.is_empty(),
            "nothing left"
        );
    }
}

/// Moves the audit records of `object` `days` into the past.
async fn backdate_audit(app: &TestApp, object: &str, days: i64) {
    use proctor::store::schema::audit_events;
    let object = object.to_owned();
    app.stores
        .db
        .run(move |conn| {
            let target = audit_events::table.filter(audit_events::object.eq(&object));
            let at = audit_events::at.eq(days_ago(days));
            let changed = match conn {
                DbConnection::Postgresql(c) => diesel::update(target).set(at).execute(c)?,
                DbConnection::Sqlite(c) => diesel::update(target).set(at).execute(c)?,
            };
            assert!(changed > 0, "{object} has audit records");
            Ok(())
        })
        .await
        .unwrap();
}

#[actix_web::test]
async fn audit_records_past_their_own_retention_go_and_the_rest_stay() {
    for backend in backends() {
        for (setting, expected_left) in [("730", 2), ("0", 3)] {
            let app = spawn_app_with(backend, &[("audit_retention_days", setting)]).await;
            for proc in ["ancient", "recent", "fresh"] {
                register_script(&app, proc, "true", &[], json!({})).await;
            }
            // Older than two years; younger than two years but older than any run's
            // retention (the audit log keeps its own).
            backdate_audit(&app, "ancient", 800).await;
            backdate_audit(&app, "recent", 400).await;
            let dry = purge(&app, true).await;
            assert_eq!(
                dry.rows("audit_events"),
                3 - expected_left,
                "{backend:?} {setting}"
            );
            let report = purge(&app, false).await;
            assert_eq!(
                report.rows("audit_events"),
                3 - expected_left,
                "{backend:?} {setting}"
            );
            let left = count(&app, "SELECT COUNT(*) AS n FROM audit_events".into()).await;
            assert_eq!(left, expected_left as i64, "{backend:?} {setting}");
            let objects: Vec<String> = app
                .stores
                .audit
                .list(proctor::store::AuditFilter {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.object)
                .collect();
            assert!(objects.contains(&"recent".to_owned()), "{objects:?}");
            assert!(objects.contains(&"fresh".to_owned()), "{objects:?}");
            assert_eq!(objects.contains(&"ancient".to_owned()), setting == "0");
        }
    }
}
