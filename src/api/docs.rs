//! `GET /openapi.json`, generated from the handlers' annotations and types, and
//! `GET /docs`, a Swagger UI served from vendored assets (nothing is fetched).

use actix_web::HttpResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use super::{
    audit, executions, health, logs, metrics, procs, schedule_runs, schedules, secrets, session,
    stats,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Proctor",
        description = "Run procs — automation scripts packaged as container images — on demand and on a schedule, with live logs."
    ),
    paths(
        health::ping,
        health::ready,
        health::version,
        metrics::render,
        procs::register,
        procs::list,
        procs::describe,
        procs::remove,
        secrets::set,
        secrets::list_names,
        secrets::remove,
        executions::execute,
        executions::get_status,
        logs::stream,
        executions::list,
        executions::describe,
        executions::stored_logs,
        executions::notifications,
        executions::cancel,
        schedules::create,
        schedules::list,
        schedules::describe,
        schedules::remove,
        schedules::enable,
        schedules::disable,
        schedules::executions,
        schedule_runs::run_now,
        schedule_runs::backfill,
        session::sign_in,
        session::who,
        session::sign_out,
        schedules::preview,
        stats::overview,
        audit::list,
    ),
    components(schemas(crate::error::ErrorBody, crate::model::Status)),
    modifiers(&Credentials, &UniqueOperationIds),
    tags(
        (name = "procs", description = "Register and describe procs"),
        (name = "secrets", description = "Set a proc's secrets (never readable back)"),
        (name = "executions", description = "Run procs, follow and cancel runs"),
        (name = "schedules", description = "Run procs on a cron schedule"),
        (name = "health", description = "Probes and metrics"),
        (name = "console", description = "The web console's sign-in (a session cookie)"),
        (name = "audit", description = "Who changed what, when and from where (admins)"),
    )
)]
pub struct ApiDoc;

/// The `Email-Id` and `Access-Token` headers, the original's credentials.
struct Credentials;

impl utoipa::Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "email",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Email-Id"))),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Access-Token"))),
        );
    }
}

/// Operation ids made from the method and path (`get_jobs_metadata_name`): handler
/// names repeat across modules, and OpenAPI wants them unique.
struct UniqueOperationIds;

impl utoipa::Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let slug: String = path
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
                .split('_')
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            for (method, operation) in [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ] {
                if let Some(operation) = operation {
                    operation.operation_id = Some(format!("{method}_{slug}"));
                }
            }
        }
    }
}

/// `GET /openapi.json`: the document made exact for this server's configuration
/// ([`super::contract`]).
pub async fn openapi_json(state: actix_web::web::Data<super::ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(super::contract::document(state.auth))
}

/// `GET /docs`: the viewer page.
pub async fn viewer() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(
            r##"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Proctor API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"##,
        )
}

/// `GET /docs/swagger-ui-bundle.js`.
pub async fn viewer_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/javascript")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(&include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js")[..])
}

/// `GET /docs/swagger-ui.css`.
pub async fn viewer_style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(&include_bytes!("../../assets/swagger-ui/swagger-ui.css")[..])
}
