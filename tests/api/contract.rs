//! The API contract as `/openapi.json` states it: 405 with `Allow`, bounds and patterns
//! that are the handlers' own, 400 for what breaks the document and 422 for what it can
//! only state in words, and security only when the server asks for credentials. (The
//! whole document is fuzzed by schemathesis: `tests/conformance/run.sh`.)

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, error_message, json_body, register_script, spawn_app, spawn_app_with,
};

async fn document(app: &crate::helpers::TestApp) -> Value {
    json_body(
        app.request(Method::GET, "/openapi.json", None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

fn parameter<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has {name}"))
}

#[actix_web::test]
async fn a_method_a_path_does_not_take_gets_405_naming_the_ones_it_does() {
    let app = spawn_app(Backend::Embedded).await;
    for (method, path, allow) in [
        ("TRACE", "/api/v1/executions/some-run", "GET"),
        ("PUT", "/jobs/metadata", "POST, GET"),
        ("PATCH", "/api/v1/session", "POST, GET, DELETE"),
        ("DELETE", "/ping", "GET"),
        ("POST", "/", "GET"),
    ] {
        let response = app
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                path,
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        let message = error_message(response, 405).await;
        assert!(
            message.contains(&format!("{method} is not supported on {path}")),
            "{message}"
        );
    }
    let response = app
        .request(Method::GET, "/api/v1/no-such-thing", Some(&app.admin))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("allow").is_none());
    error_message(response, 404).await;
}

#[actix_web::test]
async fn the_document_asks_for_credentials_only_when_the_server_does() {
    let on = spawn_app(Backend::Embedded).await;
    let doc = document(&on).await;
    let list = &doc["paths"]["/api/v1/executions"]["get"];
    assert!(list["security"].is_array(), "{list}");
    for status in ["401", "429"] {
        assert!(list["responses"][status].is_object(), "{status}: {list}");
    }
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
    let anonymous = on
        .request(Method::GET, "/api/v1/executions", None)
        .send()
        .await
        .unwrap();
    error_message(anonymous, 401).await;

    let off = spawn_app_with(Backend::Embedded, &[("auth", "off")]).await;
    let doc = document(&off).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation.get("security").is_none(),
                "{method} {path} asks for credentials the server does not"
            );
            assert!(
                operation["responses"].get("401").is_none(),
                "{method} {path}"
            );
        }
    }
    assert!(doc["components"].get("securitySchemes").is_none());
    let sign_in = &doc["paths"]["/api/v1/session"]["post"]["responses"]["409"];
    assert!(
        sign_in.is_object(),
        "signing in is a conflict with auth off"
    );
    let response = off
        .request(Method::POST, "/api/v1/session", None)
        .json(&json!({"email": "a@b.c", "token": "x"}))
        .send()
        .await
        .unwrap();
    error_message(response, 409).await;
}

#[actix_web::test]
async fn bounds_in_the_document_are_the_ones_the_handlers_enforce() {
    let app = spawn_app(Backend::Embedded).await;
    let doc = document(&app).await;
    let limit = &parameter(&doc, "get", "/api/v1/executions", "limit")["schema"];
    let max = limit["maximum"].as_i64().unwrap();
    let min = limit["minimum"].as_i64().unwrap();
    for (value, status) in [(min, 200), (max, 200), (min - 1, 400), (max + 1, 400)] {
        let response = app
            .request(
                Method::GET,
                &format!("/api/v1/executions?limit={value}"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "limit={value}");
    }
    let name = &parameter(&doc, "get", "/jobs/metadata/{name}", "name")["schema"];
    assert_eq!(name["pattern"], proctor::model::patterns::PROC_NAME);
    assert_eq!(name["maxLength"], 48);
    let id = &parameter(&doc, "get", "/jobs/schedule/{id}", "id")["schema"];
    assert_eq!(id["pattern"], proctor::model::patterns::SCHEDULE_ID);
    let status = &parameter(&doc, "get", "/api/v1/executions", "status")["schema"];
    assert!(
        status["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("QUEUED"))
    );
    let policy =
        &doc["components"]["schemas"]["ScheduleRequest"]["properties"]["concurrency_policy"];
    assert!(
        policy["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("Replace"))
    );
    let zone = &doc["components"]["schemas"]["ScheduleRequest"]["properties"]["time_zone"];
    assert!(
        zone["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("Europe/Paris"))
    );
    // An offset at the top of its range is answered, not a crash.
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/executions?offset={}", i64::MAX),
            Some(&app.admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response, 200).await["executions"], json!([]));
}

#[actix_web::test]
async fn what_breaks_the_document_is_400_and_what_it_states_in_words_is_422() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "greet", "echo hi $NAME", &["NAME"], json!({})).await;
    // Missing args: the document allows any names; which ones the proc takes is state.
    let response = app
        .execute(&json!({"name": "greet", "args": {}}), &app.admin)
        .await;
    let body = json_body(response, 422).await;
    assert_eq!(body["detail"]["missing"], json!(["NAME"]));
    // An arg value with NUL breaks the document's pattern.
    let response = app
        .execute(
            &json!({"name": "greet", "args": {"NAME": "a\u{0}b"}}),
            &app.admin,
        )
        .await;
    error_message(response, 400).await;
    // A name declared as both an arg and a secret is a rule between fields.
    let proc = json!({
        "name": "twice", "image_name": "alpine:3",
        "env_vars": {"args": [{"name": "X"}], "secrets": [{"name": "X"}]}
    });
    let response = app
        .request(Method::POST, "/jobs/metadata", Some(&app.admin))
        .json(&proc)
        .send()
        .await
        .unwrap();
    let message = error_message(response, 422).await;
    assert!(
        message.contains("X is declared more than once"),
        "{message}"
    );
    // An image with a space breaks the document's pattern.
    let proc = json!({"name": "spaced", "image_name": "alpine 3"});
    let response = app
        .request(Method::POST, "/jobs/metadata", Some(&app.admin))
        .json(&proc)
        .send()
        .await
        .unwrap();
    let message = error_message(response, 400).await;
    assert!(message.contains("image_name"), "{message}");
    // A whole number written as 3.0 is an integer to JSON Schema, and to us.
    let proc = json!({"name": "limited", "image_name": "alpine:3", "max_concurrent_runs": 3.0});
    let response = app
        .request(Method::POST, "/jobs/metadata", Some(&app.admin))
        .json(&proc)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response, 201).await["max_concurrent_runs"], 3);
    // A policy spelled other than the document's enum.
    let schedule = json!({
        "name": "greet", "args": {"NAME": "x"}, "time": "@hourly", "tags": "t",
        "group_name": "g", "concurrency_policy": "forbid"
    });
    let response = app
        .request(Method::POST, "/jobs/schedule", Some(&app.admin))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    let message = error_message(response, 400).await;
    assert!(message.contains("Allow, Forbid or Replace"), "{message}");
}
