//! `GET /api/v1/stats`: the console's overview — finished runs per hour or day and
//! status, per proc with success rate and duration percentiles, and runs in flight —
//! counted in the database over what the caller may see.

use actix_web::{HttpResponse, web};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::Caller;
use super::params::{parse_time, visible_to};
use crate::error::{ApiError, ErrorBody, ErrorKind};
use crate::store::{Bucket, BucketCounts, ProcStats, StatsQuery};

/// The most buckets one answer holds.
pub const MAX_BUCKETS: i64 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// RFC 3339; default 24 hours (`bucket=hour`) or 30 days (`day`) before the end of
    /// `until`'s bucket. Moved back to the start of its bucket.
    pub since: Option<String>,
    /// RFC 3339; default now. Moved on to the end of its bucket.
    pub until: Option<String>,
    /// `hour` (default) or `day`, on UTC boundaries.
    pub bucket: Option<String>,
}

/// The answer to `GET /api/v1/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsResponse {
    /// The start of the first bucket.
    #[serde(serialize_with = "utc_secs")]
    #[schema(value_type = String, format = DateTime)]
    pub since: NaiveDateTime,
    /// The end of the last bucket (excluded).
    #[serde(serialize_with = "utc_secs")]
    #[schema(value_type = String, format = DateTime)]
    pub until: NaiveDateTime,
    pub bucket: Bucket,
    /// Every bucket from `since` to `until`, oldest first, empty ones included: runs
    /// that ended, by the time they were created, counted by final status.
    pub buckets: Vec<BucketCounts>,
    /// Per proc, the runs created in the range that ended.
    pub procs: Vec<ProcStats>,
    /// Runs not yet final, whenever they were created.
    pub running: i64,
    /// Runs created in the range that ended (the sum of the buckets).
    pub total: i64,
}

fn utc_secs<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// `GET /api/v1/stats?since=&until=&bucket=hour|day`.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "executions",
    params(StatsParams),
    responses(
        (status = 200, body = StatsResponse),
        (status = 400, description = "bad time, bucket or range", body = ErrorBody),
        (status = 401, description = "missing or bad credentials", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn overview(
    state: web::Data<ApiState>,
    caller: Caller,
    params: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let bucket = match params.bucket.as_deref() {
        None => Bucket::Hour,
        Some(text) => Bucket::parse(text).map_err(ApiError::bad_request)?,
    };
    let until = parse_time("until", params.until.as_deref())?.unwrap_or_else(crate::store::now);
    let end = bucket
        .ceil(until)
        .ok_or_else(|| ApiError::bad_request("until is too late"))?;
    let since = match parse_time("since", params.since.as_deref())? {
        Some(since) => since,
        None => {
            let span = match bucket {
                Bucket::Hour => chrono::TimeDelta::hours(24),
                Bucket::Day => chrono::TimeDelta::days(30),
            };
            end.checked_sub_signed(span)
                .ok_or_else(|| ApiError::bad_request("until is too early"))?
        }
    };
    if since >= until {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "since must be before until",
        ));
    }
    let (since, until) = (bucket.floor(since), end);
    let buckets = (until - since).num_seconds() / bucket.width().num_seconds();
    if buckets > MAX_BUCKETS {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            format!(
                "since to until spans {buckets} {bucket}s; at most {MAX_BUCKETS} are allowed: narrow the range{}",
                if bucket == Bucket::Hour {
                    " or use bucket=day"
                } else {
                    ""
                },
                bucket = bucket.as_str(),
            ),
        ));
    }
    let stats = state
        .stores
        .executions
        .stats(StatsQuery {
            since,
            until,
            bucket,
            visible_to: visible_to(&state, &caller).await?,
        })
        .await?;
    let total = stats.procs.iter().map(|p| p.runs).sum();
    Ok(HttpResponse::Ok().json(StatsResponse {
        since,
        until,
        bucket,
        buckets: stats.buckets,
        procs: stats.procs,
        running: stats.running,
        total,
    }))
}
