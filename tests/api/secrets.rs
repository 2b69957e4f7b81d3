use diesel::prelude::*;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TestApp, backends, error_message, json_body, redis_url, sample_proc, spawn_app,
};
use proctor::model::ProcName;

const PLAINTEXT: &str = "xoxb-very-secret-value-1234";

/// The bytes the store holds for `proc`'s secrets, read around the API.
fn stored_bytes(app: &TestApp, proc: &str) -> Vec<Vec<u8>> {
    match app.backend {
        Backend::Embedded => {
            let path = app.data_dir.join("proctor.db");
            let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            proctor::store::schema::proc_secrets::table
                .filter(proctor::store::schema::proc_secrets::proc_name.eq(proc))
                .select(proctor::store::schema::proc_secrets::sealed)
                .load::<Vec<u8>>(&mut conn)
                .unwrap()
        }
        Backend::Production => {
            let mut conn = redis::Client::open(redis_url().as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let key = format!("{}{proc}-secret", app.redis_prefix.as_deref().unwrap());
            let hash: std::collections::BTreeMap<String, Vec<u8>> =
                redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
            hash.into_values().collect()
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[actix_web::test]
async fn secrets_are_stored_sealed_and_only_their_names_come_back() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        json_body(
            app.register(&sample_proc("notifier"), &app.admin).await,
            201,
        )
        .await;

        let body = json!({"job_name": "notifier", "secrets": {"SLACK_TOKEN": PLAINTEXT}});
        let response = app.set_secrets(&body, &app.admin).await;
        assert_eq!(response.status().as_u16(), 201, "{backend:?}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(PLAINTEXT),
            "{backend:?}: the answer holds no value"
        );
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            answer,
            json!({"job_name": "notifier", "secret_names": ["SLACK_TOKEN"]})
        );

        let stored = stored_bytes(&app, "notifier");
        assert_eq!(stored.len(), 1, "{backend:?}");
        assert!(
            !contains(&stored[0], PLAINTEXT),
            "{backend:?}: stored bytes are sealed"
        );
        assert!(
            stored[0].len() > PLAINTEXT.len(),
            "{backend:?}: nonce and tag are stored too"
        );

        // A second POST adds to the set; a repeated name is replaced.
        let more =
            json!({"job_name": "notifier", "secrets": {"API_KEY": "k2", "SLACK_TOKEN": "rotated"}});
        let answer = json_body(app.set_secrets(&more, &app.admin).await, 201).await;
        assert_eq!(
            answer["secret_names"],
            json!(["API_KEY", "SLACK_TOKEN"]),
            "{backend:?}"
        );

        let response = app.secret_names("notifier", &app.member).await;
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("rotated") && !text.contains("k2"),
            "{backend:?}: {text}"
        );
        let names: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            names["secret_names"],
            json!(["API_KEY", "SLACK_TOKEN"]),
            "{backend:?}"
        );

        // Only the execution path reads values back: prove they open with the key.
        let revealed = app
            .stores
            .secrets
            .reveal(&ProcName::parse("notifier").unwrap())
            .await
            .unwrap();
        let values: Vec<(&str, &str)> = revealed
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose().as_str()))
            .collect();
        assert_eq!(
            values,
            [("API_KEY", "k2"), ("SLACK_TOKEN", "rotated")],
            "{backend:?}"
        );
        assert!(
            !format!("{revealed:?}").contains("rotated"),
            "Debug redacts values"
        );
    }
}

#[actix_web::test]
async fn removing_secrets_or_their_proc_deletes_the_stored_values() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        json_body(
            app.register(&json!([sample_proc("one"), sample_proc("two")]), &app.admin)
                .await,
            201,
        )
        .await;
        for name in ["one", "two"] {
            let body = json!({"job_name": name, "secrets": {"SLACK_TOKEN": PLAINTEXT}});
            json_body(app.set_secrets(&body, &app.admin).await, 201).await;
        }
        assert_eq!(
            app.remove_secrets("one", &app.admin)
                .await
                .status()
                .as_u16(),
            204
        );
        assert!(stored_bytes(&app, "one").is_empty(), "{backend:?}");
        let names = json_body(app.secret_names("one", &app.admin).await, 200).await;
        assert_eq!(names["secret_names"], json!([]), "{backend:?}");

        assert_eq!(
            app.remove_proc("two", &app.admin).await.status().as_u16(),
            204
        );
        assert!(
            stored_bytes(&app, "two").is_empty(),
            "{backend:?}: deleting a proc deletes its secrets"
        );
    }
}

#[actix_web::test]
async fn bad_secret_requests_get_400_without_echoing_values() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"secrets": {"A": "b"}}),
            "job_name is missing",
            "no job_name",
        ),
        (
            json!({"job_name": 5, "secrets": {"A": "b"}}),
            "job_name must be a string",
            "job_name not a string",
        ),
        (
            json!({"job_name": "vault"}),
            "secrets is missing",
            "no secrets",
        ),
        (
            json!({"job_name": "vault", "secrets": {}}),
            "secrets is empty",
            "empty secrets",
        ),
        (
            json!({"job_name": "vault", "secrets": ["A"]}),
            "secrets must be an object",
            "secrets as a list",
        ),
        (
            json!({"job_name": "vault", "secrets": {"BAD-NAME": PLAINTEXT}}),
            "\"BAD-NAME\" is not a valid environment variable name",
            "bad key",
        ),
        (
            json!({"job_name": "vault", "secrets": {"NUM": 123456789}}),
            "secrets.NUM: the value must be a string",
            "number value",
        ),
        (
            json!({"job_name": "Vault", "secrets": {"A": PLAINTEXT}}),
            "proc name \"Vault\" is invalid",
            "bad proc name",
        ),
        (json!([1, 2]), "expected {\"job_name\"", "not an object"),
    ];
    for backend in backends() {
        let app = spawn_app(backend).await;
        json_body(app.register(&sample_proc("vault"), &app.admin).await, 201).await;
        for (body, expected, why) in &cases {
            let message = error_message(app.set_secrets(body, &app.admin).await, 400).await;
            assert!(
                message.contains(expected),
                "{backend:?}, {why}: got {message:?}"
            );
            assert!(
                !message.contains(PLAINTEXT) && !message.contains("123456789"),
                "{why}: {message}"
            );
        }
        let message = error_message(
            app.set_secrets(
                &json!({"job_name": "ghost", "secrets": {"A": "b"}}),
                &app.admin,
            )
            .await,
            404,
        )
        .await;
        assert_eq!(message, "no proc named ghost", "{backend:?}");
    }
}

#[actix_web::test]
async fn only_admins_set_secrets_and_only_users_of_the_proc_see_their_names() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let mut proc = sample_proc("guarded");
        proc["authorized_groups"] = json!(["ops"]);
        json_body(app.register(&proc, &app.admin).await, 201).await;
        let body = json!({"job_name": "guarded", "secrets": {"SLACK_TOKEN": PLAINTEXT}});
        let message = error_message(app.set_secrets(&body, &app.member).await, 403).await;
        assert!(
            message.contains("only admins may set secrets"),
            "{backend:?}: {message}"
        );
        json_body(app.set_secrets(&body, &app.admin).await, 201).await;
        json_body(app.secret_names("guarded", &app.member).await, 200).await;
        error_message(app.secret_names("guarded", &app.outsider).await, 403).await;
        let message = error_message(app.remove_secrets("guarded", &app.member).await, 403).await;
        assert!(
            message.contains("only admins may remove secrets"),
            "{backend:?}"
        );
    }
}
