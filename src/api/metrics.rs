//! `GET /metrics` (Prometheus text format) and the middleware that counts requests.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use super::ApiState;
use crate::telemetry::names;

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn render(state: web::Data<ApiState>) -> HttpResponse {
    let (idle, in_use) = state.stores.db.pool_state();
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(idle as f64);
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use").set(in_use as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::metrics().render())
}

/// Counts every request by method, route pattern (not the raw path) and status.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().to_string();
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method, "route" => route, "status" => status).increment(1);
    Ok(response)
}

/// One more refused credential (see `auth::check_token`).
pub fn count_refused_credentials() {
    metrics::counter!(names::REFUSED_CREDENTIALS).increment(1);
}
