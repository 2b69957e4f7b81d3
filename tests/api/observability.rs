//! What an operator sees: Prometheus metrics and Sentry events.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, TestApp, json_body, register_script, spawn_app, temp_dir};

/// Every sample of a Prometheus text page, checking each line's syntax on the way.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let kind = comment.trim_start();
            assert!(
                kind.starts_with("HELP ") || kind.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

pub(crate) async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let response = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    parse_prometheus(&response.text().await.unwrap())
}

pub(crate) fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[actix_web::test]
async fn metrics_parse_as_prometheus_text_and_move_with_the_work() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "measured",
        "echo one; sleep 1; echo two",
        &[],
        json!({}),
    )
    .await;
    let before = scrape(&app).await;

    let name = app.run("measured", json!({})).await;
    let socket = app.logs_socket(&name, &app.admin).await;
    let open = scrape(&app).await;
    // The gauge is process-wide (other tests open and close sessions meanwhile): it
    // counts the sessions open now, ours among them.
    assert!(
        value(&open, "proctor_websocket_subscribers") >= 1.0,
        "an open session counts"
    );
    socket.read_to_end(Duration::from_secs(20)).await;
    app.wait_until_final(&name, Duration::from_secs(20)).await;
    let schedule =
        json!({"name": "measured", "time": "* * * * * *", "tags": "t", "group_name": "g"});
    let created = app
        .request(Method::POST, "/jobs/schedule", Some(&app.admin))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    let id = json_body(created, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    app.request(
        Method::DELETE,
        &format!("/jobs/schedule/{id}"),
        Some(&app.admin),
    )
    .send()
    .await
    .unwrap();

    let after = scrape(&app).await;
    let grew = |series: &str, by: f64| {
        let (was, is) = (value(&before, series), value(&after, series));
        assert!(is >= was + by, "{series}: {was} -> {is}");
    };
    grew(r#"proctor_executions_started_total{proc="measured"}"#, 2.0);
    grew(
        r#"proctor_executions_finished_total{proc="measured",status="SUCCEEDED"}"#,
        1.0,
    );
    grew("proctor_log_lines_total", 2.0);
    grew(r#"proctor_schedule_fires_total{outcome="dispatched"}"#, 1.0);
    grew(
        r#"proctor_http_requests_total{method="POST",route="/jobs/execute",status="201"}"#,
        1.0,
    );
    grew(
        r#"proctor_http_requests_total{method="GET",route="/jobs/metadata/{name}",status="404"}"#,
        0.0,
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("proctor_execution_duration_seconds_bucket")),
        "a duration histogram"
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("proctor_dispatch_latency_seconds_count")),
        "a dispatch latency histogram"
    );
    assert!(after.contains_key(r#"proctor_db_pool_connections{state="idle"}"#));
}

#[actix_web::test]
async fn sentry_gets_executor_failures_with_tags_and_without_secrets() {
    const SECRET: &str = "sentry-must-never-see-this-value";
    // A stand-in for Sentry's ingest: records every envelope posted to it.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().default_service(web::to(move |body: web::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                HttpResponse::Ok().json(json!({}))
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let sentry_port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());

    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let (api_port, dead_kube) = (free_port(), free_port());
    let data_dir = temp_dir("sentry");
    let mut proctord = Command::new(env!("CARGO_BIN_EXE_proctord"))
        .envs([
            ("PROCTOR_APP_PORT", api_port.clone()),
            ("PROCTOR_DATA_DIR", data_dir.to_string_lossy().into_owned()),
            (
                "PROCTOR_SENTRY_DSN",
                format!("http://publickey@127.0.0.1:{sentry_port}/42"),
            ),
            ("PROCTOR_EXECUTOR", "kubernetes".into()),
            (
                "PROCTOR_KUBE_CLUSTER_HOST_NAME",
                format!("http://127.0.0.1:{dead_kube}"),
            ),
            ("PROCTOR_LOG_LEVEL", "error".into()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = crate::helpers::http_client();
    let base = format!("http://127.0.0.1:{api_port}");
    for _ in 0..100 {
        if client.get(format!("{base}/ping")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proc = json!({"name": "unlucky", "image_name": "example/unlucky:1", "env_vars": {"secrets": [{"name": "TOKEN"}]}});
    assert_eq!(
        client
            .post(format!("{base}/jobs/metadata"))
            .json(&proc)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let secrets = json!({"job_name": "unlucky", "secrets": {"TOKEN": SECRET}});
    assert_eq!(
        client
            .post(format!("{base}/jobs/secrets"))
            .json(&secrets)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let response = client
        .post(format!("{base}/jobs/execute"))
        .header("Access-Token", SECRET)
        .json(&json!({"name": "unlucky"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "CREATION_FAILED", "{body}");

    let mut events = Vec::new();
    for _ in 0..100 {
        events = received.lock().unwrap().clone();
        if events
            .iter()
            .any(|e| e.contains("the executor refused execution"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = proctord.kill();
    let _ = proctord.wait();
    let _ = std::fs::remove_dir_all(data_dir);
    let event = events
        .iter()
        .find(|e| e.contains("the executor refused execution"))
        .unwrap_or_else(|| panic!("no Sentry event arrived: {events:?}"));
    assert!(
        event.contains(r#""proc":"unlucky""#),
        "tagged with the proc: {event}"
    );
    assert!(
        event.contains(r#""execution":"unlucky-"#),
        "tagged with the execution: {event}"
    );
    assert!(
        event.contains(r#""user":"anonymous@localhost""#),
        "tagged with the user: {event}"
    );
    for sent in &events {
        assert!(!sent.contains(SECRET), "a secret reached Sentry: {sent}");
    }
}

/// Every route of the API, as `routes()` declares it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/ping"),
    ("get", "/health/ready"),
    ("get", "/version"),
    ("get", "/metrics"),
    ("post", "/jobs/metadata"),
    ("get", "/jobs/metadata"),
    ("get", "/jobs/metadata/{name}"),
    ("delete", "/jobs/metadata/{name}"),
    ("post", "/jobs/secrets"),
    ("get", "/jobs/secrets/{name}"),
    ("delete", "/jobs/secrets/{name}"),
    ("post", "/jobs/execute"),
    ("get", "/jobs/execute/{name}/status"),
    ("get", "/jobs/logs"),
    ("post", "/jobs/schedule"),
    ("get", "/jobs/schedule"),
    ("get", "/jobs/schedule/{id}"),
    ("delete", "/jobs/schedule/{id}"),
    ("post", "/jobs/schedule/{id}/enable"),
    ("post", "/jobs/schedule/{id}/disable"),
    ("get", "/jobs/schedule/{id}/executions"),
    ("post", "/jobs/schedule/{id}/run"),
    ("post", "/jobs/schedule/{id}/backfill"),
    ("get", "/api/v1/executions"),
    ("get", "/api/v1/executions/{name}"),
    ("get", "/api/v1/executions/{name}/logs"),
    ("get", "/api/v1/executions/{name}/notifications"),
    ("post", "/api/v1/executions/{name}/cancel"),
    ("post", "/api/v1/session"),
    ("get", "/api/v1/session"),
    ("delete", "/api/v1/session"),
    ("get", "/api/v1/schedules/preview"),
    ("get", "/api/v1/stats"),
    ("get", "/api/v1/audit"),
];

#[actix_web::test]
async fn the_openapi_document_lists_every_route_and_validates_as_openapi_3() {
    let app = spawn_app(Backend::Embedded).await;
    let response = app
        .request(Method::GET, "/openapi.json", None)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    for (method, path) in ROUTES {
        let operation = &doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is missing from /openapi.json"
        );
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "no undocumented extra and no stale route"
    );

    let file = temp_dir("openapi").join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    // Off the server's thread: a blocking wait here would stall the in-process proctord.
    let validator = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-m", "openapi_spec_validator", file.to_str().unwrap()])
            .output()
    })
    .await
    .unwrap();
    match validator {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires openapi-spec-validator"
            );
            eprintln!(
                "SKIPPING the OpenAPI 3 validation: python3 -m pip install openapi-spec-validator"
            );
        }
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run python3: {e}"),
    }

    let page = app
        .request(Method::GET, "/docs", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/docs/swagger-ui-bundle.js") && page.contains("/openapi.json"));
    let script = app
        .request(Method::GET, "/docs/swagger-ui-bundle.js", None)
        .send()
        .await
        .unwrap();
    assert_eq!(script.status().as_u16(), 200);
    assert!(
        script.bytes().await.unwrap().len() > 1_000_000,
        "the vendored viewer is served"
    );
}
