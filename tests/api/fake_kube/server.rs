//! The HTTP side: the server's own thread, the route table (whose patterns are also
//! the request counter's keys) and one handler per action.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Value, json};

use super::objects::{self, bad_request, not_found};
use super::store::{Kind, Shared};
use super::watch::{Filter, WatchRequest, list_body, watch_response};
use super::{controller, logs};

/// Binds 127.0.0.1:0 and serves on a thread of its own; returns the URL and the
/// handle that stops it.
pub(super) fn start(shared: Arc<Shared>) -> (String, ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("a local address"));
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fake-kube".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(dispatch))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(0)
                .listen(listener)
                .expect("serve on the bound listener")
                .run();
                let _ = handle_tx.send(server.handle());
                let _ = server.await;
            });
        })
        .expect("spawn the fake-kube thread");
    let handle = handle_rx.recv().expect("the fake's server handle");
    (url, handle)
}

/// Where a request goes.
enum Route {
    Version,
    Collection(Kind, Option<String>),
    Object(Kind, String, String),
    Log(String, String),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["version"] => return Some(Route::Version),
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", "batch", "v1", rest @ ..] => ("batch", rest),
            _ => return None,
        };
        let kind = |plural: &str| match (group, plural) {
            ("batch", "jobs") => Some(Kind::Job),
            ("", "pods") => Some(Kind::Pod),
            ("", "secrets") => Some(Kind::Secret),
            _ => None,
        };
        Some(match rest {
            [plural] => Route::Collection(kind(plural)?, None),
            ["namespaces", ns, plural] => Route::Collection(kind(plural)?, Some(ns.to_string())),
            ["namespaces", ns, plural, name] => {
                Route::Object(kind(plural)?, ns.to_string(), name.to_string())
            }
            ["namespaces", ns, "pods", name, "log"] if group.is_empty() => {
                Route::Log(ns.to_string(), name.to_string())
            }
            _ => return None,
        })
    }

    /// The path with `{ns}` and `{name}` for the variable parts.
    fn pattern(&self) -> String {
        let prefix = |kind: Kind| match kind {
            Kind::Job => "/apis/batch/v1",
            Kind::Pod | Kind::Secret => "/api/v1",
        };
        match self {
            Route::Version => "/version".into(),
            Route::Collection(kind, None) => format!("{}/{}", prefix(*kind), kind.plural()),
            Route::Collection(kind, Some(_)) => {
                format!("{}/namespaces/{{ns}}/{}", prefix(*kind), kind.plural())
            }
            Route::Object(kind, ..) => {
                format!(
                    "{}/namespaces/{{ns}}/{}/{{name}}",
                    prefix(*kind),
                    kind.plural()
                )
            }
            Route::Log(..) => "/api/v1/namespaces/{ns}/pods/{name}/log".into(),
        }
    }
}

pub(super) type Query = HashMap<String, String>;

/// `true` or `1`, as the API server reads boolean query parameters.
pub(super) fn flag(query: &Query, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// Counts the request, then routes it.
async fn dispatch(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let shared = shared.into_inner();
    let query: Query = web::Query::<Query>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let route = Route::parse(req.path());
    let method = req.method().as_str().to_owned();
    let watching = method == "GET" && flag(&query, "watch");
    let pattern = route
        .as_ref()
        .map_or_else(|| req.path().to_owned(), Route::pattern);
    let line = format!("{method} {}", req.uri());
    (shared.lock().requests).record(format!("{method} {pattern}"), watching, line);
    let Some(route) = route else {
        return reply(objects::not_found_path());
    };
    match (method.as_str(), route) {
        ("GET", Route::Version) => version(),
        ("GET", Route::Collection(kind, ns)) => list_or_watch(&shared, kind, ns, &query, watching),
        // Pods are made by the job controller only.
        ("POST", Route::Collection(kind, Some(ns))) if kind != Kind::Pod => {
            create(&shared, kind, &ns, &body)
        }
        ("GET", Route::Object(kind, ns, name)) => match shared.lock().get(kind, &ns, &name) {
            Some(object) => HttpResponse::Ok().json(object),
            None => reply(not_found(kind, &name)),
        },
        ("DELETE", Route::Object(kind, ns, name)) if kind != Kind::Pod => {
            delete(&shared, kind, &ns, &name, &body, &query)
        }
        ("PATCH", Route::Object(kind, ns, name)) if kind != Kind::Pod => {
            merge_patch(&shared, kind, &ns, &name, &req, &body)
        }
        ("GET", Route::Log(ns, name)) => logs::log(&shared, &ns, &name, &query),
        (method, _) => reply(objects::method_not_allowed(method)),
    }
}

/// `PATCH` with `application/merge-patch+json` (RFC 7386), as proctord uses to set a
/// Secret's ownerReferences; other patch types get 415 as a real server without them.
fn merge_patch(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: &str,
    name: &str,
    req: &HttpRequest,
    body: &[u8],
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/merge-patch+json") {
        return HttpResponse::UnsupportedMediaType().finish();
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(patch) => patch,
        Err(e) => return reply(bad_request(format!("error decoding the patch: {e}"))),
    };
    let mut state = shared.lock();
    let Some(mut object) = state.get(kind, namespace, name).cloned() else {
        return reply(not_found(kind, name));
    };
    merge(&mut object, &patch);
    let stored = state.put(kind, &object);
    HttpResponse::Ok().json(stored)
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A `Status` with its code as the HTTP status.
pub(super) fn reply(status: Status) -> HttpResponse {
    let code = u16::try_from(status.code.unwrap_or(500)).unwrap_or(500);
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).json(status)
}

fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0", "gitCommit": "fake", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

fn list_or_watch(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    query: &Query,
    watching: bool,
) -> HttpResponse {
    let labels = query.get("labelSelector").map(String::as_str);
    let fields = query.get("fieldSelector").map(String::as_str);
    let filter = match Filter::parse(labels, fields) {
        Ok(filter) => filter,
        Err(problem) => return reply(bad_request(problem)),
    };
    if !watching {
        return HttpResponse::Ok().json(list_body(shared, kind, namespace.as_deref(), &filter));
    }
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => return reply(bad_request(format!("invalid resource version: {rv}"))),
        },
    };
    let timeout = query.get("timeoutSeconds").and_then(|s| s.parse().ok());
    let request = WatchRequest {
        kind,
        namespace,
        filter,
        from,
        timeout: Duration::from_secs(timeout.unwrap_or(1800)),
        bookmarks: flag(query, "allowWatchBookmarks"),
        send_initial_events: flag(query, "sendInitialEvents"),
    };
    watch_response(shared, request)
}

fn create(shared: &Arc<Shared>, kind: Kind, namespace: &str, body: &[u8]) -> HttpResponse {
    let mut object: Value = match serde_json::from_slice(body) {
        Ok(object @ Value::Object(_)) => object,
        Ok(_) => return reply(bad_request("the body is not a JSON object".into())),
        Err(e) => return reply(bad_request(format!("error decoding the body: {e}"))),
    };
    if object.get("kind").is_some_and(|k| k != kind.kind()) {
        let message = format!("the body's kind is not {}", kind.kind());
        return reply(bad_request(message));
    }
    if object["metadata"].is_null() {
        object["metadata"] = json!({});
    }
    let meta = &mut object["metadata"];
    if meta["namespace"].as_str().is_some_and(|ns| ns != namespace) {
        let message =
            "the namespace of the provided object does not match the namespace sent on the request";
        return reply(bad_request(message.into()));
    }
    meta["namespace"] = json!(namespace);
    if let Some(meta) = meta.as_object_mut() {
        for set_by_the_server in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            meta.remove(set_by_the_server);
        }
    }
    if meta["name"].as_str().unwrap_or_default().is_empty() {
        match meta["generateName"].as_str() {
            Some(prefix) => meta["name"] = json!(format!("{prefix}{}", objects::suffix())),
            None => {
                let problem = "Required value: name or generateName is required";
                return reply(objects::invalid(kind, "", "metadata.name", problem));
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    let max_len = if kind == Kind::Job { 63 } else { 253 };
    if let Some(problem) = objects::name_problem(&name, max_len) {
        return reply(objects::invalid(kind, &name, "metadata.name", &problem));
    }
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    let object = match admit(kind, &name, object) {
        Ok(object) => object,
        Err(status) => return reply(*status),
    };
    let mut state = shared.lock();
    if state.get(kind, namespace, &name).is_some() {
        return reply(objects::already_exists(kind, &name));
    }
    let stored = state.put(kind, &object);
    drop(state);
    if kind == Kind::Job {
        let job: Job = serde_json::from_value(stored.clone()).expect("a stored Job");
        controller::spawn(shared.clone(), &job);
    }
    HttpResponse::Created().json(stored)
}

/// The object as the API server stores it: decoded as its k8s-openapi type,
/// validated and defaulted (a Secret's `stringData` folded into `data`).
fn admit(kind: Kind, name: &str, object: Value) -> Result<Value, Box<Status>> {
    let undecodable =
        |e: serde_json::Error| Box::new(bad_request(format!("error decoding the body: {e}")));
    match kind {
        Kind::Job => {
            let mut job: Job = serde_json::from_value(object).map_err(undecodable)?;
            objects::validate_job(&job).map_err(|(field, problem)| {
                Box::new(objects::invalid(kind, name, field, &problem))
            })?;
            objects::default_job(&mut job, &uuid::Uuid::new_v4().to_string());
            serde_json::to_value(job).map_err(undecodable)
        }
        Kind::Secret => {
            let mut secret: Secret = serde_json::from_value(object).map_err(undecodable)?;
            if let Some(strings) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(Default::default);
                for (key, value) in strings {
                    data.insert(key, ByteString(value.into_bytes()));
                }
            }
            secret.type_.get_or_insert_with(|| "Opaque".into());
            serde_json::to_value(secret).map_err(undecodable)
        }
        Kind::Pod => Err(Box::new(objects::method_not_allowed("POST"))),
    }
}

/// Deletes with the propagation asked for (in the body's DeleteOptions or the
/// query). A batch/v1 Job deleted without one orphans its pods, as the real API
/// server does, with the same warning header.
fn delete(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
    query: &Query,
) -> HttpResponse {
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let asked = options["propagationPolicy"].as_str().map(str::to_owned);
    let asked = asked.or_else(|| query.get("propagationPolicy").cloned());
    let orphan_flag = options["orphanDependents"].as_bool();
    let asked =
        asked.or_else(|| orphan_flag.map(|o| if o { "Orphan" } else { "Background" }.into()));
    let warn = asked.is_none() && kind == Kind::Job;
    let policy = asked.unwrap_or_else(|| if warn { "Orphan" } else { "Background" }.into());
    if !["Orphan", "Background", "Foreground"].contains(&policy.as_str()) {
        return reply(bad_request(format!(
            "unsupported propagationPolicy {policy:?}"
        )));
    }
    let mut state = shared.lock();
    let Some(owner) = state.get(kind, namespace, name).cloned() else {
        return reply(not_found(kind, name));
    };
    let uid = owner["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let owned_by = |object: &Value| {
        let refs = object["metadata"]["ownerReferences"].as_array();
        refs.is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
    };
    let mut dependents = Vec::new();
    for dependent_kind in [Kind::Pod, Kind::Secret, Kind::Job] {
        for object in state.list(dependent_kind, Some(namespace)) {
            if owned_by(object) {
                dependents.push((dependent_kind, object.clone()));
            }
        }
    }
    let answer = if policy == "Background" {
        state.remove(kind, namespace, name);
        for (dependent_kind, object) in &dependents {
            let dependent = object["metadata"]["name"].as_str().unwrap_or_default();
            state.remove(*dependent_kind, namespace, dependent);
        }
        json!(objects::deleted(kind, name, &uid))
    } else {
        let mut marked = owner;
        let finalizer = if policy == "Orphan" {
            "orphan"
        } else {
            "foregroundDeletion"
        };
        marked["metadata"]["deletionTimestamp"] = json!(objects::now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        marked["metadata"]["finalizers"] = json!([finalizer]);
        let marked = state.put(kind, &marked);
        for (dependent_kind, mut object) in dependents {
            let dependent = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if policy == "Foreground" {
                state.remove(dependent_kind, namespace, &dependent);
            } else {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    let refs = meta
                        .get_mut("ownerReferences")
                        .and_then(Value::as_array_mut);
                    if let Some(refs) = refs {
                        refs.retain(|r| r["uid"] != uid.as_str());
                        if refs.is_empty() {
                            meta.remove("ownerReferences");
                        }
                    }
                }
                state.put(dependent_kind, &object);
            }
        }
        state.remove(kind, namespace, name);
        marked
    };
    let mut response = HttpResponse::Ok();
    if warn {
        let warning = "299 - \"child pods are preserved by default when jobs are deleted; set \
                       propagationPolicy=Background to remove them or set propagationPolicy=Orphan \
                       to suppress this warning\"";
        response.insert_header(("Warning", warning));
    }
    response.json(answer)
}
