//! What happens around a run: callbacks when it ends, and a restart while it runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{Backend, backends, json_body, register_script, spawn_app, spawn_app_with};
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
                notify: vec![],
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
                pod: None,
                emitted_ns: None,
            });
        app.stores.logs.append(lines.collect()).await.unwrap();
        // What its process left in its working directory.
        let workdir = app.data_dir.join("runs").join(name.as_str());
        std::fs::create_dir_all(workdir.join("nested")).unwrap();
        std::fs::write(workdir.join("nested/left.txt"), "scratch").unwrap();

        let expected_reason = match backend {
            // SQLite is one replica: the one starting is the one that ran it.
            Backend::Embedded => "proctord restarted while the execution was running".into(),
            // On PostgreSQL a new replica takes only an expired lease: the run's owner
            // is a replica that died a while ago.
            Backend::Production => {
                use diesel::prelude::*;
                use proctor::store::schema::executions;
                let mut conn =
                    diesel::PgConnection::establish(app.settings.database.url.expose()).unwrap();
                diesel::update(executions::table.filter(executions::name.eq(name.as_str())))
                    .set((
                        executions::owner.eq("replica-gone"),
                        executions::lease_expires_at.eq(proctor::store::now()),
                    ))
                    .execute(&mut conn)
                    .unwrap();
                "lost with replica replica-gone: it stopped renewing its lease while the execution was running".to_owned()
            }
        };

        // proctord starts again on the same stores.
        let restarted = Application::build(app.settings.clone()).await.unwrap();
        actix_web::rt::spawn(restarted.run_until_stopped());

        let settled = app.execution(name.as_str()).await;
        assert_eq!(settled["status"], "FAILED", "{backend:?}: {settled}");
        assert_eq!(settled["reason"], expected_reason);
        assert!(
            crate::helpers::gone_within(&workdir, Duration::from_secs(10)).await,
            "{backend:?}: its working directory is removed"
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

#[actix_web::test]
async fn sigterm_during_a_live_log_stream_delivers_every_line_and_writes_the_final_state() {
    use diesel::prelude::*;
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let data_dir = crate::helpers::temp_dir("sigterm");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut proctord = tokio::process::Command::new(env!("CARGO_BIN_EXE_proctord"))
        .envs([
            ("PROCTOR_APP_PORT", port.to_string()),
            ("PROCTOR_DATA_DIR", data_dir.to_string_lossy().into_owned()),
            ("PROCTOR_LOG_LEVEL", "warn".into()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::http_client();
    for _ in 0..100 {
        if client.get(format!("{base}/ping")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proc = json!({"name": "chatty", "image_name": "alpine:3",
        "command": ["sh", "-c", "for i in $(seq 1 200); do echo line $i; sleep 0.05; done"]});
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
    let body: Value = client
        .post(format!("{base}/jobs/execute"))
        .json(&json!({"name": "chatty"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = body["name"].as_str().unwrap().to_owned();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/jobs/logs?job_name={name}"
    ))
    .await
    .unwrap();

    let mut lines = Vec::new();
    let mut close = None;
    let mut signalled = false;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await
    {
        match message.unwrap() {
            Message::Text(text) => lines.push(text.to_string()),
            Message::Close(frame) => {
                close = frame;
                break;
            }
            _ => {}
        }
        if lines.len() == 10 && !signalled {
            signalled = true;
            // SAFETY: sends SIGTERM to the child proctord this test started.
            unsafe { libc::kill(proctord.id().unwrap() as i32, libc::SIGTERM) };
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), proctord.wait())
        .await
        .expect("proctord exits")
        .unwrap();
    assert!(status.success(), "a clean exit: {status}");
    assert!(
        lines.len() >= 10 && lines.len() < 200,
        "interrupted midway: {}",
        lines.len()
    );
    let expected: Vec<String> = (1..=lines.len()).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line, in order");
    let close = close.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1000, "FAILED")
    );

    use proctor::store::schema::{execution_logs, executions};
    let mut conn =
        diesel::SqliteConnection::establish(data_dir.join("proctor.db").to_str().unwrap()).unwrap();
    let (id, status, reason): (String, String, Option<String>) = executions::table
        .filter(executions::name.eq(&name))
        .select((executions::id, executions::status, executions::reason))
        .first(&mut conn)
        .unwrap();
    assert_eq!(status, "FAILED");
    assert_eq!(
        reason.as_deref(),
        Some(proctor::executor::local::SHUTDOWN_REASON)
    );
    let stored: i64 = execution_logs::table
        .filter(execution_logs::execution_id.eq(&id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(stored as usize, lines.len(), "what was sent was stored");
    std::fs::remove_dir_all(data_dir).unwrap();
}

/// The execution writer has a connection of its own: with a pool of one connection,
/// runs are still written and every read still gets the pool's connection.
#[actix_web::test]
async fn a_pool_of_one_connection_is_not_taken_by_the_execution_writer() {
    for backend in backends() {
        let app = spawn_app_with(backend, &[("postgres_max_connections", "1")]).await;
        register_script(&app, "echo-one", "echo one", &[], json!({})).await;
        let mut names = Vec::new();
        for _ in 0..5 {
            names.push(app.run("echo-one", json!({})).await);
        }
        for name in &names {
            let done = app.wait_until_final(name, WAIT).await;
            assert_eq!(done["status"], "SUCCEEDED", "{backend:?}: {done}");
            assert_eq!(app.stored_logs(name).await, ["one"], "{backend:?}");
        }
        let listed = json_body(app.list_procs(&app.admin).await, 200).await;
        assert_eq!(listed[0]["name"], "echo-one", "{backend:?}");
    }
}

/// Execution writes are committed in groups: many at once all land, a duplicate name
/// fails alone, a step backwards is refused, and every row reads back as written.
#[actix_web::test]
async fn concurrent_execution_writes_each_land_or_fail_on_their_own() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let store = app.stores.executions.clone();
        let new = |name: &ExecutionName| NewExecution {
            name: name.clone(),
            proc_name: "batch".into(),
            image: "alpine:3".into(),
            args: [("N".to_owned(), name.as_str().to_owned())].into(),
            executor: "local".into(),
            user_email: "admin@example.com".into(),
            schedule_id: None,
            callback_url: None,
            notify: vec![],
        };
        let names: Vec<ExecutionName> = (0..300)
            .map(|i| ExecutionName::parse(&format!("batch-{i:014}")).unwrap())
            .collect();
        // 300 inserts at once, and the first name a second time among them.
        let inserts = names
            .iter()
            .chain(std::iter::once(&names[0]))
            .map(|name| {
                let store = store.clone();
                let new = new(name);
                actix_web::rt::spawn(async move { store.insert(new).await })
            })
            .collect::<Vec<_>>();
        let mut failed = 0;
        for insert in inserts {
            if insert.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1, "{backend:?}: only the duplicate fails");

        // Every run steps to RUNNING at once; then a late CREATED is refused.
        let steps = names
            .iter()
            .map(|name| {
                let store = store.clone();
                let name = name.clone();
                actix_web::rt::spawn(async move {
                    let change = Transition {
                        attempts: Some(1),
                        ..Default::default()
                    };
                    store
                        .transition(name.as_str(), Status::Running, change)
                        .await
                })
            })
            .collect::<Vec<_>>();
        for step in steps {
            let written = step.await.unwrap().unwrap().expect("RECEIVED -> RUNNING");
            assert_eq!(written.status, Status::Running);
            assert_eq!(written.attempts, 1);
            assert!(written.started_at.is_some());
        }
        let late = store
            .transition(names[7].as_str(), Status::Created, Transition::default())
            .await
            .unwrap();
        assert!(late.is_none(), "{backend:?}: RUNNING -> CREATED is refused");
        let failed = store
            .transition(
                names[7].as_str(),
                Status::Failed,
                Transition {
                    reason: Some("exit 3".into()),
                    exit_code: Some(3),
                    attempts: None,
                },
            )
            .await
            .unwrap()
            .expect("RUNNING -> FAILED");
        assert_eq!(failed.attempts, 1, "an absent attempt count is kept");

        for (i, name) in names.iter().enumerate() {
            let row = app.execution(name.as_str()).await;
            assert_eq!(row["args"]["N"], name.as_str(), "{backend:?}");
            let expected = if i == 7 { "FAILED" } else { "RUNNING" };
            assert_eq!(row["status"], expected, "{backend:?}: {row}");
        }
        let row = app.execution(names[7].as_str()).await;
        assert_eq!(
            (row["exit_code"].as_i64(), row["reason"].as_str()),
            (Some(3), Some("exit 3"))
        );
        assert!(row["finished_at"].is_string());
    }
}
