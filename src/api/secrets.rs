//! Secrets: `POST /jobs/secrets` `{job_name, secrets: {KEY: VALUE}}` (admins) seals and
//! stores them; `GET /jobs/secrets/{name}` shows only which names are set;
//! `DELETE /jobs/secrets/{name}` removes them all. No answer ever holds a value.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::ApiState;
use super::auth::Caller;
use super::contract::{MAX_SECRET_CHARS, MAX_SECRETS};
use super::procs::{find_usable, parse_name};
use crate::config::Sensitive;
use crate::error::ApiError;
use crate::error::ClientErrors;
use crate::model::EnvName;

/// The body of `POST /jobs/secrets` (read by hand, so no error can quote a value).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct SecretsRequest {
    pub job_name: String,
    pub secrets: std::collections::HashMap<String, String>,
}

/// Which secrets a proc has: names, never values.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SecretNames {
    pub job_name: String,
    pub secret_names: Vec<String>,
}

/// Reads the body by hand so that no error message can quote a secret's value.
fn parse_body(body: Value) -> Result<(String, BTreeMap<EnvName, Sensitive<String>>), ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request(
            "expected {\"job_name\": \"...\", \"secrets\": {\"KEY\": \"VALUE\"}}",
        ));
    };
    let job_name = match body.remove("job_name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(ApiError::bad_request("job_name must be a string")),
        None => return Err(ApiError::bad_request("job_name is missing")),
    };
    let secrets = match body.remove("secrets") {
        Some(Value::Object(secrets)) => secrets,
        Some(_) => {
            return Err(ApiError::bad_request(
                "secrets must be an object of names to string values",
            ));
        }
        None => return Err(ApiError::bad_request("secrets is missing")),
    };
    if secrets.is_empty() {
        return Err(ApiError::bad_request("secrets is empty: give at least one"));
    }
    if secrets.len() > MAX_SECRETS {
        return Err(ApiError::bad_request(format!(
            "{} secrets in one request; the limit is {MAX_SECRETS}",
            secrets.len()
        )));
    }
    let mut parsed = BTreeMap::new();
    for (name, value) in secrets {
        let name =
            EnvName::parse(&name).map_err(|e| ApiError::bad_request(format!("secrets: {e}")))?;
        let Value::String(value) = value else {
            return Err(ApiError::bad_request(format!(
                "secrets.{name}: the value must be a string"
            )));
        };
        if value.chars().count() > MAX_SECRET_CHARS {
            return Err(ApiError::bad_request(format!(
                "secrets.{name}: the value is longer than {MAX_SECRET_CHARS} characters"
            )));
        }
        parsed.insert(name, Sensitive::new(value));
    }
    Ok((job_name, parsed))
}

/// `POST /jobs/secrets`: 201 with the proc's secret names.
#[utoipa::path(
    post,
    path = "/jobs/secrets",
    tag = "secrets",
    request_body = SecretsRequest,
    responses(
        (status = 201, description = "sealed and stored", body = SecretNames),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn set(
    state: web::Data<ApiState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin("set secrets")?;
    let (job_name, secrets) = parse_body(body.into_inner())?;
    let name = parse_name(&job_name)?;
    if state.stores.procs.get(&name).await?.is_none() {
        return Err(ApiError::not_found(format!("no proc named {name}")));
    }
    let given: Vec<String> = secrets.keys().map(|k| k.to_string()).collect();
    let names = state.stores.secrets.put(&name, secrets).await?;
    tracing::info!(by = %caller.email, proc = %name, secrets = ?names, "secrets set");
    super::audit::by(
        &state,
        &caller,
        "secrets.set",
        "secret",
        name.as_str(),
        serde_json::json!({"names": given}),
    )
    .await;
    Ok(HttpResponse::Created().json(SecretNames {
        job_name: name.to_string(),
        secret_names: names,
    }))
}

/// `GET /jobs/secrets/{name}`: which secrets are set (names only), for whoever may use the proc.
#[utoipa::path(
    get,
    path = "/jobs/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "proc name")),
    responses(
        (status = 200, description = "names only, never values", body = SecretNames),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn list_names(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let proc = find_usable(&state, &caller, &name).await?;
    let names = state.stores.secrets.names(&proc.name).await?;
    Ok(HttpResponse::Ok().json(SecretNames {
        job_name: proc.name.to_string(),
        secret_names: names,
    }))
}

/// `DELETE /jobs/secrets/{name}`: removes every secret of the proc (admins).
#[utoipa::path(
    delete,
    path = "/jobs/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "proc name")),
    responses(
        (status = 204, description = "removed"),
        ClientErrors
    ),
    security(("email" = [], "token" = []))
)]
pub async fn remove(
    state: web::Data<ApiState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin("remove secrets")?;
    let name = parse_name(&name)?;
    if state.stores.procs.get(&name).await?.is_none() {
        return Err(ApiError::not_found(format!("no proc named {name}")));
    }
    let before = state.stores.secrets.names(&name).await?;
    let removed = state.stores.secrets.delete(&name).await?;
    tracing::info!(by = %caller.email, proc = %name, removed, "secrets removed");
    super::audit::by(
        &state,
        &caller,
        "secrets.removed",
        "secret",
        name.as_str(),
        serde_json::json!({"names": before}),
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}
