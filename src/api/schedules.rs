//! Schedules: `POST /jobs/schedule`, `GET /jobs/schedule` (204 when none),
//! `GET` and `DELETE /jobs/schedule/{id}` (the original's contract), plus enable,
//! disable, the schedule's recent executions, and `GET /api/v1/schedules/preview` (when
//! a cron expression would fire, in words and times).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::executions::check_args;
use super::procs::find_usable;
use crate::actors::ticker::Reload;
use crate::error::{ApiError, ErrorKind};
use crate::error::{ClientErrors, ErrorBody};
use crate::model::schedule::parse_time_zone;
use crate::model::{ConcurrencyPolicy, CronSpec, Email, ProcName};
use crate::store::{ExecutionFilter, NewSchedule, Schedule};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRequest {
    pub name: String,
    #[serde(default)]
    pub args: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub notification_emails: String,
    #[serde(default)]
    pub tags: String,
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    /// `Allow` (default), `Forbid` (skip a fire while the previous run, running or
    /// queued, is not final) or `Replace` (cancel it, then start).
    #[serde(default)]
    #[schema(example = "Replace")]
    pub concurrency_policy: Option<String>,
    /// Where each run's end is told (webhooks, Slack), as on `POST /jobs/execute`.
    #[serde(default)]
    pub notify: Option<Vec<crate::model::NotifyTarget>>,
}

/// A comma-separated list, trimmed, without empty items.
fn split_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The schedule as the API shows it, with its next fire time.
fn present(schedule: &Schedule) -> Value {
    let mut value = serde_json::to_value(schedule).expect("a schedule serializes");
    let next = CronSpec::parse(&schedule.cron)
        .ok()
        .zip(parse_time_zone(&schedule.time_zone).ok())
        .and_then(|(spec, zone)| spec.next_after(Utc::now(), zone, schedule.created_at.and_utc()));
    value["next_fire_at"] = json!(
        next.filter(|_| schedule.enabled)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    value
}

/// A schedule's `time`, as creation and the preview take it.
fn parse_cron(time: &str) -> Result<CronSpec, ApiError> {
    CronSpec::parse(time).map_err(ApiError::bad_request)
}

/// A schedule's `time_zone`, as creation and the preview take it (`UTC` when absent).
fn parse_zone(time_zone: Option<&str>) -> Result<chrono_tz::Tz, ApiError> {
    let text = time_zone.unwrap_or("");
    // Exactly a name the document lists (no blanks around it), or "" for UTC.
    if text.trim() != text {
        return Err(ApiError::bad_request(format!(
            "{:?} is not an IANA time zone such as Europe/Paris",
            crate::model::ids::truncate(text, 64)
        )));
    }
    parse_time_zone(text).map_err(ApiError::bad_request)
}

fn reload(state: &ApiState, id: &str) {
    if let Some(ticker) = &state.actors.ticker {
        ticker.do_send(Reload { id: id.to_owned() });
    }
}

/// `POST /jobs/schedule`: 201 with the stored schedule.
#[utoipa::path(
    post,
    path = "/jobs/schedule",
    tag = "schedules",
    request_body = ScheduleRequest,
    responses(
        (status = 201, body = Schedule),
        ClientErrors,
        (status = 409, description = "conflict", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    body: web::Json<ScheduleRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    parse_cron(&request.time)?;
    let emails = split_list(&request.notification_emails)
        .into_iter()
        .map(|e| Email::parse(e).map(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(format!("notification_emails: {e}")))?;
    // The document's pattern has the last word (an address's parts have lengths too).
    if !crate::model::patterns::matches(
        crate::model::patterns::email_list_pattern(),
        &request.notification_emails,
    ) {
        return Err(ApiError::bad_request(
            "notification_emails must be e-mail addresses (at most 64 characters before the @ and 189 after) separated by commas",
        ));
    }
    let tags = split_list(&request.tags);
    if tags.is_empty() {
        return Err(ApiError::bad_request(
            "tags are required: give at least one, comma-separated",
        ));
    }
    let group = request.group_name.trim();
    if group.is_empty() {
        return Err(ApiError::bad_request("group_name is required"));
    }
    let time_zone = parse_zone(request.time_zone.as_deref())?;
    let notify = super::executions::check_notify(request.notify)?;
    let policy: ConcurrencyPolicy = match request.concurrency_policy.as_deref() {
        None => ConcurrencyPolicy::Allow,
        Some(text) => text.parse().map_err(ApiError::bad_request)?,
    };
    let proc = find_usable(&state, &caller, &request.name).await?;
    let args = request.args.unwrap_or_default();
    check_args(&proc, &args)?;
    let created = state
        .stores
        .schedules
        .insert(NewSchedule {
            proc_name: proc.name.to_string(),
            args,
            cron: request.time.trim().to_owned(),
            time_zone: time_zone.name().to_owned(),
            notification_emails: emails.join(","),
            tags: tags.join(","),
            group_name: group.to_owned(),
            user_email: caller.email.clone(),
            concurrency_policy: policy.as_str().to_owned(),
            notify,
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "a schedule of proc {} with these args already exists",
                    proc.name
                ),
            )
        })?;
    reload(&state, &created.id);
    tracing::info!(schedule = %created.id, proc = %created.proc_name, time = %created.cron, by = %caller.email, "schedule created");
    super::audit::by(
        &state,
        &caller,
        "schedule.created",
        "schedule",
        &created.id,
        json!({
            "proc_name": created.proc_name,
            "time": created.cron,
            "time_zone": created.time_zone,
            "args": created.args,
            "group_name": created.group_name,
            "tags": created.tags,
            "notification_emails": created.notification_emails,
            "concurrency_policy": created.concurrency_policy,
            "notify": created.notify.iter().map(crate::model::NotifyTarget::masked).collect::<Vec<_>>(),
        }),
    )
    .await;
    Ok(HttpResponse::Created().json(present(&created)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// A cron expression, as `time` in `POST /jobs/schedule`.
    pub time: Option<String>,
    /// An IANA time zone (default `UTC`).
    pub time_zone: Option<String>,
    /// How many fire times (1 to 50, default 5).
    pub count: Option<i64>,
}

/// The answer to `GET /api/v1/schedules/preview`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub time: String,
    pub time_zone: String,
    /// The expression in English words (the expression itself when it has none).
    pub description: String,
    /// The next fire times in UTC.
    pub next: Vec<String>,
    /// The same times in the time zone.
    pub next_local: Vec<String>,
}

/// `GET /api/v1/schedules/preview`: when a schedule would fire, checked exactly as
/// `POST /jobs/schedule` checks `time` and `time_zone`.
#[utoipa::path(
    get,
    path = "/api/v1/schedules/preview",
    tag = "schedules",
    params(PreviewQuery),
    responses(
        (status = 200, body = Preview),
        (status = 400, description = "bad cron expression, time zone or count", body = ErrorBody),
        (status = 401, description = "missing or bad credentials", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn preview(
    _caller: Caller,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let time = query.time.unwrap_or_default();
    let spec = parse_cron(&time)?;
    let zone = parse_zone(query.time_zone.as_deref())?;
    let count = super::contract::PREVIEW_COUNT.check("count", query.count, 5)?;
    let time = time.trim().to_owned();
    let fires = spec.upcoming(Utc::now(), zone, count as usize);
    let secs = chrono::SecondsFormat::Secs;
    Ok(HttpResponse::Ok().json(Preview {
        description: spec.describe().unwrap_or_else(|| time.clone()),
        time,
        time_zone: zone.name().to_owned(),
        next: fires
            .iter()
            .map(|t| t.to_rfc3339_opts(secs, true))
            .collect(),
        next_local: fires
            .iter()
            .map(|t| t.with_timezone(&zone).to_rfc3339_opts(secs, false))
            .collect(),
    }))
}

/// Whether the caller may see the schedule: admins, its creator, users of its proc.
async fn may_see(state: &ApiState, caller: &Caller, schedule: &Schedule) -> Result<bool, ApiError> {
    if caller.is_admin || caller.email == schedule.user_email {
        return Ok(true);
    }
    let proc = match ProcName::parse(&schedule.proc_name) {
        Ok(name) => state.stores.procs.get(&name).await?,
        Err(_) => None,
    };
    Ok(proc.is_some_and(|p| caller.may_use(&p)))
}

/// Loads a schedule the caller may see: 400 malformed id, 404 unknown, 403 not allowed.
pub(super) async fn find_visible(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<Schedule, ApiError> {
    if !crate::model::patterns::matches(crate::model::patterns::SCHEDULE_ID, id) {
        return Err(ApiError::bad_request(format!(
            "{:?} is not a schedule id",
            crate::model::ids::truncate(id, 64)
        )));
    }
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{:?} is not a schedule id",
                crate::model::ids::truncate(id, 64)
            ))
        })?
        .to_string();
    let schedule = state
        .stores
        .schedules
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule with id {id}")))?;
    if !may_see(state, caller, &schedule).await? {
        return Err(ApiError::forbidden(format!(
            "{} may not see schedule {id} of proc {}",
            caller.email, schedule.proc_name
        )));
    }
    Ok(schedule)
}

/// `GET /jobs/schedule`: the schedules the caller may see; 204 when there are none.
#[utoipa::path(
    get,
    path = "/jobs/schedule",
    tag = "schedules",
    responses(
        (status = 200, body = [Schedule]),
        (status = 204, description = "no schedules"),
        (status = 401, description = "missing or bad credentials", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn list(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let mut visible = Vec::new();
    for schedule in state.stores.schedules.list(false).await? {
        if may_see(&state, &caller, &schedule).await? {
            visible.push(present(&schedule));
        }
    }
    if visible.is_empty() {
        return Ok(HttpResponse::NoContent().finish());
    }
    Ok(HttpResponse::Ok().json(visible))
}

/// `GET /jobs/schedule/{id}`.
#[utoipa::path(
    get,
    path = "/jobs/schedule/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses(
        (status = 200, body = Schedule),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn describe(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let schedule = find_visible(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(present(&schedule)))
}

/// `DELETE /jobs/schedule/{id}`: stops it firing, on every replica.
#[utoipa::path(
    delete,
    path = "/jobs/schedule/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses(
        (status = 200, description = "removed"),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn remove(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let schedule = find_visible(&state, &caller, &id).await?;
    state.stores.schedules.delete(&schedule.id).await?;
    reload(&state, &schedule.id);
    tracing::info!(schedule = %schedule.id, by = %caller.email, "schedule removed");
    super::audit::by(
        &state,
        &caller,
        "schedule.deleted",
        "schedule",
        &schedule.id,
        json!({"proc_name": schedule.proc_name, "time": schedule.cron}),
    )
    .await;
    Ok(HttpResponse::Ok()
        .json(json!({"id": schedule.id, "message": format!("schedule {} removed", schedule.id)})))
}

async fn set_enabled(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let schedule = find_visible(&state, &caller, &id).await?;
    let updated = state
        .stores
        .schedules
        .set_enabled(&schedule.id, enabled)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule with id {}", schedule.id)))?;
    reload(&state, &updated.id);
    if schedule.enabled != enabled {
        let action = if enabled {
            "schedule.enabled"
        } else {
            "schedule.disabled"
        };
        super::audit::by(
            &state,
            &caller,
            action,
            "schedule",
            &updated.id,
            json!({"proc_name": updated.proc_name}),
        )
        .await;
    }
    Ok(HttpResponse::Ok().json(present(&updated)))
}

/// `POST /jobs/schedule/{id}/enable`.
#[utoipa::path(
    post,
    path = "/jobs/schedule/{id}/enable",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses(
        (status = 200, body = Schedule),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn enable(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(state, caller, id, true).await
}

/// `POST /jobs/schedule/{id}/disable`.
#[utoipa::path(
    post,
    path = "/jobs/schedule/{id}/disable",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses(
        (status = 200, body = Schedule),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn disable(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(state, caller, id, false).await
}

/// `GET /jobs/schedule/{id}/executions`: its runs, newest first, with its fires.
#[utoipa::path(
    get,
    path = "/jobs/schedule/{id}/executions",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses(
        (status = 200, description = "recent executions and fires"),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn executions(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let schedule = find_visible(&state, &caller, &id).await?;
    let runs = state
        .stores
        .executions
        .list(ExecutionFilter {
            schedule_id: Some(schedule.id.clone()),
            limit: 50,
            ..Default::default()
        })
        .await?;
    let fires = state.stores.schedules.fires(&schedule.id).await?;
    let recent_fires: Vec<_> = fires.iter().rev().take(50).collect();
    Ok(HttpResponse::Ok().json(json!({"executions": runs, "fires": recent_fires})))
}
