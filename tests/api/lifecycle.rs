//! What happens around a run: callbacks when it ends, and a restart while it runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{backends, json_body, register_script, spawn_app};
use proctor::app::Application;
use proctor::model::{ExecutionName, Status};
use proctor::store::{NewExecution, StoredLine, Transition};

const WAIT: Duration = Duration::from_secs(20);

/// A callback receiver that answers 500 to the first `failures` requests.
async fn callback_sink(failures: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = received.clone();
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/hook",
            web::post().to(move |body: web::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push(body.into_inner());
                    if seen.len() <= failures {
                        HttpResponse::InternalServerError().finish()
                    } else {
                        HttpResponse::Ok().finish()
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}/hook"), received)
}

#[actix_web::test]
async fn the_callback_url_receives_the_final_status_with_retries() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    let (url, received) = callback_sink(2).await;
    register_script(&app, "notify-me", "echo done", &[], json!({})).await;
    let response = app
        .execute(
            &json!({"name": "notify-me", "callback_url": url}),
            &app.admin,
        )
        .await;
    let name = json_body(response, 201).await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&name, "SUCCEEDED", WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while received.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        3,
        "two failures, then delivered: {received:?}"
    );
    for body in received {
        assert_eq!(body, json!({"name": name, "status": "SUCCEEDED"}));
    }
}

#[actix_web::test]
async fn a_restart_settles_runs_left_unfinished_and_keeps_their_logs() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        // A run of a previous proctord: RUNNING, two lines stored, its process gone.
        let name = ExecutionName::parse("ghost-aaaaaaaaaaaaaa").unwrap();
        let execution = app
            .stores
            .executions
            .insert(NewExecution {
                name: name.clone(),
                proc_name: "ghost".into(),
                image: "alpine:3".into(),
                args: Default::default(),
                executor: "local".into(),
                user_email: "admin@example.com".into(),
                schedule_id: None,
                callback_url: None,
            })
            .await
            .unwrap();
        app.stores
            .executions
            .transition(name.as_str(), Status::Running, Transition::default())
            .await
            .unwrap()
            .expect("RECEIVED -> RUNNING");
        let lines = ["before the restart", "still going"]
            .iter()
            .enumerate()
            .map(|(i, line)| StoredLine {
                execution_id: execution.id.clone(),
                seq: i as i64 + 1,
                line: line.to_string(),
                logged_at: proctor::store::now(),
            });
        app.stores.logs.append(lines.collect()).await.unwrap();

        // proctord starts again on the same stores.
        let restarted = Application::build(app.settings.clone()).await.unwrap();
        actix_web::rt::spawn(restarted.run_until_stopped());

        let settled = app.execution(name.as_str()).await;
        assert_eq!(settled["status"], "FAILED", "{backend:?}: {settled}");
        assert_eq!(
            settled["reason"],
            "proctord restarted while the execution was running"
        );
        assert_eq!(
            app.stored_logs(name.as_str()).await,
            ["before the restart", "still going"]
        );
        let transcript = app
            .logs_socket(name.as_str(), &app.admin)
            .await
            .read_to_end(WAIT)
            .await;
        assert_eq!(
            transcript.lines,
            ["before the restart", "still going"],
            "{backend:?}"
        );
        assert_eq!(transcript.close_reason, "FAILED");

        // New runs work as before.
        register_script(&app, "after", "echo fine", &[], json!({})).await;
        let fresh = app.run("after", json!({})).await;
        app.wait_for_status(&fresh, "SUCCEEDED", WAIT).await;
    }
}
