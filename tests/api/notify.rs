//! Notifications beyond mail: webhooks and Slack messages reach a real HTTP receiver on
//! loopback, signed, retried after a 5xx (not after another 4xx), recorded in the
//! delivery log, and their URLs never shown in full.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{
    Backend, TestApp, backends, captured_logs, error_message, json_body, register_script,
    spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "the-test-signing-key";
const PUBLIC_URL: &str = "https://proctor.example.com";

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    signature: Option<String>,
    delivery: Option<String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP receiver on 127.0.0.1 recording every request; it answers each status of
/// `answers` in turn, then 200.
struct Receiver {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answers: Arc<Mutex<Vec<u16>>> =
            Arc::new(Mutex::new(answers.iter().rev().copied().collect()));
        let seen = received.clone();
        let server = HttpServer::new(move || {
            let (seen, answers) = (seen.clone(), answers.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (seen, answers) = (seen.clone(), answers.clone());
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    seen.lock().unwrap().push(Received {
                        path: req.uri().to_string(),
                        signature: header("Proctor-Signature"),
                        delivery: header("Proctor-Delivery"),
                        body: body.to_vec(),
                    });
                    let code = answers.lock().unwrap().pop().unwrap_or(200);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                        .finish()
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Self {
            base: format!("http://127.0.0.1:{port}"),
            received,
        }
    }

    /// The requests to `path` once there are at least `n` (panics after `WAIT`).
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let got: Vec<Received> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.path == path)
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} got {} request(s), expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn count(&self, path: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

/// Checks `Proctor-Signature: t=<unix>,v1=<hex>` against the body with the test key.
fn verify(signature: &str, body: &[u8]) {
    let (t, v1) = signature
        .split_once(",v1=")
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1)))
        .unwrap_or_else(|| panic!("a signature of the form t=..,v1=..: {signature}"));
    let t: i64 = t.parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - t).abs() < 120,
        "a fresh timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature is the HMAC-SHA256 of `<t>.<body>` under the key");
}

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &[("webhook_signing_key", KEY), ("public_url", PUBLIC_URL)],
    )
    .await
}

impl TestApp {
    async fn deliveries(&self, name: &str) -> Vec<Value> {
        let response = self
            .request(
                Method::GET,
                &format!("/api/v1/executions/{name}/notifications"),
                Some(&self.admin),
            )
            .send()
            .await
            .unwrap();
        json_body(response, 200).await.as_array().unwrap().clone()
    }

    /// The delivery log once every delivery has settled (delivered or failed).
    async fn settled_deliveries(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let deliveries = self.deliveries(name).await;
            if deliveries.len() >= n && deliveries.iter().all(|d| d["status"] != "pending") {
                return deliveries;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries never settled: {deliveries:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn execute_with(&self, proc: &str, notify: Value) -> String {
        let response = self
            .execute(&json!({"name": proc, "notify": notify}), &self.admin)
            .await;
        json_body(response, 201).await["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[actix_web::test]
async fn a_webhook_is_signed_retried_after_a_500_and_a_429_delivered_and_logged() {
    for backend in backends() {
        let app = spawn(backend).await;
        let receiver = Receiver::start(&[500, 429]).await;
        register_script(&app, "notify-me", "echo done", &[], json!({})).await;
        let hook = format!("{}/hook?token=s3cret-in-the-url", receiver.base);
        let name = app
            .execute_with(
                "notify-me",
                json!([
                    {"kind": "webhook", "url": hook},
                    {"kind": "webhook", "url": format!("{}/failures", receiver.base), "on": "failure"},
                ]),
            )
            .await;
        app.wait_for_status(&name, "SUCCEEDED", WAIT).await;

        let got = receiver.wait_for("/hook?token=s3cret-in-the-url", 3).await;
        assert_eq!(got.len(), 3, "{backend:?}: a 500, a 429, then delivered");
        assert!(
            got.iter().all(|r| r.delivery == got[0].delivery),
            "a retry carries the same delivery id"
        );
        for request in &got {
            verify(request.signature.as_deref().expect("signed"), &request.body);
        }
        let body = got[2].json();
        assert_eq!(body["event"], "execution.finished");
        assert_eq!(body["name"], name);
        assert_eq!(body["proc_name"], "notify-me");
        assert_eq!(body["status"], "SUCCEEDED");
        assert_eq!(body["exit_code"], 0);
        assert_eq!(body["user_email"], "admin@example.com");
        assert_eq!(body["url"], format!("{PUBLIC_URL}/runs/{name}"));
        assert!(body["finished_at"].is_string(), "{body}");

        let deliveries = app.settled_deliveries(&name, 1).await;
        assert_eq!(deliveries.len(), 1, "on: failure is not told of a success");
        assert_eq!(receiver.count("/failures"), 0);
        let delivery = &deliveries[0];
        assert_eq!(delivery["kind"], "webhook");
        assert_eq!(delivery["status"], "delivered");
        assert_eq!(delivery["attempts"], 3);
        assert_eq!(delivery["last_status_code"], 200);
        assert!(delivery["delivered_at"].is_string());
        assert_eq!(delivery["target"], format!("{}/…", receiver.base));

        let execution = app.execution(&name).await;
        assert_eq!(
            execution["notify"],
            json!([
                {"kind": "webhook", "url": format!("{}/…", receiver.base), "on": "always"},
                {"kind": "webhook", "url": format!("{}/…", receiver.base), "on": "failure"},
            ]),
            "targets are shown masked"
        );
        assert!(
            !captured_logs().contains("s3cret-in-the-url"),
            "a webhook URL is never logged"
        );
    }
}

#[actix_web::test]
async fn a_4xx_answer_other_than_429_is_not_retried() {
    let app = spawn(Backend::Embedded).await;
    let receiver = Receiver::start(&[404, 404]).await;
    register_script(&app, "notify-me", "echo done", &[], json!({})).await;
    let name = app
        .execute_with(
            "notify-me",
            json!([{"kind": "webhook", "url": format!("{}/gone", receiver.base)}]),
        )
        .await;
    let deliveries = app.settled_deliveries(&name, 1).await;
    assert_eq!(deliveries[0]["status"], "failed");
    assert_eq!(deliveries[0]["attempts"], 1);
    assert_eq!(deliveries[0]["last_status_code"], 404);
    assert_eq!(receiver.count("/gone"), 1, "a 404 is final");
}

#[actix_web::test]
async fn a_dead_receiver_delays_no_other_delivery() {
    let app = spawn(Backend::Embedded).await;
    let receiver = Receiver::start(&[]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    register_script(&app, "notify-me", "echo done", &[], json!({})).await;
    let name = app
        .execute_with(
            "notify-me",
            json!([
                {"kind": "webhook", "url": format!("http://127.0.0.1:{dead}/dead?k=d3ad-secret")},
                {"kind": "webhook", "url": format!("{}/alive", receiver.base)},
            ]),
        )
        .await;
    let started = std::time::Instant::now();
    app.wait_for_status(&name, "SUCCEEDED", WAIT).await;
    receiver.wait_for("/alive", 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the live receiver was told at once: {:?}",
        started.elapsed()
    );
    // The dead one is still being retried, its progress in the log.
    let deadline = std::time::Instant::now() + WAIT;
    let dead_delivery = loop {
        let deliveries = app.deliveries(&name).await;
        if let Some(d) = deliveries
            .iter()
            .find(|d| d["status"] == "pending" && d["attempts"].as_i64() >= Some(1))
        {
            break d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{deliveries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = dead_delivery["last_error"].as_str().unwrap();
    assert!(error.starts_with("cannot connect"), "{error}");
    assert!(!error.contains("d3ad-secret"), "{error}");
    assert_eq!(
        dead_delivery["target"],
        format!("http://127.0.0.1:{dead}/…")
    );
    assert!(!captured_logs().contains("d3ad-secret"));
}

#[actix_web::test]
async fn a_slack_message_names_the_run_and_links_to_it() {
    let app = spawn(Backend::Embedded).await;
    let receiver = Receiver::start(&[]).await;
    register_script(&app, "nightly-report", "exit 3", &[], json!({})).await;
    let slack = format!("{}/services/T000/B000/XXXXSECRET", receiver.base);
    let name = app
        .execute_with(
            "nightly-report",
            json!([
                {"kind": "slack", "url": slack, "on": "failure"},
                {"kind": "webhook", "url": format!("{}/successes", receiver.base), "on": "success"},
            ]),
        )
        .await;
    app.wait_for_status(&name, "FAILED", WAIT).await;
    let got = receiver.wait_for("/services/T000/B000/XXXXSECRET", 1).await;
    let text = got[0].json()["text"].as_str().unwrap().to_owned();
    for expected in [
        "*nightly-report* FAILED".to_owned(),
        name.clone(),
        "admin@example.com".to_owned(),
        format!("<{PUBLIC_URL}/runs/{name}|Open the run>"),
    ] {
        assert!(text.contains(&expected), "{expected:?} missing from {text}");
    }
    verify(got[0].signature.as_deref().unwrap(), &got[0].body);
    let deliveries = app.settled_deliveries(&name, 1).await;
    assert_eq!(deliveries.len(), 1, "on: success is not told of a failure");
    assert_eq!(deliveries[0]["kind"], "slack");
    assert_eq!(receiver.count("/successes"), 0);
    assert!(
        !captured_logs().contains("XXXXSECRET"),
        "a Slack URL is never logged"
    );
}

#[actix_web::test]
async fn a_schedules_targets_are_told_of_its_runs() {
    let app = spawn(Backend::Embedded).await;
    let receiver = Receiver::start(&[]).await;
    register_script(&app, "ticktock", "echo tick", &[], json!({})).await;
    let hook = format!("{}/scheduled?key=sch3dule-secret", receiver.base);
    let response = app
        .request(Method::POST, "/jobs/schedule", Some(&app.admin))
        .json(&json!({
            "name": "ticktock",
            "time": "* * * * * *",
            "tags": "t",
            "group_name": "ops",
            "notify": [{"kind": "webhook", "url": hook, "on": "success"}],
        }))
        .send()
        .await
        .unwrap();
    let schedule = json_body(response, 201).await;
    assert_eq!(
        schedule["notify"],
        json!([{"kind": "webhook", "url": format!("{}/…", receiver.base), "on": "success"}]),
        "the stored target is shown masked"
    );
    let got = receiver.wait_for("/scheduled?key=sch3dule-secret", 1).await;
    let id = schedule["id"].as_str().unwrap();
    json_body(
        app.schedule_call(Method::POST, &format!("/{id}/disable"))
            .await,
        200,
    )
    .await;
    let body = got[0].json();
    assert_eq!(body["schedule_id"], id);
    assert_eq!(body["proc_name"], "ticktock");
    assert_eq!(body["status"], "SUCCEEDED");
    verify(got[0].signature.as_deref().unwrap(), &got[0].body);
    let listed = json_body(app.schedule_call(Method::GET, &format!("/{id}")).await, 200).await;
    assert!(!listed.to_string().contains("sch3dule-secret"), "{listed}");
    assert!(!captured_logs().contains("sch3dule-secret"));
}

#[actix_web::test]
async fn bad_notify_targets_are_refused_with_400s() {
    let app = spawn(Backend::Embedded).await;
    register_script(&app, "notify-me", "echo done", &[], json!({})).await;
    let long = format!("https://example.com/{}", "a".repeat(2100));
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"kind": "webhook", "url": "https://example.com/"}))
        .collect();
    let cases = [
        (
            json!([{"kind": "webhook", "url": "ftp://example.com/x"}]),
            "notify[0].url: ftp://example.com/… is not an http(s) URL",
            "a scheme other than http(s)",
        ),
        (
            json!([{"kind": "slack", "url": "https://hooks.slack.com/x"}, {"kind": "webhook", "url": "nope"}]),
            "notify[1].url",
            "not a URL",
        ),
        (
            json!([{"kind": "webhook", "url": long}]),
            "at most 2048 characters",
            "too long",
        ),
        (json!(eleven), "at most 10 targets", "too many"),
        (
            json!([{"kind": "email", "url": "https://example.com/"}]),
            "unknown variant `email`",
            "an unknown kind",
        ),
        (
            json!([{"kind": "webhook", "url": "https://example.com/", "on": "sometimes"}]),
            "unknown variant `sometimes`",
            "an unknown outcome",
        ),
        (
            json!([{"kind": "callback", "url": "https://example.com/"}]),
            "use callback_url",
            "callback is the callback_url's kind",
        ),
    ];
    for (notify, expected, why) in cases {
        let message = error_message(
            app.execute(&json!({"name": "notify-me", "notify": notify}), &app.admin)
                .await,
            400,
        )
        .await;
        assert!(message.contains(expected), "execute, {why}: {message}");
        let response = app
            .request(Method::POST, "/jobs/schedule", Some(&app.admin))
            .json(&json!({
                "name": "notify-me",
                "time": "0 0 * * * *",
                "tags": "t",
                "group_name": "ops",
                "notify": notify,
            }))
            .send()
            .await
            .unwrap();
        let message = error_message(response, 400).await;
        assert!(message.contains(expected), "schedule, {why}: {message}");
    }
}

#[actix_web::test]
async fn the_openapi_document_shows_the_notify_and_pod_fields() {
    let app = spawn(Backend::Embedded).await;
    let doc = json_body(
        app.request(Method::GET, "/openapi.json", None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("ExecuteRequest", "notify"),
        ("ScheduleRequest", "notify"),
        ("Schedule", "notify"),
        ("Execution", "notify"),
        ("NotifyTarget", "on"),
        ("Delivery", "last_status_code"),
        ("ProcMetadata", "pod"),
        ("PodOptions", "serviceAccountName"),
        ("PodOptions", "imagePullSecrets"),
        ("Toleration", "tolerationSeconds"),
    ] {
        assert!(
            schemas[schema]["properties"].get(field).is_some(),
            "{schema}.{field} is missing from /openapi.json: {}",
            schemas[schema]
        );
    }
    assert!(doc["paths"]["/api/v1/executions/{name}/notifications"]["get"].is_object());
}

#[actix_web::test]
async fn a_delivery_left_pending_by_a_dead_replica_is_taken_over() {
    for backend in backends() {
        let app = spawn_app_with(
            backend,
            &[
                ("webhook_signing_key", KEY),
                ("notification_takeover_seconds", "1"),
            ],
        )
        .await;
        let receiver = Receiver::start(&[]).await;
        // A run that ended on a replica which then died after two failed attempts.
        let name = proctor::model::ExecutionName::parse("left-behind-aaaaaaaaaaaa").unwrap();
        let hook = format!("{}/late?t=l4te-secret", receiver.base);
        let target: proctor::model::NotifyTarget =
            serde_json::from_value(json!({"kind": "webhook", "url": hook})).unwrap();
        let execution = app
            .stores
            .executions
            .insert(proctor::store::NewExecution {
                name: name.clone(),
                proc_name: "left".into(),
                image: "alpine:3".into(),
                args: Default::default(),
                executor: "local".into(),
                user_email: "admin@example.com".into(),
                schedule_id: None,
                callback_url: None,
                notify: vec![target],
            })
            .await
            .unwrap();
        for status in [
            proctor::model::Status::Running,
            proctor::model::Status::Succeeded,
        ] {
            app.stores
                .executions
                .transition(name.as_str(), status, Default::default())
                .await
                .unwrap()
                .expect("a forward step");
        }
        let id = app
            .stores
            .notifications
            .start(&execution.id, "webhook", "masked", 0)
            .await
            .unwrap();
        app.stores
            .notifications
            .record(
                id,
                proctor::store::Attempt {
                    attempts: 2,
                    status_code: Some(503),
                    error: Some("the receiver answered 503".into()),
                    status: "pending",
                },
            )
            .await
            .unwrap();

        let got = receiver.wait_for("/late?t=l4te-secret", 1).await;
        assert_eq!(got[0].delivery.as_deref(), Some(id.to_string().as_str()));
        verify(got[0].signature.as_deref().unwrap(), &got[0].body);
        assert_eq!(got[0].json()["name"], name.as_str());
        let deliveries = app.settled_deliveries(name.as_str(), 1).await;
        assert_eq!(deliveries[0]["status"], "delivered", "{backend:?}");
        assert_eq!(
            deliveries[0]["attempts"], 3,
            "counted on from the dead replica's"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(receiver.count("/late?t=l4te-secret"), 1, "taken over once");
    }
}
