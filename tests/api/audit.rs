//! The audit log through the API: every kind of change leaves one record with who,
//! when, from where and what; secret values never appear; admins only; filters and
//! pages. And the tokens: names, expiry, last use, rotation, and the brake on guessing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Caller, TestApp, add_user, backends, error_message, json_body, register_script,
    sample_proc, spawn_app, spawn_app_with,
};
use crate::web::{as_browser, sign_in, sign_in_request};

/// A secret value that must never be found in any audit record.
const SECRET_VALUE: &str = "xoxb-never-in-the-audit-9f8e7d";

impl TestApp {
    async fn audit(&self, query: &str) -> Value {
        let response = self
            .request(
                Method::GET,
                &format!("/api/v1/audit{query}"),
                Some(&self.admin),
            )
            .send()
            .await
            .unwrap();
        json_body(response, 200).await
    }

    /// Every event's action, oldest first.
    async fn audit_actions(&self, query: &str) -> Vec<String> {
        let page = self.audit(query).await;
        let mut actions: Vec<String> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        actions.reverse();
        actions
    }
}

#[actix_web::test]
async fn every_kind_of_change_is_recorded_with_who_when_where_and_what() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let started = chrono::Utc::now() - chrono::Duration::seconds(1);

        // Procs: registered, updated (what changed), re-registered unchanged (nothing), deleted.
        json_body(app.register(&sample_proc("greeter"), &app.admin).await, 201).await;
        let mut changed = sample_proc("greeter");
        changed["image_name"] = json!("proctor/say-hello-world:2");
        json_body(app.register(&changed, &app.admin).await, 201).await;
        json_body(app.register(&changed, &app.admin).await, 201).await;

        // Secrets: set and removed, by name only.
        let secrets = json!({"job_name": "greeter", "secrets": {"SLACK_TOKEN": SECRET_VALUE}});
        json_body(app.set_secrets(&secrets, &app.admin).await, 201).await;
        let removed = app.remove_secrets("greeter", &app.admin).await;
        assert_eq!(removed.status().as_u16(), 204);

        // Schedules: created, disabled, enabled, deleted (by a member of its group).
        register_script(&app, "nightly", "echo hi $NAME", &["NAME"], json!({})).await;
        let created = json_body(
            app.request(Method::POST, "/jobs/schedule", Some(&app.member))
                .json(&json!({
                    "name": "nightly", "args": {"NAME": "ops"}, "time": "0 0 3 * * *",
                    "tags": "night", "group_name": "ops", "time_zone": "Europe/Paris"
                }))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        for step in ["disable", "disable", "enable"] {
            let response = app
                .request(
                    Method::POST,
                    &format!("/jobs/schedule/{id}/{step}"),
                    Some(&app.member),
                )
                .send()
                .await
                .unwrap();
            json_body(response, 200).await;
        }
        let response = app
            .request(
                Method::DELETE,
                &format!("/jobs/schedule/{id}"),
                Some(&app.member),
            )
            .send()
            .await
            .unwrap();
        json_body(response, 200).await;

        // A run cancelled.
        register_script(&app, "sleeper", "echo up; sleep 30", &[], json!({})).await;
        let run = app.run("sleeper", json!({})).await;
        app.wait_for_status(&run, "RUNNING", Duration::from_secs(20))
            .await;
        json_body(app.cancel(&run, &app.member).await, 200).await;

        assert_eq!(
            app.remove_proc("greeter", &app.admin)
                .await
                .status()
                .as_u16(),
            204
        );

        let actions = app.audit_actions("?limit=500").await;
        assert_eq!(
            actions,
            [
                "proc.registered",
                "proc.updated",
                "secrets.set",
                "secrets.removed",
                "proc.registered",
                "schedule.created",
                "schedule.disabled",
                "schedule.enabled",
                "schedule.deleted",
                "proc.registered",
                "execution.cancelled",
                "proc.deleted",
            ],
            "{backend:?}"
        );

        let page = app.audit("?limit=500").await;
        let events = page["events"].as_array().unwrap();
        let find = |action: &str| -> &Value {
            events
                .iter()
                .find(|e| e["action"] == action)
                .unwrap_or_else(|| panic!("{action} in {events:?}"))
        };
        for event in events {
            assert_eq!(event["address"], "127.0.0.1", "{event}");
            let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
            assert!(at >= started && at <= chrono::Utc::now(), "{event}");
            assert!(event["id"].as_i64().unwrap() > 0);
        }
        let updated = find("proc.updated");
        assert_eq!(updated["actor"], "admin@example.com");
        assert_eq!(updated["kind"], "proc");
        assert_eq!(updated["object"], "greeter");
        assert_eq!(
            updated["details"]["changed"],
            json!({"image_name": {"from": "proctor/say-hello-world:latest", "to": "proctor/say-hello-world:2"}})
        );
        let registered = events
            .iter()
            .find(|e| e["action"] == "proc.registered" && e["object"] == "greeter")
            .unwrap();
        assert_eq!(
            registered["details"]["metadata"]["image_name"],
            "proctor/say-hello-world:latest"
        );
        assert_eq!(
            find("secrets.set")["details"],
            json!({"names": ["SLACK_TOKEN"]})
        );
        assert_eq!(find("secrets.set")["kind"], "secret");
        assert_eq!(
            find("secrets.removed")["details"],
            json!({"names": ["SLACK_TOKEN"]})
        );
        let schedule = find("schedule.created");
        assert_eq!(schedule["actor"], "member@example.com");
        assert_eq!(schedule["object"], id.as_str());
        assert_eq!(schedule["details"]["time"], "0 0 3 * * *");
        assert_eq!(schedule["details"]["time_zone"], "Europe/Paris");
        assert_eq!(schedule["details"]["args"], json!({"NAME": "ops"}));
        assert_eq!(find("schedule.disabled")["actor"], "member@example.com");
        let cancelled = find("execution.cancelled");
        assert_eq!(cancelled["object"], run.as_str());
        assert_eq!(cancelled["kind"], "execution");
        assert_eq!(cancelled["details"]["proc_name"], "sleeper");

        // No secret value anywhere: not in the API's answer, not in the rows.
        let everything = app.audit("?limit=500").await.to_string();
        assert!(!everything.contains(SECRET_VALUE), "{backend:?}");
        let rows = app
            .stores
            .audit
            .list(proctor::store::AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 12);
        assert!(
            rows.iter()
                .all(|r| !r.details.to_string().contains(SECRET_VALUE))
        );
    }
}

#[actix_web::test]
async fn the_audit_log_is_for_admins_filtered_and_paged_and_cannot_be_changed() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        for i in 0..7 {
            json_body(
                app.register(&sample_proc(&format!("proc-{i}")), &app.admin)
                    .await,
                201,
            )
            .await;
        }
        let between = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            app.remove_proc("proc-3", &app.admin)
                .await
                .status()
                .as_u16(),
            204
        );

        // Admins only.
        let response = app
            .request(Method::GET, "/api/v1/audit", Some(&app.member))
            .send()
            .await
            .unwrap();
        assert!(
            error_message(response, 403)
                .await
                .contains("only admins may read the audit log")
        );

        // Filters: object, kind, action, actor, time.
        let page = app.audit("?object=proc-3").await;
        let actions: Vec<&str> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["proc.deleted", "proc.registered"]);
        assert_eq!(app.audit_actions("?action=proc.deleted").await.len(), 1);
        assert_eq!(app.audit_actions("?kind=proc").await.len(), 8);
        assert_eq!(app.audit_actions("?kind=schedule").await.len(), 0);
        assert_eq!(app.audit_actions("?actor=Admin@Example.com").await.len(), 8);
        assert_eq!(
            app.audit_actions("?actor=member@example.com").await.len(),
            0
        );
        let since = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        assert_eq!(
            app.audit_actions(&format!("?since={since}")).await,
            ["proc.deleted"]
        );
        assert_eq!(app.audit_actions(&format!("?until={since}")).await.len(), 7);

        // Pages of 3, newest first, through next_before, with no gap or repeat.
        let mut seen = Vec::new();
        let mut query = "?limit=3".to_owned();
        loop {
            let page = app.audit(&query).await;
            let events = page["events"].as_array().unwrap();
            assert!(events.len() <= 3);
            seen.extend(events.iter().map(|e| e["id"].as_i64().unwrap()));
            match page["next_before"].as_i64() {
                Some(before) => query = format!("?limit=3&before={before}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");

        // Bad filters are 400s that say what is wrong.
        for (query, expected) in [
            ("?limit=0", "limit must be between 1 and 500, not 0"),
            ("?limit=501", "limit must be between 1 and 500, not 501"),
            ("?kind=planet", "kind must be one of proc, secret, schedule"),
            ("?since=yesterday", "since must be an RFC 3339 time"),
            ("?before=0", "before must be 1 or more, not 0"),
            ("?before=abc", "invalid query string"),
        ] {
            let response = app
                .request(
                    Method::GET,
                    &format!("/api/v1/audit{query}"),
                    Some(&app.admin),
                )
                .send()
                .await
                .unwrap();
            let message = error_message(response, 400).await;
            assert!(message.contains(expected), "{query}: {message}");
        }

        // Nothing changes or removes a record.
        for method in [Method::DELETE, Method::PUT, Method::PATCH, Method::POST] {
            let response = app
                .request(method.clone(), "/api/v1/audit", Some(&app.admin))
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 405, "{method}");
        }
        assert_eq!(app.audit_actions("?limit=500").await.len(), 8);
    }
}

#[actix_web::test]
async fn console_sign_ins_and_sign_outs_are_recorded() {
    let app = spawn_app(Backend::Embedded).await;
    let cookie = sign_in(&app, &app.member).await;
    let response = as_browser(&app, Method::DELETE, "/api/v1/session", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let page = app.audit("?kind=session").await;
    let events = page["events"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["session.ended", "session.started"]);
    assert!(events.iter().all(|e| e["actor"] == "member@example.com"));
    assert!(
        !page.to_string().contains(&app.member.token),
        "the token is never recorded"
    );
}

#[actix_web::test]
async fn the_address_comes_from_the_proxy_only_when_it_is_trusted() {
    for (trust, expected) in [("false", "127.0.0.1"), ("true", "203.0.113.9")] {
        let app = spawn_app_with(Backend::Embedded, &[("trust_forwarded_for", trust)]).await;
        let response = app
            .request(Method::POST, "/jobs/metadata", Some(&app.admin))
            .header("X-Forwarded-For", "203.0.113.9, 10.0.0.1")
            .json(&sample_proc("proxied"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let page = app.audit("").await;
        assert_eq!(page["events"][0]["address"], expected, "trust={trust}");
    }
}

async fn status_of(app: &TestApp, who: &Caller) -> (u16, Option<String>, Value) {
    let response = app.list_procs(who).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[actix_web::test]
async fn tokens_have_names_expiry_and_last_use_and_rotate_without_downtime() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let email = proctor::model::Email::parse("rotor@example.com").unwrap();
        add_user(&app.stores, email.as_str(), &["ops"], false).await;
        let users = &app.stores.users;

        // Two named tokens at once: the old one keeps working while the new one rolls out.
        let (old, _) = users
            .create_token(&email, Some("ci-2026"), None)
            .await
            .unwrap();
        let in_90_days = proctor::store::now() + chrono::Duration::days(90);
        let (new, info) = users
            .create_token(&email, Some("ci-2027"), Some(in_90_days))
            .await
            .unwrap();
        assert_eq!(info.expires_at, Some(in_90_days));
        let conflict = users
            .create_token(&email, Some("ci-2027"), None)
            .await
            .unwrap_err();
        assert!(
            conflict
                .to_string()
                .contains("already has a token named \"ci-2027\""),
            "{conflict}"
        );
        let bad_name = users
            .create_token(&email, Some("has space"), None)
            .await
            .unwrap_err();
        assert!(
            bad_name.to_string().contains("is not a token name"),
            "{bad_name}"
        );

        let old_caller = Caller {
            email: email.to_string(),
            token: old.clone(),
        };
        let new_caller = Caller {
            email: email.to_string(),
            token: new.clone(),
        };
        assert_eq!(status_of(&app, &old_caller).await.0, 200);
        assert_eq!(status_of(&app, &new_caller).await.0, 200);
        let listed = users.tokens(&email).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
        assert!(
            names.contains(&"ci-2026") && names.contains(&"ci-2027"),
            "{names:?}"
        );
        for name in ["ci-2026", "ci-2027"] {
            let token = listed.iter().find(|t| t.name == name).unwrap();
            let used = token.last_used_at.expect("used just now");
            assert!(proctor::store::now() - used < chrono::Duration::seconds(30));
        }

        // Revoke the old one by name: it stops, the new one goes on.
        assert_eq!(
            users.revoke_tokens(&email, Some("ci-2026")).await.unwrap(),
            1
        );
        assert_eq!(status_of(&app, &old_caller).await.0, 401);
        assert_eq!(status_of(&app, &new_caller).await.0, 200);

        // An expired token is refused with a message that says so (and not the token).
        let past = proctor::store::now() - chrono::Duration::seconds(1);
        let (expired, _) = users
            .create_token(&email, Some("old-laptop"), Some(past))
            .await
            .unwrap();
        let expired_caller = Caller {
            email: email.to_string(),
            token: expired.clone(),
        };
        let (status, _, body) = status_of(&app, &expired_caller).await;
        assert_eq!(status, 401);
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("the access token \"old-laptop\" of rotor@example.com expired at"),
            "{message}"
        );
        assert!(!message.contains(&expired));
        // The console refuses it too.
        let response = app
            .request(Method::POST, "/api/v1/session", None)
            .header("Origin", &app.address)
            .json(&json!({"email": email.as_str(), "token": expired}))
            .send()
            .await
            .unwrap();
        assert!(error_message(response, 401).await.contains("expired at"));
    }
}

#[actix_web::test]
async fn repeated_bad_tokens_from_one_address_are_braked_with_retry_after() {
    let app = spawn_app(Backend::Embedded).await;
    let guesser = Caller {
        email: app.member.email.clone(),
        token: "pct_guess".into(),
    };
    for attempt in 1..10 {
        let (status, retry_after, _) = status_of(&app, &guesser).await;
        assert_eq!((status, retry_after), (401, None), "attempt {attempt}");
    }
    // The last allowed failure trips the brake; from then on every credential from this
    // address is refused with 429 and Retry-After, the right ones too, and sign-ins.
    let (status, retry_after, body) = status_of(&app, &guesser).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many bad credentials from your address"),
        "{body}"
    );
    let (status, retry_after, _) = status_of(&app, &app.member).await;
    assert_eq!(status, 429);
    let seconds: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&seconds));
    let response = sign_in_request(&app, &app.member.email, &app.member.token).await;
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    // Requests that need no credentials are not braked.
    assert_eq!(app.ping().await.status().as_u16(), 200);
    // Counted for the operator.
    let metrics = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("proctor_refused_credentials_total"),
        "{metrics}"
    );
}
