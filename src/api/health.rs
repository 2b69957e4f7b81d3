//! Liveness (`/ping`, the original's), readiness (`/health/ready`: the database and Redis)
//! and `/version` (proctord's, and the oldest client it accepts).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::ApiState;
use crate::error::ErrorBody;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ping` → `pong`.
#[utoipa::path(get, path = "/ping", tag = "health", responses((status = 200, description = "pong", body = String, content_type = "text/plain")))]
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("pong")
}

/// `GET /health/ready` → 200 when every dependency answers, else 503 naming the ones down.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200, description = "every dependency answers"), (status = 503, description = "names what is down", body = ErrorBody)))]
pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    let stores = &state.stores;
    let database = stores.db.check(CHECK_TIMEOUT);
    let redis = async {
        match &stores.redis {
            Some(redis) => Some(redis.check(CHECK_TIMEOUT).await),
            None => None,
        }
    };
    let cluster = async {
        match state.executor.kind() {
            "kubernetes" => Some(state.executor.check().await),
            _ => None,
        }
    };
    let (database, redis, cluster) = tokio::join!(database, redis, cluster);

    let mut checks = serde_json::Map::new();
    let mut down = Vec::new();
    let mut record = |name: &str, result: Result<(), crate::store::StoreError>| match result {
        Ok(()) => {
            checks.insert(name.into(), json!("ok"));
        }
        Err(e) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            checks.insert(name.into(), json!("unavailable"));
            down.push(name.to_owned());
        }
    };
    record("database", database);
    if let Some(redis) = redis {
        record("redis", redis);
    }
    if let Some(cluster) = cluster {
        record(
            "kubernetes",
            cluster.map_err(crate::store::StoreError::Task),
        );
    }
    if down.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": checks}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "error": format!("{} unavailable", down.join(" and ")),
            "detail": {"checks": checks},
        }))
    }
}

/// The answer to `GET /version`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// proctord's version.
    pub version: &'static str,
    /// The oldest `Client-Version` accepted (PROCTOR_MIN_CLIENT_VERSION), when set.
    pub min_client_version: Option<String>,
}

/// `GET /version` → proctord's version and the oldest client it accepts, so a client
/// can warn before its requests are refused.
#[utoipa::path(get, path = "/version", tag = "health", responses((status = 200, body = VersionInfo)))]
pub async fn version(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        min_client_version: state.min_client_version.as_ref().map(|v| v.to_string()),
    })
}
