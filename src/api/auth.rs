//! Who is calling: `Email-Id` + `Access-Token` (the original's headers) checked against
//! the users and tokens in the database, or the web console's session cookie; requests
//! from another site refused ([`check_origin`]); and `Client-Version` checked against
//! PROCTOR_MIN_CLIENT_VERSION.

use std::future::Future;
use std::pin::Pin;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, web};

use super::ApiState;
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::model::{Email, ProcMetadata};

pub const EMAIL_HEADER: &str = "Email-Id";
pub const TOKEN_HEADER: &str = "Access-Token";
pub const CLIENT_VERSION_HEADER: &str = "Client-Version";
/// The web console's session cookie (HttpOnly, SameSite=Strict; see `api::session`).
pub const SESSION_COOKIE: &str = "proctor_session";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub email: String,
    pub is_admin: bool,
    pub groups: Vec<String>,
}

impl Caller {
    /// Admins register procs and set secrets.
    pub fn require_admin(&self, action: &str) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} is not an admin; only admins may {action}",
                self.email
            )))
        }
    }

    /// Whether the caller may see and run `proc`: admins, members of one of its
    /// authorized groups, or anyone when it names none.
    pub fn may_use(&self, proc: &ProcMetadata) -> bool {
        self.is_admin || proc.allows_any_of(self.groups.iter().map(String::as_str))
    }

    pub fn require_use(&self, proc: &ProcMetadata) -> Result<(), ApiError> {
        if self.may_use(proc) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} may not use proc {}: it is open to members of {}",
                self.email,
                proc.name,
                proc.authorized_groups.join(", ")
            ))
            .with_detail(serde_json::json!({"authorized_groups": proc.authorized_groups})))
        }
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()).filter(|v| !v.is_empty()))
            .map_err(|_| ApiError::bad_request(format!("the {name} header is not valid text"))),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<ApiState>>()
                .expect("ApiState is registered by app.rs");
            let email = header(&req, EMAIL_HEADER)?;
            if state.auth == AuthMode::Off {
                return Ok(Caller {
                    email: email.unwrap_or("anonymous@localhost").to_owned(),
                    is_admin: true,
                    groups: Vec::new(),
                });
            }
            let token = header(&req, TOKEN_HEADER)?;
            if email.is_none()
                && token.is_none()
                && let Some(cookie) = req.cookie(SESSION_COOKIE)
            {
                return match state.stores.users.session(cookie.value()).await? {
                    Some(user) => Ok(Caller {
                        email: user.email,
                        is_admin: user.is_admin,
                        groups: user.groups,
                    }),
                    None => Err(ApiError::unauthorized(
                        "your console session has ended: sign in again",
                    )),
                };
            }
            let (Some(email), Some(token)) = (email, token) else {
                return Err(ApiError::unauthorized(format!(
                    "authentication required: send the {EMAIL_HEADER} and {TOKEN_HEADER} headers \
                     (an admin creates a token with `proctord token create EMAIL`)"
                )));
            };
            let email = Email::parse(email)
                .map_err(|e| ApiError::unauthorized(format!("{EMAIL_HEADER}: {e}")))?;
            match state.stores.users.authenticate(&email, token).await? {
                Some(user) => Ok(Caller {
                    email: user.email,
                    is_admin: user.is_admin,
                    groups: user.groups,
                }),
                None => Err(ApiError::unauthorized(format!(
                    "the {TOKEN_HEADER} is not valid for {email}"
                ))),
            }
        })
    }
}

/// Middleware: a client older than PROCTOR_MIN_CLIENT_VERSION gets the original's 400.
/// Requests without the header (curl, other tools) pass.
pub async fn check_client_version(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let minimum = req
        .app_data::<web::Data<ApiState>>()
        .and_then(|state| state.min_client_version.clone());
    if let Some(minimum) = minimum
        && let Some(sent) = header(req.request(), CLIENT_VERSION_HEADER)?
    {
        let version = crate::config::parse_version(sent).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the {CLIENT_VERSION_HEADER} header {:?} is not a version such as 0.2.0",
                crate::model::ids::truncate(sent, 32)
            ))
        })?;
        if version < minimum {
            return Err(ApiError::bad_request(format!(
                "Your Proctor client is using an outdated version: {sent} . Please upgrade to latest client (at least {minimum})"
            ))
            .with_detail(serde_json::json!({"client_version": sent, "minimum": minimum.to_string()}))
            .into());
        }
    }
    next.call(req).await
}

/// Middleware against cross-site requests (CSRF, and websocket hijacking): a request that
/// changes something (any method but GET, HEAD and OPTIONS) or opens a websocket is
/// refused with 403 when its `Origin` names another site, and, when it is authenticated
/// by the console's cookie alone, when it has no `Origin` at all. Browsers always send
/// `Origin` on such requests; the CLI, curl and scripts send none and use headers.
pub async fn check_origin(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use actix_web::http::{Method, header as h};
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade = req.headers().contains_key(h::UPGRADE);
    if changes || upgrade {
        match req.headers().get(h::ORIGIN) {
            Some(origin) => {
                let host = req.connection_info().host().to_ascii_lowercase();
                let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
                let origin_host = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                if origin_host != Some(host.as_str()) {
                    return Err(ApiError::forbidden(format!(
                        "cross-site request refused: its Origin {:?} is not this server ({host})",
                        crate::model::ids::truncate(&origin, 100)
                    ))
                    .into());
                }
            }
            None => {
                let by_cookie = req.request().cookie(SESSION_COOKIE).is_some()
                    && !req.headers().contains_key(EMAIL_HEADER);
                if by_cookie {
                    return Err(ApiError::forbidden(
                        "a request signed in by the console's cookie must carry an Origin header",
                    )
                    .into());
                }
            }
        }
    }
    next.call(req).await
}
