use serde_json::{Value, json};

use crate::helpers::{
    Backend, backends, error_message, json_body, sample_proc, spawn_app, spawn_app_with,
};

#[actix_web::test]
async fn a_proc_is_registered_listed_described_updated_and_deleted() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let proc = sample_proc("say-hello-world");

        let created = json_body(app.register(&proc, &app.admin).await, 201).await;
        assert_eq!(created, proc, "{backend:?}: the stored proc is echoed");

        let listed = json_body(app.list_procs(&app.member).await, 200).await;
        assert_eq!(listed, json!([proc]), "{backend:?}");

        let described = json_body(app.describe("say-hello-world", &app.member).await, 200).await;
        assert_eq!(described, proc, "{backend:?}");

        let mut updated = proc.clone();
        updated["description"] = json!("Says hello, louder");
        updated["env_vars"]["args"] = json!([{"name": "NAME", "description": "who"}, {"name": "LOUD", "description": "1 to shout"}]);
        json_body(app.register(&updated, &app.admin).await, 201).await;
        let described = json_body(app.describe("say-hello-world", &app.member).await, 200).await;
        assert_eq!(described, updated, "{backend:?}: POST upserts");
        let listed = json_body(app.list_procs(&app.member).await, 200).await;
        assert_eq!(
            listed.as_array().unwrap().len(),
            1,
            "{backend:?}: still one proc"
        );

        let response = app.remove_proc("say-hello-world", &app.admin).await;
        assert_eq!(response.status().as_u16(), 204, "{backend:?}");
        let message = error_message(app.describe("say-hello-world", &app.member).await, 404).await;
        assert_eq!(message, "no proc named say-hello-world", "{backend:?}");
        let listed = json_body(app.list_procs(&app.member).await, 200).await;
        assert_eq!(listed, json!([]), "{backend:?}");
        let message =
            error_message(app.remove_proc("say-hello-world", &app.admin).await, 404).await;
        assert_eq!(message, "no proc named say-hello-world", "{backend:?}");
    }
}

#[actix_web::test]
async fn an_array_of_procs_is_registered_together_and_listed_by_name() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let body = json!([
            sample_proc("zeta"),
            sample_proc("alpha"),
            sample_proc("mid-1")
        ]);
        let created = json_body(app.register(&body, &app.admin).await, 201).await;
        assert_eq!(created.as_array().unwrap().len(), 3, "{backend:?}");
        let listed = json_body(app.list_procs(&app.admin).await, 200).await;
        let names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alpha", "mid-1", "zeta"], "{backend:?}");
    }
}

#[actix_web::test]
async fn bad_proc_metadata_gets_400_or_422_naming_the_problem_and_stores_nothing() {
    let with = |field: &str, value: Value| {
        let mut proc = sample_proc("good-name");
        proc[field] = value;
        proc
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("name", json!("Bad_Name")),
            "proc name \"Bad_Name\" is invalid",
            "upper case and underscore",
        ),
        (
            with("name", json!("a".repeat(49))),
            "the limit is 48",
            "too long for a Job name",
        ),
        (
            with("name", json!(7)),
            "invalid type: integer `7`, expected a string",
            "name of the wrong type",
        ),
        (
            with("image_name", json!("")),
            "image_name must not be empty",
            "empty image",
        ),
        (
            with("image_name", json!("has space")),
            "image_name must be an image reference: printable ASCII without spaces",
            "image with a space",
        ),
        (
            with("command", json!([])),
            "command must start with the program to run",
            "empty command",
        ),
        (
            with("authorized_groups", json!(["ops", " "])),
            "authorized_groups",
            "blank group",
        ),
        (
            with(
                "env_vars",
                json!({"args": [{"name": "X"}], "secrets": [{"name": "X"}]}),
            ),
            "X is declared more than once",
            "an arg and a secret with one name",
        ),
        (
            with("env_vars", json!({"args": [{"name": "1BAD"}]})),
            "\"1BAD\" is not a valid environment variable name",
            "arg name starting with a digit",
        ),
        (
            json!({"name": "no-image"}),
            "missing field `image_name`",
            "missing image_name",
        ),
        (
            json!("just a string"),
            "expected a proc's metadata as a JSON object",
            "a scalar body",
        ),
        (json!([]), "the array of procs is empty", "an empty array"),
        (
            json!([sample_proc("twice"), sample_proc("twice")]),
            "proc twice appears more than once in the request",
            "a duplicate in one request",
        ),
        (
            json!([sample_proc("fine"), {"name": "broken"}]),
            "procs[1]: invalid proc metadata: missing field `image_name`",
            "one bad item spoils the array",
        ),
    ];
    for backend in backends() {
        let app = spawn_app(backend).await;
        for (body, expected, why) in &cases {
            // Rules between fields are stated in the document's words only: 422.
            let status = if expected.contains("more than once") {
                422
            } else {
                400
            };
            let message = error_message(app.register(body, &app.admin).await, status).await;
            assert!(
                message.contains(expected),
                "{backend:?}, {why}: got {message:?}"
            );
        }
        let listed = json_body(app.list_procs(&app.admin).await, 200).await;
        assert_eq!(listed, json!([]), "{backend:?}: nothing was stored");
    }
}

#[actix_web::test]
async fn malformed_json_and_wrong_content_get_400_or_415_in_json() {
    let app = spawn_app(Backend::Embedded).await;
    let send = |body: &'static str| {
        app.request(reqwest::Method::POST, "/jobs/metadata", Some(&app.admin))
            .header("Content-Type", "application/json")
            .body(body)
    };
    let message = error_message(send("{\"name\": ").send().await.unwrap(), 400).await;
    assert!(
        message.starts_with("invalid JSON body: EOF while parsing"),
        "{message}"
    );
    let message = error_message(send("").send().await.unwrap(), 400).await;
    assert!(message.starts_with("invalid JSON body"), "{message}");
}

#[actix_web::test]
async fn an_oversized_body_gets_413() {
    let app = spawn_app_with(Backend::Embedded, &[("max_request_bytes", "4096")]).await;
    let mut proc = sample_proc("big");
    proc["description"] = json!("x".repeat(5000));
    let message = error_message(app.register(&proc, &app.admin).await, 413).await;
    assert!(message.contains("the limit is 4096"), "{message}");
}

#[actix_web::test]
async fn bad_and_unknown_names_in_the_path_get_400_and_404() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let message = error_message(app.describe("NOPE", &app.admin).await, 400).await;
        assert!(
            message.contains("proc name \"NOPE\" is invalid"),
            "{backend:?}: {message}"
        );
        let message = error_message(app.describe("nope", &app.admin).await, 404).await;
        assert_eq!(message, "no proc named nope", "{backend:?}");
        let message = error_message(app.remove_proc("Bad.Name", &app.admin).await, 400).await;
        assert!(message.contains("is invalid"), "{backend:?}: {message}");
    }
}

#[actix_web::test]
async fn procs_with_authorized_groups_are_for_their_members_and_admins_only() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let mut restricted = sample_proc("ops-only");
        restricted["authorized_groups"] = json!(["ops"]);
        let open = sample_proc("for-all");
        json_body(
            app.register(&json!([restricted, open]), &app.admin).await,
            201,
        )
        .await;

        let names = |body: Value| -> Vec<String> {
            body.as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let for_member = names(json_body(app.list_procs(&app.member).await, 200).await);
        assert_eq!(for_member, ["for-all", "ops-only"], "{backend:?}");
        let for_outsider = names(json_body(app.list_procs(&app.outsider).await, 200).await);
        assert_eq!(
            for_outsider,
            ["for-all"],
            "{backend:?}: hidden from non-members"
        );
        let for_admin = names(json_body(app.list_procs(&app.admin).await, 200).await);
        assert_eq!(for_admin, ["for-all", "ops-only"], "{backend:?}");

        json_body(app.describe("ops-only", &app.member).await, 200).await;
        let body = json_body(app.describe("ops-only", &app.outsider).await, 403).await;
        assert_eq!(
            body["error"],
            "outsider@example.com may not use proc ops-only: it is open to members of ops",
            "{backend:?}"
        );
        assert_eq!(
            body["detail"]["authorized_groups"],
            json!(["ops"]),
            "{backend:?}"
        );
    }
}

#[actix_web::test]
async fn only_admins_register_and_delete_procs() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let message =
            error_message(app.register(&sample_proc("mine"), &app.member).await, 403).await;
        assert_eq!(
            message, "member@example.com is not an admin; only admins may register procs",
            "{backend:?}"
        );
        json_body(app.register(&sample_proc("mine"), &app.admin).await, 201).await;
        let message = error_message(app.remove_proc("mine", &app.member).await, 403).await;
        assert!(
            message.contains("only admins may remove procs"),
            "{backend:?}"
        );
        json_body(app.describe("mine", &app.member).await, 200).await;
    }
}
