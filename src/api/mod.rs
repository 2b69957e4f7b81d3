//! The HTTP edge: parse, authorize, do one thing, map the reply. Every URL is in
//! [`routes`].

use actix_web::web;

use crate::actors::Actors;
use crate::config::AuthMode;
use crate::store::Stores;

pub mod audit;
pub mod auth;
pub mod brake;
pub mod docs;
pub mod executions;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod params;
pub mod procs;
pub mod schedule_runs;
pub mod schedules;
pub mod secrets;
pub mod session;
pub mod stats;

/// What handlers share.
pub struct ApiState {
    pub stores: Stores,
    pub actors: Actors,
    pub executor: std::sync::Arc<dyn crate::executor::Executor>,
    pub auth: AuthMode,
    pub min_client_version: Option<semver::Version>,
    /// How long a console sign-in lasts.
    pub console_session: std::time::Duration,
    /// The brake on repeated bad credentials from one address.
    pub brake: brake::Brake,
    /// Whether the client's address is read from `Forwarded` / `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// What procs may ask of their Kubernetes pods, checked at registration.
    pub pod_policy: crate::model::PodPolicy,
}

/// Every route of the API, in one table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ping").route(web::get().to(health::ping)))
        .service(resource("/health/ready").route(web::get().to(health::ready)))
        .service(resource("/version").route(web::get().to(health::version)))
        .service(resource("/metrics").route(web::get().to(metrics::render)))
        .service(resource("/openapi.json").route(web::get().to(docs::openapi_json)))
        .service(resource("/docs").route(web::get().to(docs::viewer)))
        .service(resource("/docs/swagger-ui-bundle.js").route(web::get().to(docs::viewer_script)))
        .service(resource("/docs/swagger-ui.css").route(web::get().to(docs::viewer_style)))
        .service(
            web::scope("/jobs")
                .wrap(actix_web::middleware::from_fn(auth::check_client_version))
                .service(
                    resource("/metadata")
                        .route(web::post().to(procs::register))
                        .route(web::get().to(procs::list)),
                )
                .service(
                    resource("/metadata/{name}")
                        .route(web::get().to(procs::describe))
                        .route(web::delete().to(procs::remove)),
                )
                .service(resource("/secrets").route(web::post().to(secrets::set)))
                .service(
                    resource("/secrets/{name}")
                        .route(web::get().to(secrets::list_names))
                        .route(web::delete().to(secrets::remove)),
                )
                .service(resource("/execute").route(web::post().to(executions::execute)))
                .service(
                    resource("/execute/{name}/status").route(web::get().to(executions::get_status)),
                )
                .service(resource("/logs").route(web::get().to(logs::stream)))
                .service(
                    resource("/schedule")
                        .route(web::post().to(schedules::create))
                        .route(web::get().to(schedules::list)),
                )
                .service(
                    resource("/schedule/{id}")
                        .route(web::get().to(schedules::describe))
                        .route(web::delete().to(schedules::remove)),
                )
                .service(resource("/schedule/{id}/enable").route(web::post().to(schedules::enable)))
                .service(
                    resource("/schedule/{id}/disable").route(web::post().to(schedules::disable)),
                )
                .service(
                    resource("/schedule/{id}/executions")
                        .route(web::get().to(schedules::executions)),
                )
                .service(
                    resource("/schedule/{id}/run").route(web::post().to(schedule_runs::run_now)),
                )
                .service(
                    resource("/schedule/{id}/backfill")
                        .route(web::post().to(schedule_runs::backfill)),
                ),
        )
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(auth::check_client_version))
                .service(
                    resource("/session")
                        .route(web::post().to(session::sign_in))
                        .route(web::get().to(session::who))
                        .route(web::delete().to(session::sign_out)),
                )
                // Before any `/schedules/{id}` route, which would take `preview` for an id.
                .service(resource("/schedules/preview").route(web::get().to(schedules::preview)))
                .service(resource("/stats").route(web::get().to(stats::overview)))
                .service(resource("/audit").route(web::get().to(audit::list)))
                .service(resource("/executions").route(web::get().to(executions::list)))
                .service(resource("/executions/{name}").route(web::get().to(executions::describe)))
                .service(
                    resource("/executions/{name}/logs")
                        .route(web::get().to(executions::stored_logs)),
                )
                .service(
                    resource("/executions/{name}/notifications")
                        .route(web::get().to(executions::notifications)),
                )
                .service(
                    resource("/executions/{name}/cancel").route(web::post().to(executions::cancel)),
                ),
        );
}

/// A resource whose unsupported methods get a JSON 405.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub async fn method_not_allowed(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, crate::error::ApiError> {
    Err(crate::error::ApiError::new(
        crate::error::ErrorKind::MethodNotAllowed,
        format!("{} is not supported on {}", req.method(), req.path()),
    ))
}

/// The answer for a URL no route matches.
pub async fn unknown_route(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, crate::error::ApiError> {
    if let Some(page) = crate::web::not_found_page(&req) {
        return Ok(page);
    }
    Err(crate::error::ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
