//! `/api/v1/session`: the web console's sign-in. An e-mail and access token are
//! exchanged for a session cookie (HttpOnly, SameSite=Strict, as long as
//! PROCTOR_CONSOLE_SESSION_MINUTES) that every route, the log websocket included, accepts
//! in place of the `Email-Id` and `Access-Token` headers. The token itself never reaches
//! a URL or the browser's storage.

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::{FromRequest as _, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::{Caller, SESSION_COOKIE, check_brake, client_address, refuse};
use crate::config::AuthMode;
use crate::error::{ApiError, ErrorBody, ErrorKind};
use crate::model::Email;
use crate::store::users::SessionStart;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignIn {
    pub email: String,
    /// An access token of the user (`proctord token create EMAIL`).
    pub token: String,
}

/// Who the console is signed in as.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// `on` when callers must authenticate; `off` when everyone is an admin.
    pub auth: String,
    /// Whether the request was signed in (by the cookie or by headers); with
    /// authentication off, always.
    pub signed_in: bool,
    pub email: String,
    pub is_admin: bool,
    pub groups: Vec<String>,
    /// When the sign-in ends (absent with authentication off).
    pub expires_at: Option<String>,
}

fn auth_name(state: &ApiState) -> String {
    match state.auth {
        AuthMode::On => "on",
        AuthMode::Off => "off",
    }
    .to_owned()
}

/// Whether the browser reached us over HTTPS (directly or through a proxy that says so).
fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn session_cookie(req: &HttpRequest, value: String, max_age: time::Duration) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_https(req))
        .max_age(max_age)
        .finish()
}

/// `POST /api/v1/session`: signs in; sets the session cookie.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "console",
    request_body = SignIn,
    responses(
        (status = 200, description = "signed in; the Set-Cookie header holds the session", body = SessionInfo),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "the token is not valid for this e-mail", body = ErrorBody),
        (status = 403, description = "cross-site request", body = ErrorBody)
    )
)]
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<SignIn>,
) -> Result<HttpResponse, ApiError> {
    if state.auth == AuthMode::Off {
        // The request is well-formed; the server's state is what refuses it.
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "authentication is off on this server: there is nothing to sign in to",
        ));
    }
    let address = client_address(&req, state.trust_forwarded_for);
    check_brake(&state, address)?;
    if !crate::model::patterns::matches(crate::model::patterns::email_pattern(), &body.email) {
        return Err(ApiError::bad_request(format!(
            "email: {:?} is not a valid e-mail address",
            crate::model::ids::truncate(&body.email, 64)
        )));
    }
    let email = Email::parse(body.email.trim())
        .map_err(|e| ApiError::bad_request(format!("email: {e}")))?;
    let length = chrono::Duration::from_std(state.console_session)
        .map_err(|_| ApiError::bad_request("the console session length is out of range"))?;
    let (user, secret, expires) = match state
        .stores
        .users
        .start_session(&email, body.token.trim(), length)
        .await?
    {
        SessionStart::Started {
            user,
            secret,
            expires,
        } => (user, secret, expires),
        SessionStart::Expired { name, at } => {
            return Err(refuse(
                &state,
                address,
                format!(
                    "that access token ({name:?}) expired at {}: an admin creates a new one with `proctord token create {email}`",
                    at.and_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        SessionStart::Invalid => {
            return Err(refuse(
                &state,
                address,
                format!("that access token is not valid for {email}"),
            ));
        }
    };
    super::audit::record(
        &state,
        &user.email,
        address,
        "session.started",
        "session",
        &user.email,
        serde_json::json!({"expires_at": expires.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
    )
    .await;
    tracing::info!(email = %user.email, "signed in to the console");
    let max_age = time::Duration::seconds(length.num_seconds());
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&req, secret, max_age))
        .insert_header(("Cache-Control", "no-store"))
        .json(SessionInfo {
            auth: auth_name(&state),
            signed_in: true,
            email: user.email,
            is_admin: user.is_admin,
            groups: user.groups,
            expires_at: Some(
                expires
                    .and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        }))
}

/// `GET /api/v1/session`: who the caller is (cookie or headers), and whether
/// authentication is on. Not being signed in is an answer here (`signed_in: false`),
/// not an error: the console asks before it knows.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "console",
    responses(
        (status = 200, body = SessionInfo),
        (status = 400, description = "malformed credentials", body = ErrorBody)
    ),
    security((), ("email" = [], "token" = []))
)]
pub async fn who(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let info = match Caller::extract(&req).await {
        Ok(caller) => SessionInfo {
            auth: auth_name(&state),
            signed_in: true,
            email: caller.email,
            is_admin: caller.is_admin,
            groups: caller.groups,
            expires_at: None,
        },
        Err(e) if e.kind == ErrorKind::Unauthorized => SessionInfo {
            auth: auth_name(&state),
            signed_in: false,
            email: String::new(),
            is_admin: false,
            groups: Vec::new(),
            expires_at: None,
        },
        Err(e) => return Err(e),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(info))
}

/// `DELETE /api/v1/session`: signs out; the session ends on every replica.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "console",
    responses(
        (status = 204, description = "signed out (also when there was no session)"),
        (status = 403, description = "cross-site request", body = ErrorBody)
    )
)]
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(SESSION_COOKIE)
        && let Some(user) = state.stores.users.end_session(cookie.value()).await?
    {
        let address = client_address(&req, state.trust_forwarded_for);
        super::audit::record(
            &state,
            &user,
            address,
            "session.ended",
            "session",
            &user,
            serde_json::json!({}),
        )
        .await;
    }
    Ok(HttpResponse::NoContent()
        .cookie(session_cookie(&req, String::new(), time::Duration::ZERO))
        .finish())
}
