use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    Backend, backends, captured_logs, error_message, gone_within, json_body, numbered,
    register_script, sample_proc, spawn_app, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(20);

#[actix_web::test]
async fn a_proc_that_prints_lines_succeeds_and_its_log_is_stored() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "counter",
            "for i in 1 2 3; do echo line $i; done",
            &[],
            json!({}),
        )
        .await;
        let name = app.run("counter", json!({})).await;
        assert!(
            name.starts_with("counter-") && name.len() == "counter-".len() + 14,
            "{name}"
        );

        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{backend:?}: {execution}");
        assert_eq!(execution["exit_code"], 0);
        assert_eq!(execution["attempts"], 1);
        assert_eq!(execution["executor"], "local");
        assert_eq!(execution["user_email"], "admin@example.com");
        for field in ["created_at", "started_at", "finished_at"] {
            assert!(
                execution[field].as_str().unwrap().ends_with('Z'),
                "{field}: {execution}"
            );
        }
        let status = app.status(&name, &app.admin).await;
        assert_eq!(status.status().as_u16(), 200);
        assert_eq!(status.text().await.unwrap(), "SUCCEEDED");
        assert_eq!(app.stored_logs(&name).await, numbered(3), "{backend:?}");
    }
}

#[actix_web::test]
async fn a_failing_proc_ends_failed_with_its_exit_code() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "broken", "echo about to fail; exit 3", &[], json!({})).await;
        let name = app.run("broken", json!({})).await;
        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "FAILED", "{backend:?}");
        assert_eq!(execution["exit_code"], 3);
        assert_eq!(execution["reason"], "exited with code 3");
        assert_eq!(app.stored_logs(&name).await, ["about to fail"]);
    }
}

#[actix_web::test]
async fn a_finished_run_leaves_no_working_directory_behind() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let script =
            "echo scratch > a.txt; mkdir -p deep/er; echo more > deep/er/b.txt; echo wrote";
        register_script(&app, "scribbler", script, &[], json!({})).await;
        register_script(
            &app,
            "failing-scribbler",
            "echo x > c.txt; exit 1",
            &[],
            json!({}),
        )
        .await;
        for proc in ["scribbler", "failing-scribbler"] {
            let name = app.run(proc, json!({})).await;
            let execution = app.wait_until_final(&name, WAIT).await;
            assert!(
                execution["status"] == "SUCCEEDED" || execution["status"] == "FAILED",
                "{execution}"
            );
            let workdir = app.data_dir.join("runs").join(&name);
            assert!(
                gone_within(&workdir, WAIT).await,
                "{backend:?}: {} is still there after {name} ended {}",
                workdir.display(),
                execution["status"]
            );
        }
    }
}

#[actix_web::test]
async fn a_run_whose_working_directory_cannot_be_made_ends_failed_saying_why() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "homeless", "echo never", &[], json!({})).await;
    // A file where the runs' directory should be.
    let runs = app.data_dir.join("runs");
    let _ = std::fs::remove_dir_all(&runs);
    std::fs::write(&runs, "not a directory").unwrap();
    let name = app.run("homeless", json!({})).await;
    let execution = app.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = execution["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cannot create its working directory ")
            && reason.contains(&format!("runs/{name}")),
        "{reason}"
    );
    assert_eq!(execution["exit_code"], serde_json::Value::Null);
    assert!(app.stored_logs(&name).await.is_empty());
}

#[actix_web::test]
async fn a_proc_past_its_deadline_ends_timed_out() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "sleeper",
        "echo going to sleep; sleep 30",
        &[],
        json!({"active_deadline_seconds": 1}),
    )
    .await;
    let started = std::time::Instant::now();
    let name = app.run("sleeper", json!({})).await;
    let execution = app.wait_until_final(&name, WAIT).await;
    assert_eq!(execution["status"], "TIMED_OUT");
    assert_eq!(execution["reason"], "exceeded its deadline of 1s");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "killed near the deadline"
    );
    assert_eq!(app.stored_logs(&name).await, ["going to sleep"]);
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes: check the state in /proc.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[actix_web::test]
async fn cancel_ends_cancelled_and_kills_the_whole_process_group() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let script = "sleep 300 & echo $! > child.pid; echo $$ > leader.pid; echo started; wait";
        register_script(&app, "long-runner", script, &[], json!({})).await;
        let name = app.run("long-runner", json!({})).await;
        app.wait_for_status(&name, "RUNNING", WAIT).await;
        let workdir = app.data_dir.join("runs").join(&name);
        let read_pid = |file: &str| -> i32 {
            for _ in 0..200 {
                if let Ok(text) = std::fs::read_to_string(workdir.join(file))
                    && let Ok(pid) = text.trim().parse()
                {
                    return pid;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{file} never appeared");
        };
        let (leader, child) = (read_pid("leader.pid"), read_pid("child.pid"));
        assert!(alive(leader) && alive(child));

        let body = json_body(app.cancel(&name, &app.admin).await, 200).await;
        assert_eq!(body["status"], "CANCELLED", "{backend:?}");
        assert_eq!(body["reason"], "cancelled by admin@example.com");
        assert!(!alive(leader), "{backend:?}: the leader is gone");
        assert!(!alive(child), "{backend:?}: no orphan is left");

        // Idempotent, and a finished run cannot be cancelled.
        let again = json_body(app.cancel(&name, &app.admin).await, 200).await;
        assert_eq!(again["status"], "CANCELLED");
        register_script(&app, "quick", "true", &[], json!({})).await;
        let done = app.run("quick", json!({})).await;
        app.wait_for_status(&done, "SUCCEEDED", WAIT).await;
        let message = error_message(app.cancel(&done, &app.admin).await, 409).await;
        assert_eq!(message, format!("execution {done} already ended SUCCEEDED"));
        error_message(app.cancel("no-such-run", &app.admin).await, 404).await;
    }
}

#[actix_web::test]
async fn retries_run_every_attempt_and_keep_each_attempts_lines() {
    for backend in backends() {
        let app = spawn_app_with(backend, &[("kube_job_retries", "2")]).await;
        register_script(
            &app,
            "flaky",
            "echo attempt $PROCTOR_ATTEMPT; exit 1",
            &[],
            json!({}),
        )
        .await;
        let name = app.run("flaky", json!({})).await;
        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "FAILED", "{backend:?}");
        assert_eq!(execution["attempts"], 3);
        assert_eq!(
            app.stored_logs(&name).await,
            ["attempt 1", "attempt 2", "attempt 3"]
        );

        register_script(
            &app,
            "second-time",
            "echo try $PROCTOR_ATTEMPT; [ $PROCTOR_ATTEMPT -ge 2 ]",
            &[],
            json!({}),
        )
        .await;
        let name = app.run("second-time", json!({})).await;
        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{backend:?}");
        assert_eq!(execution["attempts"], 2);
    }
}

#[actix_web::test]
async fn runs_beyond_the_concurrency_bound_wait_as_created() {
    let app = spawn_app_with(Backend::Embedded, &[("local_max_concurrent_runs", "1")]).await;
    register_script(&app, "hog", "sleep 30", &[], json!({})).await;
    let first = app.run("hog", json!({})).await;
    app.wait_for_status(&first, "RUNNING", WAIT).await;
    let second = app.run("hog", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.execution(&second).await["status"], "CREATED");
    json_body(app.cancel(&first, &app.admin).await, 200).await;
    app.wait_for_status(&second, "RUNNING", WAIT).await;
    json_body(app.cancel(&second, &app.admin).await, 200).await;
}

#[actix_web::test]
async fn args_are_checked_against_the_procs_declared_args() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "greeter",
            "echo Hello $NAME from $PLACE",
            &["NAME", "PLACE"],
            json!({}),
        )
        .await;
        let body = json_body(
            app.execute(
                &json!({"name": "greeter", "args": {"NAME": "x", "COLOR": "red"}}),
                &app.admin,
            )
            .await,
            422,
        )
        .await;
        assert_eq!(
            body["error"], "unknown args: COLOR; missing args: PLACE",
            "{backend:?}"
        );
        assert_eq!(
            body["detail"],
            json!({"unknown": ["COLOR"], "missing": ["PLACE"]})
        );

        let cases = [
            (
                json!({"name": "greeter", "args": {"NAME": 5, "PLACE": "y"}}),
                400,
                "invalid type: integer `5`, expected a string",
            ),
            (json!({"args": {}}), 400, "missing field `name`"),
            (
                json!({"name": "Greeter"}),
                400,
                "proc name \"Greeter\" is invalid",
            ),
            (json!({"name": "nobody"}), 404, "no proc named nobody"),
            (
                json!({"name": "greeter", "args": {"NAME": "a", "PLACE": "b"}, "callback_url": "ftp://x"}),
                400,
                "is not an http(s) URL",
            ),
        ];
        for (body, status, expected) in cases {
            let message = error_message(app.execute(&body, &app.admin).await, status).await;
            assert!(message.contains(expected), "{backend:?} {body}: {message}");
        }
        let name = app
            .run("greeter", json!({"NAME": "Ada", "PLACE": "London"}))
            .await;
        app.wait_for_status(&name, "SUCCEEDED", WAIT).await;
        assert_eq!(app.stored_logs(&name).await, ["Hello Ada from London"]);
    }
}

#[actix_web::test]
async fn unmet_requirements_end_the_execution_with_the_reason() {
    let app = spawn_app(Backend::Embedded).await;
    let mut no_command = sample_proc("no-command");
    no_command.as_object_mut().unwrap().remove("command");
    no_command["env_vars"]["secrets"] = json!([]);
    json_body(app.register(&no_command, &app.admin).await, 201).await;
    let body = json_body(
        app.execute(
            &json!({"name": "no-command", "args": {"NAME": "x"}}),
            &app.admin,
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["status"], "REQUIREMENT_NOT_MET");
    let execution = app.execution(body["name"].as_str().unwrap()).await;
    assert!(
        execution["reason"]
            .as_str()
            .unwrap()
            .starts_with("the local executor runs a proc's command, and proc no-command has none"),
        "{execution}"
    );

    json_body(
        app.register(&sample_proc("needs-secret"), &app.admin).await,
        201,
    )
    .await;
    let body = json_body(
        app.execute(
            &json!({"name": "needs-secret", "args": {"NAME": "x"}}),
            &app.admin,
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["status"], "REQUIREMENT_NOT_MET");
    let execution = app.execution(body["name"].as_str().unwrap()).await;
    assert_eq!(
        execution["reason"],
        "proc needs-secret needs secret(s) SLACK_TOKEN which are not set: set them with POST /jobs/secrets"
    );
}

#[actix_web::test]
async fn secrets_reach_the_process_and_never_an_api_answer_or_a_log_line() {
    const SECRET: &str = "s3cr3t-value-that-must-not-leak";
    for backend in backends() {
        let app = spawn_app(backend).await;
        let mut proc = sample_proc("uses-secret");
        // The command never holds the secret: it prints its length, and counts the
        // variables of proctord's own environment (cargo's, here) that leaked in.
        proc["command"] = json!([
            "sh",
            "-c",
            "echo token length ${#SLACK_TOKEN} for $NAME; env | grep -c '^CARGO' || true"
        ]);
        json_body(app.register(&proc, &app.admin).await, 201).await;
        let body = json!({"job_name": "uses-secret", "secrets": {"SLACK_TOKEN": SECRET}});
        json_body(app.set_secrets(&body, &app.admin).await, 201).await;

        let name = app.run("uses-secret", json!({"NAME": "ci"})).await;
        let execution = app.wait_until_final(&name, WAIT).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
        let lines = app.stored_logs(&name).await;
        assert_eq!(
            lines,
            [
                format!("token length {} for ci", SECRET.len()),
                "0".to_owned()
            ],
            "{backend:?}: the secret is in the environment, proctord's own variables are not"
        );

        let mut answers = vec![execution.to_string()];
        for path in [
            format!("/api/v1/executions/{name}"),
            "/api/v1/executions".to_owned(),
            format!("/api/v1/executions/{name}/logs"),
            "/jobs/metadata/uses-secret".to_owned(),
            "/jobs/secrets/uses-secret".to_owned(),
        ] {
            let response = app
                .request(reqwest::Method::GET, &path, Some(&app.admin))
                .send()
                .await
                .unwrap();
            answers.push(response.text().await.unwrap());
        }
        let transcript = app
            .logs_socket(&name, &app.admin)
            .await
            .read_to_end(WAIT)
            .await;
        answers.extend(transcript.lines);
        for answer in answers {
            assert!(
                !answer.contains(SECRET),
                "{backend:?}: a secret leaked: {answer}"
            );
        }
    }
    assert!(
        !captured_logs().contains(SECRET),
        "a secret reached proctord's log"
    );
    assert!(
        captured_logs().contains("status written"),
        "the capture works"
    );
}

#[actix_web::test]
async fn executions_are_listed_newest_first_with_filters_and_pages() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "ok", "true", &[], json!({})).await;
    register_script(&app, "bad", "false", &[], json!({})).await;
    let mut names = Vec::new();
    for proc in ["ok", "bad", "ok"] {
        let name = app.run(proc, json!({})).await;
        app.wait_until_final(&name, WAIT).await;
        names.push(name);
    }
    let list = |query: &'static str| {
        let app = &app;
        async move {
            let response = app
                .request(
                    reqwest::Method::GET,
                    &format!("/api/v1/executions{query}"),
                    Some(&app.admin),
                )
                .send()
                .await
                .unwrap();
            json_body(response, 200).await
        }
    };
    let all = list("").await;
    let got: Vec<&str> = all["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [names[2].as_str(), names[1].as_str(), names[0].as_str()]
    );
    assert_eq!(all["next_offset"], json!(null));

    let failed = list("?status=failed").await;
    assert_eq!(failed["executions"].as_array().unwrap().len(), 1);
    assert_eq!(failed["executions"][0]["name"], names[1].as_str());
    let page = list("?proc=ok&limit=1").await;
    assert_eq!(page["executions"][0]["name"], names[2].as_str());
    assert_eq!(page["next_offset"], 1);
    let next = list("?proc=ok&limit=1&offset=1").await;
    assert_eq!(next["executions"][0]["name"], names[0].as_str());
    assert_eq!(
        list("?since=2999-01-01T00:00:00Z").await["executions"],
        json!([])
    );

    for (query, expected) in [
        ("?status=DONE", "not a status"),
        ("?limit=0", "limit must be between"),
        ("?since=yesterday", "RFC 3339"),
    ] {
        let response = app
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/executions{query}"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        let message = error_message(response, 400).await;
        assert!(message.contains(expected), "{query}: {message}");
    }
}

#[actix_web::test]
async fn executions_of_a_groups_proc_are_hidden_from_outsiders() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "ops-task",
        "true",
        &[],
        json!({"authorized_groups": ["ops"]}),
    )
    .await;
    let message = error_message(
        app.execute(&json!({"name": "ops-task"}), &app.outsider)
            .await,
        403,
    )
    .await;
    assert!(message.contains("may not use proc ops-task"), "{message}");
    let response = app.execute(&json!({"name": "ops-task"}), &app.member).await;
    let name = json_body(response, 201).await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_until_final(&name, WAIT).await;
    assert_eq!(app.status(&name, &app.member).await.status().as_u16(), 200);
    let message = error_message(app.status(&name, &app.outsider).await, 403).await;
    assert_eq!(
        message,
        format!("outsider@example.com may not see execution {name} of proc ops-task")
    );
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/v1/executions",
            Some(&app.outsider),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response, 200).await["executions"], json!([]));
    error_message(app.status("nonexistent-run", &app.admin).await, 404).await;
    error_message(app.status("Bad_Name", &app.admin).await, 400).await;
}
