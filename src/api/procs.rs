//! Procs: `POST /jobs/metadata` (admins; one proc or an array, upserted), `GET /jobs/metadata`
//! (the procs the caller may use), `GET` and `DELETE /jobs/metadata/{name}`.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use crate::error::{ApiError, ErrorKind};
use crate::error::{ClientErrors, ErrorBody};
use crate::model::{PodPolicy, ProcMetadata, ProcName};
use crate::store::NewEvent;

use super::contract::MAX_PROCS_PER_REQUEST;

/// Parses a path segment as a proc name (400 naming the problem otherwise).
pub fn parse_name(name: &str) -> Result<ProcName, ApiError> {
    ProcName::parse(name).map_err(ApiError::bad_request)
}

/// Writes numbers such as `5.0`, which JSON Schema's `integer` takes, as the integers
/// they are, so that serde reads them into integer fields.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                if (0.0..=u64::MAX as f64).contains(&f) {
                    *value = Value::from(f as u64);
                } else if (i64::MIN as f64..0.0).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Reads one proc from JSON; `at` says where it was in the request.
/// Its pod options are checked against the operator's allowlists.
fn parse_proc(mut value: Value, at: &str, policy: &PodPolicy) -> Result<ProcMetadata, ApiError> {
    whole_numbers(&mut value);
    // serde's message for a bad number does not name the field.
    if let Some(max) = value.get("max_concurrent_runs")
        && !max.is_null()
        && !max.is_u64()
    {
        return Err(ApiError::bad_request(format!(
            "{at}max_concurrent_runs must be a whole number between 1 and {}, not {max}",
            crate::model::proc::MAX_CONCURRENT_RUNS
        )));
    }
    let proc: ProcMetadata = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("{at}invalid proc metadata: {e}")))?;
    // 400 for what breaks the document's shape; 422 for rules between fields and the
    // operator's pod allowlists, which the document can only describe in words.
    for (problems, kind) in [
        (proc.problems(), ErrorKind::BadRequest),
        (
            [
                proc.conflicts(),
                proc.pod
                    .as_ref()
                    .map(|pod| policy.problems(pod))
                    .unwrap_or_default(),
            ]
            .concat(),
            ErrorKind::Unprocessable,
        ),
    ] {
        if !problems.is_empty() {
            return Err(ApiError::new(
                kind,
                format!("{at}proc {} is invalid: {}", proc.name, problems.join("; ")),
            )
            .with_detail(json!({"problems": problems})));
        }
    }
    Ok(proc)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// `true`: check the metadata and answer 200 with what would be stored, storing
    /// nothing.
    pub dry_run: Option<bool>,
}

/// `POST /jobs/metadata`: registers or updates procs; 201 with what was stored.
#[utoipa::path(
    post,
    path = "/jobs/metadata",
    tag = "procs",
    params(RegisterQuery),
    request_body(content = ProcMetadata, description = "one proc, or an array of procs"),
    responses(
        (status = 200, description = "dry run: valid; what would be stored (nothing is)", body = ProcMetadata),
        (status = 201, description = "stored (one proc, or the array given)", body = ProcMetadata),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "missing or bad credentials", body = ErrorBody),
        (status = 403, description = "not allowed", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 503, description = "a dependency is down", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn register(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<RegisterQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin("register procs")?;
    let (procs, many) = match body.into_inner() {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::bad_request("the array of procs is empty"));
            }
            if items.len() > MAX_PROCS_PER_REQUEST {
                return Err(ApiError::bad_request(format!(
                    "{} procs in one request; the limit is {MAX_PROCS_PER_REQUEST}",
                    items.len()
                )));
            }
            let procs = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| parse_proc(item, &format!("procs[{i}]: "), &state.pod_policy))
                .collect::<Result<Vec<_>, _>>()?;
            (procs, true)
        }
        value @ Value::Object(_) => (vec![parse_proc(value, "", &state.pod_policy)?], false),
        _ => {
            return Err(ApiError::bad_request(
                "expected a proc's metadata as a JSON object, or an array of them",
            ));
        }
    };
    let mut names: Vec<&ProcName> = procs.iter().map(|p| &p.name).collect();
    names.sort();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            format!("proc {} appears more than once in the request", pair[0]),
        ));
    }
    if query.dry_run == Some(true) {
        return Ok(if many {
            HttpResponse::Ok().json(&procs)
        } else {
            HttpResponse::Ok().json(&procs[0])
        });
    }
    let before: Vec<ProcMetadata> = match procs.as_slice() {
        [one] => state
            .stores
            .procs
            .get(&one.name)
            .await?
            .into_iter()
            .collect(),
        _ => state.stores.procs.list().await?,
    };
    state.stores.procs.upsert(procs.clone()).await?;
    tracing::info!(by = %caller.email, procs = ?procs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), "procs registered");
    let mut events = Vec::new();
    for proc in &procs {
        let after = serde_json::to_value(proc).unwrap_or_default();
        let (action, details) = match before.iter().find(|p| p.name == proc.name) {
            None => ("proc.registered", json!({"metadata": after})),
            Some(old) => {
                let changed = changes(&serde_json::to_value(old).unwrap_or_default(), &after);
                if changed.is_empty() {
                    continue;
                }
                ("proc.updated", json!({"changed": changed}))
            }
        };
        events.push(NewEvent {
            actor: caller.email.clone(),
            address: caller.address.map(|a| a.to_string()),
            action: action.to_owned(),
            kind: "proc",
            object: proc.name.to_string(),
            details,
        });
    }
    super::audit::record_all(&state, events).await;
    Ok(if many {
        HttpResponse::Created().json(&procs)
    } else {
        HttpResponse::Created().json(&procs[0])
    })
}

/// What differs between two JSON objects, field by field: `{field: {from, to}}`.
pub fn changes(before: &Value, after: &Value) -> serde_json::Map<String, Value> {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (from, to) = (before.get(key), after.get(key));
            (from != to).then(|| {
                (
                    key.clone(),
                    json!({"from": from.cloned().unwrap_or(Value::Null), "to": to.cloned().unwrap_or(Value::Null)}),
                )
            })
        })
        .collect()
}

/// `GET /jobs/metadata`: the procs the caller may see, by name.
#[utoipa::path(
    get,
    path = "/jobs/metadata",
    tag = "procs",
    responses(
        (status = 200, description = "the procs the caller may use", body = [ProcMetadata]),
        (status = 401, description = "missing or bad credentials", body = ErrorBody),
        (status = 503, description = "a dependency is down", body = ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn list(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let procs: Vec<ProcMetadata> = state
        .stores
        .procs
        .list()
        .await?
        .into_iter()
        .filter(|p| caller.may_use(p))
        .collect();
    Ok(HttpResponse::Ok().json(procs))
}

/// Loads a proc the caller may use: 400 for a bad name, 404 unknown, 403 not allowed.
pub async fn find_usable(
    state: &ApiState,
    caller: &Caller,
    name: &str,
) -> Result<ProcMetadata, ApiError> {
    let name = parse_name(name)?;
    let proc = state
        .stores
        .procs
        .get(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no proc named {name}")))?;
    caller.require_use(&proc)?;
    Ok(proc)
}

/// `GET /jobs/metadata/{name}`.
#[utoipa::path(
    get,
    path = "/jobs/metadata/{name}",
    tag = "procs",
    params(("name" = String, Path, description = "proc name")),
    responses(
        (status = 200, body = ProcMetadata),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn describe(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let proc = find_usable(&state, &caller, &name).await?;
    Ok(HttpResponse::Ok().json(proc))
}

/// `DELETE /jobs/metadata/{name}`: removes the proc and its secrets (admins).
#[utoipa::path(
    delete,
    path = "/jobs/metadata/{name}",
    tag = "procs",
    params(("name" = String, Path, description = "proc name")),
    responses(
        (status = 204, description = "removed with its secrets"),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn remove(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin("remove procs")?;
    let name = parse_name(&name)?;
    if !state.stores.procs.delete(&name).await? {
        return Err(ApiError::not_found(format!("no proc named {name}")));
    }
    tracing::info!(by = %caller.email, proc = %name, "proc removed");
    super::audit::by(
        &state,
        &caller,
        "proc.deleted",
        "proc",
        name.as_str(),
        json!({}),
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}
