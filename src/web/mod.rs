//! The web console: a small single-page app (`assets/console/`: one HTML page, one ES
//! module, one stylesheet, no framework and no build step) served at `/`. It speaks only
//! the public API, signed in by the session cookie of `api::session`, so everything it
//! shows a script can do too.
//!
//! Its files are built into the binary. Each is served under a name carrying a hash of
//! its content (`/assets/app.1f2e3d4c5b6a.js`) and cached for a year; the page that
//! names them is never cached, so a new release is picked up at the next load. Pages
//! and assets are compressed (brotli or gzip, as the browser asks), and every page
//! carries a Content-Security-Policy that allows only this server's own scripts, styles
//! and connections: no inline script, no third-party origin.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::middleware::Compress;
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

/// The URLs of the console's pages: each answers with the same page, whose script
/// shows what the URL names.
const PAGES: &[&str] = &[
    "/",
    "/sign-in",
    "/procs",
    "/procs/{name}",
    "/runs",
    "/runs/{name}",
    "/schedules",
    "/schedules/{id}",
];

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One built-in file.
struct Asset {
    /// The name in `assets/console/`, as the page names it (`app.js`).
    name: &'static str,
    /// The name it is served under, with its content's hash (`app.1f2e3d4c5b6a.js`).
    served_as: String,
    content_type: &'static str,
    body: &'static [u8],
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        (
            "app.js",
            "text/javascript; charset=utf-8",
            &include_bytes!("../../assets/console/app.js")[..],
        ),
        (
            "app.css",
            "text/css; charset=utf-8",
            &include_bytes!("../../assets/console/app.css")[..],
        ),
        (
            "favicon.svg",
            "image/svg+xml",
            &include_bytes!("../../assets/console/favicon.svg")[..],
        ),
    ]
    .into_iter()
    .map(|(name, content_type, body)| {
        let hash = hex::encode(&Sha256::digest(body)[..6]);
        let (stem, extension) = name.rsplit_once('.').expect("assets have an extension");
        Asset {
            name,
            served_as: format!("{stem}.{hash}.{extension}"),
            content_type,
            body,
        }
    })
    .collect()
});

/// The page, naming each asset by its hashed URL.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    let mut page = include_str!("../../assets/console/index.html").to_owned();
    for asset in ASSETS.iter() {
        page = page.replace(
            &format!("{{{{{}}}}}", asset.name),
            &format!("/assets/{}", asset.served_as),
        );
    }
    debug_assert!(!page.contains("{{"), "every asset the page names exists");
    page
});

/// The console's routes: its pages and its files.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in PAGES {
        cfg.service(
            web::resource(*path)
                .wrap(Compress::default())
                .route(web::get().to(page))
                .default_service(crate::api::not_allowed("GET".into())),
        );
    }
    cfg.service(
        web::resource("/assets/{file}")
            .wrap(Compress::default())
            .route(web::get().to(asset))
            .default_service(crate::api::not_allowed("GET".into())),
    );
}

/// Headers every console response carries.
fn secured(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    response
}

async fn page() -> HttpResponse {
    page_with(HttpResponse::Ok())
}

/// The console's page, never cached, with `status`.
fn page_with(status: actix_web::HttpResponseBuilder) -> HttpResponse {
    secured(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE.as_str())
}

/// For a browser asking for a page that does not exist (outside the API), the console
/// with a 404 status, which says so in its own words; everyone else gets the JSON 404.
pub fn not_found_page(req: &HttpRequest) -> Option<HttpResponse> {
    let path = req.path();
    let wants_page = req.method() == actix_web::http::Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    let api = ["/api/", "/jobs/", "/assets/", "/docs/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    (wants_page && !api).then(|| page_with(HttpResponse::NotFound()))
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    let Some(asset) = ASSETS.iter().find(|a| a.served_as == *file) else {
        return actix_web::ResponseError::error_response(&crate::error::ApiError::not_found(
            format!(
                "no console file {:?} (an older release's?): reload the page",
                crate::model::ids::truncate(&file, 100)
            ),
        ));
    };
    let etag = format!("\"{}\"", asset.served_as);
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|sent| sent.as_bytes() == etag.as_bytes())
    {
        return secured(HttpResponse::NotModified())
            .insert_header((header::ETAG, etag))
            .finish();
    }
    secured(HttpResponse::Ok())
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::ETAG, etag))
        .body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_each_asset_by_its_hashed_url() {
        for asset in ASSETS.iter() {
            assert!(
                PAGE.contains(&format!("/assets/{}", asset.served_as)),
                "{} is linked",
                asset.name
            );
            assert_ne!(asset.served_as, asset.name);
        }
        assert!(!PAGE.contains("{{"));
        assert!(!PAGE.contains("<script>"), "no inline script");
    }
}
