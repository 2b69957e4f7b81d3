//! Server-sent events: `GET /api/v1/executions/{name}/logs` with
//! `Accept: text/event-stream` follows a run as `curl -N` or a browser's `EventSource`
//! would, and `Last-Event-ID` resumes it without a gap or a repeat.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, backends, error_message, register_script, spawn_app};

/// One event as a client parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    id: Option<String>,
    kind: String,
    data: String,
}

/// Reads events off an SSE response until `stop` says so or the stream ends.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments and `retry:` skipped), or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    kind: "message".into(),
                    data: String::new(),
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.to_owned());
                    } else if let Some(kind) = line.strip_prefix("event: ") {
                        event.kind = kind.to_owned();
                    } else if let Some(text) = line.strip_prefix("data: ") {
                        data.push(text.to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a comment or `retry:`
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

impl TestApp {
    async fn events(&self, name: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = self
            .request(
                Method::GET,
                &format!("/api/v1/executions/{name}/logs"),
                Some(&self.admin),
            )
            .header("Accept", "text/event-stream")
            .header("Accept-Encoding", "gzip, br");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }
}

#[actix_web::test]
async fn events_follow_a_run_and_resume_from_last_event_id_without_gap_or_repeat() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "ticker",
            "for i in $(seq 1 30); do echo \"tick $i\"; sleep 0.05; done",
            &[],
            json!({}),
        )
        .await;
        let name = app.run("ticker", json!({})).await;

        // Follow it live and leave after five lines.
        let response = app.events(&name, None).await;
        assert_eq!(response.status().as_u16(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(
            headers
                .get("content-encoding")
                .is_none_or(|e| e == "identity"),
            "events are never compressed (a buffer would hold them back): {headers:?}"
        );
        let mut events = Events::new(response);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let event = events.next().await.expect("a line event");
            assert_eq!(event.kind, "message");
            seen.push(event);
        }
        drop(events);
        let status = app.execution(&name).await["status"].clone();
        assert_ne!(status, "SUCCEEDED", "left while it still ran: {status}");

        // Resume from the last id: the rest, once each, then the final status.
        let last = seen.last().unwrap().id.clone().unwrap();
        let mut events = Events::new(app.events(&name, Some(&last)).await);
        let mut ended = None;
        while let Some(event) = events.next().await {
            match event.kind.as_str() {
                "message" => seen.push(event),
                "status" => ended = Some(event.data),
                other => panic!("unexpected event {other}: {event:?}"),
            }
        }
        assert_eq!(ended.as_deref(), Some("SUCCEEDED"), "{backend:?}");
        let ids: Vec<String> = seen.iter().map(|e| e.id.clone().unwrap()).collect();
        let expected_ids: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
        assert_eq!(ids, expected_ids, "{backend:?}: no gap, no repeat");
        let lines: Vec<&str> = seen.iter().map(|e| e.data.as_str()).collect();
        let expected: Vec<String> = (1..=30).map(|i| format!("tick {i}")).collect();
        assert_eq!(lines, expected);

        // An EventSource reconnecting after the end is told to stop (204).
        let response = app.events(&name, Some("30")).await;
        assert_eq!(response.status().as_u16(), 204);
        // Without Last-Event-ID the whole log is replayed, then the status.
        let mut events = Events::new(app.events(&name, None).await);
        let mut count = 0;
        let mut last = None;
        while let Some(event) = events.next().await {
            count += 1;
            last = Some(event);
        }
        assert_eq!(count, 31);
        assert_eq!(last.unwrap().kind, "status");
        // Resuming in the middle of a finished run gives the rest.
        let mut events = Events::new(app.events(&name, Some("28")).await);
        let first = events.next().await.unwrap();
        assert_eq!(
            (first.id.as_deref(), first.data.as_str()),
            (Some("29"), "tick 29")
        );

        // A Last-Event-ID that is no line number is a 400.
        let response = app.events(&name, Some("yesterday")).await;
        assert!(
            error_message(response, 400)
                .await
                .contains("Last-Event-ID must be the id")
        );
    }
}

#[actix_web::test]
async fn events_carry_multi_line_text_and_the_errors_of_a_failed_run() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    register_script(
        &app,
        "crlf",
        "printf 'one\\rtwo\\n'; echo done; exit 3",
        &[],
        json!({}),
    )
    .await;
    let name = app.run("crlf", json!({})).await;
    app.wait_until_final(&name, Duration::from_secs(30)).await;
    let mut events = Events::new(app.events(&name, None).await);
    let first = events.next().await.unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));
    assert_eq!(
        first.data, "one\ntwo",
        "a lone CR splits data lines, never the event"
    );
    let second = events.next().await.unwrap();
    assert_eq!(second.data, "done");
    let end = events.next().await.unwrap();
    assert_eq!((end.kind.as_str(), end.data.as_str()), ("status", "FAILED"));
    assert!(events.next().await.is_none());
}
