//! Executions: `POST /jobs/execute` and `GET /jobs/execute/{name}/status` (the
//! original's contract), and the `/api/v1/executions` additions: list, describe,
//! stored logs, cancel.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::auth::Caller;
use super::contract;
use super::params::{parse_time, visible_to};
use super::procs::find_usable;
use crate::actors::{Cancel, DispatchError, Execute};
use crate::error::{ApiError, ErrorKind};
use crate::error::{ClientErrors, ErrorBody};
use crate::model::{ExecutionName, NotifyTarget, ProcMetadata, Status};
use crate::store::{Execution, ExecutionFilter};

/// The answer to `POST /jobs/execute`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExecuteResponse {
    /// The execution's name: its id everywhere else.
    pub name: String,
    /// `QUEUED` when the proc's `max_concurrent_runs` are all taken: the run waits.
    pub status: Status,
    /// While QUEUED: how many runs of the proc wait ahead of this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
}

/// A page of `GET /api/v1/executions`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExecutionPage {
    pub executions: Vec<Execution>,
    /// The `offset` of the next page, when there is one.
    pub next_offset: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExecuteRequest {
    pub name: String,
    #[serde(default)]
    pub args: Option<BTreeMap<String, String>>,
    /// The original's: POSTed `{"name", "status"}` once the run has ended.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Where to tell how the run ended: webhooks and Slack incoming webhooks (at most
    /// 10), each on `success`, `failure` or `always` (the default).
    #[serde(default)]
    pub notify: Option<Vec<NotifyTarget>>,
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Store(e) => e.into(),
            DispatchError::NotFound(name) => {
                ApiError::not_found(format!("no execution named {name}"))
            }
            DispatchError::AlreadyEnded { name, status } => ApiError::new(
                ErrorKind::Conflict,
                format!("execution {name} already ended {status}"),
            )
            .with_detail(json!({"status": status})),
            e @ DispatchError::Mailbox(_) => ApiError::new(
                ErrorKind::ServiceUnavailable,
                "the dispatcher is unavailable; try again shortly",
            )
            .with_cause(e),
            DispatchError::OwnerUnreachable(message) => {
                ApiError::new(ErrorKind::ServiceUnavailable, message)
            }
        }
    }
}

/// Checks the given args against the proc's declared ones: 400 naming the unknown and
/// the missing.
pub fn check_args(proc: &ProcMetadata, given: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let declared: BTreeSet<&str> = proc.env_vars.args.iter().map(|a| a.name.as_str()).collect();
    let unknown: Vec<&str> = given
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.contains(k))
        .collect();
    let missing: Vec<&str> = declared
        .iter()
        .copied()
        .filter(|k| !given.contains_key(*k))
        .collect();
    if !unknown.is_empty() || !missing.is_empty() {
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            parts.push(format!("unknown args: {}", unknown.join(", ")));
        }
        if !missing.is_empty() {
            parts.push(format!("missing args: {}", missing.join(", ")));
        }
        // The document allows any env var names; which ones this proc takes is state.
        return Err(ApiError::new(ErrorKind::Unprocessable, parts.join("; "))
            .with_detail(json!({"unknown": unknown, "missing": missing})));
    }
    for (name, value) in given {
        if value.chars().count() > contract::MAX_ARG_CHARS || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "arg {name} must be at most {} characters, without NUL characters",
                contract::MAX_ARG_CHARS
            )));
        }
    }
    Ok(())
}

/// 400 unless `url` has the shape the document states: `http(s)://` and a host, at
/// most [`crate::model::notify::MAX_URL_BYTES`] characters. (Whether it parses as a
/// URL this server can call is checked after: 422.)
fn check_url_shape(what: &str, url: &str) -> Result<(), ApiError> {
    if url.chars().count() > crate::model::notify::MAX_URL_BYTES
        || !crate::model::patterns::matches(crate::model::patterns::URL, url)
    {
        return Err(ApiError::bad_request(format!(
            "{what}: {} is not an http(s) URL with a host, at most {} characters",
            crate::model::notify::mask_url(url),
            crate::model::notify::MAX_URL_BYTES
        )));
    }
    Ok(())
}

/// A `notify` list as given (absent: none): 400 naming the bad target.
pub fn check_notify(notify: Option<Vec<NotifyTarget>>) -> Result<Vec<NotifyTarget>, ApiError> {
    let notify = notify.unwrap_or_default();
    // What the document states (how many, which kinds, the URL's shape): 400.
    if notify.len() > crate::model::notify::MAX_TARGETS {
        return Err(ApiError::bad_request(format!(
            "notify: at most {} targets, got {}",
            crate::model::notify::MAX_TARGETS,
            notify.len()
        )));
    }
    for (i, target) in notify.iter().enumerate() {
        if target.kind == crate::model::NotifyKind::Callback {
            return Err(ApiError::bad_request(format!(
                "notify[{i}].kind: expected webhook or slack (use callback_url for a callback)"
            )));
        }
        check_url_shape(&format!("notify[{i}].url"), &target.url)?;
    }
    crate::model::notify::check_targets(&notify)
        .map_err(|e| ApiError::new(ErrorKind::Unprocessable, e))?;
    Ok(notify)
}

/// `POST /jobs/execute`: 201 `{"name": "<execution name>", "status": ...}`.
#[utoipa::path(
    post,
    path = "/jobs/execute",
    tag = "executions",
    request_body = ExecuteRequest,
    responses(
        (status = 201, body = ExecuteResponse),
        ClientErrors,
        (status = 503, description = "a dependency is down", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn execute(
    state: web::Data<ApiState>,
    caller: Caller,
    body: web::Json<ExecuteRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let proc = find_usable(&state, &caller, &request.name).await?;
    let args = request.args.unwrap_or_default();
    check_args(&proc, &args)?;
    if let Some(url) = &request.callback_url {
        check_url_shape("callback_url", url)?;
        crate::model::notify::check_url("callback_url", url)
            .map_err(|e| ApiError::new(ErrorKind::Unprocessable, e))?;
    }
    let notify = check_notify(request.notify)?;
    let execution = state
        .actors
        .dispatcher
        .send(Execute {
            proc,
            args,
            user_email: caller.email.clone(),
            callback_url: request.callback_url,
            notify,
            schedule_id: None,
        })
        .await
        .map_err(DispatchError::from)??;
    tracing::info!(execution = %execution.name, proc = %execution.proc_name, by = %caller.email, status = %execution.status, "execution submitted");
    let queue_position = state.stores.executions.queue_position(&execution).await?;
    Ok(HttpResponse::Created().json(ExecuteResponse {
        name: execution.name,
        status: execution.status,
        queue_position,
    }))
}

/// Loads an execution the caller may see: 400 bad name, 404 unknown, 403 not allowed.
pub async fn find_visible(
    state: &ApiState,
    caller: &Caller,
    name: &str,
) -> Result<Execution, ApiError> {
    let name = ExecutionName::parse(name).map_err(ApiError::bad_request)?;
    let execution = state
        .stores
        .executions
        .get(name.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no execution named {name}")))?;
    if caller.is_admin || caller.email == execution.user_email {
        return Ok(execution);
    }
    let proc = match crate::model::ProcName::parse(&execution.proc_name) {
        Ok(proc) => state.stores.procs.get(&proc).await?,
        Err(_) => None,
    };
    match proc {
        Some(proc) if caller.may_use(&proc) => Ok(execution),
        _ => Err(ApiError::forbidden(format!(
            "{} may not see execution {name} of proc {}",
            caller.email, execution.proc_name
        ))),
    }
}

/// `GET /jobs/execute/{name}/status`: the status as plain text.
#[utoipa::path(
    get,
    path = "/jobs/execute/{name}/status",
    tag = "executions",
    params(("name" = String, Path, description = "execution name")),
    responses(
        (status = 200, description = "the status as plain text", body = String, content_type = "text/plain"),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn get_status(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let execution = find_visible(&state, &caller, &name).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(execution.status.as_str()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub proc: Option<String>,
    pub status: Option<String>,
    pub user: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// `GET /api/v1/executions`: newest first, filtered, paginated.
#[utoipa::path(
    get,
    path = "/api/v1/executions",
    tag = "executions",
    params(ListQuery),
    responses(
        (status = 200, body = ExecutionPage),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or bad credentials", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn list(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = contract::PAGE_LIMIT.check("limit", query.limit, 50)?;
    let offset = contract::OFFSET.check("offset", query.offset, 0)?;
    let status: Option<Status> = query
        .status
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let visible_to = visible_to(&state, &caller).await?;
    let executions = state
        .stores
        .executions
        .list(ExecutionFilter {
            proc_names: query.proc.map(|p| vec![p]),
            status,
            user_email: query.user.map(|u| u.to_ascii_lowercase()),
            schedule_id: None,
            since: parse_time("since", query.since.as_deref())?,
            until: parse_time("until", query.until.as_deref())?,
            visible_to,
            limit: limit + 1,
            offset,
        })
        .await?;
    let more = executions.len() as i64 > limit;
    let mut executions = executions;
    executions.truncate(limit as usize);
    Ok(HttpResponse::Ok().json(ExecutionPage {
        executions,
        next_offset: more.then(|| offset.saturating_add(limit)),
    }))
}

/// `GET /api/v1/executions/{name}`.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{name}",
    tag = "executions",
    params(("name" = String, Path, description = "execution name")),
    responses(
        (status = 200, body = Execution),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn describe(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut execution = find_visible(&state, &caller, &name).await?;
    execution.queue_position = state.stores.executions.queue_position(&execution).await?;
    Ok(HttpResponse::Ok().json(execution))
}

/// `GET /api/v1/executions/{name}/notifications`: the delivery log of the run's
/// callback, webhook and Slack notifications (targets masked), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{name}/notifications",
    tag = "executions",
    params(("name" = String, Path, description = "execution name")),
    responses(
        (status = 200, body = Vec<crate::store::Delivery>),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn notifications(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let execution = find_visible(&state, &caller, &name).await?;
    let deliveries = state.stores.notifications.list(&execution.id).await?;
    Ok(HttpResponse::Ok().json(deliveries))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    pub since_seq: Option<i64>,
    pub limit: Option<i64>,
    /// `true`: the whole stored log as a file to save (`limit` does not apply).
    pub download: Option<bool>,
}

/// Lines read per query while a whole log is downloaded.
const DOWNLOAD_PAGE: i64 = 10_000;

/// `GET /api/v1/executions/{name}/logs`: stored lines after `since_seq` as text; the
/// `Proctor-Last-Seq` header says where to continue, `Proctor-Stored-Lines` how many
/// lines are stored in all (lines are numbered from 1, without gaps). With
/// `download=true`, every stored line after `since_seq`, streamed as an attachment.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{name}/logs",
    tag = "executions",
    params(("name" = String, Path, description = "execution name"), LogsQuery),
    responses(
        (status = 200, description = "stored lines as text (header Proctor-Last-Seq); with `Accept: text/event-stream`, server-sent events that follow the run: one per line (its id is the line's number), then an event `status` with the final status", content(
            (String = "text/plain"),
            (String = "text/event-stream")
        )),
        (status = 204, description = "server-sent events resumed with Last-Event-ID after the run ended and every line was sent"),
        ClientErrors,
        (status = 410, description = "retention removed the run's lines (the record is kept); `detail.logs_purged_at` says when", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn stored_logs(
    req: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let execution = find_visible(&state, &caller, &name).await?;
    lines_kept(&execution)?;
    let after = contract::LINE_NUMBER.check("since_seq", query.since_seq, 0)?;
    if super::logs::wants_events(&req) {
        return follow_events(&req, &state, execution, after).await;
    }
    if query.download == Some(true) {
        return Ok(download(&state, execution, after, true));
    }
    let limit = contract::LOG_PAGE.check("limit", query.limit, 10_000)?;
    let (lines, stored) = futures_util::try_join!(
        state.stores.logs.read(&execution.id, after, limit),
        state.stores.logs.last_seq(&execution.id)
    )?;
    let last = lines.last().map_or(after, |l| l.seq);
    let body = as_text(&lines);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Proctor-Last-Seq", last.to_string()))
        .insert_header(("Proctor-Stored-Lines", stored.to_string()))
        .insert_header(("Proctor-Status", execution.status.as_str()))
        .body(body))
}

/// The log as server-sent events from the line after `after`, or after `Last-Event-ID`
/// when the client resumes. A resume once the run has ended and every line was sent
/// gets 204, which tells an `EventSource` to stop reconnecting.
pub(super) async fn follow_events(
    req: &HttpRequest,
    state: &ApiState,
    execution: Execution,
    after: i64,
) -> Result<HttpResponse, ApiError> {
    let resumed = match req.headers().get("Last-Event-ID") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|seq| *seq >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Last-Event-ID must be the id (a line number) of an event",
                    )
                })?,
        ),
    };
    let after = resumed.unwrap_or(after);
    if resumed.is_some()
        && execution.status.is_final()
        && after >= state.stores.logs.last_seq(&execution.id).await?
    {
        return Ok(HttpResponse::NoContent().finish());
    }
    super::logs::events(state, execution, after)
}

/// 410 Gone when retention removed the run's lines (its record stays a while longer):
/// an empty answer would read as "the run printed nothing".
pub fn lines_kept(execution: &Execution) -> Result<(), ApiError> {
    let Some(at) = execution.logs_purged_at else {
        return Ok(());
    };
    let at = at
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Err(ApiError::new(
        ErrorKind::Gone,
        format!(
            "the log lines of execution {} were removed by retention on {at} (PROCTOR_LOG_RETENTION_DAYS or the proc's log_retention_days); its record is kept",
            execution.name
        ),
    )
    .with_detail(serde_json::json!({"logs_purged_at": at, "status": execution.status.as_str()})))
}

/// Stored lines as the text the log routes answer with: each followed by a newline.
fn as_text(lines: &[crate::store::StoredLine]) -> String {
    let mut text = String::with_capacity(lines.iter().map(|l| l.line.len() + 1).sum());
    for line in lines {
        text.push_str(&line.line);
        text.push('\n');
    }
    text
}

/// The whole stored log after `after`, read a page at a time as the client takes it.
/// The whole stored log after line `after` as text, read page by page as it is sent;
/// `attachment`: as a file to save.
pub(super) fn download(
    state: &ApiState,
    execution: Execution,
    after: i64,
    attachment: bool,
) -> HttpResponse {
    let logs = state.stores.logs.clone();
    let id = execution.id.clone();
    let pages = futures_util::stream::try_unfold(Some(after), move |from| {
        let logs = logs.clone();
        let id = id.clone();
        async move {
            let Some(from) = from else { return Ok(None) };
            let lines = logs.read(&id, from, DOWNLOAD_PAGE).await.map_err(|e| {
                tracing::warn!(execution = %id, error = %e, "a log download stopped");
                std::io::Error::other("the stored log could not be read")
            })?;
            if lines.is_empty() {
                return Ok(None);
            }
            let next = (lines.len() as i64 == DOWNLOAD_PAGE).then(|| lines[lines.len() - 1].seq);
            Ok::<_, std::io::Error>(Some((web::Bytes::from(as_text(&lines)), next)))
        }
    });
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Proctor-Status", execution.status.as_str()));
    if attachment {
        response.insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{}.log\"", execution.name),
        ));
    }
    response.streaming(pages)
}

/// `POST /api/v1/executions/{name}/cancel`: 200 with the execution once it is
/// CANCELLED (again on a repeat); 409 when it had already ended otherwise.
#[utoipa::path(
    post,
    path = "/api/v1/executions/{name}/cancel",
    tag = "executions",
    params(("name" = String, Path, description = "execution name")),
    responses(
        (status = 200, description = "CANCELLED", body = Execution),
        ClientErrors,
        (status = 409, description = "conflict", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn cancel(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let execution = find_visible(&state, &caller, &name).await?;
    let name = ExecutionName::parse(&execution.name).map_err(ApiError::bad_request)?;
    let execution = state
        .actors
        .dispatcher
        .send(Cancel {
            execution: name,
            by: caller.email.clone(),
        })
        .await
        .map_err(DispatchError::from)??;
    super::audit::by(
        &state,
        &caller,
        "execution.cancelled",
        "execution",
        &execution.name,
        serde_json::json!({"proc_name": execution.proc_name}),
    )
    .await;
    Ok(HttpResponse::Ok().json(execution))
}
