//! Runs of a schedule asked for by hand: `POST /jobs/schedule/{id}/run` and
//! `POST /jobs/schedule/{id}/backfill`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Timelike as _, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Caller, TestApp, backends, error_message, json_body, register_script, spawn_app,
};

const WAIT: Duration = Duration::from_secs(20);

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The start of the hour two hours ago, and a schedule firing each minute of that hour
/// only: its fires there are long past, and the Ticker's next one is a day away.
fn past_hour() -> (DateTime<Utc>, String) {
    let start = (Utc::now() - TimeDelta::hours(2))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    (start, format!("0 * {} * * *", start.hour()))
}

impl TestApp {
    /// A schedule of proc `proc` (args `NAME=cron`) created by `who`; its id.
    async fn scheduled(&self, proc: &str, time: &str, who: &Caller) -> String {
        let body = json!({
            "name": proc,
            "args": {"NAME": "cron"},
            "time": time,
            "notification_emails": "",
            "tags": "backfill",
            "group_name": "ops",
        });
        let response = self
            .request(Method::POST, "/jobs/schedule", Some(who))
            .json(&body)
            .send()
            .await
            .unwrap();
        json_body(response, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn backfill(
        &self,
        id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        who: &Caller,
    ) -> reqwest::Response {
        backfill_on(
            self,
            &self.address,
            id,
            json!({"from": at(from), "to": at(to)}),
            who,
        )
        .await
    }

    async fn run_schedule(&self, id: &str, who: &Caller) -> reqwest::Response {
        self.request(Method::POST, &format!("/jobs/schedule/{id}/run"), Some(who))
            .send()
            .await
            .unwrap()
    }

    /// The schedule's executions and fires.
    async fn history(&self, id: &str) -> Value {
        let response = self
            .request(
                Method::GET,
                &format!("/jobs/schedule/{id}/executions"),
                Some(&self.admin),
            )
            .send()
            .await
            .unwrap();
        json_body(response, 200).await
    }
}

/// `POST /jobs/schedule/{id}/backfill` with `body` on the proctord at `address`.
async fn backfill_on(
    app: &TestApp,
    address: &str,
    id: &str,
    body: Value,
    who: &Caller,
) -> reqwest::Response {
    app.client
        .post(format!("{address}/jobs/schedule/{id}/backfill"))
        .header("Email-Id", &who.email)
        .header("Access-Token", &who.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn disable(app: &TestApp, id: &str) {
    let response = app
        .request(
            Method::POST,
            &format!("/jobs/schedule/{id}/disable"),
            Some(&app.member),
        )
        .send()
        .await
        .unwrap();
    json_body(response, 200).await;
}

/// The fire times a backfill report lists under `key`.
fn times(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        .iter()
        .map(|f| f["fire_at"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks the schedule's record after backfills of `expected` fires: each fire ran
/// exactly once, as its own execution, and no other run of the schedule exists.
async fn each_fire_ran_once(app: &TestApp, id: &str, expected: &[String], what: &str) {
    let history = app.history(id).await;
    let fires: BTreeMap<String, (Value, Value)> = history["fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let when = DateTime::parse_from_rfc3339(f["fire_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc);
            (at(when), (f["outcome"].clone(), f["execution_id"].clone()))
        })
        .collect();
    let fired: Vec<&String> = fires.keys().collect();
    let expected_refs: Vec<&String> = expected.iter().collect();
    assert_eq!(fired, expected_refs, "{what}: the fires recorded");
    let executions: BTreeSet<&str> = fires
        .values()
        .map(|(outcome, execution)| {
            assert_eq!(outcome, "backfilled", "{what}: {history}");
            execution.as_str().expect("a backfilled fire names its run")
        })
        .collect();
    assert_eq!(executions.len(), expected.len(), "{what}: one run per fire");
    let runs = history["executions"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        expected.len(),
        "{what}: no extra run: {history}"
    );
    for run in runs {
        assert_eq!(
            run["user_email"], "member@example.com",
            "{what}: the creator's run"
        );
        assert_eq!(run["args"], json!({"NAME": "cron"}), "{what}");
    }
}

#[actix_web::test]
async fn a_backfill_runs_only_the_missing_fires_once_even_when_called_twice_at_once() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "report",
            "echo report for $NAME",
            &["NAME"],
            json!({}),
        )
        .await;
        let (start, time) = past_hour();
        let id = app.scheduled("report", &time, &app.member).await;
        let minute = |m: i64| start + TimeDelta::minutes(m);
        let all: Vec<String> = (0..10).map(|m| at(minute(m))).collect();

        // Some fires have run already: minutes 2, 3 and 4.
        let first = json_body(
            app.backfill(&id, minute(2), minute(5), &app.member).await,
            200,
        )
        .await;
        assert_eq!(first["fires"], 3, "{backend:?}: {first}");
        assert_eq!(
            times(&first, "started"),
            &all[2..5],
            "{backend:?}: in fire order"
        );
        assert!(times(&first, "skipped").is_empty(), "{backend:?}: {first}");

        // The whole range, twice at the same time.
        let (one, two) = tokio::join!(
            app.backfill(&id, minute(0), minute(10), &app.member),
            app.backfill(&id, minute(0), minute(10), &app.admin),
        );
        let (one, two) = (json_body(one, 200).await, json_body(two, 200).await);
        let mut started: Vec<String> = times(&one, "started");
        started.extend(times(&two, "started"));
        started.sort();
        let missing: Vec<String> = all
            .iter()
            .filter(|t| !all[2..5].contains(t))
            .cloned()
            .collect();
        assert_eq!(
            started, missing,
            "{backend:?}: the missing fires ran, each by one of the two calls: {one} {two}"
        );
        for report in [&one, &two] {
            assert_eq!(report["fires"], 10, "{backend:?}");
            assert_eq!(
                times(report, "started").len() + times(report, "skipped").len(),
                10,
                "{backend:?}: every fire started or skipped: {report}"
            );
            assert!(times(report, "failed").is_empty(), "{backend:?}: {report}");
            assert!(
                report["skipped"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["reason"] == "already ran"),
                "{backend:?}: {report}"
            );
        }
        each_fire_ran_once(&app, &id, &all, &format!("{backend:?}")).await;

        // Once more: nothing left to run.
        let again = json_body(
            app.backfill(&id, minute(0), minute(10), &app.member).await,
            200,
        )
        .await;
        assert!(times(&again, "started").is_empty(), "{backend:?}: {again}");
        assert_eq!(times(&again, "skipped"), all, "{backend:?}");

        let some = one["started"][0]["execution"]
            .as_str()
            .or(two["started"][0]["execution"].as_str())
            .unwrap()
            .to_owned();
        app.wait_for_status(&some, "SUCCEEDED", WAIT).await;
        assert_eq!(app.stored_logs(&some).await, ["report for cron"]);
    }
}

#[actix_web::test]
async fn two_replicas_backfilling_the_same_range_at_once_run_each_fire_once() {
    if !backends().contains(&Backend::Production) {
        return;
    }
    let app = spawn_app(Backend::Production).await;
    // A second proctord on the same PostgreSQL and Redis.
    let peer = proctor::app::Application::build(app.settings.clone())
        .await
        .unwrap();
    let peer_address = format!("http://127.0.0.1:{}", peer.port());
    actix_web::rt::spawn(peer.run_until_stopped());

    register_script(
        &app,
        "report",
        "echo report for $NAME",
        &["NAME"],
        json!({}),
    )
    .await;
    let (start, time) = past_hour();
    let id = app.scheduled("report", &time, &app.member).await;
    let all: Vec<String> = (0..30).map(|m| at(start + TimeDelta::minutes(m))).collect();
    let body = json!({"from": at(start), "to": at(start + TimeDelta::minutes(30))});
    let (here, there) = tokio::join!(
        backfill_on(&app, &app.address, &id, body.clone(), &app.member),
        backfill_on(&app, &peer_address, &id, body, &app.member),
    );
    let (here, there) = (json_body(here, 200).await, json_body(there, 200).await);
    let mut started = times(&here, "started");
    started.extend(times(&there, "started"));
    started.sort();
    assert_eq!(
        started, all,
        "each fire started by one replica: {here} {there}"
    );
    each_fire_ran_once(&app, &id, &all, "two replicas").await;
}

#[actix_web::test]
async fn a_backfill_refuses_bad_ranges_and_callers_with_clear_messages() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "report",
        "echo report for $NAME",
        &["NAME"],
        json!({"authorized_groups": ["ops"]}),
    )
    .await;
    let id = app.scheduled("report", "* * * * * *", &app.member).await;
    disable(&app, &id).await;
    let (start, _) = past_hour();
    let cases: Vec<(DateTime<Utc>, DateTime<Utc>, &str, &str)> = vec![
        (start, start, "must be before to", "an empty range"),
        (
            start + TimeDelta::minutes(1),
            start,
            "must be before to",
            "a reversed range",
        ),
        (
            Utc::now() + TimeDelta::hours(1),
            Utc::now() + TimeDelta::hours(2),
            "is in the future",
            "a future range",
        ),
        (
            start,
            start + TimeDelta::hours(1),
            "the range holds 3600 fires; a backfill runs at most 1000",
            "too many fires",
        ),
    ];
    // Well-formed ranges the document cannot rule out: 422.
    for (from, to, expected, what) in cases {
        let message = error_message(app.backfill(&id, from, to, &app.member).await, 422).await;
        assert!(message.contains(expected), "{what}: {message}");
    }
    let message = error_message(
        backfill_on(
            &app,
            &app.address,
            &id,
            json!({"from": at(start)}),
            &app.member,
        )
        .await,
        400,
    )
    .await;
    assert!(message.contains("to"), "a missing end: {message}");
    let message = error_message(
        backfill_on(
            &app,
            &app.address,
            &id,
            json!({"from": "yesterday", "to": at(start)}),
            &app.member,
        )
        .await,
        400,
    )
    .await;
    assert!(message.contains("from"), "not a time: {message}");
    let unknown = uuid::Uuid::new_v4().to_string();
    error_message(
        app.backfill(&unknown, start, start + TimeDelta::minutes(1), &app.member)
            .await,
        404,
    )
    .await;
    error_message(
        app.backfill(&id, start, start + TimeDelta::minutes(1), &app.outsider)
            .await,
        403,
    )
    .await;
    let history = app.history(&id).await;
    assert!(
        history["fires"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["outcome"] != "backfilled"),
        "nothing backfilled: {history}"
    );

    // A range reaching into the future stops at now; a disabled schedule may be backfilled.
    register_script(
        &app,
        "hourly",
        "echo hourly for $NAME",
        &["NAME"],
        json!({}),
    )
    .await;
    let hourly = app.scheduled("hourly", "0 0 * * * *", &app.member).await;
    disable(&app, &hourly).await;
    let now = Utc::now();
    let report = json_body(
        app.backfill(
            &hourly,
            now - TimeDelta::minutes(120),
            now + TimeDelta::hours(5),
            &app.member,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(report["fires"], 2, "{report}");
    assert_eq!(times(&report, "started").len(), 2, "{report}");
    let to = DateTime::parse_from_rfc3339(report["to"].as_str().unwrap()).unwrap();
    assert!(to <= Utc::now(), "to clamped to now: {report}");
    let actions: Vec<Value> = json_body(
        app.request(
            Method::GET,
            "/api/v1/audit?action=schedule.backfilled",
            Some(&app.admin),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["details"]["started"], 2, "{actions:?}");
}

#[actix_web::test]
async fn run_now_starts_one_run_with_the_schedules_args_as_the_caller() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "report",
            "echo report for $NAME",
            &["NAME"],
            json!({"authorized_groups": ["ops"]}),
        )
        .await;
        let id = app.scheduled("report", "0 0 3 1 1 *", &app.member).await;
        let run = json_body(app.run_schedule(&id, &app.admin).await, 201).await;
        let name = run["name"].as_str().unwrap().to_owned();
        assert_eq!(run["schedule_id"], id.as_str(), "{backend:?}: {run}");
        assert_eq!(
            run["user_email"], "admin@example.com",
            "{backend:?}: the caller's run"
        );
        assert_eq!(run["args"], json!({"NAME": "cron"}), "{backend:?}");
        app.wait_for_status(&name, "SUCCEEDED", WAIT).await;
        assert_eq!(app.stored_logs(&name).await, ["report for cron"]);

        let history = app.history(&id).await;
        let runs = history["executions"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{backend:?}: {history}");
        assert_eq!(runs[0]["name"], name.as_str());
        assert!(
            history["fires"].as_array().unwrap().is_empty(),
            "{backend:?}: a run now is no fire: {history}"
        );

        // A disabled schedule runs too; someone who may not see it may not.
        disable(&app, &id).await;
        json_body(app.run_schedule(&id, &app.member).await, 201).await;
        error_message(app.run_schedule(&id, &app.outsider).await, 403).await;
        error_message(
            app.run_schedule(&uuid::Uuid::new_v4().to_string(), &app.admin)
                .await,
            404,
        )
        .await;
        assert_eq!(
            app.history(&id).await["executions"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let audit = json_body(
            app.request(
                Method::GET,
                "/api/v1/audit?action=schedule.run",
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap(),
            200,
        )
        .await;
        assert_eq!(
            audit["events"].as_array().unwrap().len(),
            2,
            "{backend:?}: {audit}"
        );
    }
}

#[actix_web::test]
async fn a_backfill_of_the_limit_runs_all_its_fires_even_when_the_client_hangs_up() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "quick", "true", &["NAME"], json!({})).await;
    let id = app.scheduled("quick", "* * * * * *", &app.member).await;
    disable(&app, &id).await;
    let (start, _) = past_hour();
    let body = json!({"from": at(start), "to": at(start + TimeDelta::seconds(1000))});
    let hung_up = app
        .request(
            Method::POST,
            &format!("/jobs/schedule/{id}/backfill"),
            Some(&app.member),
        )
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        hung_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client gave up first: {hung_up:?}"
    );
    let from = start.naive_utc();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let fires = app.stores.schedules.fires(&id).await.unwrap();
        let backfilled: Vec<_> = fires
            .iter()
            .filter(|f| f.fire_at >= from && f.fire_at < from + TimeDelta::seconds(1000))
            .collect();
        let started = backfilled
            .iter()
            .filter(|f| f.outcome == "backfilled" && f.execution_id.is_some())
            .count();
        if started == 1000 {
            assert_eq!(backfilled.len(), 1000);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{started} of the 1000 fires started, {} claimed",
            backfilled.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = json_body(
        app.backfill(&id, start, start + TimeDelta::seconds(1000), &app.member)
            .await,
        200,
    )
    .await;
    assert_eq!(again["fires"], 1000, "the limit is allowed");
    assert_eq!(times(&again, "skipped").len(), 1000, "each ran once");
}
