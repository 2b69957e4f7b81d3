//! Bad input of every kind gets a JSON 4xx, never a 5xx, a hang or a panic.

use reqwest::Method;
use reqwest::header::HeaderValue;

use crate::helpers::{Backend, json_body, sample_proc, spawn_app};

#[actix_web::test]
async fn hostile_requests_get_a_json_4xx_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Embedded).await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let long_name = "a".repeat(10_000);
    let cases: Vec<(Method, String, Option<String>, u16, &str)> = vec![
        (
            Method::GET,
            "/jobs/metadata/%FF%FE".into(),
            None,
            400,
            "percent-encoded bytes that are not UTF-8",
        ),
        (
            Method::GET,
            "/jobs/metadata/a%00b".into(),
            None,
            400,
            "a NUL in the name",
        ),
        (
            Method::GET,
            format!("/jobs/metadata/{long_name}"),
            None,
            400,
            "a 10,000-character name",
        ),
        (
            Method::GET,
            "/jobs/metadata/%F0%9F%98%80".into(),
            None,
            400,
            "an emoji name",
        ),
        (
            Method::POST,
            "/jobs/metadata".into(),
            Some(deep.clone()),
            400,
            "JSON nested 5,000 deep",
        ),
        (
            Method::POST,
            "/jobs/secrets".into(),
            Some(deep),
            400,
            "deep JSON to secrets",
        ),
        (
            Method::POST,
            "/jobs/metadata".into(),
            Some("\u{feff}{}".into()),
            400,
            "a byte-order mark",
        ),
        (
            Method::POST,
            "/jobs/metadata".into(),
            Some("{\"name\": \"x\", \"image_name\": \"y\", \"env_vars\": {\"args\": 5}}".into()),
            400,
            "args of the wrong type",
        ),
        (
            Method::PUT,
            "/jobs/metadata".into(),
            Some("{}".into()),
            405,
            "an unsupported method",
        ),
        (Method::PATCH, "/ping".into(), None, 405, "PATCH on /ping"),
    ];
    for (method, path, body, status, why) in cases {
        let mut request = app.request(method, &path, Some(&app.admin));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let body = json_body(response, status).await;
        assert!(body["error"].is_string(), "{why}: {body}");
    }

    let response = app
        .request(Method::GET, "/jobs/metadata", None)
        .header(
            "Email-Id",
            HeaderValue::from_bytes(b"caf\xe9@example.com").unwrap(),
        )
        .header("Access-Token", &app.admin.token)
        .send()
        .await
        .unwrap();
    let body = json_body(response, 400).await;
    assert_eq!(body["error"], "the Email-Id header is not valid text");

    // Still serving normally afterwards.
    json_body(app.register(&sample_proc("after"), &app.admin).await, 201).await;
}
