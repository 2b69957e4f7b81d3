use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TestApp, backends, error_message, json_body, register_script, spawn_app,
    spawn_app_with, temp_dir,
};

const WAIT: Duration = Duration::from_secs(20);

fn schedule(proc: &str, time: &str) -> Value {
    json!({
        "name": proc,
        "args": {"NAME": "cron"},
        "time": time,
        "notification_emails": "ops@example.com, oncall@example.com",
        "tags": "nightly,report",
        "group_name": "ops",
    })
}

impl TestApp {
    async fn create_schedule(
        &self,
        body: &Value,
        who: &crate::helpers::Caller,
    ) -> reqwest::Response {
        self.request(Method::POST, "/jobs/schedule", Some(who))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `method /jobs/schedule{path}` as the admin.
    pub(crate) async fn schedule_call(&self, method: Method, path: &str) -> reqwest::Response {
        self.request(method, &format!("/jobs/schedule{path}"), Some(&self.admin))
            .send()
            .await
            .unwrap()
    }

    /// Executions started by the schedule, newest first.
    async fn schedule_runs(&self, id: &str) -> Vec<Value> {
        let body = json_body(
            self.schedule_call(Method::GET, &format!("/{id}/executions"))
                .await,
            200,
        )
        .await;
        body["executions"].as_array().unwrap().clone()
    }
}

#[actix_web::test]
async fn a_schedule_is_created_listed_described_disabled_and_deleted() {
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
        assert_eq!(
            app.schedule_call(Method::GET, "").await.status().as_u16(),
            204,
            "{backend:?}: none yet"
        );

        let created = json_body(
            app.create_schedule(&schedule("report", "0 0 3 * * *"), &app.admin)
                .await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["name"], "report");
        assert_eq!(created["args"], json!({"NAME": "cron"}));
        assert_eq!(created["time"], "0 0 3 * * *");
        assert_eq!(
            created["notification_emails"],
            "ops@example.com,oncall@example.com"
        );
        assert_eq!(created["tags"], "nightly,report");
        assert_eq!(created["group_name"], "ops");
        assert_eq!(created["time_zone"], "UTC");
        assert_eq!(created["enabled"], true);
        assert_eq!(created["concurrency_policy"], "Allow");
        assert_eq!(created["user_email"], "admin@example.com");
        assert!(
            created["next_fire_at"]
                .as_str()
                .unwrap()
                .ends_with("T03:00:00Z"),
            "{created}"
        );

        let listed = json_body(app.schedule_call(Method::GET, "").await, 200).await;
        assert_eq!(listed.as_array().unwrap().len(), 1, "{backend:?}");
        let described =
            json_body(app.schedule_call(Method::GET, &format!("/{id}")).await, 200).await;
        assert_eq!(described["id"], id.as_str());

        let disabled = json_body(
            app.schedule_call(Method::POST, &format!("/{id}/disable"))
                .await,
            200,
        )
        .await;
        assert_eq!(disabled["enabled"], false);
        assert_eq!(disabled["next_fire_at"], Value::Null);
        let enabled = json_body(
            app.schedule_call(Method::POST, &format!("/{id}/enable"))
                .await,
            200,
        )
        .await;
        assert_eq!(enabled["enabled"], true);

        let removed = json_body(
            app.schedule_call(Method::DELETE, &format!("/{id}")).await,
            200,
        )
        .await;
        assert_eq!(removed["id"], id.as_str());
        error_message(app.schedule_call(Method::GET, &format!("/{id}")).await, 404).await;
        assert_eq!(
            app.schedule_call(Method::GET, "").await.status().as_u16(),
            204
        );
    }
}

#[actix_web::test]
async fn bad_schedules_get_the_originals_status_codes_with_clear_messages() {
    let with = |field: &str, value: Value| {
        let mut body = schedule("report", "0 0 3 * * *");
        body[field] = value;
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with("time", json!("not cron")),
            400,
            "invalid cron expression",
        ),
        (
            with("time", json!("99 * * * * *")),
            400,
            "invalid cron expression",
        ),
        (
            with("notification_emails", json!("ops@example.com, nope")),
            400,
            "notification_emails: \"nope\" is not a valid e-mail address",
        ),
        (with("tags", json!("")), 400, "tags are required"),
        (
            with("group_name", json!(" ")),
            400,
            "group_name is required",
        ),
        (
            with("time_zone", json!("Mars/Base")),
            400,
            "not an IANA time zone",
        ),
        (
            with("concurrency_policy", json!("Sometimes")),
            400,
            "concurrency_policy must be Allow, Forbid or Replace",
        ),
        (
            with("args", json!({"COLOR": "red"})),
            422,
            "unknown args: COLOR; missing args: NAME",
        ),
        (with("name", json!("ghost")), 404, "no proc named ghost"),
        (json!({"time": "* * * * * *"}), 400, "missing field `name`"),
        (
            json!({"name": 5}),
            400,
            "invalid type: integer `5`, expected a string",
        ),
    ];
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "report", "true", &["NAME"], json!({})).await;
        for (body, status, expected) in &cases {
            let message = error_message(app.create_schedule(body, &app.admin).await, *status).await;
            assert!(message.contains(expected), "{backend:?} {body}: {message}");
        }
        json_body(
            app.create_schedule(&schedule("report", "0 0 3 * * *"), &app.admin)
                .await,
            201,
        )
        .await;
        let message = error_message(
            app.create_schedule(&schedule("report", "0 0 4 * * *"), &app.admin)
                .await,
            409,
        )
        .await;
        assert_eq!(
            message, "a schedule of proc report with these args already exists",
            "{backend:?}"
        );
        let message = error_message(app.schedule_call(Method::GET, "/not-an-id").await, 400).await;
        assert_eq!(message, "\"not-an-id\" is not a schedule id");
        let unknown = uuid::Uuid::new_v4();
        error_message(
            app.schedule_call(Method::GET, &format!("/{unknown}")).await,
            404,
        )
        .await;
        error_message(
            app.schedule_call(Method::DELETE, &format!("/{unknown}"))
                .await,
            404,
        )
        .await;
    }
}

#[actix_web::test]
async fn schedules_follow_the_procs_access_rules() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "ops-report",
        "true",
        &["NAME"],
        json!({"authorized_groups": ["ops"]}),
    )
    .await;
    let message = error_message(
        app.create_schedule(&schedule("ops-report", "@daily"), &app.outsider)
            .await,
        403,
    )
    .await;
    assert!(message.contains("may not use proc ops-report"), "{message}");
    let created = json_body(
        app.create_schedule(&schedule("ops-report", "@daily"), &app.member)
            .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let response = app
        .request(
            Method::GET,
            &format!("/jobs/schedule/{id}"),
            Some(&app.outsider),
        )
        .send()
        .await
        .unwrap();
    error_message(response, 403).await;
    let response = app
        .request(Method::GET, "/jobs/schedule", Some(&app.outsider))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204, "hidden from outsiders");
}

#[actix_web::test]
async fn a_schedule_fires_every_second_as_its_creator_until_deleted() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "ticker", "echo tick for $NAME", &["NAME"], json!({})).await;
        let created = json_body(
            app.create_schedule(&schedule("ticker", "* * * * * *"), &app.member)
                .await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        json_body(
            app.schedule_call(Method::POST, &format!("/{id}/disable"))
                .await,
            200,
        )
        .await;
        let runs = app.execution_list("?proc=ticker").await;
        assert!(
            (3..=5).contains(&runs.len()),
            "{backend:?}: about one run a second: {}",
            runs.len()
        );
        for run in &runs {
            assert_eq!(run["user_email"], "member@example.com", "{backend:?}");
            assert_eq!(run["schedule_id"], id.as_str());
            assert_eq!(run["args"], json!({"NAME": "cron"}));
        }
        let name = runs[0]["name"].as_str().unwrap();
        app.wait_for_status(name, "SUCCEEDED", WAIT).await;
        assert_eq!(app.stored_logs(name).await, ["tick for cron"]);
        json_body(
            app.schedule_call(Method::DELETE, &format!("/{id}")).await,
            200,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            app.execution_list("?proc=ticker").await.len(),
            runs.len(),
            "{backend:?}: no fire after disable and delete"
        );
    }
}

#[actix_web::test]
async fn forbid_skips_a_fire_while_the_previous_run_goes_on() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "slowpoke", "sleep 30", &["NAME"], json!({})).await;
    let mut body = schedule("slowpoke", "* * * * * *");
    body["concurrency_policy"] = json!("Forbid");
    let created = json_body(app.create_schedule(&body, &app.admin).await, 201).await;
    let id = created["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    json_body(
        app.schedule_call(Method::POST, &format!("/{id}/disable"))
            .await,
        200,
    )
    .await;
    let history = json_body(
        app.schedule_call(Method::GET, &format!("/{id}/executions"))
            .await,
        200,
    )
    .await;
    assert_eq!(
        history["executions"].as_array().unwrap().len(),
        1,
        "{history}"
    );
    let fires = history["fires"].as_array().unwrap();
    let skipped = fires
        .iter()
        .filter(|f| f["outcome"] == "skipped: the previous run is still going")
        .count();
    assert!(skipped >= 2, "{history}");
    let name = history["executions"][0]["name"].as_str().unwrap();
    json_body(app.cancel(name, &app.admin).await, 200).await;
}

#[actix_web::test]
async fn a_missed_fire_runs_once_on_restart_within_the_grace_period_only() {
    use chrono::{Datelike as _, Timelike as _};
    let app = spawn_app_with(Backend::Embedded, &[("scheduler", "off")]).await;
    register_script(&app, "catch-up", "echo caught up", &["NAME"], json!({})).await;
    let at = |ago: i64| {
        let t = chrono::Utc::now() - chrono::TimeDelta::seconds(ago);
        format!(
            "{} {} {} {} {} *",
            t.second(),
            t.minute(),
            t.hour(),
            t.day(),
            t.month()
        )
    };
    // Both were due while no Ticker ran: one 5 s ago, one two hours ago.
    let recent = json_body(
        app.create_schedule(&schedule("catch-up", &at(5)), &app.admin)
            .await,
        201,
    )
    .await;
    let mut old_body = schedule("catch-up", &at(7200));
    old_body["args"] = json!({"NAME": "old"});
    let old = json_body(app.create_schedule(&old_body, &app.admin).await, 201).await;
    // They were created before those due times.
    let path = app.data_dir.join("proctor.db");
    let mut conn =
        <diesel::SqliteConnection as diesel::Connection>::establish(path.to_str().unwrap())
            .unwrap();
    let earlier = (chrono::Utc::now() - chrono::TimeDelta::hours(3)).naive_utc();
    diesel::RunQueryDsl::execute(
        diesel::update(proctor::store::schema::schedules::table)
            .set(proctor::store::schema::schedules::created_at.eq(earlier)),
        &mut conn,
    )
    .unwrap();

    let mut settings = app.settings.clone();
    settings.scheduler = true;
    settings.schedule_misfire_grace = Duration::from_secs(60);
    let restarted = proctor::app::Application::build(settings.clone())
        .await
        .unwrap();
    actix_web::rt::spawn(restarted.run_until_stopped());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // And once more: a second restart does not fire it again.
    let again = proctor::app::Application::build(settings).await.unwrap();
    actix_web::rt::spawn(again.run_until_stopped());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let recent_runs = app.schedule_runs(recent["id"].as_str().unwrap()).await;
    assert_eq!(
        recent_runs.len(),
        1,
        "the recent miss runs once: {recent_runs:?}"
    );
    let old_runs = app.schedule_runs(old["id"].as_str().unwrap()).await;
    assert!(
        old_runs.is_empty(),
        "the old miss is beyond the grace: {old_runs:?}"
    );
}

use diesel::ExpressionMethods as _;

impl TestApp {
    async fn execution_list(&self, query: &str) -> Vec<Value> {
        let response = self
            .request(
                Method::GET,
                &format!("/api/v1/executions{query}"),
                Some(&self.admin),
            )
            .send()
            .await
            .unwrap();
        json_body(response, 200).await["executions"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A real SMTP server (Python aiosmtpd) on a free loopback port.
struct SmtpSink {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl SmtpSink {
    /// `None` (skip) when aiosmtpd is not installed here; with CI=true that fails.
    fn start(refusals: u32) -> Option<Self> {
        let available = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires python3 with aiosmtpd (.ci/run installs it)"
            );
            eprintln!("SKIPPING a mail test: python3 -m pip install aiosmtpd to run it");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = temp_dir("smtp").join("mail.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .args([
                script,
                &port.to_string(),
                out.to_str().unwrap(),
                &refusals.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        Some(Self { child, port, out })
    }

    async fn mails(&self, at_least: usize) -> Vec<Value> {
        for _ in 0..200 {
            let mails: Vec<Value> = std::fs::read_to_string(&self.out)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if mails.len() >= at_least {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {at_least} mails arrived");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one scheduled execution of `script` (firing once, then disabled); returns its name.
async fn one_scheduled_run(app: &TestApp, script: &str) -> String {
    register_script(app, "nightly", script, &["NAME"], json!({})).await;
    let created = json_body(
        app.create_schedule(&schedule("nightly", "* * * * * *"), &app.admin)
            .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let runs = app.schedule_runs(&id).await;
        if let Some(run) = runs.last() {
            json_body(
                app.schedule_call(Method::POST, &format!("/{id}/disable"))
                    .await,
                200,
            )
            .await;
            let name = run["name"].as_str().unwrap().to_owned();
            app.wait_until_final(&name, WAIT).await;
            return name;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_scheduled_run_mails_its_result_even_after_two_refusals() {
    let Some(smtp) = SmtpSink::start(2) else {
        return;
    };
    let port = smtp.port.to_string();
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("mail_server_host", "127.0.0.1"),
            ("mail_server_port", &port),
            ("mail_from", "proctor@example.com"),
        ],
    )
    .await;
    let name = one_scheduled_run(&app, "echo first line; echo the last line; exit 2").await;
    let mails = smtp.mails(1).await;
    let mail = mails
        .iter()
        .find(|m| m["data"].as_str().unwrap().contains(&name))
        .expect("a mail about the run");
    assert_eq!(mail["from"], "proctor@example.com");
    assert_eq!(mail["to"], json!(["ops@example.com", "oncall@example.com"]));
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: [Proctor] nightly FAILED"), "{data}");
    for expected in [
        format!("Execution: {name}"),
        "Args:      NAME=cron".into(),
        "Result:    exited with code 2".into(),
        "the last line".into(),
    ] {
        assert!(data.contains(&expected), "{expected:?} missing from {data}");
    }
}

#[actix_web::test]
async fn a_dead_mail_server_stalls_nothing() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("mail_server_host", "127.0.0.1"),
            ("mail_server_port", &dead),
        ],
    )
    .await;
    register_script(&app, "busy", "true", &["NAME"], json!({})).await;
    let created = json_body(
        app.create_schedule(&schedule("busy", "* * * * * *"), &app.admin)
            .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let started = std::time::Instant::now();
    let name = app.run("busy", json!({"NAME": "now"})).await;
    app.wait_for_status(&name, "SUCCEEDED", WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an ad-hoc run is not held up"
    );
    json_body(
        app.schedule_call(Method::POST, &format!("/{id}/disable"))
            .await,
        200,
    )
    .await;
    let runs = app.schedule_runs(&id).await;
    assert!(runs.len() >= 3, "the schedule kept firing: {}", runs.len());
    assert!(
        runs.iter().all(|r| r["status"] == "SUCCEEDED"
            || r["status"] == "RUNNING"
            || r["status"] == "CREATED"),
        "{runs:?}"
    );
}

/// A free loopback port.
fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

/// A proctord replica on the PostgreSQL database `url` (its subcommand to be added),
/// syncing its schedules every second, with `extra` settings.
fn proctord(url: &str, dir: &str, port: &str, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_proctord"));
    command
        .env("PROCTOR_DATABASE_URL", url)
        .env("PROCTOR_SECRETS_KEY", crate::helpers::TEST_SECRETS_KEY)
        .env("PROCTOR_DATA_DIR", dir)
        .env("PROCTOR_AUTH", "off")
        .env("PROCTOR_APP_PORT", port)
        .env("PROCTOR_SCHEDULE_SYNC_INTERVAL_SECONDS", "1")
        .env("PROCTOR_LOG_LEVEL", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Waits until proctord answers on `base`.
async fn answering(client: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if client.get(format!("{base}/ping")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proctord at {base} never answered");
}

/// A change made through one replica reaches another replica's Ticker by its sync
/// alone (the API replica runs no Ticker, so no reload message helps): a new schedule
/// starts firing there, a disabled one stops, an enabled one starts again.
#[test]
fn another_replicas_changes_reach_the_ticker_by_its_sync() {
    if !backends().contains(&Backend::Production) {
        return;
    }
    let (database, url) = crate::helpers::create_postgres_database();
    let data_dir = temp_dir("sync");
    let dir = data_dir.to_str().unwrap();
    assert!(
        proctord(&url, dir, "0", &[])
            .arg("migrate")
            .status()
            .unwrap()
            .success()
    );
    let (api_port, ticker_port) = (free_port(), free_port());
    let mut replicas = [
        proctord(&url, dir, &api_port, &[("PROCTOR_SCHEDULER", "off")])
            .arg("serve")
            .spawn()
            .unwrap(),
        proctord(&url, dir, &ticker_port, &[])
            .arg("serve")
            .spawn()
            .unwrap(),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = crate::helpers::http_client();
        let base = format!("http://127.0.0.1:{api_port}");
        answering(&client, &base).await;
        answering(&client, &format!("http://127.0.0.1:{ticker_port}")).await;
        let proc = json!({"name": "beat", "image_name": "alpine:3", "env_vars": {"args": [{"name": "NAME"}]}, "command": ["true"]});
        let response = client.post(format!("{base}/jobs/metadata")).json(&proc).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        // Held by the Ticker from the start: not part of what the sync must find.
        let response = client.post(format!("{base}/jobs/schedule")).json(&{
                let mut yearly = schedule("beat", "0 0 0 1 1 *");
                yearly["args"]["NAME"] = json!("yearly");
                yearly
            }).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let response = client.post(format!("{base}/jobs/schedule")).json(&schedule("beat", "* * * * * *")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let fires = async || {
            let response = client.get(format!("{base}/jobs/schedule/{id}/executions")).send().await.unwrap();
            let body: Value = response.json().await.unwrap();
            body["fires"].as_array().map_or(0, Vec::len)
        };
        // Fires within a few syncs of its creation.
        let firing_within = async |seconds: u64| {
            let before = fires().await;
            for _ in 0..seconds * 10 {
                if fires().await >= before + 2 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        // Fires no more once a couple of syncs have passed.
        let quiet = async || {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let settled = fires().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            fires().await == settled
        };
        assert!(firing_within(10).await, "a new schedule fires");
        let post = async |what: &str| {
            let r = client.post(format!("{base}/jobs/schedule/{id}/{what}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{what}");
        };
        post("disable").await;
        assert!(quiet().await, "a disabled schedule stops firing");
        post("enable").await;
        assert!(firing_within(10).await, "an enabled schedule fires again");
    });
    for replica in &mut replicas {
        let _ = replica.kill();
        let _ = replica.wait();
    }
    crate::helpers::drop_postgres_database(&database);
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[test]
fn two_proctord_processes_on_one_database_fire_each_second_exactly_once() {
    if !backends().contains(&Backend::Production) {
        return;
    }
    let (database, url) = crate::helpers::create_postgres_database();
    let data_dir = temp_dir("replicas");
    let dir = data_dir.to_str().unwrap();
    assert!(
        proctord(&url, dir, "0", &[])
            .arg("migrate")
            .status()
            .unwrap()
            .success()
    );
    let ports: Vec<String> = (0..2).map(|_| free_port()).collect();
    let mut replicas: Vec<Child> = ports
        .iter()
        .map(|port| proctord(&url, dir, port, &[]).arg("serve").spawn().unwrap())
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = runtime.block_on(async {
        let client = crate::helpers::http_client();
        let base = format!("http://127.0.0.1:{}", ports[0]);
        answering(&client, &base).await;
        let proc = json!({"name": "heartbeat", "image_name": "alpine:3", "env_vars": {"args": [{"name": "NAME"}]}, "command": ["true"]});
        let response = client.post(format!("{base}/jobs/metadata")).json(&proc).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let response = client.post(format!("{base}/jobs/schedule")).json(&schedule("heartbeat", "* * * * * *")).send().await.unwrap();
        let created: Value = response.json().await.unwrap();
        created["id"].as_str().unwrap().to_owned()
    });
    std::thread::sleep(Duration::from_secs(14));
    for replica in &mut replicas {
        let _ = replica.kill();
        let _ = replica.wait();
    }

    use diesel::prelude::*;
    let mut conn = diesel::PgConnection::establish(&url).unwrap();
    use proctor::store::schema::{executions, schedule_fires};
    let fires: Vec<(chrono::NaiveDateTime, Option<String>, String)> = schedule_fires::table
        .filter(schedule_fires::schedule_id.eq(&id))
        .order(schedule_fires::fire_at)
        .select((
            schedule_fires::fire_at,
            schedule_fires::execution_id,
            schedule_fires::outcome,
        ))
        .load(&mut conn)
        .unwrap();
    let runs: i64 = executions::table
        .filter(executions::schedule_id.eq(&id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert!(
        fires.len() >= 10,
        "at least ten seconds of fires: {}",
        fires.len()
    );
    for pair in fires.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            chrono::TimeDelta::seconds(1),
            "no second lost or doubled: {:?}",
            pair
        );
    }
    let dispatched: Vec<&String> = fires.iter().filter_map(|f| f.1.as_ref()).collect();
    let distinct: std::collections::BTreeSet<&String> = dispatched.iter().copied().collect();
    // The last fire may have been claimed just as the replicas were killed.
    assert!(dispatched.len() + 1 >= fires.len(), "{fires:?}");
    assert_eq!(
        distinct.len(),
        dispatched.len(),
        "each fire its own execution"
    );
    // One execution per fire, none extra; but the replicas may be killed after the last
    // fire's run was created and before its outcome was written, leaving that one run
    // without its fire's record.
    let unrecorded = runs as usize - dispatched.len().min(runs as usize);
    assert!(
        runs as usize >= dispatched.len() && unrecorded <= 1,
        "one execution per fire, none extra: {runs} runs, {} fires dispatched",
        dispatched.len()
    );
    if unrecorded == 1 {
        assert!(
            fires.last().is_some_and(|f| f.1.is_none()),
            "only the last fire may lack its run's record: {fires:?}"
        );
    }
    drop(conn);
    crate::helpers::drop_postgres_database(&database);
    std::fs::remove_dir_all(data_dir).unwrap();
}
