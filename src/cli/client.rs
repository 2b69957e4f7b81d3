//! Talking to proctord: REST through reqwest, the log websocket through
//! tokio-tungstenite. Every request carries `Client-Version`, `Email-Id` and
//! `Access-Token`; every failure becomes a [`CliError`] whose message says what went
//! wrong (in the original's words where it had some) and whose hint says what to do.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_tungstenite::tungstenite;

use super::config::{self, Config};
use super::error::{CliError, Exit};

/// This client's version, sent as `Client-Version`.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub type LogSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    http: reqwest::Client,
    base: String,
    email: Option<String>,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(config: &Config) -> Result<Self, CliError> {
        let base = config.server()?.to_owned();
        let timeout = config.timeout();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(format!("proctor/{CLIENT_VERSION}"))
            .build()
            .map_err(|e| CliError::usage(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            http,
            base,
            email: config.email.as_ref().map(|e| e.value.clone()),
            token: config.token.as_ref().map(|t| t.value.clone()),
            timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (which starts with `/`) with the client's headers.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Client-Version", CLIENT_VERSION);
        if let Some(email) = &self.email {
            request = request.header("Email-Id", email);
        }
        if let Some(token) = &self.token {
            request = request.header("Access-Token", token);
        }
        request
    }

    /// Sends `request`; a non-2xx answer becomes an error, with `not_found_hint` for 404.
    pub async fn send(
        &self,
        request: RequestBuilder,
        not_found_hint: &str,
    ) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| self.network_error(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(self.http_error(status, &body, not_found_hint))
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        not_found_hint: &str,
    ) -> Result<T, CliError> {
        let response = self
            .send(self.request(Method::GET, path), not_found_hint)
            .await?;
        self.read_json(response).await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        not_found_hint: &str,
    ) -> Result<T, CliError> {
        let response = self
            .send(self.request(Method::POST, path).json(body), not_found_hint)
            .await?;
        self.read_json(response).await
    }

    pub async fn read_json<T: DeserializeOwned>(&self, response: Response) -> Result<T, CliError> {
        let text = response.text().await.map_err(|e| self.network_error(&e))?;
        serde_json::from_str(&text).map_err(|e| {
            CliError::server(format!(
                "Server Error!!! unexpected answer from proctord at {}: {e}",
                self.base
            ))
            .with_hint("is PROCTOR_HOST a proctord? (`proctor version` asks it)")
        })
    }

    /// Opens the log websocket of `execution`: every line from the first, then a close
    /// frame whose reason is the final status.
    pub async fn open_log_socket(&self, execution: &str) -> Result<LogSocket, CliError> {
        use tungstenite::client::IntoClientRequest as _;
        let ws_base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let url = reqwest::Url::parse_with_params(
            &format!("{ws_base}/jobs/logs"),
            [("job_name", execution)],
        )
        .map_err(|e| CliError::usage(format!("bad log URL: {e}")))?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| CliError::usage(format!("bad log URL: {e}")))?;
        let headers = request.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        };
        set("Client-Version", CLIENT_VERSION);
        if let Some(email) = &self.email {
            set("Email-Id", email);
        }
        if let Some(token) = &self.token {
            set("Access-Token", token);
        }
        let connect = tokio_tungstenite::connect_async(request);
        match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => Err(self.timed_out()),
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                Err(self.http_error(
                    response.status(),
                    &body,
                    "`proctor executions` lists recent runs",
                ))
            }
            Ok(Err(e)) => Err(CliError::server(format!(
                "Network Error!!! cannot open the log stream at {ws_base}: {e}"
            ))),
        }
    }

    fn timed_out(&self) -> CliError {
        CliError::server(format!(
            "Connection Timeout!!! proctord at {} did not answer within {} seconds",
            self.base,
            self.timeout.as_secs()
        ))
        .with_hint(format!(
            "Please check your Internet/VPN connection for connectivity to ProctorD, or raise {} (`proctor config set {}=30`)",
            config::TIMEOUT,
            config::TIMEOUT
        ))
    }

    /// A request that got no HTTP answer.
    pub fn network_error(&self, error: &reqwest::Error) -> CliError {
        if error.is_timeout() {
            return self.timed_out();
        }
        let mut cause: &dyn std::error::Error = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        CliError::server(format!(
            "Network Error!!! cannot reach proctord at {}: {cause}",
            self.base
        ))
        .with_hint(format!(
            "check that proctord runs there and that {} is right (`proctor config show`)",
            config::HOST
        ))
    }

    /// A non-2xx answer, in the original's words where it had some.
    pub fn http_error(&self, status: StatusCode, body: &str, not_found_hint: &str) -> CliError {
        let said = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                let text = body.trim();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("").to_owned()
                } else {
                    text.chars().take(300).collect()
                }
            });
        match status {
            StatusCode::UNAUTHORIZED => {
                let hint = if self.email.is_none() || self.token.is_none() {
                    format!(
                        "EMAIL_ID or ACCESS_TOKEN is not present in proctor config file: `proctor config set {}=you@example.com {}=...`",
                        config::EMAIL,
                        config::TOKEN
                    )
                } else {
                    "Please check the EMAIL_ID and ACCESS_TOKEN validity in proctor config file \
                     (`proctor config show`); an admin creates a token with `proctord token create EMAIL`"
                        .to_owned()
                };
                CliError::usage(format!("Unauthorized Access!!! {said}")).with_hint(hint)
            }
            StatusCode::FORBIDDEN => CliError::usage(format!(
                "Access Denied : You are Not Authorized to Perform this action. {said}"
            ))
            .with_hint("ask an admin to add you to a group the proc is authorized for"),
            StatusCode::NOT_FOUND => CliError::usage(said).with_hint(not_found_hint),
            StatusCode::BAD_REQUEST if said.contains("outdated version") => CliError::usage(said)
                .with_hint(format!(
                    "this is proctor {CLIENT_VERSION}; install a newer proctor client"
                )),
            // "already ended", "already exists": the message says it all.
            StatusCode::CONFLICT => CliError::usage(said),
            status if status.is_client_error() => CliError::usage(said)
                .with_hint("`proctor help <command>` shows what each command takes"),
            status => CliError::new(
                Exit::Server,
                format!("Server Error!!! Status Code: {}, {said}", status.as_u16()),
            )
            .with_hint(format!(
                "proctord or one of its dependencies is failing; try again shortly ({}/health/ready names what is down)",
                self.base
            )),
        }
    }
}
