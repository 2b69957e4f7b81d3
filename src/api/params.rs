//! Helpers the `/api/v1` read handlers share: query times and what a caller may see.

use chrono::{DateTime, NaiveDateTime};

use super::ApiState;
use super::auth::Caller;
use crate::error::ApiError;

/// An optional RFC 3339 query time as the naive UTC the store keeps; 400 naming `field`.
pub fn parse_time(field: &str, text: Option<&str>) -> Result<Option<NaiveDateTime>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.naive_utc())
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{field} must be an RFC 3339 time such as 2026-11-25T08:00:00Z"
                ))
            })
    })
    .transpose()
}

/// Which executions the caller sees, as the execution list decides: `None` for an
/// admin (all of them), else the procs they may use and their own runs.
pub async fn visible_to(
    state: &ApiState,
    caller: &Caller,
) -> Result<Option<(Vec<String>, String)>, ApiError> {
    if caller.is_admin {
        return Ok(None);
    }
    let usable = state
        .stores
        .procs
        .list()
        .await?
        .into_iter()
        .filter(|p| caller.may_use(p))
        .map(|p| p.name.to_string())
        .collect();
    Ok(Some((usable, caller.email.clone())))
}
