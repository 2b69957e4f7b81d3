//! Who is calling: `Email-Id` + `Access-Token` (the original's headers) checked against
//! the users and tokens in the database, and `Client-Version` checked against
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
            let (Some(email), Some(token)) = (email, header(&req, TOKEN_HEADER)?) else {
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
