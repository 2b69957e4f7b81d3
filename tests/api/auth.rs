use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    Backend, Caller, backends, error_message, json_body, sample_proc, spawn_app, spawn_app_with,
};

const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/jobs/metadata"),
    ("POST", "/jobs/metadata"),
    ("GET", "/jobs/metadata/say-hello"),
    ("DELETE", "/jobs/metadata/say-hello"),
    ("POST", "/jobs/secrets"),
    ("GET", "/jobs/secrets/say-hello"),
    ("DELETE", "/jobs/secrets/say-hello"),
];

#[actix_web::test]
async fn every_jobs_endpoint_needs_valid_credentials() {
    for backend in backends() {
        // Many bad credentials from one address: the brake on guessing would step in.
        let app = spawn_app_with(backend, &[("bad_credentials_per_minute", "0")]).await;
        let wrong_token = Caller {
            email: app.admin.email.clone(),
            token: "pct_not-a-real-token".into(),
        };
        let someone_elses = Caller {
            email: app.outsider.email.clone(),
            token: app.admin.token.clone(),
        };
        for (method, path) in PROTECTED {
            let method: Method = method.parse().unwrap();
            let body = json!({});
            let response = app
                .request(method.clone(), path, None)
                .json(&body)
                .send()
                .await
                .unwrap();
            let message = error_message(response, 401).await;
            assert!(
                message.starts_with(
                    "authentication required: send the Email-Id and Access-Token headers"
                ),
                "{backend:?} {method} {path}: {message}"
            );
            for (who, expected) in [
                (
                    &wrong_token,
                    "the Access-Token is not valid for admin@example.com",
                ),
                (
                    &someone_elses,
                    "the Access-Token is not valid for outsider@example.com",
                ),
            ] {
                let response = app
                    .request(method.clone(), path, Some(who))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let message = error_message(response, 401).await;
                assert_eq!(message, expected, "{backend:?} {method} {path}");
            }
        }
    }
}

#[actix_web::test]
async fn a_revoked_token_stops_working() {
    let app = spawn_app(Backend::Embedded).await;
    json_body(app.list_procs(&app.member).await, 200).await;
    let email = proctor::model::Email::parse(&app.member.email).unwrap();
    assert_eq!(
        app.stores.users.revoke_tokens(&email, None).await.unwrap(),
        1
    );
    error_message(app.list_procs(&app.member).await, 401).await;
}

#[actix_web::test]
async fn an_outdated_client_version_gets_the_original_400_message() {
    for backend in backends() {
        let app = spawn_app_with(backend, &[("min_client_version", "0.3.0")]).await;
        let send = |version: &'static str| {
            app.request(Method::GET, "/jobs/metadata", Some(&app.admin))
                .header("Client-Version", version)
                .send()
        };
        let body = json_body(send("0.2.9").await.unwrap(), 400).await;
        assert_eq!(
            body["error"],
            "Your Proctor client is using an outdated version: 0.2.9 . Please upgrade to latest client (at least 0.3.0)",
            "{backend:?}"
        );
        assert_eq!(body["detail"]["minimum"], "0.3.0");
        json_body(send("0.3.0").await.unwrap(), 200).await;
        json_body(send("v1.0").await.unwrap(), 200).await;
        let message = error_message(send("banana").await.unwrap(), 400).await;
        assert!(message.contains("is not a version"), "{message}");
        // Without the header (curl, scripts) the request passes.
        json_body(app.list_procs(&app.admin).await, 200).await;
        // Health probes are never refused for a client version.
        let response = app
            .request(Method::GET, "/ping", None)
            .header("Client-Version", "0.0.1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
}

#[actix_web::test]
async fn with_auth_off_anyone_on_loopback_acts_as_an_admin() {
    let app = spawn_app_with(Backend::Embedded, &[("auth", "off")]).await;
    let response = app
        .request(Method::POST, "/jobs/metadata", None)
        .json(&sample_proc("open-door"))
        .send()
        .await
        .unwrap();
    json_body(response, 201).await;
    let response = app
        .request(Method::GET, "/jobs/metadata", None)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response, 200).await[0]["name"], "open-door");
}

#[actix_web::test]
async fn a_malformed_email_header_gets_401_with_the_reason() {
    let app = spawn_app(Backend::Embedded).await;
    let who = Caller {
        email: "not-an-email".into(),
        token: app.admin.token.clone(),
    };
    let message = error_message(app.list_procs(&who).await, 401).await;
    assert_eq!(
        message,
        "Email-Id: \"not-an-email\" is not a valid e-mail address"
    );
}
