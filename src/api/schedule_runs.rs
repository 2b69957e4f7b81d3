//! Runs of a schedule asked for by hand: `POST /jobs/schedule/{id}/run` (one run now,
//! with the schedule's args, not a fire) and `POST /jobs/schedule/{id}/backfill` (the
//! past fires of a range that never ran, each claimed as the Ticker claims a fire, so
//! it runs once however many backfills and replicas ask).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiState;
use super::auth::Caller;
use super::executions::check_args;
use super::procs::find_usable;
use super::schedules::find_visible;
use crate::actors::Execute;
use crate::actors::dispatcher::DispatchError;
use crate::actors::ticker::{self, FireReport};
use crate::error::{ApiError, ClientErrors, ErrorBody, ErrorKind};
use crate::model::CronSpec;
use crate::model::schedule::parse_time_zone;
use crate::store::{Execution, Schedule};

/// The most fires one backfill runs.
pub const BACKFILL_MAX_FIRES: usize = 1000;

/// How far a range too big for a backfill is counted, to say how big it is.
const COUNT_UP_TO: usize = 100_000;

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Loads the schedule and the proc it runs: the caller must see the schedule and may
/// use its proc (as `POST /jobs/execute` requires).
async fn find_runnable(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<(Schedule, crate::model::ProcMetadata), ApiError> {
    let schedule = find_visible(state, caller, id).await?;
    let proc = find_usable(state, caller, &schedule.proc_name).await?;
    Ok((schedule, proc))
}

/// `POST /jobs/schedule/{id}/run`: 201 with the execution, started at once with the
/// schedule's args, as the caller. It counts among the schedule's runs (and mails its
/// result to the schedule's addresses) but is no fire: the next fire happens as due.
/// A disabled schedule may be run too.
#[utoipa::path(
    post,
    path = "/jobs/schedule/{id}/run",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses(
        (status = 201, body = Execution),
        ClientErrors,
        (status = 503, description = "a dependency is down", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn run_now(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (schedule, proc) = find_runnable(&state, &caller, &id).await?;
    check_args(&proc, &schedule.args)?;
    let execution = state
        .actors
        .dispatcher
        .send(Execute {
            proc,
            args: schedule.args.clone(),
            user_email: caller.email.clone(),
            callback_url: None,
            notify: schedule.notify.clone(),
            schedule_id: Some(schedule.id.clone()),
        })
        .await
        .map_err(DispatchError::from)??;
    tracing::info!(schedule = %schedule.id, execution = %execution.name, by = %caller.email, "schedule run now");
    super::audit::by(
        &state,
        &caller,
        "schedule.run",
        "schedule",
        &schedule.id,
        json!({"proc_name": schedule.proc_name, "execution": execution.name}),
    )
    .await;
    Ok(HttpResponse::Created().json(execution))
}

/// The body of `POST /jobs/schedule/{id}/backfill`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BackfillRequest {
    /// The first instant of the range (RFC 3339), included.
    #[schema(format = DateTime)]
    pub from: String,
    /// The end of the range (RFC 3339), excluded; a time in the future is taken as now.
    #[schema(format = DateTime)]
    pub to: String,
}

/// One end of a backfill's range: 400 naming it when it is no RFC 3339 time.
fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{field}: {:?} is not an RFC 3339 time such as 2026-12-01T08:00:00Z ({e})",
                crate::model::ids::truncate(text, 64)
            ))
        })
}

/// A fire a backfill started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StartedFire {
    /// The fire time (UTC).
    pub fire_at: String,
    /// The execution's name.
    pub execution: String,
}

/// A fire a backfill did not start, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnstartedFire {
    /// The fire time (UTC).
    pub fire_at: String,
    pub reason: String,
}

/// The answer to `POST /jobs/schedule/{id}/backfill`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackfillReport {
    pub schedule_id: String,
    pub from: String,
    /// The end of the range as used: `to`, or now when `to` was later.
    pub to: String,
    /// How many fires the range holds.
    pub fires: usize,
    /// The fires run by this backfill, in fire order.
    pub started: Vec<StartedFire>,
    /// The fires that had run (or been claimed) already: by the Ticker or another backfill.
    pub skipped: Vec<UnstartedFire>,
    /// The fires claimed by this backfill that could not run (the proc is gone, the
    /// executor refused); they are recorded and not retried.
    pub failed: Vec<UnstartedFire>,
}

/// `POST /jobs/schedule/{id}/backfill`: runs, in fire order, each fire of
/// `[from, to)` that never ran — once, whoever else (the Ticker, another backfill, any
/// replica) claims the same fire at the same time. At most 1000 fires a call; runs are
/// the schedule creator's, as fires are; the concurrency policy is not applied; a
/// disabled schedule may be backfilled.
#[utoipa::path(
    post,
    path = "/jobs/schedule/{id}/backfill",
    tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    request_body = BackfillRequest,
    responses(
        (status = 200, body = BackfillReport),
        ClientErrors,
        (status = 503, description = "a dependency is down", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn backfill(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<BackfillRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let (from, to) = (
        parse_time("from", &request.from)?,
        parse_time("to", &request.to)?,
    );
    if from >= to {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            format!(
                "from ({}) must be before to ({})",
                rfc3339(from),
                rfc3339(to)
            ),
        ));
    }
    let to = to.min(Utc::now());
    if from >= to {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            format!(
                "from ({}) is in the future: a backfill runs past fires only",
                rfc3339(from)
            ),
        ));
    }
    let (schedule, _proc) = find_runnable(&state, &caller, &id).await?;
    let spec = CronSpec::parse(&schedule.cron).map_err(ApiError::bad_request)?;
    let zone = parse_time_zone(&schedule.time_zone).map_err(ApiError::bad_request)?;
    let anchor = schedule.created_at.and_utc();
    let at = spec.between(from, to, zone, anchor, BACKFILL_MAX_FIRES + 1);
    if at.len() > BACKFILL_MAX_FIRES {
        let count = spec.between(from, to, zone, anchor, COUNT_UP_TO + 1).len();
        let count = if count > COUNT_UP_TO {
            format!("more than {COUNT_UP_TO}")
        } else {
            count.to_string()
        };
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            format!(
                "the range holds {count} fires; a backfill runs at most {BACKFILL_MAX_FIRES}: narrow the range"
            ),
        ));
    }
    // A task of its own: a client that hangs up (or times out) on a long backfill does
    // not stop it between claiming its fires and starting their runs.
    let work = {
        let (stores, dispatcher) = (state.stores.clone(), state.actors.dispatcher.clone());
        let (schedule, at) = (schedule.clone(), at.clone());
        actix_web::rt::spawn(
            async move { ticker::backfill(&stores, dispatcher, schedule, at).await },
        )
    };
    let reports = work.await.map_err(|e| {
        ApiError::new(
            ErrorKind::Internal,
            format!("the backfill of schedule {} stopped: {e}", schedule.id),
        )
    })??;
    let mut report = BackfillReport {
        schedule_id: schedule.id.clone(),
        from: rfc3339(from),
        to: rfc3339(to),
        fires: at.len(),
        started: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    for (when, fire) in at.into_iter().zip(reports) {
        let fire_at = rfc3339(when);
        match fire {
            FireReport::AlreadyClaimed => report.skipped.push(UnstartedFire {
                fire_at,
                reason: "already ran".to_owned(),
            }),
            FireReport::Claimed {
                execution: Some(execution),
                ..
            } => report.started.push(StartedFire {
                fire_at,
                execution: execution.name,
            }),
            FireReport::Claimed { outcome, .. } => report.failed.push(UnstartedFire {
                fire_at,
                reason: outcome,
            }),
        }
    }
    tracing::info!(schedule = %schedule.id, from = %report.from, to = %report.to, fires = report.fires, started = report.started.len(), skipped = report.skipped.len(), failed = report.failed.len(), by = %caller.email, "schedule backfilled");
    super::audit::by(
        &state,
        &caller,
        "schedule.backfilled",
        "schedule",
        &schedule.id,
        json!({
            "proc_name": schedule.proc_name,
            "from": report.from,
            "to": report.to,
            "fires": report.fires,
            "started": report.started.len(),
            "skipped": report.skipped.len(),
            "failed": report.failed.len(),
        }),
    )
    .await;
    Ok(HttpResponse::Ok().json(report))
}
