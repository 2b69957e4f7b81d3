//! `spawn_app(backend)`: a real proctord on a random port over a fresh database
//! (a new SQLite file, or a new PostgreSQL database and Redis key prefix), with an
//! admin, a member of group `ops` and an outsider, each holding a real token.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use diesel::Connection as _;
use diesel::RunQueryDsl as _;
use proctor::app::Application;
use proctor::config::Settings;
use proctor::model::Email;
use proctor::store::{Db, Stores};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

/// Where the production stores are, overridable for other machines.
pub fn postgres_url() -> String {
    std::env::var("PROCTOR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("PROCTOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A 32-byte key for tests (base64 of 32 × 0x2a).
pub const TEST_SECRETS_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite for everything: the zero-setup default.
    Embedded,
    /// PostgreSQL for records, Redis for procs and secrets.
    Production,
}

/// Whether the PostgreSQL + Redis backend can be tested here: `Ok` when both answer;
/// with CI=true a missing service is a failure, elsewhere a printed skip.
fn production_services() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        proctor::store::init_libpq_tls();
        let problem = match diesel::PgConnection::establish(&postgres_url()) {
            Err(e) => Some(format!(
                "PostgreSQL at {} is unreachable: {e}",
                postgres_url()
            )),
            Ok(_) => redis::Client::open(redis_url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .err()
                .map(|e| format!("Redis at {} is unreachable: {e}", redis_url())),
        };
        match problem {
            None => true,
            Some(problem) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true requires PostgreSQL and Redis: {problem}")
            }
            Some(problem) => {
                eprintln!("SKIPPING the PostgreSQL + Redis backend in these tests: {problem}");
                false
            }
        }
    })
}

/// The backends to run a test against: always the embedded one, and production when
/// its services are up.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Embedded];
    if production_services() {
        backends.push(Backend::Production);
    }
    backends
}

/// Credentials a test client sends.
#[derive(Debug, Clone)]
pub struct Caller {
    pub email: String,
    pub token: String,
}

pub struct TestApp {
    pub settings: Settings,
    pub address: String,
    pub backend: Backend,
    pub client: reqwest::Client,
    pub stores: Stores,
    pub actors: proctor::actors::Actors,
    pub admin: Caller,
    pub member: Caller,
    pub outsider: Caller,
    pub data_dir: PathBuf,
    pub database_name: Option<String>,
    pub redis_prefix: Option<String>,
}

/// A fresh, empty PostgreSQL database; returns its name and URL.
pub fn create_postgres_database() -> (String, String) {
    let name = format!("proctor_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = diesel::PgConnection::establish(&postgres_url()).expect("PostgreSQL is up");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .expect("create the test database");
    let base = postgres_url();
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("PROCTOR_TEST_POSTGRES_URL must end with /<database>"),
    };
    (name, url)
}

pub fn drop_postgres_database(name: &str) {
    if let Ok(mut admin) = diesel::PgConnection::establish(&postgres_url()) {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin);
    }
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proctor-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Settings for a test app of `backend`, before `overrides`; also what to clean up.
pub fn test_settings(
    backend: Backend,
    overrides: &[(&str, &str)],
) -> (Settings, PathBuf, Option<String>, Option<String>) {
    init_test_process();
    let data_dir = temp_dir("data");
    let data_dir_text = data_dir.to_string_lossy().into_owned();
    let mut pairs: Vec<(String, String)> = vec![
        ("app_port".into(), "0".into()),
        ("data_dir".into(), data_dir_text),
        ("auth".into(), "on".into()),
    ];
    let (mut database_name, mut redis_prefix) = (None, None);
    if backend == Backend::Production {
        let (name, url) = create_postgres_database();
        let prefix = format!("proctor-test:{}:", uuid::Uuid::new_v4().simple());
        pairs.extend([
            ("database_url".into(), url),
            ("redis_address".into(), redis_url()),
            ("redis_key_prefix".into(), prefix.clone()),
            ("secrets_key".into(), TEST_SECRETS_KEY.into()),
        ]);
        database_name = Some(name);
        redis_prefix = Some(prefix);
    }
    pairs.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let settings = Settings::from_overrides(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect("test settings are valid");
    (settings, data_dir, database_name, redis_prefix)
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// A fresh, migrated PostgreSQL database for tests that start proctord processes on it:
/// its name and URL; `None` where PostgreSQL and Redis are not here (a printed skip).
pub async fn migrated_postgres_database() -> Option<(String, String)> {
    if !backends().contains(&Backend::Production) {
        return None;
    }
    let (database, url) = create_postgres_database();
    let settings = Settings::from_overrides([
        ("database_url", url.as_str()),
        ("secrets_key", TEST_SECRETS_KEY),
    ])
    .expect("valid settings");
    Db::open(&settings.database)
        .expect("the database opens")
        .migrate()
        .await
        .expect("migrate the test database");
    Some((database, url))
}

/// Starts proctord with `overrides` (keys as in config/default.toml).
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let (settings, data_dir, database_name, redis_prefix) = test_settings(backend, overrides);
    if backend == Backend::Production {
        Db::open(&settings.database)
            .unwrap()
            .migrate()
            .await
            .expect("migrate the test database");
    }
    let app = Application::build(settings.clone())
        .await
        .expect("the app starts");
    let stores = app.stores().clone();
    let actors = app.actors().clone();
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());

    let admin = add_user(&stores, "admin@example.com", &[], true).await;
    let member = add_user(&stores, "member@example.com", &["ops"], false).await;
    let outsider = add_user(&stores, "outsider@example.com", &["dev"], false).await;
    TestApp {
        settings,
        address,
        backend,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        stores,
        actors,
        admin,
        member,
        outsider,
        data_dir,
        database_name,
        redis_prefix,
    }
}

pub async fn add_user(stores: &Stores, email: &str, groups: &[&str], admin: bool) -> Caller {
    let email_id = Email::parse(email).unwrap();
    let groups = groups.iter().map(|g| g.to_string()).collect();
    stores.users.upsert(&email_id, groups, admin).await.unwrap();
    let (token, _) = stores
        .users
        .create_token(&email_id, None, None)
        .await
        .unwrap();
    Caller {
        email: email.to_owned(),
        token,
    }
}

/// Everything proctord logged in this test process (at debug level), so tests can
/// prove what never appears in a log line.
static CAPTURED_LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED_LOGS.lock().unwrap()).into_owned()
}

#[derive(Clone, Copy)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED_LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var("TEST_LOG").is_ok() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A plain HTTP client for tests that start proctord themselves.
pub fn http_client() -> reqwest::Client {
    init_test_process();
    reqwest::Client::new()
}

/// Installs the crypto provider and the capturing log subscriber, once per process.
pub fn init_test_process() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        proctor::store::init_libpq_tls();
        rustls::crypto::ring::default_provider()
            .install_default()
            .ok();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("proctor=debug,tracing_actix_web=info,warn")
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).ok();
    });
}

impl TestApp {
    /// A request as `who` (no credentials when `None`).
    pub fn request(&self, method: Method, path: &str, who: Option<&Caller>) -> RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.address));
        match who {
            Some(who) => builder
                .header("Email-Id", &who.email)
                .header("Access-Token", &who.token),
            None => builder,
        }
    }

    pub async fn ping(&self) -> Response {
        self.request(Method::GET, "/ping", None)
            .send()
            .await
            .unwrap()
    }

    pub async fn ready(&self) -> Response {
        self.request(Method::GET, "/health/ready", None)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, body: &Value, who: &Caller) -> Response {
        self.request(Method::POST, "/jobs/metadata", Some(who))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn list_procs(&self, who: &Caller) -> Response {
        self.request(Method::GET, "/jobs/metadata", Some(who))
            .send()
            .await
            .unwrap()
    }

    pub async fn describe(&self, name: &str, who: &Caller) -> Response {
        self.request(Method::GET, &format!("/jobs/metadata/{name}"), Some(who))
            .send()
            .await
            .unwrap()
    }

    pub async fn remove_proc(&self, name: &str, who: &Caller) -> Response {
        self.request(Method::DELETE, &format!("/jobs/metadata/{name}"), Some(who))
            .send()
            .await
            .unwrap()
    }

    pub async fn set_secrets(&self, body: &Value, who: &Caller) -> Response {
        self.request(Method::POST, "/jobs/secrets", Some(who))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn secret_names(&self, name: &str, who: &Caller) -> Response {
        self.request(Method::GET, &format!("/jobs/secrets/{name}"), Some(who))
            .send()
            .await
            .unwrap()
    }

    pub async fn execute(&self, body: &Value, who: &Caller) -> Response {
        self.request(Method::POST, "/jobs/execute", Some(who))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Runs `proc` with `args` as the admin; returns the execution name.
    pub async fn run(&self, proc: &str, args: Value) -> String {
        let response = self
            .execute(
                &serde_json::json!({"name": proc, "args": args}),
                &self.admin,
            )
            .await;
        let body = json_body(response, 201).await;
        body["name"].as_str().unwrap().to_owned()
    }

    pub async fn status(&self, name: &str, who: &Caller) -> Response {
        self.request(
            Method::GET,
            &format!("/jobs/execute/{name}/status"),
            Some(who),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn execution(&self, name: &str) -> Value {
        let response = self
            .request(
                Method::GET,
                &format!("/api/v1/executions/{name}"),
                Some(&self.admin),
            )
            .send()
            .await
            .unwrap();
        json_body(response, 200).await
    }

    pub async fn cancel(&self, name: &str, who: &Caller) -> Response {
        self.request(
            Method::POST,
            &format!("/api/v1/executions/{name}/cancel"),
            Some(who),
        )
        .send()
        .await
        .unwrap()
    }

    /// Every stored line, read page by page with `since_seq`.
    pub async fn stored_logs(&self, name: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut since = 0;
        loop {
            let path = format!("/api/v1/executions/{name}/logs?since_seq={since}&limit=50000");
            let response = self
                .request(Method::GET, &path, Some(&self.admin))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let last: i64 = response.headers()["Proctor-Last-Seq"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let text = response.text().await.unwrap();
            let page: Vec<String> = text.lines().map(str::to_owned).collect();
            assert_eq!(
                last - since,
                page.len() as i64,
                "Proctor-Last-Seq follows the page"
            );
            let done = page.len() < 50_000;
            lines.extend(page);
            since = last;
            if done {
                return lines;
            }
        }
    }

    /// Polls until the execution reaches a final status (or `wait` passes); returns it.
    pub async fn wait_until_final(&self, name: &str, wait: Duration) -> Value {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let execution = self.execution(name).await;
            let status = execution["status"].as_str().unwrap().to_owned();
            let running = ["RECEIVED", "QUEUED", "CREATED", "RUNNING"].contains(&status.as_str());
            if !running || std::time::Instant::now() > deadline {
                return execution;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until the execution has `status`; panics after `wait`.
    pub async fn wait_for_status(&self, name: &str, status: &str, wait: Duration) -> Value {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let execution = self.execution(name).await;
            if execution["status"] == status {
                return execution;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never reached {status}: {execution}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens the log websocket as `who`.
    pub async fn logs_socket(&self, name: &str, who: &Caller) -> LogSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let url = format!(
            "{}/jobs/logs?job_name={name}",
            self.address.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Email-Id", who.email.parse().unwrap());
        request
            .headers_mut()
            .insert("Access-Token", who.token.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket opens");
        LogSocket(socket)
    }

    pub async fn remove_secrets(&self, name: &str, who: &Caller) -> Response {
        self.request(Method::DELETE, &format!("/jobs/secrets/{name}"), Some(who))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(name) = &self.database_name {
            drop_postgres_database(name);
        }
        if let Some(prefix) = &self.redis_prefix {
            clear_redis_prefix(prefix);
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Removes a test's Redis keys (those under `prefix`), if Redis answers.
pub fn clear_redis_prefix(prefix: &str) {
    if let Ok(mut conn) = redis::Client::open(redis_url().as_str()).and_then(|c| c.get_connection())
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// A proc the tests register: say-hello-world, as the original's sample.
pub fn sample_proc(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "description": "Says hello to NAME",
        "image_name": "proctor/say-hello-world:latest",
        "env_vars": {
            "args": [{"name": "NAME", "description": "who to greet"}],
            "secrets": [{"name": "SLACK_TOKEN", "description": "where to post"}]
        },
        "authorized_groups": [],
        "author": "admin@example.com",
        "contributors": "member@example.com",
        "organization": "proctor",
        "command": ["sh", "-c", "echo Hello $NAME"]
    })
}

/// The JSON body of a response, asserting its status first.
pub async fn json_body(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `error` message of a JSON error response with `status`.
pub async fn error_message(response: Response, status: u16) -> String {
    let body = json_body(response, status).await;
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_owned()
}

pub struct LogSocket(
    pub tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

/// What a log websocket delivered: its lines, then how it closed.
#[derive(Debug)]
pub struct Transcript {
    pub lines: Vec<String>,
    pub close_code: Option<u16>,
    pub close_reason: String,
}

impl LogSocket {
    /// Reads until the server closes the socket (or `wait` passes).
    pub async fn read_to_end(mut self, wait: Duration) -> Transcript {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        let mut transcript = Transcript {
            lines: Vec::new(),
            close_code: None,
            close_reason: String::new(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.0.next()).await;
            match next {
                Ok(Some(Ok(Message::Text(text)))) => transcript.lines.push(text.to_string()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    if let Some(frame) = frame {
                        transcript.close_code = Some(u16::from(frame.code));
                        transcript.close_reason = frame.reason.to_string();
                    }
                    return transcript;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => return transcript,
            }
        }
    }
}

/// `n` lines `line 1` .. `line n`.
pub fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

/// Registers a proc whose `command` is `sh -c script`, with `args` declared.
pub async fn register_script(app: &TestApp, name: &str, script: &str, args: &[&str], extra: Value) {
    let mut proc = serde_json::json!({
        "name": name,
        "description": "a test script",
        "image_name": "alpine:3",
        "env_vars": {
            "args": args.iter().map(|a| serde_json::json!({"name": a})).collect::<Vec<_>>(),
            "secrets": []
        },
        "command": ["sh", "-c", script]
    });
    if let (Some(proc), Value::Object(extra)) = (proc.as_object_mut(), extra) {
        proc.extend(extra);
    }
    json_body(app.register(&proc, &app.admin).await, 201).await;
}

/// Whether `path` is gone within `within` (checked every 10 ms).
pub async fn gone_within(path: &std::path::Path, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while path.exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
