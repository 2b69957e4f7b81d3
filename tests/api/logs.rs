use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, backends, error_message, numbered, register_script, spawn_app};

const WAIT: Duration = Duration::from_secs(30);

#[actix_web::test]
async fn a_subscriber_gets_every_line_in_order_then_a_close_frame_with_the_status() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "talker",
            "sleep 0.3; for i in $(seq 1 50); do echo line $i; done; exit 4",
            &[],
            json!({}),
        )
        .await;
        let name = app.run("talker", json!({})).await;
        let socket = app.logs_socket(&name, &app.admin).await;
        let transcript = socket.read_to_end(WAIT).await;
        assert_eq!(transcript.lines, numbered(50), "{backend:?}");
        assert_eq!(
            transcript.close_code,
            Some(1000),
            "{backend:?}: a normal close"
        );
        assert_eq!(transcript.close_reason, "FAILED", "{backend:?}");

        // After the run: replayed from the store, same lines, same end.
        let replay = app
            .logs_socket(&name, &app.admin)
            .await
            .read_to_end(WAIT)
            .await;
        assert_eq!(replay.lines, numbered(50), "{backend:?}");
        assert_eq!(replay.close_reason, "FAILED");
    }
}

#[actix_web::test]
async fn three_subscribers_joining_at_different_moments_each_get_the_whole_log() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let script = "for i in $(seq 1 400); do echo line $i; if [ $((i % 40)) = 0 ]; then sleep 0.1; fi; done";
        register_script(&app, "steady", script, &[], json!({})).await;
        let name = app.run("steady", json!({})).await;
        let early = app.logs_socket(&name, &app.admin).await;
        let early = actix_web::rt::spawn(early.read_to_end(WAIT));
        tokio::time::sleep(Duration::from_millis(450)).await;
        let midway = app.logs_socket(&name, &app.member).await;
        let midway = actix_web::rt::spawn(midway.read_to_end(WAIT));
        app.wait_until_final(&name, WAIT).await;
        let late = app
            .logs_socket(&name, &app.admin)
            .await
            .read_to_end(WAIT)
            .await;
        let (early, midway) = (early.await.unwrap(), midway.await.unwrap());
        for (who, transcript) in [("early", early), ("midway", midway), ("late", late)] {
            assert_eq!(transcript.lines.len(), 400, "{backend:?} {who}");
            assert_eq!(
                transcript.lines,
                numbered(400),
                "{backend:?} {who}: in order, no gap, no duplicate"
            );
            assert_eq!(transcript.close_reason, "SUCCEEDED", "{backend:?} {who}");
        }
    }
}

#[actix_web::test]
async fn a_subscriber_that_stops_reading_never_stalls_the_others_and_resumes_from_the_store() {
    let app = spawn_app(Backend::Embedded).await;
    // 200,000 lines of 100 bytes: far more than socket buffers hold.
    let script = "seq -f 'line %06g ..........................................................................................' 1 200000";
    register_script(&app, "firehose", script, &[], json!({})).await;
    let name = app.run("firehose", json!({})).await;
    let stalled = app.logs_socket(&name, &app.admin).await;
    let reader = app.logs_socket(&name, &app.admin).await;
    let started = std::time::Instant::now();
    let transcript = reader.read_to_end(Duration::from_secs(120)).await;
    assert_eq!(
        transcript.lines.len(),
        200_000,
        "the reading client got every line"
    );
    assert!(
        transcript.lines[0].starts_with("line 000001 ")
            && transcript.lines[199_999].starts_with("line 200000 ")
    );
    assert!(transcript.lines.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(transcript.close_reason, "SUCCEEDED");
    assert_eq!(app.execution(&name).await["status"], "SUCCEEDED");
    eprintln!(
        "200,000 lines streamed to a reader beside a stalled client in {:?}",
        started.elapsed()
    );

    // The stalled client, read at last: it was unsubscribed from the live stream while
    // it stalled, and reads on from the store: every line, in order, then the status.
    let stalled = stalled.read_to_end(Duration::from_secs(120)).await;
    assert_eq!(
        stalled.lines.len(),
        200_000,
        "the stalled client got every line"
    );
    assert_eq!(
        stalled.lines, transcript.lines,
        "in order, no gap, no duplicate"
    );
    assert_eq!(stalled.close_code, Some(1000), "{:?}", stalled.close_reason);
    assert_eq!(stalled.close_reason, "SUCCEEDED");
    assert_eq!(
        app.stored_logs(&name).await.len(),
        200_000,
        "every line was stored"
    );
}

#[actix_web::test]
async fn the_log_socket_refuses_unknown_executions_and_answers_plain_http_with_the_text() {
    let app = spawn_app(Backend::Embedded).await;
    let response = app
        .request(
            reqwest::Method::GET,
            "/jobs/logs?job_name=nothing-here",
            Some(&app.admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_message(response, 404).await,
        "no execution named nothing-here"
    );
    let response = app
        .request(reqwest::Method::GET, "/jobs/logs", Some(&app.admin))
        .send()
        .await
        .unwrap();
    let message = error_message(response, 400).await;
    assert!(message.contains("job_name"), "{message}");
    register_script(&app, "done", "echo hi", &[], json!({})).await;
    let name = app.run("done", json!({})).await;
    app.wait_until_final(&name, Duration::from_secs(10)).await;
    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/jobs/logs?job_name={name}"),
            Some(&app.admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "plain HTTP gets the stored lines"
    );
    assert_eq!(response.headers()["proctor-status"], "SUCCEEDED");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    assert!(
        response.headers().get("content-disposition").is_none(),
        "shown, not saved"
    );
    assert_eq!(response.text().await.unwrap(), "hi\n");
}

#[actix_web::test]
async fn stored_lines_keep_their_text_and_order_across_large_batches_and_retried_ones() {
    use proctor::store::StoredLine;
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(&app, "quiet", "true", &[], json!({})).await;
        let name = app.run("quiet", json!({})).await;
        app.wait_until_final(&name, WAIT).await;
        let id = app.stores.executions.get(&name).await.unwrap().unwrap().id;
        let line = |seq: i64, text: String| StoredLine {
            execution_id: id.clone(),
            seq,
            line: text,
            logged_at: proctor::store::now(),
            pod: None,
            emitted_ns: None,
        };
        let awkward = "quotes ' \" , {braces} \\ backslash, tab\there, ünïcödé ✓, NULL, {}";
        // More lines than one statement takes on either backend.
        let first: Vec<StoredLine> = (1..=12_000)
            .map(|seq| line(seq, format!("line {seq:05} {awkward}")))
            .collect();
        app.stores.logs.append(first).await.unwrap();
        // A retried batch overlapping the stored lines: those keep their first text.
        let retried: Vec<StoredLine> = (11_990..=12_010)
            .map(|seq| line(seq, format!("line {seq:05} retried")))
            .collect();
        app.stores.logs.append(retried).await.unwrap();

        let stored = app.stored_logs(&name).await;
        assert_eq!(stored.len(), 12_010, "{backend:?}");
        assert_eq!(stored[0], format!("line 00001 {awkward}"), "{backend:?}");
        assert_eq!(stored[11_999], format!("line 12000 {awkward}"));
        assert_eq!(stored[12_000], "line 12001 retried");
        assert!(
            stored.windows(2).all(|w| w[0] < w[1]),
            "{backend:?}: in seq order"
        );
    }
}
