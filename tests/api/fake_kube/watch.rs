//! Label and field selectors, list bodies and watch streams in the API server's
//! wire format: one `{"type": .., "object": ..}` JSON document per line, chunked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::web::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep_until};

use super::objects;
use super::store::{Kind, Shared, WatchMsg, watch_line};

/// A parsed `labelSelector` and `fieldSelector`.
#[derive(Debug, Clone, Default)]
pub(super) struct Filter {
    labels: Vec<(String, Op)>,
    /// (dotted path, wanted value, equal?)
    fields: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

impl Filter {
    /// Parses `key=value`, `key==value`, `key!=value`, `key`, `!key`,
    /// `key in (a,b)` and `key notin (a,b)`, comma-separated; field selectors
    /// `path=value`, `path==value`, `path!=value` on any dotted path.
    pub(super) fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for term in split_terms(labels.unwrap_or_default()) {
            filter.labels.push(parse_label_term(&term)?);
        }
        for term in fields.unwrap_or_default().split(',').map(str::trim) {
            if term.is_empty() {
                continue;
            }
            let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            filter
                .fields
                .push((path.trim().into(), value.trim().into(), equal));
        }
        Ok(filter)
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let labels_match = self.labels.iter().all(|(key, op)| {
            let value = labels.get(key).and_then(Value::as_str);
            match op {
                Op::In(values) => value.is_some_and(|v| values.iter().any(|w| w == v)),
                Op::NotIn(values) => value.is_none_or(|v| values.iter().all(|w| w != v)),
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
            }
        });
        labels_match
            && self.fields.iter().all(|(path, wanted, equal)| {
                let value = path.split('.').fold(object, |v, part| &v[part]);
                (value.as_str().unwrap_or_default() == wanted) == *equal
            })
    }
}

/// Splits a label selector on the commas outside parentheses.
fn split_terms(selector: &str) -> Vec<String> {
    let (mut terms, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    terms
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_term(term: &str) -> Result<(String, Op), String> {
    let invalid = || format!("unable to parse requirement: found '{term}'");
    let set = |values: &str| -> Vec<String> {
        let values = values.trim().trim_start_matches('(').trim_end_matches(')');
        values.split(',').map(|v| v.trim().to_owned()).collect()
    };
    let (key, op) = if let Some(key) = term.strip_prefix('!') {
        (key, Op::NotExists)
    } else if let Some((key, value)) = term.split_once("!=") {
        (key, Op::NotIn(vec![value.trim().into()]))
    } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        (key, Op::In(vec![value.trim().into()]))
    } else if let Some((key, values)) = term.split_once(" notin ") {
        (key, Op::NotIn(set(values)))
    } else if let Some((key, values)) = term.split_once(" in ") {
        (key, Op::In(set(values)))
    } else {
        (term, Op::Exists)
    };
    let key = key.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
    if key.is_empty() || !key.chars().all(valid) {
        return Err(invalid());
    }
    Ok((key.to_owned(), op))
}

/// A `<Kind>List` with the current resourceVersion; items carry no kind or apiVersion.
pub(super) fn list_body(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    filter: &Filter,
) -> Value {
    let state = shared.lock();
    let items: Vec<Value> = state
        .list(kind, namespace)
        .into_iter()
        .filter(|object| filter.matches(object))
        .map(|object| {
            let mut item = object.clone();
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            item
        })
        .collect();
    json!({
        "kind": format!("{}List", kind.kind()),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": state.resource_version().to_string()},
        "items": items,
    })
}

/// What a watch request asked for.
pub(super) struct WatchRequest {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub filter: Filter,
    /// `None` for "" and "0": start with the current objects as `ADDED`.
    pub from: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

/// Opens the watch and answers with its stream. An expired resourceVersion gets one
/// `ERROR` event carrying a 410 `Expired` Status, then the end of the stream.
pub(super) fn watch_response(shared: &Arc<Shared>, request: WatchRequest) -> HttpResponse {
    let mut state = shared.lock();
    let mut backlog = VecDeque::new();
    let from = match request.from {
        Some(from) => from,
        None => {
            let rv = state.resource_version();
            let current = state.list(request.kind, request.namespace.as_deref());
            for object in current.into_iter().filter(|o| request.filter.matches(o)) {
                backlog.push_back(watch_line("ADDED", object));
            }
            if request.send_initial_events && request.bookmarks {
                backlog.push_back(bookmark(request.kind, rv, true));
            }
            rv
        }
    };
    let rx = match state.subscribe(request.kind, request.namespace, request.filter, from) {
        Ok((replayed, rx)) => {
            backlog.extend(replayed);
            Some(rx)
        }
        Err(oldest) => {
            let status = objects::expired(from, oldest);
            backlog.push_back(watch_line("ERROR", &json!(status)));
            None
        }
    };
    drop(state);
    let stream = WatchStream {
        backlog,
        rx,
        until: Instant::now() + request.timeout,
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(futures_util::stream::unfold(stream, WatchStream::next))
}

fn bookmark(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object =
        json!({"kind": kind.kind(), "apiVersion": kind.api_version(), "metadata": metadata});
    watch_line("BOOKMARK", &object)
}

struct WatchStream {
    backlog: VecDeque<Bytes>,
    rx: Option<UnboundedReceiver<WatchMsg>>,
    until: Instant,
}

type Chunk = Result<Bytes, std::io::Error>;

impl WatchStream {
    async fn next(mut self) -> Option<(Chunk, WatchStream)> {
        if let Some(line) = self.backlog.pop_front() {
            return Some((Ok(line), self));
        }
        let rx = self.rx.as_mut()?;
        tokio::select! {
            message = rx.recv() => match message {
                Some(WatchMsg::Line(line)) => Some((Ok(line), self)),
                Some(WatchMsg::Drop) => {
                    self.rx = None;
                    let error = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "watch dropped");
                    Some((Err(error), self))
                }
                None => None,
            },
            () = sleep_until(self.until) => None,
        }
    }
}
