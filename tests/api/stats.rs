//! `GET /api/v1/stats` (the console's overview, counted in the database) and
//! `GET /api/v1/schedules/preview` (when a cron expression would fire).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, TimeDelta, Timelike, Weekday};
use diesel::prelude::*;
use proctor::store::DbConnection;
use proctor::store::schema::executions;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, backends, error_message, json_body, sample_proc, spawn_app};

/// A run as the test stores it: created at `created` (UTC), running for `secs` when
/// given (a final run without them has no start time).
struct Run {
    proc: &'static str,
    status: &'static str,
    created: &'static str,
    secs: Option<f64>,
    user: &'static str,
}

fn run(proc: &'static str, status: &'static str, created: &'static str, secs: f64) -> Run {
    let user = if proc == "dev-task" {
        "outsider@example.com"
    } else {
        "member@example.com"
    };
    Run {
        proc,
        status,
        created,
        secs: Some(secs),
        user,
    }
}

fn naive(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// Writes the runs straight into the executions table, owned by a replica that is not
/// this one with a lease that never ends, so nothing here settles the unfinished ones.
async fn insert_runs(app: &TestApp, runs: Vec<Run>) {
    app.stores
        .db
        .run(move |conn| {
            for run in runs {
                let created = naive(run.created);
                let started = run.secs.map(|_| created + TimeDelta::milliseconds(100));
                let finished = match (run.status, run.secs) {
                    ("RECEIVED" | "CREATED" | "RUNNING", _) => None,
                    (_, Some(secs)) => {
                        Some(started.unwrap() + TimeDelta::milliseconds((secs * 1000.0) as i64))
                    }
                    (_, None) => Some(created + TimeDelta::seconds(1)),
                };
                let values = (
                    executions::id.eq(uuid::Uuid::new_v4().to_string()),
                    executions::name.eq(format!("{}-{}", run.proc, uuid::Uuid::new_v4().simple())),
                    executions::proc_name.eq(run.proc),
                    executions::image.eq("proctor/test:1"),
                    executions::args.eq("{}"),
                    executions::status.eq(run.status),
                    executions::executor.eq("local"),
                    executions::user_email.eq(run.user),
                    executions::created_at.eq(created),
                    executions::updated_at.eq(created),
                    executions::started_at.eq(started),
                    executions::finished_at.eq(finished),
                    executions::attempts.eq(1),
                    executions::owner.eq("another-replica"),
                    executions::lease_expires_at.eq(naive("2100-01-01 00:00:00")),
                );
                let insert = diesel::insert_into(executions::table).values(values);
                match conn {
                    DbConnection::Postgresql(c) => insert.execute(c)?,
                    DbConnection::Sqlite(c) => insert.execute(c)?,
                };
            }
            Ok(())
        })
        .await
        .unwrap();
}

async fn stats(app: &TestApp, query: &str, who: &crate::helpers::Caller) -> reqwest::Response {
    app.request(Method::GET, &format!("/api/v1/stats{query}"), Some(who))
        .send()
        .await
        .unwrap()
}

/// Two procs, one per group, with runs on 10 January 2026 between 00:00 and 06:00 UTC,
/// one just before and one just after; and a third proc whose only run is a month
/// earlier, in none of the ranges asked for (so in no answer's `procs`).
async fn seeded_app(backend: crate::helpers::Backend) -> TestApp {
    let app = spawn_app(backend).await;
    for (name, group) in [("ops-task", "ops"), ("dev-task", "dev")] {
        let mut proc = sample_proc(name);
        proc["authorized_groups"] = json!([group]);
        json_body(app.register(&proc, &app.admin).await, 201).await;
    }
    insert_runs(
        &app,
        vec![
            run("ops-task", "SUCCEEDED", "2026-01-09 23:59:59", 1.0),
            run("ops-task", "SUCCEEDED", "2026-01-10 00:10:00", 1.5),
            run("ops-task", "SUCCEEDED", "2026-01-10 00:20:00", 2.0),
            run("ops-task", "FAILED", "2026-01-10 00:59:59", 3.25),
            run("dev-task", "SUCCEEDED", "2026-01-10 01:00:00", 5.0),
            run("dev-task", "FAILED", "2026-01-10 01:30:00", 7.0),
            run("ops-task", "RUNNING", "2026-01-10 01:40:00", 0.0),
            run("ops-task", "SUCCEEDED", "2026-01-10 02:05:00", 4.0),
            run("ops-task", "TIMED_OUT", "2026-01-10 02:15:00", 10.0),
            Run {
                secs: None,
                ..run("ops-task", "CANCELLED", "2026-01-10 03:00:00", 0.0)
            },
            run("dev-task", "RECEIVED", "2026-01-10 04:00:00", 0.0),
            run("ops-task", "SUCCEEDED", "2026-01-10 06:00:00", 1.0),
            run("old-task", "FAILED", "2025-12-01 00:00:00", 2.0),
        ],
    )
    .await;
    app
}

fn counts(body: &Value) -> Vec<Value> {
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["counts"].clone())
        .collect()
}

fn proc_stats<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["procs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["proc"] == name)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[actix_web::test]
async fn stats_count_finished_runs_per_bucket_and_proc_with_percentiles() {
    for backend in backends() {
        let app = seeded_app(backend).await;
        let range = "?since=2026-01-10T00:00:00Z&until=2026-01-10T06:00:00Z&bucket=hour";
        let body = json_body(stats(&app, range, &app.admin).await, 200).await;
        assert_eq!(body["since"], "2026-01-10T00:00:00Z", "{backend:?}");
        assert_eq!(body["until"], "2026-01-10T06:00:00Z", "{backend:?}");
        assert_eq!(body["bucket"], "hour");
        let starts: Vec<&str> = body["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["start"].as_str().unwrap())
            .collect();
        assert_eq!(
            starts,
            (0..6)
                .map(|h| format!("2026-01-10T{h:02}:00:00Z"))
                .collect::<Vec<_>>(),
            "{backend:?}: every hour, oldest first"
        );
        assert_eq!(
            counts(&body),
            [
                json!({"SUCCEEDED": 2, "FAILED": 1}),
                json!({"SUCCEEDED": 1, "FAILED": 1}),
                json!({"SUCCEEDED": 1, "TIMED_OUT": 1}),
                json!({"CANCELLED": 1}),
                json!({}),
                json!({}),
            ],
            "{backend:?}: final runs by creation hour; the running ones and those outside the range left out"
        );
        assert_eq!(body["total"], 8, "{backend:?}");
        assert_eq!(body["running"], 2, "{backend:?}");

        let ops = proc_stats(&body, "ops-task");
        assert_eq!(ops["runs"], 6, "{backend:?}: {ops}");
        assert_eq!(ops["succeeded"], 3, "{backend:?}: {ops}");
        assert_eq!(
            ops["failed"], 3,
            "{backend:?}: TIMED_OUT and CANCELLED count as failed"
        );
        assert_eq!(ops["success_rate"], 0.5, "{backend:?}");
        // Durations 1.5, 2, 3.25, 4, 10 (the CANCELLED run never started): the median is
        // the middle one; the 95th percentile is interpolated, 4 + 0.8 × (10 − 4).
        assert_eq!(ops["p50_seconds"], 3.25, "{backend:?}: {ops}");
        assert_eq!(ops["p95_seconds"], 8.8, "{backend:?}: {ops}");
        let dev = proc_stats(&body, "dev-task");
        assert_eq!(dev["runs"], 2, "{backend:?}: {dev}");
        assert_eq!(dev["success_rate"], 0.5);
        assert_eq!(dev["p50_seconds"], 6.0, "{backend:?}: {dev}");
        assert_eq!(dev["p95_seconds"], 6.9, "{backend:?}: {dev}");
        assert_eq!(body["procs"].as_array().unwrap().len(), 2);

        // A range off the boundaries is widened to whole buckets.
        let body = json_body(
            stats(
                &app,
                "?since=2026-01-10T00:30:00Z&until=2026-01-10T05:10:00%2B00:00",
                &app.admin,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(body["since"], "2026-01-10T00:00:00Z", "{backend:?}");
        assert_eq!(body["until"], "2026-01-10T06:00:00Z", "{backend:?}");
        assert_eq!(body["total"], 8, "{backend:?}");

        // Days: the run a second before midnight falls on the 9th, the one at 06:00 on
        // the 10th.
        let body = json_body(
            stats(
                &app,
                "?since=2026-01-08T00:00:00Z&until=2026-01-11T00:00:00Z&bucket=day",
                &app.admin,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(
            counts(&body),
            [
                json!({}),
                json!({"SUCCEEDED": 1}),
                json!({"SUCCEEDED": 5, "FAILED": 2, "TIMED_OUT": 1, "CANCELLED": 1}),
            ],
            "{backend:?}"
        );
        assert_eq!(body["buckets"][2]["start"], "2026-01-10T00:00:00Z");
        let ops = proc_stats(&body, "ops-task");
        assert_eq!(ops["runs"], 8, "{backend:?}: {ops}");
        // 1, 1, 1.5, 2, 3.25, 4, 10
        assert_eq!(ops["p50_seconds"], 2.0, "{backend:?}: {ops}");
    }
}

#[actix_web::test]
async fn a_group_member_counts_only_the_procs_they_may_use() {
    for backend in backends() {
        let app = seeded_app(backend).await;
        let range = "?since=2026-01-10T00:00:00Z&until=2026-01-10T06:00:00Z";
        let body = json_body(stats(&app, range, &app.member).await, 200).await;
        let procs: Vec<&str> = body["procs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["proc"].as_str().unwrap())
            .collect();
        assert_eq!(procs, ["ops-task"], "{backend:?}: {body}");
        assert_eq!(
            counts(&body)[1],
            json!({}),
            "{backend:?}: dev-task's runs are not counted"
        );
        assert_eq!(body["total"], 6, "{backend:?}");
        assert_eq!(
            body["running"], 1,
            "{backend:?}: only ops-task's run in flight"
        );

        let body = json_body(stats(&app, range, &app.outsider).await, 200).await;
        assert_eq!(body["total"], 2, "{backend:?}: {body}");
        assert_eq!(body["running"], 1, "{backend:?}");
        assert_eq!(proc_stats(&body, "dev-task")["runs"], 2);
    }
}

#[actix_web::test]
async fn stats_refuse_bad_ranges_and_default_to_the_last_day_or_month() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let cases = [
            (
                "?since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
                "at most 1000",
                "1,416 hours are too many buckets",
            ),
            (
                "?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
                "since must be before until",
                "an empty range",
            ),
            (
                "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
                "since must be before until",
                "a reversed range",
            ),
            (
                "?bucket=week",
                "bucket must be hour or day",
                "an unknown bucket",
            ),
            (
                "?since=yesterday",
                "since must be an RFC 3339 time",
                "a time that is not RFC 3339",
            ),
        ];
        for (query, expected, why) in cases {
            // A malformed parameter breaks the document (400); a range it allows but the
            // overview cannot draw is a rule in words (422).
            let status = if expected.starts_with("at most")
                || expected.starts_with("since must be before")
            {
                422
            } else {
                400
            };
            let message = error_message(stats(&app, query, &app.admin).await, status).await;
            assert!(message.contains(expected), "{backend:?}: {why}: {message}");
        }
        // 1000 hours is the most.
        let body = json_body(
            stats(
                &app,
                "?since=2026-01-01T00:00:00Z&until=2026-02-11T16:00:00Z",
                &app.admin,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(body["buckets"].as_array().unwrap().len(), 1000);

        let body = json_body(stats(&app, "", &app.admin).await, 200).await;
        assert_eq!(body["buckets"].as_array().unwrap().len(), 24, "{backend:?}");
        assert_eq!(body["total"], 0);
        assert_eq!(body["procs"], json!([]));
        let until = DateTime::parse_from_rfc3339(body["until"].as_str().unwrap()).unwrap();
        let now = chrono::Utc::now();
        assert!(
            until.minute() == 0
                && (until.with_timezone(&chrono::Utc) - now).abs() <= TimeDelta::hours(1),
            "until is the end of the current hour: {until}"
        );
        let body = json_body(stats(&app, "?bucket=day", &app.admin).await, 200).await;
        assert_eq!(body["buckets"].as_array().unwrap().len(), 30, "{backend:?}");

        let anonymous = app
            .request(Method::GET, "/api/v1/stats", None)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 401);
        let wrong = app
            .request(Method::POST, "/api/v1/stats", Some(&app.admin))
            .send()
            .await
            .unwrap();
        error_message(wrong, 405).await;
    }
}

async fn preview(app: &TestApp, query: &[(&str, &str)]) -> reqwest::Response {
    app.request(Method::GET, "/api/v1/schedules/preview", Some(&app.member))
        .query(query)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn preview_lists_the_next_fires_in_utc_and_in_the_zone_with_words() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let body = json_body(
            preview(
                &app,
                &[
                    ("time", "0 9 * * 1-5"),
                    ("time_zone", "Europe/Paris"),
                    ("count", "10"),
                ],
            )
            .await,
            200,
        )
        .await;
        assert_eq!(body["time"], "0 9 * * 1-5");
        assert_eq!(body["time_zone"], "Europe/Paris");
        let words = body["description"].as_str().unwrap();
        assert!(
            words.contains("09:00") && words.contains("Monday") && words.contains("Friday"),
            "{words}"
        );
        let next = body["next"].as_array().unwrap();
        let local = body["next_local"].as_array().unwrap();
        assert_eq!((next.len(), local.len()), (10, 10), "{body}");
        let mut previous = None;
        for (utc, local) in next.iter().zip(local) {
            let utc_text = utc.as_str().unwrap();
            assert!(utc_text.ends_with('Z'), "{utc_text}");
            let utc = DateTime::parse_from_rfc3339(utc_text).unwrap();
            let local: DateTime<FixedOffset> =
                DateTime::parse_from_rfc3339(local.as_str().unwrap()).unwrap();
            assert_eq!((local.hour(), local.minute(), local.second()), (9, 0, 0));
            assert!(
                !matches!(local.weekday(), Weekday::Sat | Weekday::Sun),
                "{local}"
            );
            // Paris is UTC+1 in winter, UTC+2 in summer.
            let offset = local.offset().local_minus_utc();
            assert!(offset == 3600 || offset == 7200, "{local}");
            assert_eq!(utc, local, "the same instant");
            assert!(previous.is_none_or(|p| p < utc), "in order");
            previous = Some(utc);
        }

        // Defaults: UTC, five fires; descriptors and @every are accepted as by creation.
        let body = json_body(preview(&app, &[("time", "@hourly")]).await, 200).await;
        assert_eq!(body["time_zone"], "UTC");
        assert_eq!(body["next"].as_array().unwrap().len(), 5);
        assert!(
            body["next_local"][0]
                .as_str()
                .unwrap()
                .ends_with(":00:00+00:00")
        );
        let body = json_body(preview(&app, &[("time", "@every 1h30m")]).await, 200).await;
        assert_eq!(body["description"], "Every 1 hour 30 minutes");
        let first = DateTime::parse_from_rfc3339(body["next"][0].as_str().unwrap()).unwrap();
        let second = DateTime::parse_from_rfc3339(body["next"][1].as_str().unwrap()).unwrap();
        assert_eq!(second - first, TimeDelta::minutes(90));
    }
}

#[actix_web::test]
async fn preview_refuses_what_schedule_creation_refuses_with_the_same_message() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        json_body(
            app.register(&sample_proc("say-hello"), &app.admin).await,
            201,
        )
        .await;
        let create = |time: &str, zone: &str| {
            app.request(Method::POST, "/jobs/schedule", Some(&app.admin))
                .json(&json!({
                    "name": "say-hello", "args": {"NAME": "x"}, "time": time, "time_zone": zone,
                    "notification_emails": "", "tags": "t", "group_name": "g"
                }))
                .send()
        };
        let cases = [
            (
                "61 * * * * *",
                "UTC",
                "invalid cron expression",
                "seconds out of range",
            ),
            ("* * *", "UTC", "invalid cron expression", "too few fields"),
            (
                "@often",
                "UTC",
                "invalid cron expression",
                "an unknown descriptor",
            ),
            ("", "UTC", "invalid cron expression", "no time at all"),
            (
                "0 9 * * 1-5",
                "Mars/Olympus",
                "not an IANA time zone",
                "an unknown zone",
            ),
        ];
        for (time, zone, expected, why) in cases {
            let message = error_message(
                preview(&app, &[("time", time), ("time_zone", zone)]).await,
                400,
            )
            .await;
            assert!(message.contains(expected), "{backend:?}: {why}: {message}");
            let created = error_message(create(time, zone).await.unwrap(), 400).await;
            assert_eq!(message, created, "{backend:?}: {why}: as creation says");
        }
        for count in ["0", "51", "-1"] {
            let message = error_message(
                preview(&app, &[("time", "@daily"), ("count", count)]).await,
                400,
            )
            .await;
            assert!(
                message.contains("count must be between 1 and 50"),
                "{count}: {message}"
            );
        }
        let anonymous = app
            .request(Method::GET, "/api/v1/schedules/preview?time=@daily", None)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 401);
    }
}

#[actix_web::test]
async fn both_routes_are_in_the_openapi_document() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    let doc = json_body(
        app.request(Method::GET, "/openapi.json", None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    for path in ["/api/v1/stats", "/api/v1/schedules/preview"] {
        let get = &doc["paths"][path]["get"];
        assert!(get.is_object(), "{path} is documented");
        assert_eq!(
            get["security"],
            json!([{"email": [], "token": []}]),
            "{path}"
        );
    }
}
