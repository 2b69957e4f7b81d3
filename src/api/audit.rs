//! The audit log: [`record`] is called by every handler that changes something, after
//! the change; `GET /api/v1/audit` (admins) reads it, newest first. Nothing in the API
//! changes or removes a record.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use backon::{ExponentialBuilder, Retryable as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiState;
use super::auth::Caller;
use super::params::parse_time;
use crate::error::{ApiError, ErrorBody};
use crate::store::{AuditEvent, AuditFilter, NewEvent};

/// Records that `actor` did `action` to `object` (of `kind`); see [`record_all`].
pub async fn record(
    state: &ApiState,
    actor: &str,
    address: Option<IpAddr>,
    action: &str,
    kind: &'static str,
    object: &str,
    details: Value,
) {
    let event = NewEvent {
        actor: actor.to_owned(),
        address: address.map(|a| a.to_string()),
        action: action.to_owned(),
        kind,
        object: object.to_owned(),
        details,
    };
    record_all(state, vec![event]).await;
}

/// Records changes already made, so a failure here cannot undo them: transient
/// database errors are retried for about two seconds, and records that still cannot
/// be written are logged (with what they held) and counted in
/// `proctor_audit_write_failures_total`.
pub async fn record_all(state: &ApiState, events: Vec<NewEvent>) {
    if events.is_empty() {
        return;
    }
    let write = || async { state.stores.audit.record_all(events.clone()).await };
    let result = write
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_millis(800))
                .with_max_times(5),
        )
        .when(|e| e.is_transient())
        .await;
    if let Err(e) = result {
        metrics::counter!(crate::telemetry::names::AUDIT_WRITE_FAILURES)
            .increment(events.len() as u64);
        for event in &events {
            tracing::error!(
                error = %e,
                actor = %event.actor,
                action = %event.action,
                object = %event.object,
                details = %event.details,
                "the audit record of a change could not be written"
            );
        }
    }
}

/// [`record`] for a request's caller.
pub async fn by(
    state: &ApiState,
    caller: &Caller,
    action: &str,
    kind: &'static str,
    object: &str,
    details: Value,
) {
    record(
        state,
        &caller.email,
        caller.address,
        action,
        kind,
        object,
        details,
    )
    .await;
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only changes by this actor (an e-mail, or `cli:<user>` for `proctord` commands).
    pub actor: Option<String>,
    /// Only changes to this kind of object: proc, secret, schedule, user, token, session
    /// or execution.
    pub kind: Option<String>,
    /// Only changes to this object (a proc or execution name, a schedule id, an e-mail).
    pub object: Option<String>,
    /// Only this action (`proc.updated`, `schedule.disabled`, ...).
    pub action: Option<String>,
    /// Only changes at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only changes before this RFC 3339 time.
    pub until: Option<String>,
    /// Only changes older than this id (`next_before` of the previous page).
    pub before: Option<i64>,
    /// How many (1 to 500, default 50).
    pub limit: Option<i64>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// `GET /api/v1/audit`: who changed what, newest first (admins).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "bad filter", body = ErrorBody),
        (status = 401, description = "missing or bad credentials", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 429, description = "too many bad credentials from this address", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn list(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin("read the audit log")?;
    let query = query.into_inner();
    let limit = super::contract::PAGE_LIMIT.check("limit", query.limit, 50)?;
    if let Some(kind) = &query.kind
        && !crate::store::audit::KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "kind must be one of {}",
            crate::store::audit::KINDS.join(", ")
        )));
    }
    if let Some(before) = query.before {
        super::contract::EVENT_ID.check("before", Some(before), 1)?;
    }
    let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let events = state
        .stores
        .audit
        .list(AuditFilter {
            actor: nonempty(query.actor).map(|a| a.to_ascii_lowercase()),
            kind: query.kind,
            object: nonempty(query.object),
            action: nonempty(query.action),
            since: parse_time("since", query.since.as_deref())?,
            until: parse_time("until", query.until.as_deref())?,
            before: query.before,
            limit: limit + 1,
        })
        .await?;
    let mut events = events;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_before = more.then(|| events.last().map(|e| e.id)).flatten();
    Ok(HttpResponse::Ok().json(AuditPage {
        events,
        next_before,
    }))
}
