//! `ingest`: how many lines a second one run can write and have stored. The run prints
//! the wall-clock time as its first line, then `seq` prints the rest as fast as it can;
//! the bench reads the `Proctor-Stored-Lines` header every few milliseconds until it
//! says every line is stored. Lines/s = lines / (last stored − first line written).
//! Measured with no subscriber and with live websocket subscribers, each of which must
//! get every line, in order.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Plan, Row, Server, subscribe};

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How many lines of `name` are stored (the `Proctor-Stored-Lines` header).
async fn stored_lines(
    client: &reqwest::Client,
    server: &Server,
    name: &str,
    lines: usize,
) -> usize {
    let response = client
        .get(format!(
            "{}/api/v1/executions/{name}/logs?since_seq={lines}&limit=1",
            server.base
        ))
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("Proctor-Stored-Lines")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn ingest(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    // Line 1 is "1 <unix time>" (when the output started), lines 2..=N "<seq> ingest
    // line of the bench" (~30 bytes), so a subscriber checks order by the first word.
    // The second's pause lets subscribers connect before the first line.
    let script = r#"sleep 1; printf '1 %s\n' "$(date +%s.%N)"; exec seq -f '%.0f ingest line of the bench' 2 "$LINES""#;
    server
        .register(&client, "spew", json!(["sh", "-c", script]), &["LINES"])
        .await;
    let lines = plan.ingest_lines;
    for &subscribers in plan.ingest_subscribers {
        let response = client
            .post(format!("{}/jobs/execute", server.base))
            .json(&json!({"name": "spew", "args": {"LINES": lines.to_string()}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let name = response.json::<Value>().await.unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let tasks: Vec<_> = (0..subscribers)
            .map(|_| tokio::spawn(subscribe(server.port, name.clone())))
            .collect();
        let cpu_before = server.cpu_seconds();
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut stored, mut all_stored_at) = (0, None);
        while Instant::now() < deadline {
            stored = stored_lines(&client, &server, &name, lines).await;
            if stored >= lines {
                all_stored_at = Some(wall_now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let cpu = server.cpu_seconds() - cpu_before;
        let first_line: f64 = client
            .get(format!(
                "{}/api/v1/executions/{name}/logs?since_seq=0&limit=1",
                server.base
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(f64::NAN);
        let mut complete = true;
        for task in tasks {
            let (count, ordered, ..) = task.await.unwrap();
            complete &= count == lines && ordered;
        }
        let seconds = all_stored_at.map_or(f64::NAN, |at| at - first_line);
        let who = match subscribers {
            0 => "no subscriber".to_owned(),
            n => format!("{n} websocket subscribers"),
        };
        rows.push(Row {
            scenario: "ingest",
            backend: backend.to_owned(),
            metric: format!(
                "one run printing {lines} lines, {who}: lines/s stored (first line → last stored), stored, every subscriber complete & in order, proctord CPU s"
            ),
            value: format!(
                "{:.0}, {stored}, {complete}, {cpu:.2}",
                stored as f64 / seconds
            ),
            target: if backend == "postgres+redis" {
                "≥ 500,000"
            } else {
                ""
            },
        });
    }
}
