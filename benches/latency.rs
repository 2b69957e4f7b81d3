//! `latency`: one short run at a time, from submission to its final state. A proc
//! printing three lines is submitted; as soon as the 201 arrives its log websocket is
//! opened and read to its close frame, whose reason is the final status (sent once the
//! status and every line are stored). Submit → close, p50 / p90, runs one after
//! another; then the stored records split it into submit → RUNNING (as the record
//! says) and RUNNING → final.

use std::time::Instant;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Plan, Row, Server, execution, percentile, seconds_between, sorted};

pub(crate) async fn latency(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    server
        .register(
            &client,
            "three",
            json!(["printf", "one\\ntwo\\nthree\\n"]),
            &[],
        )
        .await;
    let (mut totals, mut names, mut wrong) = (Vec::new(), Vec::new(), 0usize);
    // A few runs first, so connections and caches are warm as in the runs measured.
    for i in 0..plan.latency_runs + 5 {
        let sent = Instant::now();
        let response = client
            .post(format!("{}/jobs/execute", server.base))
            .json(&json!({"name": "three"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let name = response.json::<Value>().await.unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let (mut socket, _) = tokio_tungstenite::connect_async(format!(
            "ws://127.0.0.1:{}/jobs/logs?job_name={name}",
            server.port
        ))
        .await
        .unwrap();
        let (mut lines, mut status) = (0, String::new());
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Text(_) => lines += 1,
                Message::Close(frame) => {
                    status = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    break;
                }
                _ => {}
            }
        }
        let took = sent.elapsed().as_secs_f64() * 1000.0;
        if i < 5 {
            continue;
        }
        if lines != 3 || status != "SUCCEEDED" {
            wrong += 1;
        }
        totals.push(took);
        names.push(name);
    }
    let (mut to_running, mut to_final) = (Vec::new(), Vec::new());
    for name in &names {
        let record = execution(&client, &server.base, name).await;
        if let Some(s) = seconds_between(&record["created_at"], &record["started_at"]) {
            to_running.push(s * 1000.0);
        }
        if let Some(s) = seconds_between(&record["started_at"], &record["finished_at"]) {
            to_final.push(s * 1000.0);
        }
    }
    let (totals, to_running, to_final) = (sorted(totals), sorted(to_running), sorted(to_final));
    rows.push(Row {
        scenario: "latency",
        backend: backend.to_owned(),
        metric: format!(
            "three-line run, {} one after another: submit → websocket closed with the final status, p50 / p90 (ms); runs with a wrong end",
            names.len()
        ),
        value: format!(
            "{:.2} / {:.2}; {wrong}",
            percentile(&totals, 50.0),
            percentile(&totals, 90.0)
        ),
        target: "p50 ≤ 5",
    });
    rows.push(Row {
        scenario: "latency",
        backend: backend.to_owned(),
        metric: "the same runs' records: created → started, started → finished, p50 / p90 (ms)"
            .into(),
        value: format!(
            "{:.2} / {:.2}, {:.2} / {:.2}",
            percentile(&to_running, 50.0),
            percentile(&to_running, 90.0),
            percentile(&to_final, 50.0),
            percentile(&to_final, 90.0)
        ),
        target: "",
    });
}
