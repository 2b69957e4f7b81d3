//! The HTTP edge: parse, authorize, do one thing, map the reply. Every URL is in
//! [`routes`].

use actix_web::web;

use crate::actors::Actors;
use crate::config::AuthMode;
use crate::store::Stores;

pub mod audit;
pub mod auth;
pub mod brake;
pub mod contract;
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
    cfg.service(endpoint("/ping").get(health::ping))
        .service(endpoint("/health/ready").get(health::ready))
        .service(endpoint("/version").get(health::version))
        .service(endpoint("/metrics").get(metrics::render))
        .service(endpoint("/openapi.json").get(docs::openapi_json))
        .service(endpoint("/docs").get(docs::viewer))
        .service(endpoint("/docs/swagger-ui-bundle.js").get(docs::viewer_script))
        .service(endpoint("/docs/swagger-ui.css").get(docs::viewer_style))
        .service(
            web::scope("/jobs")
                .wrap(actix_web::middleware::from_fn(auth::check_client_version))
                .service(endpoint("/metadata").post(procs::register).get(procs::list))
                .service(
                    endpoint("/metadata/{name}")
                        .get(procs::describe)
                        .delete(procs::remove),
                )
                .service(endpoint("/secrets").post(secrets::set))
                .service(
                    endpoint("/secrets/{name}")
                        .get(secrets::list_names)
                        .delete(secrets::remove),
                )
                .service(endpoint("/execute").post(executions::execute))
                .service(endpoint("/execute/{name}/status").get(executions::get_status))
                .service(endpoint("/logs").get(logs::stream))
                .service(
                    endpoint("/schedule")
                        .post(schedules::create)
                        .get(schedules::list),
                )
                .service(
                    endpoint("/schedule/{id}")
                        .get(schedules::describe)
                        .delete(schedules::remove),
                )
                .service(endpoint("/schedule/{id}/enable").post(schedules::enable))
                .service(endpoint("/schedule/{id}/disable").post(schedules::disable))
                .service(endpoint("/schedule/{id}/executions").get(schedules::executions))
                .service(endpoint("/schedule/{id}/run").post(schedule_runs::run_now))
                .service(endpoint("/schedule/{id}/backfill").post(schedule_runs::backfill)),
        )
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(auth::check_client_version))
                .service(
                    endpoint("/session")
                        .post(session::sign_in)
                        .get(session::who)
                        .delete(session::sign_out),
                )
                // Before any `/schedules/{id}` route, which would take `preview` for an id.
                .service(endpoint("/schedules/preview").get(schedules::preview))
                .service(endpoint("/stats").get(stats::overview))
                .service(endpoint("/audit").get(audit::list))
                .service(endpoint("/executions").get(executions::list))
                .service(endpoint("/executions/{name}").get(executions::describe))
                .service(endpoint("/executions/{name}/logs").get(executions::stored_logs))
                .service(
                    endpoint("/executions/{name}/notifications").get(executions::notifications),
                )
                .service(endpoint("/executions/{name}/cancel").post(executions::cancel)),
        );
}

/// A path whose handlers are added by method; any other method gets a JSON 405
/// whose `Allow` header names the ones it has (RFC 9110), from the same calls.
fn endpoint(path: &str) -> Endpoint {
    Endpoint {
        resource: web::resource(path),
        allow: Vec::new(),
    }
}

pub struct Endpoint {
    resource: actix_web::Resource,
    allow: Vec<&'static str>,
}

impl Endpoint {
    fn on<F, Args>(
        mut self,
        method: actix_web::http::Method,
        name: &'static str,
        handler: F,
    ) -> Self
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method).to(handler));
        self.allow.push(name);
        self
    }

    fn get<F, Args>(self, handler: F) -> Self
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.on(actix_web::http::Method::GET, "GET", handler)
    }

    fn post<F, Args>(self, handler: F) -> Self
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.on(actix_web::http::Method::POST, "POST", handler)
    }

    fn delete<F, Args>(self, handler: F) -> Self
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.on(actix_web::http::Method::DELETE, "DELETE", handler)
    }
}

impl actix_web::dev::HttpServiceFactory for Endpoint {
    fn register(self, config: &mut actix_web::dev::AppService) {
        let allow = self.allow.join(", ");
        self.resource
            .default_service(not_allowed(allow))
            .register(config)
    }
}

/// The 405 handler of a path whose methods are `allow` (`"GET, POST"`).
pub fn not_allowed(allow: String) -> actix_web::Route {
    web::to(move |req: actix_web::HttpRequest| {
        let allow = allow.clone();
        async move {
            let error = crate::error::ApiError::new(
                crate::error::ErrorKind::MethodNotAllowed,
                format!(
                    "{} is not supported on {}; it takes {allow}",
                    req.method(),
                    req.path()
                ),
            );
            let mut response = actix_web::ResponseError::error_response(&error);
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
    })
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
