//! The HTTP edge: parse, authorize, do one thing, map the reply. Every URL is in
//! [`routes`].

use actix_web::web;

use crate::config::AuthMode;
use crate::store::Stores;

pub mod auth;
pub mod health;
pub mod procs;
pub mod secrets;

/// What handlers share.
pub struct ApiState {
    pub stores: Stores,
    pub auth: AuthMode,
    pub min_client_version: Option<semver::Version>,
}

/// Every route of the API, in one table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(health::ping))
        .route("/health/ready", web::get().to(health::ready))
        .service(
            web::scope("/jobs")
                .wrap(actix_web::middleware::from_fn(auth::check_client_version))
                .route("/metadata", web::post().to(procs::register))
                .route("/metadata", web::get().to(procs::list))
                .route("/metadata/{name}", web::get().to(procs::describe))
                .route("/metadata/{name}", web::delete().to(procs::remove))
                .route("/secrets", web::post().to(secrets::set))
                .route("/secrets/{name}", web::get().to(secrets::list_names))
                .route("/secrets/{name}", web::delete().to(secrets::remove)),
        );
}

/// The answer for a URL no route matches.
pub async fn unknown_route(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, crate::error::ApiError> {
    Err(crate::error::ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
