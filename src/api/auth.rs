//! Who is calling: `Email-Id` + `Access-Token` (the original's headers) checked against
//! the users and tokens in the database, or the web console's session cookie; requests
//! from another site refused ([`check_origin`]); and `Client-Version` checked against
//! PROCTOR_MIN_CLIENT_VERSION.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, web};

use super::ApiState;
use crate::config::AuthMode;
use crate::error::{ApiError, ErrorKind};
use crate::model::{Email, ProcMetadata};
use crate::store::TokenCheck;

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
    /// Where the request came from (for the audit log and the brake on bad tokens).
    pub address: Option<IpAddr>,
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
            let address = client_address(&req, state.trust_forwarded_for);
            let email = header(&req, EMAIL_HEADER)?;
            if state.auth == AuthMode::Off {
                return Ok(Caller {
                    email: email.unwrap_or("anonymous@localhost").to_owned(),
                    is_admin: true,
                    groups: Vec::new(),
                    address,
                });
            }
            let token = header(&req, TOKEN_HEADER)?;
            if email.is_none()
                && token.is_none()
                && let Some(cookie) = req.cookie(SESSION_COOKIE)
            {
                return match state.stores.users.session(cookie.value()).await? {
                    Some(user) => Ok(Caller::new(user, address)),
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
            let user = check_token(state, address, email, token).await?;
            Ok(Caller::new(user, address))
        })
    }
}

impl Caller {
    fn new(user: crate::store::User, address: Option<IpAddr>) -> Self {
        Caller {
            email: user.email,
            is_admin: user.is_admin,
            groups: user.groups,
            address,
        }
    }
}

/// The client's address: the peer's, or with PROCTOR_TRUST_FORWARDED_FOR the one a
/// reverse proxy names in `Forwarded` / `X-Forwarded-For`.
pub fn client_address(req: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for && let Some(text) = req.connection_info().realip_remote_addr() {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(ip);
        }
        if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
            return Some(socket.ip());
        }
        // `[::1]` without a port
        if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Some(ip);
        }
    }
    req.peer_addr().map(|a| a.ip())
}

/// Checks an e-mail and access token (headers or console sign-in) behind the brake on
/// guessing ([`super::brake`]): 429 while the address is blocked, 401 for a bad or
/// expired token, else the user.
pub async fn check_token(
    state: &ApiState,
    address: Option<IpAddr>,
    email: &str,
    token: &str,
) -> Result<crate::store::User, ApiError> {
    check_brake(state, address)?;
    let refused = |message: String| refuse(state, address, message);
    let email = match Email::parse(email) {
        Ok(email) => email,
        Err(e) => return Err(refused(format!("{EMAIL_HEADER}: {e}"))),
    };
    match state.stores.users.authenticate(&email, token).await? {
        TokenCheck::Valid(user) => Ok(user),
        TokenCheck::Expired { name, at } => Err(refused(format!(
            "the access token {name:?} of {email} expired at {}: an admin creates a new one with `proctord token create {email}`",
            at.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))),
        TokenCheck::Invalid => Err(refused(format!(
            "the {TOKEN_HEADER} is not valid for {email}"
        ))),
    }
}

/// 429 while `address` is blocked by the brake on bad credentials.
pub fn check_brake(state: &ApiState, address: Option<IpAddr>) -> Result<(), ApiError> {
    match address {
        Some(address) => state.brake.check(address).map_err(too_many_failures),
        None => Ok(()),
    }
}

/// The answer to refused credentials: 401 with `message`, or 429 when this failure
/// makes the brake block the address. Counted and logged (never with the token).
pub fn refuse(state: &ApiState, address: Option<IpAddr>, message: String) -> ApiError {
    crate::api::metrics::count_refused_credentials();
    tracing::info!(address = ?address, "credentials refused: {message}");
    match address.and_then(|a| state.brake.failed(a)) {
        Some(seconds) => too_many_failures(seconds),
        None => ApiError::unauthorized(message),
    }
}

fn too_many_failures(seconds: u64) -> ApiError {
    ApiError::new(
        ErrorKind::TooManyRequests,
        format!("too many bad credentials from your address: try again in {seconds} s"),
    )
    .with_retry_after(seconds)
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
