//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the lines printed so far, or with
//! `follow=true` a chunked stream of them as they are printed, ending when the
//! container terminates. Like the kubelet, it answers 400 while the container is
//! still waiting to start.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::web::Bytes;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::objects::{bad_request, not_found};
use super::server::{Query, flag, reply};
use super::store::{Kind, Shared};

/// Answers a log request (`container`, `follow`, `tailLines`, `sinceSeconds`,
/// `sinceTime`, `timestamps` are understood; other parameters are ignored). As the
/// kubelet does, `sinceTime` (RFC 3339, whole seconds) keeps the lines stamped at or
/// after it, and `timestamps=true` prefixes each line with its RFC 3339 timestamp to
/// the nanosecond.
pub(super) fn log(
    shared: &Arc<Shared>,
    namespace: &str,
    name: &str,
    query: &Query,
) -> HttpResponse {
    let state = shared.lock();
    let Some(pod) = state.get_as::<Pod>(Kind::Pod, namespace, name) else {
        return reply(not_found(Kind::Pod, name));
    };
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.clone())
        .collect();
    let container = match (query.get("container"), names.as_slice()) {
        (Some(container), _) => container.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            let message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            );
            return reply(bad_request(message));
        }
    };
    let Some(index) = names.iter().position(|n| *n == container) else {
        return reply(bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    };
    let container_state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref()?.get(index)?.state.clone())
        .unwrap_or_default();
    if let Some(waiting) = container_state.waiting {
        let why = match waiting.reason.as_deref().unwrap_or("ContainerCreating") {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            other => other,
        };
        let message =
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: {why}");
        return reply(bad_request(message));
    }
    let key = (namespace.to_owned(), name.to_owned());
    let Some(log) = state.logs.get(&key) else {
        return HttpResponse::Ok().content_type("text/plain").finish();
    };
    let timestamps = flag(query, "timestamps");
    // Only the first container prints; the others have empty logs.
    let printed = if index == 0 {
        log.lines.as_slice()
    } else {
        &[]
    };
    let since = query
        .get("sinceSeconds")
        .and_then(|s| s.parse::<i64>().ok());
    let since = since.map(|s| Timestamp::now() - SignedDuration::from_secs(s));
    let since = match query.get("sinceTime") {
        Some(time) => match time.parse::<Timestamp>() {
            Ok(time) => Some(time),
            Err(e) => return reply(bad_request(format!("invalid sinceTime {time:?}: {e}"))),
        },
        None => since,
    };
    let mut selected: Vec<&(String, String)> = printed
        .iter()
        .filter(|(at, _)| {
            since.is_none_or(|since| at.parse::<Timestamp>().is_ok_and(|at| at >= since))
        })
        .collect();
    if let Some(tail) = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        selected.drain(..selected.len().saturating_sub(tail));
    }
    let backlog: VecDeque<Bytes> = selected
        .into_iter()
        .map(|l| format_line(l, timestamps))
        .collect();
    if !flag(query, "follow") || log.finished || index != 0 {
        return HttpResponse::Ok()
            .content_type("text/plain")
            .body(Vec::from(backlog).concat());
    }
    let follow = Follow {
        shared: shared.clone(),
        key,
        next: log.lines.len(),
        changed: log.changed.subscribe(),
        backlog,
        timestamps,
        finished: false,
    };
    drop(state);
    HttpResponse::Ok()
        .content_type("text/plain")
        .streaming(futures_util::stream::unfold(follow, Follow::next))
}

fn format_line((at, line): &(String, String), timestamps: bool) -> Bytes {
    match timestamps {
        true => Bytes::from(format!("{at} {line}\n")),
        false => Bytes::from(format!("{line}\n")),
    }
}

/// A followed log: what is left to send, and where to pick up new lines.
struct Follow {
    shared: Arc<Shared>,
    key: (String, String),
    next: usize,
    changed: watch::Receiver<()>,
    backlog: VecDeque<Bytes>,
    timestamps: bool,
    finished: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Follow)> {
        loop {
            if let Some(chunk) = self.backlog.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.finished {
                return None;
            }
            drop(self.changed.borrow_and_update());
            {
                let state = self.shared.lock();
                // The pod is gone: so is its log.
                let log = state.logs.get(&self.key)?;
                for line in &log.lines[self.next..] {
                    self.backlog.push_back(format_line(line, self.timestamps));
                }
                self.next = log.lines.len();
                self.finished = log.finished;
            }
            if self.backlog.is_empty() && !self.finished && self.changed.changed().await.is_err() {
                return None;
            }
        }
    }
}
