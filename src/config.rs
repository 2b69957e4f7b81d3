//! Settings: `config/default.toml` (compiled in), then `config/<PROCTOR_ENVIRONMENT>.toml`
//! when present, then `PROCTOR_*` environment variables. Every setting is read in
//! [`Settings::from_raw`], once, with a parse error that names the variable.
//!
//! The flat names are the original Proctor's (`PROCTOR_APP_PORT`, `PROCTOR_REDIS_ADDRESS`, ...);
//! the key in a TOML file is the same name without the prefix, in lower case.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;

use crate::model::proc::MAX_RETENTION_DAYS;

/// The compiled-in defaults: the one place a default value is written.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variables read outside the settings table: the two that pick the files,
/// and the `proctor` CLI's own variables, which may share proctord's shell.
const META_VARIABLES: &[&str] = &[
    "PROCTOR_ENVIRONMENT",
    "PROCTOR_CONFIG_DIR",
    "PROCTOR_HOST",
    "PROCTOR_URL",
    "PROCTOR_CONFIG_HOME",
];

/// A value that must never be printed: `Debug` shows `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A setting with a bad value: `PROCTOR_APP_PORT: expected ..., got "abc"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingsError {
    pub variable: String,
    pub message: String,
}

impl SettingsError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            variable: variable_name(key),
            message: message.into(),
        }
    }
}

/// `app_port` -> `PROCTOR_APP_PORT`.
pub fn variable_name(key: &str) -> String {
    format!("PROCTOR_{}", key.to_ascii_uppercase())
}

/// Which relational database holds executions, schedules and users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// libpq's `sslmode`: whether a PostgreSQL connection uses TLS and what it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, else plain (libpq's default); nothing is verified.
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS with a certificate signed by a trusted CA (the root certificate).
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    const ALL: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    /// libpq's name for it: `verify-full`.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, mode)| *mode == self)
            .map(|(name, _)| *name)
            .unwrap_or("prefer")
    }

    /// One of the five names, or a message listing them (libpq's `allow`, which tries
    /// plain text first, is refused).
    fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!("expected one of {}, got {text:?}", names.join(", "))
            })
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub kind: DatabaseKind,
    /// A `postgres://` URL or libpq conninfo string, or a SQLite file path. The TLS
    /// settings below are already in it.
    pub url: Sensitive<String>,
    /// PostgreSQL's `sslmode`, from the URL or PROCTOR_POSTGRES_SSLMODE; `None`: libpq's
    /// default (`prefer`).
    pub sslmode: Option<SslMode>,
    /// The CA file PostgreSQL's certificate is checked against (`sslrootcert`), or
    /// `system` for the system's trusted roots.
    pub sslrootcert: Option<String>,
    pub max_connections: u32,
    pub connection_max_lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/` (built from the original's `host:port` form when needed), or
    /// `rediss://host:port/` for TLS.
    pub url: Sensitive<String>,
    /// Whether the connection uses TLS (a `rediss://` URL); the server's certificate is
    /// always verified.
    pub tls: bool,
    /// The CA certificates (PEM, read from PROCTOR_REDIS_CA_FILE) that a `rediss://`
    /// server's certificate must chain to; `None`: the public web roots (webpki-roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Most commands in flight at once on the one pipelined connection.
    pub max_active_connections: u32,
    /// Prepended to every key, so several deployments (or tests) can share one server.
    pub key_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Local,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Unset: in-cluster service account; `out-of-cluster`: the current kubeconfig context;
    /// anything else: the path of a kubeconfig file.
    pub config: Option<String>,
    pub job_active_deadline_seconds: u64,
    pub job_retries: u32,
    pub namespace: String,
    pub cluster_host_name: Option<String>,
    pub ca_cert_encoded: Option<String>,
    pub basic_auth_encoded: Option<Sensitive<String>>,
    pub pod_list_wait_time: Duration,
    pub job_pod_annotations: BTreeMap<String, String>,
    /// Default resources and what procs may ask of their pods (PROCTOR_KUBE_DEFAULT_RESOURCES,
    /// PROCTOR_KUBE_ALLOWED_*).
    pub pod_policy: crate::model::PodPolicy,
}

/// How long finished runs are kept: a number of days, or `None` for ever. A proc's
/// metadata may set its own (see [`crate::model::ProcMetadata`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Runs (their records and log lines) finished longer ago than this are removed.
    pub execution_days: Option<u32>,
    /// Log lines of runs finished longer ago than this are removed; the record stays
    /// until `execution_days`. Never longer than `execution_days`.
    pub log_days: Option<u32>,
    /// Audit records older than this are removed (kept longer than runs by default).
    pub audit_days: Option<u32>,
    /// How often the background purge runs.
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// The From address; MAIL_USERNAME when that is an address, else proctor@localhost.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<Sensitive<String>>,
    pub server_host: Option<String>,
    pub server_port: u16,
}

/// Notifications beyond mail (webhooks, Slack, callbacks).
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The HMAC-SHA256 key of the `Proctor-Signature` header; `None`: sent unsigned.
    pub webhook_signing_key: Option<Sensitive<String>>,
    /// Where the web console is reached from outside (`https://proctor.example.com`),
    /// for links to runs; `None`: messages carry no link.
    pub public_url: Option<String>,
    /// How long a pending delivery may go without progress (its replica died) before
    /// another replica takes it over.
    pub takeover: Duration,
}

/// Everything `proctord` is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub app_host: IpAddr,
    pub app_port: u16,
    /// A `tracing` filter directive (`debug`, `info`, ...).
    pub log_level: String,
    pub log_format: LogFormat,
    pub data_dir: PathBuf,
    pub auth: AuthMode,
    pub max_request_bytes: usize,
    /// Whether a client's address (audit log, brake on bad tokens) is read from the
    /// `Forwarded` / `X-Forwarded-For` headers of a reverse proxy.
    pub trust_forwarded_for: bool,
    /// Bad credentials one address may send per minute before it is refused for a
    /// while (429); 0 turns the brake off.
    pub bad_credentials_per_minute: u32,
    pub database: DatabaseSettings,
    pub redis: Option<RedisSettings>,
    /// The AES-256-GCM key that seals secrets; `None` in the embedded mode means
    /// "use (or create) the key file under `data_dir`".
    pub secrets_key: Option<Sensitive<[u8; 32]>>,
    pub executor: ExecutorKind,
    /// How many local runs go at once; the rest wait, visible as CREATED.
    pub local_max_concurrent_runs: usize,
    pub logs_stream_read_buffer_size: usize,
    pub logs_stream_write_buffer_size: usize,
    /// How long finished runs and their log lines are kept.
    pub retention: Retention,
    pub kube: KubeSettings,
    pub min_client_version: Option<semver::Version>,
    pub scheduled_jobs_fetch_interval: Duration,
    /// Whether this replica runs the Ticker (PROCTOR_SCHEDULER=off splits API from scheduling).
    pub scheduler: bool,
    /// This replica's name in the executions it owns (PROCTOR_REPLICA_ID); `None`: one
    /// is made for each start ([`default_replica_id`]).
    pub replica_id: Option<String>,
    /// How long an owner's hold on its unfinished executions lasts without a renewal.
    pub lease: Duration,
    /// How long a web console sign-in lasts.
    pub console_session: Duration,
    /// How often schedules changed by other replicas are picked up (at most the fetch interval).
    pub schedule_sync_interval: Duration,
    /// How old a fire missed while no replica ran may be and still run once at start-up.
    pub schedule_misfire_grace: Duration,
    pub mail: MailSettings,
    pub notify: NotifySettings,
    pub sentry_dsn: Option<Sensitive<String>>,
    /// Things worth a warning once logging is up (deprecated or unknown variables).
    pub warnings: Vec<String>,
}

/// The merged layers as strings, remembering which keys were read.
struct Raw {
    values: HashMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl Raw {
    fn get(&self, key: &str) -> String {
        self.read.borrow_mut().insert(key.to_owned());
        self.values
            .get(key)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    fn optional(&self, key: &str) -> Option<String> {
        Some(self.get(key)).filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&self, key: &str, expected: &str) -> Result<T, SettingsError> {
        let value = self.get(key);
        value
            .parse()
            .map_err(|_| SettingsError::new(key, format!("expected {expected}, got {value:?}")))
    }

    fn one_of<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<T, SettingsError> {
        let value = self.get(key).to_ascii_lowercase();
        choices
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
                SettingsError::new(
                    key,
                    format!("expected one of {}, got {value:?}", names.join(", ")),
                )
            })
    }
}

impl Settings {
    /// Reads the defaults, the environment's file and the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        Self::from_raw(merged_values()?)
    }

    /// Only the database settings, for the admin commands (`proctord migrate`, `user`,
    /// `token`): they neither need nor check the rest (no secrets key, no Redis).
    pub fn load_database() -> Result<DatabaseSettings, SettingsError> {
        let raw = Raw {
            values: merged_values()?,
            read: RefCell::default(),
        };
        read_database(&raw, &read_data_dir(&raw)?)
    }
}

/// The defaults, the environment's file and the `PROCTOR_*` variables, merged.
fn merged_values() -> Result<HashMap<String, String>, SettingsError> {
    let environment = std::env::var("PROCTOR_ENVIRONMENT").unwrap_or_default();
    let config_dir = std::env::var("PROCTOR_CONFIG_DIR").unwrap_or_else(|_| "config".into());
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
    if !environment.is_empty() {
        let file = Path::new(&config_dir).join(format!("{environment}.toml"));
        builder = builder.add_source(config::File::from(file).required(false));
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PROCTOR_") && !META_VARIABLES.contains(&k.as_str()))
        .collect();
    for (key, value) in &env {
        let key = key.trim_start_matches("PROCTOR_").to_ascii_lowercase();
        builder = builder
            .set_override(key, value.clone())
            .expect("a string override is always accepted");
    }
    let merged = builder.build().map_err(|e| SettingsError {
        variable: format!("{config_dir}/{environment}.toml"),
        message: e.to_string(),
    })?;
    let table = merged
        .try_deserialize::<HashMap<String, config::Value>>()
        .map_err(|e| SettingsError {
            variable: "configuration".into(),
            message: e.to_string(),
        })?;
    let mut values = HashMap::new();
    for (key, value) in table {
        let text = value.clone().into_string().map_err(|_| {
            SettingsError::new(&key, "expected a single value, not a table or list")
        })?;
        values.insert(key, text);
    }
    Ok(values)
}

impl Settings {
    /// The defaults overlaid with `overrides` (keys as in the TOML file: `app_port`).
    /// Tests and tools use this; it never reads the process environment.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, SettingsError> {
        let mut values = default_values();
        for (key, value) in overrides {
            values.insert(key.to_ascii_lowercase(), value.to_owned());
        }
        Self::from_raw(values)
    }

    fn from_raw(values: HashMap<String, String>) -> Result<Self, SettingsError> {
        let known: BTreeSet<String> = default_values().into_keys().collect();
        let mut warnings: Vec<String> = values
            .keys()
            .filter(|k| !known.contains(*k))
            .map(|k| {
                format!(
                    "{} is not a Proctor setting; it is ignored",
                    variable_name(k)
                )
            })
            .collect();
        warnings.sort();
        let raw = Raw {
            values,
            read: RefCell::default(),
        };
        let mut settings = Self::read(&raw, warnings)?;
        debug_assert_eq!(*raw.read.borrow(), known, "every default is read");
        settings.warnings.dedup();
        Ok(settings)
    }

    fn read(raw: &Raw, mut warnings: Vec<String>) -> Result<Self, SettingsError> {
        let app_host: IpAddr = raw.parse("app_host", "an IP address such as 127.0.0.1")?;
        let app_port = raw.parse("app_port", "a port number (0-65535)")?;
        let log_level = match raw.get("log_level").to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "info" => "info",
            "warn" | "warning" => "warn",
            "error" | "fatal" | "panic" => "error",
            other => {
                return Err(SettingsError::new(
                    "log_level",
                    format!("expected debug, info, warn, error, fatal or panic, got {other:?}"),
                ));
            }
        }
        .to_owned();
        let log_format = raw.one_of(
            "log_format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        let data_dir = read_data_dir(raw)?;
        let max_request_bytes: usize = raw.parse("max_request_bytes", "a number of bytes")?;
        if max_request_bytes < 1024 {
            return Err(SettingsError::new(
                "max_request_bytes",
                format!("must be at least 1024, got {max_request_bytes}"),
            ));
        }

        let database = read_database(raw, &data_dir)?;
        let redis = read_redis(raw)?;
        for (key, needs, used) in [
            (
                "postgres_sslmode",
                "PostgreSQL",
                database.kind == DatabaseKind::Postgres,
            ),
            (
                "postgres_sslrootcert",
                "PostgreSQL",
                database.kind == DatabaseKind::Postgres,
            ),
            ("redis_ca_file", "PROCTOR_REDIS_ADDRESS", redis.is_some()),
        ] {
            if !used && raw.optional(key).is_some() {
                warnings.push(format!(
                    "{} has no effect without {needs}; it is ignored",
                    variable_name(key)
                ));
            }
        }
        let secrets_key = read_secrets_key(raw)?;
        if secrets_key.is_none() && (database.kind == DatabaseKind::Postgres || redis.is_some()) {
            return Err(SettingsError::new(
                "secrets_key",
                "is required with PostgreSQL or Redis (every replica must seal secrets with the same key); \
                 `proctord keygen` prints a new one",
            ));
        }

        let embedded = database.kind == DatabaseKind::Sqlite && redis.is_none();
        let auth = match raw.one_of(
            "auth",
            &[
                ("auto", None),
                ("on", Some(AuthMode::On)),
                ("off", Some(AuthMode::Off)),
            ],
        )? {
            Some(mode) => mode,
            None if embedded && app_host.is_loopback() => AuthMode::Off,
            None => AuthMode::On,
        };
        if auth == AuthMode::Off && !app_host.is_loopback() {
            return Err(SettingsError::new(
                "auth",
                format!(
                    "off is only allowed when PROCTOR_APP_HOST is a loopback address, not {app_host}"
                ),
            ));
        }

        let kube = KubeSettings {
            config: raw.optional("kube_config"),
            job_active_deadline_seconds: raw
                .parse("kube_job_active_deadline_seconds", "a number of seconds")?,
            job_retries: raw.parse("kube_job_retries", "a number of retries (0 or more)")?,
            namespace: raw.get("default_namespace"),
            cluster_host_name: raw.optional("kube_cluster_host_name"),
            ca_cert_encoded: raw.optional("kube_ca_cert_encoded"),
            basic_auth_encoded: raw.optional("kube_basic_auth_encoded").map(Sensitive),
            pod_list_wait_time: Duration::from_secs(
                raw.parse("kube_pod_list_wait_time", "a number of seconds")?,
            ),
            job_pod_annotations: read_annotations(raw)?,
            pod_policy: read_pod_policy(raw)?,
        };
        if kube.namespace.is_empty() {
            return Err(SettingsError::new("default_namespace", "must not be empty"));
        }
        let executor = match raw.one_of(
            "executor",
            &[
                ("auto", None),
                ("local", Some(ExecutorKind::Local)),
                ("kubernetes", Some(ExecutorKind::Kubernetes)),
            ],
        )? {
            Some(kind) => kind,
            None if kube.config.is_some()
                || kube.cluster_host_name.is_some()
                || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
            {
                ExecutorKind::Kubernetes
            }
            None => ExecutorKind::Local,
        };

        let local_max_concurrent_runs: usize =
            raw.parse("local_max_concurrent_runs", "a number of runs")?;
        if local_max_concurrent_runs == 0 {
            return Err(SettingsError::new(
                "local_max_concurrent_runs",
                "must be at least 1",
            ));
        }

        let retention = read_retention(raw)?;

        let min_client_version = raw
            .optional("min_client_version")
            .map(|v| {
                parse_version(&v).ok_or_else(|| {
                    SettingsError::new(
                        "min_client_version",
                        format!("expected a version such as 0.2.0, got {v:?}"),
                    )
                })
            })
            .transpose()?;

        let username = raw.optional("mail_username");
        let from = raw
            .optional("mail_from")
            .or_else(|| username.clone().filter(|u| u.contains('@')))
            .unwrap_or_else(|| "proctor@localhost".to_owned());
        if crate::model::Email::parse(&from).is_err() {
            return Err(SettingsError::new(
                "mail_from",
                format!("expected an e-mail address, got {from:?}"),
            ));
        }
        let mail = MailSettings {
            from,
            username,
            password: raw.optional("mail_password").map(Sensitive),
            server_host: raw.optional("mail_server_host"),
            server_port: raw.parse("mail_server_port", "a port number (0-65535)")?,
        };
        let fetch_minutes: u64 = raw.parse(
            "scheduled_jobs_fetch_interval_in_mins",
            "a number of minutes",
        )?;
        if fetch_minutes == 0 {
            return Err(SettingsError::new(
                "scheduled_jobs_fetch_interval_in_mins",
                "must be at least 1",
            ));
        }

        let scheduler = raw.one_of("scheduler", &[("on", true), ("off", false)])?;
        let replica_id = match raw.optional("replica_id") {
            Some(id) if id.len() > 100 || id.chars().any(char::is_whitespace) => {
                return Err(SettingsError::new(
                    "replica_id",
                    "must be at most 100 characters with no spaces",
                ));
            }
            other => other,
        };
        let lease_seconds: u64 = raw.parse("lease_seconds", "a number of seconds")?;
        if !(2..=3600).contains(&lease_seconds) {
            return Err(SettingsError::new(
                "lease_seconds",
                format!("must be between 2 and 3600, got {lease_seconds}"),
            ));
        }
        let session_minutes: u64 = raw.parse("console_session_minutes", "a number of minutes")?;
        if !(5..=10_080).contains(&session_minutes) {
            return Err(SettingsError::new(
                "console_session_minutes",
                format!("must be between 5 and 10080 (a week), got {session_minutes}"),
            ));
        }
        let sync_seconds: u64 =
            raw.parse("schedule_sync_interval_seconds", "a number of seconds")?;
        if sync_seconds == 0 {
            return Err(SettingsError::new(
                "schedule_sync_interval_seconds",
                "must be at least 1",
            ));
        }
        let schedule_sync_interval = Duration::from_secs(sync_seconds.min(fetch_minutes * 60));
        let schedule_misfire_grace = Duration::from_secs(
            raw.parse("schedule_misfire_grace_seconds", "a number of seconds")?,
        );

        let takeover_seconds: u64 =
            raw.parse("notification_takeover_seconds", "a number of seconds")?;
        if takeover_seconds == 0 {
            return Err(SettingsError::new(
                "notification_takeover_seconds",
                "must be at least 1",
            ));
        }

        if raw.optional("new_relic_app_name").is_some()
            || raw.optional("new_relic_licence_key").is_some()
        {
            warnings.push(
                "PROCTOR_NEW_RELIC_* is accepted but unused: New Relic is replaced by the Prometheus endpoint GET /metrics".into(),
            );
        }

        Ok(Self {
            app_host,
            app_port,
            log_level,
            log_format,
            data_dir,
            auth,
            max_request_bytes,
            trust_forwarded_for: raw.one_of(
                "trust_forwarded_for",
                &[
                    ("false", false),
                    ("true", true),
                    ("off", false),
                    ("on", true),
                ],
            )?,
            bad_credentials_per_minute: raw.parse(
                "bad_credentials_per_minute",
                "a number of attempts (0 turns the brake off)",
            )?,
            database,
            redis,
            secrets_key,
            executor,
            local_max_concurrent_runs,
            logs_stream_read_buffer_size: raw
                .parse("logs_stream_read_buffer_size", "a number of bytes")?,
            logs_stream_write_buffer_size: raw
                .parse("logs_stream_write_buffer_size", "a number of bytes")?,
            retention,
            kube,
            min_client_version,
            scheduled_jobs_fetch_interval: Duration::from_secs(fetch_minutes * 60),
            scheduler,
            replica_id,
            lease: Duration::from_secs(lease_seconds),
            console_session: Duration::from_secs(session_minutes * 60),
            schedule_sync_interval,
            schedule_misfire_grace,
            mail,
            notify: NotifySettings {
                webhook_signing_key: raw.optional("webhook_signing_key").map(Sensitive),
                public_url: read_public_url(raw)?,
                takeover: Duration::from_secs(takeover_seconds),
            },
            sentry_dsn: read_sentry_dsn(raw)?,
            warnings,
        })
    }

    /// True when nothing outside this machine is configured (SQLite, no Redis).
    pub fn is_embedded(&self) -> bool {
        self.database.kind == DatabaseKind::Sqlite && self.redis.is_none()
    }
}

/// `<host name>-<8 random hex digits>`: the host (a pod's name in Kubernetes) says
/// where the replica ran, the random part tells apart two starts on one host.
pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "proctord".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The keys of `config/default.toml` with their default values.
pub fn default_values() -> HashMap<String, String> {
    let defaults = config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<HashMap<String, config::Value>>())
        .expect("config/default.toml is valid TOML");
    defaults
        .into_iter()
        .map(|(k, v)| {
            let text = v
                .into_string()
                .expect("config/default.toml holds only single values");
            (k, text)
        })
        .collect()
}

/// `1.2.3` or `v1.2.3`; a missing patch or minor counts as 0.
pub fn parse_version(text: &str) -> Option<semver::Version> {
    let text = text.trim().trim_start_matches('v');
    if let Ok(v) = semver::Version::parse(text) {
        return Some(v);
    }
    let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    parts
        .next()
        .is_none()
        .then(|| semver::Version::new(major, minor, patch))
}

fn read_data_dir(raw: &Raw) -> Result<PathBuf, SettingsError> {
    let data_dir = PathBuf::from(raw.get("data_dir"));
    if data_dir.as_os_str().is_empty() {
        return Err(SettingsError::new("data_dir", "must not be empty"));
    }
    Ok(data_dir)
}

fn read_database(raw: &Raw, data_dir: &Path) -> Result<DatabaseSettings, SettingsError> {
    let max_connections: u32 = raw.parse("postgres_max_connections", "a number of connections")?;
    if max_connections == 0 {
        return Err(SettingsError::new(
            "postgres_max_connections",
            "must be at least 1",
        ));
    }
    let lifetime_minutes: u64 =
        raw.parse("postgres_connections_max_lifetime", "a number of minutes")?;
    let connection_max_lifetime = Duration::from_secs(lifetime_minutes.max(1) * 60);
    let user = raw.get("postgres_user");
    let password = raw.get("postgres_password");
    let host = raw.optional("postgres_host");
    let port: u16 = raw.parse("postgres_port", "a port number (0-65535)")?;
    let dbname = raw.get("postgres_database");
    let setting_sslmode = raw
        .optional("postgres_sslmode")
        .map(|v| SslMode::parse(&v.to_ascii_lowercase()))
        .transpose()
        .map_err(|message| SettingsError::new("postgres_sslmode", message))?;
    let setting_sslrootcert = raw.optional("postgres_sslrootcert");

    let (kind, url, sslmode, sslrootcert) = match (raw.optional("database_url"), host) {
        (Some(url), _) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let (url, sslmode, sslrootcert) =
                url_with_tls(&url, setting_sslmode, setting_sslrootcert)?;
            (DatabaseKind::Postgres, url, sslmode, sslrootcert)
        }
        (Some(url), _) => {
            let path = url.strip_prefix("sqlite://").unwrap_or(&url);
            if path.contains("://") {
                return Err(SettingsError::new(
                    "database_url",
                    "expected a postgres:// URL or a SQLite file path",
                ));
            }
            (DatabaseKind::Sqlite, path.to_owned(), None, None)
        }
        (None, Some(host)) => {
            let mut conninfo = format!(
                "host={} port={port} user={} dbname={}",
                conninfo_quote(&host),
                conninfo_quote(&user),
                conninfo_quote(&dbname)
            );
            if !password.is_empty() {
                conninfo.push_str(&format!(" password={}", conninfo_quote(&password)));
            }
            if let Some(mode) = setting_sslmode {
                conninfo.push_str(&format!(" sslmode={}", mode.as_str()));
            }
            if let Some(path) = &setting_sslrootcert {
                check_ca_file("postgres_sslrootcert", path)?;
                conninfo.push_str(&format!(" sslrootcert={}", conninfo_quote(path)));
            }
            (
                DatabaseKind::Postgres,
                conninfo,
                setting_sslmode,
                setting_sslrootcert,
            )
        }
        (None, None) => (
            DatabaseKind::Sqlite,
            data_dir.join("proctor.db").to_string_lossy().into_owned(),
            None,
            None,
        ),
    };
    Ok(DatabaseSettings {
        kind,
        url: Sensitive(url),
        sslmode,
        sslrootcert,
        max_connections,
        connection_max_lifetime,
    })
}

/// A `postgres://` URL with the TLS settings in its query: `sslmode` and `sslrootcert`
/// found there are checked, and PROCTOR_POSTGRES_SSLMODE / PROCTOR_POSTGRES_SSLROOTCERT
/// are appended when the URL lacks them. A setting that contradicts the URL is refused
/// rather than silently winning. Messages never quote the URL (it may hold a password).
fn url_with_tls(
    url: &str,
    setting_sslmode: Option<SslMode>,
    setting_sslrootcert: Option<String>,
) -> Result<(String, Option<SslMode>, Option<String>), SettingsError> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = |name: &str| -> Option<String> {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| percent_decode(value))
            .next_back()
    };
    let url_sslmode = param("sslmode")
        .map(|v| SslMode::parse(&v))
        .transpose()
        .map_err(|message| SettingsError::new("database_url", format!("sslmode: {message}")))?;
    let url_sslrootcert = param("sslrootcert");

    let mut appended = Vec::new();
    let sslmode = match (url_sslmode, setting_sslmode) {
        (Some(a), Some(b)) if a != b => {
            return Err(SettingsError::new(
                "postgres_sslmode",
                format!(
                    "is {:?} but PROCTOR_DATABASE_URL says sslmode={}; set it in one place",
                    b.as_str(),
                    a.as_str()
                ),
            ));
        }
        (Some(mode), _) => Some(mode),
        (None, Some(mode)) => {
            appended.push(format!("sslmode={}", mode.as_str()));
            Some(mode)
        }
        (None, None) => None,
    };
    let sslrootcert = match (url_sslrootcert, setting_sslrootcert) {
        (Some(a), Some(b)) if a != b => {
            return Err(SettingsError::new(
                "postgres_sslrootcert",
                format!(
                    "is {b:?} but PROCTOR_DATABASE_URL says sslrootcert={a:?}; set it in one place"
                ),
            ));
        }
        (Some(path), _) => {
            check_ca_file("database_url", &path).map_err(|e| {
                SettingsError::new("database_url", format!("sslrootcert: {}", e.message))
            })?;
            Some(path)
        }
        (None, Some(path)) => {
            check_ca_file("postgres_sslrootcert", &path)?;
            appended.push(format!("sslrootcert={}", percent_encode(&path)));
            Some(path)
        }
        (None, None) => None,
    };
    let mut url = url.to_owned();
    if !appended.is_empty() {
        let base = url.trim_end_matches(['?', '&']);
        let separator = if base.contains('?') { '&' } else { '?' };
        url = format!("{base}{separator}{}", appended.join("&"));
    }
    Ok((url, sslmode, sslrootcert))
}

/// `%2F` -> `/`, as libpq decodes URL parts (`+` stays a plus).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but unreserved characters and `/`, for a URL query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Checks PostgreSQL's `sslrootcert` at start-up ([`read_ca_file`]); `system` (libpq's
/// word for the system's trusted roots) is not a file.
fn check_ca_file(key: &str, path: &str) -> Result<(), SettingsError> {
    if path == "system" {
        return Ok(());
    }
    read_ca_file(key, path).map(drop)
}

/// Reads a CA file (PEM) and checks that it holds at least one certificate, so a
/// wrong path stops proctord at start-up rather than at its first connection.
fn read_ca_file(key: &str, path: &str) -> Result<Vec<u8>, SettingsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path)
        .map_err(|e| SettingsError::new(key, format!("cannot read the CA file {path}: {e}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SettingsError::new(key, format!("{path} is not a PEM file: {e}")))?;
    if certificates.is_empty() {
        return Err(SettingsError::new(
            key,
            format!("{path} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(pem)
}

/// Quotes a libpq conninfo value: `'it\'s'`.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn read_redis(raw: &Raw) -> Result<Option<RedisSettings>, SettingsError> {
    let max_active_connections: u32 =
        raw.parse("redis_max_active_connections", "a number of commands")?;
    if max_active_connections == 0 {
        return Err(SettingsError::new(
            "redis_max_active_connections",
            "must be at least 1",
        ));
    }
    let key_prefix = raw.get("redis_key_prefix");
    let ca_file = raw.optional("redis_ca_file");
    let Some(address) = raw.optional("redis_address") else {
        return Ok(None);
    };
    let tls = address.starts_with("rediss://");
    let url = if address.starts_with("redis://") || tls {
        address
    } else if address.contains("://") || !address.contains(':') {
        return Err(SettingsError::new(
            "redis_address",
            "expected host:port (e.g. localhost:6379), a redis:// URL, or a rediss:// URL for TLS",
        ));
    } else {
        format!("redis://{address}/")
    };
    // The redis crate reads `#insecure` as "skip certificate verification": never here.
    if tls && url.contains('#') {
        return Err(SettingsError::new(
            "redis_address",
            "a rediss:// URL may not carry a #fragment: the server's certificate is always verified \
             (give its CA with PROCTOR_REDIS_CA_FILE)",
        ));
    }
    let ca_pem = match ca_file {
        Some(_) if !tls => {
            return Err(SettingsError::new(
                "redis_ca_file",
                "is set but PROCTOR_REDIS_ADDRESS is not a rediss:// URL; use rediss://host:port/ for TLS",
            ));
        }
        Some(path) => Some(read_ca_file("redis_ca_file", &path)?),
        None => None,
    };
    Ok(Some(RedisSettings {
        url: Sensitive(url),
        tls,
        ca_pem,
        max_active_connections,
        key_prefix,
    }))
}

fn read_secrets_key(raw: &Raw) -> Result<Option<Sensitive<[u8; 32]>>, SettingsError> {
    let Some(text) = raw.optional("secrets_key") else {
        return Ok(None);
    };
    parse_secrets_key(&text)
        .map(|key| Some(Sensitive(key)))
        .map_err(|message| SettingsError::new("secrets_key", message))
}

/// 32 bytes as standard base64 (44 characters) or hex (64 characters).
/// The error never contains the value.
pub fn parse_secrets_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| "is not valid hex".to_owned())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| {
                "expected 32 bytes as base64 (44 characters) or hex (64 characters)".to_owned()
            })?
    };
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "expected a 32-byte key (AES-256) as base64 or hex, got {} bytes",
            bytes.len()
        )
    })
}

/// PROCTOR_PUBLIC_URL: an http(s) URL, kept without a trailing `/`.
fn read_public_url(raw: &Raw) -> Result<Option<String>, SettingsError> {
    let Some(text) = raw.optional("public_url") else {
        return Ok(None);
    };
    match url::Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(Some(text.trim_end_matches('/').to_owned()))
        }
        _ => Err(SettingsError::new(
            "public_url",
            format!("expected an http(s) URL such as https://proctor.example.com, got {text:?}"),
        )),
    }
}

fn read_retention(raw: &Raw) -> Result<Retention, SettingsError> {
    let days = |key: &str| -> Result<Option<u32>, SettingsError> {
        let days: u32 = raw.parse(key, "a number of days (0 keeps for ever)")?;
        if days > MAX_RETENTION_DAYS {
            return Err(SettingsError::new(
                key,
                format!("must be at most {MAX_RETENTION_DAYS} days (0 keeps for ever), got {days}"),
            ));
        }
        Ok((days > 0).then_some(days))
    };
    let execution_days = days("execution_retention_days")?;
    let log_days = days("log_retention_days")?;
    let audit_days = days("audit_retention_days")?;
    if let (Some(runs), Some(logs)) = (execution_days, log_days)
        && logs > runs
    {
        return Err(SettingsError::new(
            "log_retention_days",
            format!(
                "is {logs} days, longer than PROCTOR_EXECUTION_RETENTION_DAYS ({runs}): a run's lines go with its record, so set it to {runs} or less"
            ),
        ));
    }
    let minutes: u64 = raw.parse("purge_interval_minutes", "a number of minutes")?;
    if !(1..=1440).contains(&minutes) {
        return Err(SettingsError::new(
            "purge_interval_minutes",
            format!("must be between 1 and 1440 (a day), got {minutes}"),
        ));
    }
    Ok(Retention {
        execution_days,
        log_days,
        audit_days,
        interval: Duration::from_secs(minutes * 60),
    })
}

fn read_sentry_dsn(raw: &Raw) -> Result<Option<Sensitive<String>>, SettingsError> {
    let Some(dsn) = raw.optional("sentry_dsn") else {
        return Ok(None);
    };
    // The DSN holds a key: the message never quotes it.
    dsn.parse::<sentry::types::Dsn>().map_err(|_| {
        SettingsError::new(
            "sentry_dsn",
            "is not a Sentry DSN (https://<key>@<host>/<project id>)",
        )
    })?;
    Ok(Some(Sensitive(dsn)))
}

/// PROCTOR_KUBE_DEFAULT_RESOURCES (JSON) and the PROCTOR_KUBE_ALLOWED_* lists.
fn read_pod_policy(raw: &Raw) -> Result<crate::model::PodPolicy, SettingsError> {
    use crate::model::pod::{Allowed, Resources};
    let text = raw.get("kube_default_resources");
    let default_resources: Resources = if text.is_empty() {
        Resources::default()
    } else {
        serde_json::from_str(&text).map_err(|e| {
            SettingsError::new(
                "kube_default_resources",
                format!(
                    "expected JSON such as {{\"requests\": {{\"cpu\": \"100m\"}}, \"limits\": {{\"memory\": \"256Mi\"}}}}: {e}"
                ),
            )
        })?
    };
    if let Some(problem) = default_resources.problems("resources").into_iter().next() {
        return Err(SettingsError::new("kube_default_resources", problem));
    }
    Ok(crate::model::PodPolicy {
        default_resources,
        service_accounts: Allowed::parse(&raw.get("kube_allowed_service_accounts")),
        image_pull_secrets: Allowed::parse(&raw.get("kube_allowed_image_pull_secrets")),
        node_selectors: Allowed::parse(&raw.get("kube_allowed_node_selectors")),
        tolerations: Allowed::parse(&raw.get("kube_allowed_tolerations")),
        labels: Allowed::parse(&raw.get("kube_allowed_labels")),
    })
}

fn read_annotations(raw: &Raw) -> Result<BTreeMap<String, String>, SettingsError> {
    let text = raw.get("job_pod_annotations");
    if text.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(&text).map_err(|e| {
        SettingsError::new(
            "job_pod_annotations",
            format!("expected a JSON object of strings such as {{\"key\": \"value\"}}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_overrides(pairs.iter().copied())
    }

    #[test]
    fn defaults_give_the_embedded_mode_with_auth_off_on_loopback() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.app_port, 5001);
        assert_eq!(s.database.kind, DatabaseKind::Sqlite);
        assert!(s.redis.is_none());
        assert_eq!(s.auth, AuthMode::Off);
        assert_eq!(s.executor, ExecutorKind::Local);
        assert!(s.is_embedded());
        assert!(s.database.url.expose().ends_with("proctor.db"));
    }

    #[test]
    fn notification_and_pod_policy_settings_are_read() {
        let s = settings(&[
            ("public_url", "https://proctor.example.com/"),
            ("webhook_signing_key", "k3y"),
            ("kube_allowed_service_accounts", "reporter, backup"),
            (
                "kube_default_resources",
                r#"{"limits": {"memory": "256Mi"}}"#,
            ),
        ])
        .unwrap();
        assert_eq!(
            s.notify.public_url.as_deref(),
            Some("https://proctor.example.com")
        );
        assert_eq!(s.notify.webhook_signing_key.unwrap().expose(), "k3y");
        let policy = s.kube.pod_policy;
        assert!(policy.service_accounts.allows("backup"));
        assert!(!policy.service_accounts.allows("default"));
        assert!(
            !policy.node_selectors.allows("zone"),
            "empty allows nothing"
        );
        assert_eq!(policy.default_resources.limits["memory"], "256Mi");
        let defaults = settings(&[]).unwrap();
        assert!(defaults.notify.public_url.is_none());
        assert!(defaults.notify.webhook_signing_key.is_none());
    }

    #[test]
    fn bad_values_name_the_variable_and_the_problem() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("app_port", "abc")],
                "PROCTOR_APP_PORT: expected a port number",
            ),
            (&[("app_port", "70000")], "PROCTOR_APP_PORT"),
            (
                &[("log_level", "loud")],
                "PROCTOR_LOG_LEVEL: expected debug",
            ),
            (&[("kube_job_retries", "-1")], "PROCTOR_KUBE_JOB_RETRIES"),
            (
                &[("job_pod_annotations", "[1]")],
                "PROCTOR_JOB_POD_ANNOTATIONS: expected a JSON object",
            ),
            (
                &[("kube_default_resources", r#"{"requests": 1}"#)],
                "PROCTOR_KUBE_DEFAULT_RESOURCES: expected JSON such as",
            ),
            (
                &[("kube_default_resources", r#"{"limits": {"cpu": "lots"}}"#)],
                "PROCTOR_KUBE_DEFAULT_RESOURCES: resources.limits.cpu: \"lots\" is not a quantity",
            ),
            (
                &[("public_url", "proctor.example.com")],
                "PROCTOR_PUBLIC_URL: expected an http(s) URL",
            ),
            (
                &[("redis_address", "nonsense")],
                "PROCTOR_REDIS_ADDRESS: expected host:port",
            ),
            (
                &[("redis_address", "rediss://cache:6380/#insecure")],
                "PROCTOR_REDIS_ADDRESS: a rediss:// URL may not carry a #fragment",
            ),
            (
                &[
                    ("redis_address", "cache:6380"),
                    ("redis_ca_file", "/ca.pem"),
                ],
                "PROCTOR_REDIS_CA_FILE: is set but PROCTOR_REDIS_ADDRESS is not a rediss:// URL",
            ),
            (
                &[
                    ("redis_address", "rediss://cache:6380/"),
                    ("redis_ca_file", "/no/such/ca.pem"),
                ],
                "PROCTOR_REDIS_CA_FILE: cannot read the CA file /no/such/ca.pem",
            ),
            (
                &[("postgres_host", "db"), ("postgres_sslmode", "allow")],
                "PROCTOR_POSTGRES_SSLMODE: expected one of disable, prefer, require, verify-ca, verify-full, got \"allow\"",
            ),
            (
                &[("database_url", "postgres://db/x?sslmode=verify")],
                "PROCTOR_DATABASE_URL: sslmode: expected one of disable, prefer",
            ),
            (
                &[
                    ("postgres_host", "db"),
                    ("postgres_sslrootcert", "/no/such/root.crt"),
                ],
                "PROCTOR_POSTGRES_SSLROOTCERT: cannot read the CA file /no/such/root.crt",
            ),
            (
                &[(
                    "database_url",
                    "postgres://db/x?sslrootcert=/no/such/root.crt",
                )],
                "PROCTOR_DATABASE_URL: sslrootcert: cannot read the CA file /no/such/root.crt",
            ),
            (
                &[
                    ("database_url", "postgres://db/x?sslmode=require"),
                    ("postgres_sslmode", "verify-full"),
                ],
                "PROCTOR_POSTGRES_SSLMODE: is \"verify-full\" but PROCTOR_DATABASE_URL says sslmode=require",
            ),
            (
                &[("min_client_version", "one")],
                "PROCTOR_MIN_CLIENT_VERSION",
            ),
            (
                &[("executor", "docker")],
                "PROCTOR_EXECUTOR: expected one of auto, local, kubernetes",
            ),
            (&[("auth", "maybe")], "PROCTOR_AUTH"),
            (
                &[("auth", "off"), ("app_host", "0.0.0.0")],
                "PROCTOR_AUTH: off is only allowed",
            ),
            (
                &[("database_url", "postgres://x/y")],
                "PROCTOR_SECRETS_KEY: is required",
            ),
            (
                &[("secrets_key", "c2hvcnQ=")],
                "PROCTOR_SECRETS_KEY: expected a 32-byte key",
            ),
            (
                &[("postgres_max_connections", "0")],
                "PROCTOR_POSTGRES_MAX_CONNECTIONS",
            ),
            (
                &[("sentry_dsn", "not a dsn")],
                "PROCTOR_SENTRY_DSN: is not a Sentry DSN",
            ),
            (
                &[("scheduled_jobs_fetch_interval_in_mins", "0")],
                "PROCTOR_SCHEDULED_JOBS_FETCH_INTERVAL_IN_MINS",
            ),
            (
                &[("execution_retention_days", "-1")],
                "PROCTOR_EXECUTION_RETENTION_DAYS: expected a number of days",
            ),
            (
                &[("log_retention_days", "99999")],
                "PROCTOR_LOG_RETENTION_DAYS: must be at most 36500 days",
            ),
            (
                &[
                    ("execution_retention_days", "30"),
                    ("log_retention_days", "90"),
                ],
                "PROCTOR_LOG_RETENTION_DAYS: is 90 days, longer than PROCTOR_EXECUTION_RETENTION_DAYS (30)",
            ),
            (
                &[("purge_interval_minutes", "0")],
                "PROCTOR_PURGE_INTERVAL_MINUTES: must be between 1 and 1440",
            ),
        ];
        for (pairs, expected) in cases {
            let err = settings(pairs).expect_err(expected).to_string();
            assert!(
                err.starts_with(expected),
                "{pairs:?}: got {err:?}, want {expected:?}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn a_bad_secrets_key_error_never_contains_the_value() {
        let value = "not-a-key-but-maybe-a-real-secret-value";
        let err = settings(&[("secrets_key", value)]).unwrap_err().to_string();
        assert!(!err.contains(value), "{err}");
    }

    #[test]
    fn postgres_is_selected_by_host_parts_with_quoted_password() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let s = settings(&[
            ("postgres_host", "db.internal"),
            ("postgres_password", "it's secret"),
            ("secrets_key", &key),
        ])
        .unwrap();
        assert_eq!(s.database.kind, DatabaseKind::Postgres);
        assert_eq!(
            s.database.url.expose(),
            "host='db.internal' port=5432 user='postgres' dbname='proctord' password='it\\'s secret'"
        );
        assert_eq!(s.auth, AuthMode::On);
        assert!(
            !format!("{s:?}").contains("it's secret"),
            "Debug hides secrets"
        );
        assert_eq!(s.secrets_key.unwrap().expose(), &[7u8; 32]);
    }

    /// A CA certificate (PEM) in a file of its own, and a file that is not one.
    fn ca_files() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("proctor-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("with space")).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let ca_path = dir.join("with space/ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        let not_pem = dir.join("notes.txt");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        (ca_path, not_pem)
    }

    #[test]
    fn postgres_tls_settings_reach_the_conninfo_and_the_url() {
        let (ca, _) = ca_files();
        let ca = ca.to_str().unwrap();
        let key = hex::encode([1u8; 32]);
        let s = settings(&[
            ("postgres_host", "db.internal"),
            ("postgres_sslmode", "VERIFY-FULL"),
            ("postgres_sslrootcert", ca),
            ("secrets_key", &key),
        ])
        .unwrap();
        assert_eq!(
            s.database.url.expose(),
            &format!(
                "host='db.internal' port=5432 user='postgres' dbname='proctord' sslmode=verify-full sslrootcert='{ca}'"
            )
        );
        assert_eq!(s.database.sslmode, Some(SslMode::VerifyFull));

        let encoded = ca.replace(' ', "%20");
        let cases = [
            (
                "postgres://u:pw@db/x",
                format!("postgres://u:pw@db/x?sslmode=verify-ca&sslrootcert={encoded}"),
            ),
            (
                "postgres://u:pw@db/x?connect_timeout=5",
                format!(
                    "postgres://u:pw@db/x?connect_timeout=5&sslmode=verify-ca&sslrootcert={encoded}"
                ),
            ),
            (
                "postgres://u:pw@db/x?",
                format!("postgres://u:pw@db/x?sslmode=verify-ca&sslrootcert={encoded}"),
            ),
        ];
        for (url, expected) in cases {
            let s = settings(&[
                ("database_url", url),
                ("postgres_sslmode", "verify-ca"),
                ("postgres_sslrootcert", ca),
                ("secrets_key", &key),
            ])
            .unwrap();
            assert_eq!(s.database.url.expose(), &expected, "{url}");
        }

        // Said in the URL alone, or the same in both places: the URL is kept as it is.
        let url = format!("postgres://db/x?sslmode=verify-full&sslrootcert={encoded}");
        for extra in [
            &[][..],
            &[
                ("postgres_sslmode", "verify-full"),
                ("postgres_sslrootcert", ca),
            ][..],
        ] {
            let mut pairs = vec![
                ("database_url", url.as_str()),
                ("secrets_key", key.as_str()),
            ];
            pairs.extend_from_slice(extra);
            let s = settings(&pairs).unwrap();
            assert_eq!(s.database.url.expose(), &url);
            assert_eq!(s.database.sslmode, Some(SslMode::VerifyFull));
            assert_eq!(s.database.sslrootcert.as_deref(), Some(ca));
        }

        // libpq's word for the system's roots is not a file.
        let s = settings(&[
            (
                "database_url",
                "postgres://db/x?sslmode=verify-full&sslrootcert=system",
            ),
            ("secrets_key", &key),
        ])
        .unwrap();
        assert_eq!(s.database.sslrootcert.as_deref(), Some("system"));
    }

    #[test]
    fn tls_setting_errors_never_quote_the_database_url() {
        let (_, not_pem) = ca_files();
        let not_pem = not_pem.to_str().unwrap();
        let cases = [
            (
                "postgres://proctor:hunter2@db/x?sslmode=verify-fool".to_owned(),
                "PROCTOR_DATABASE_URL: sslmode: expected one of",
            ),
            (
                format!("postgres://proctor:hunter2@db/x?sslrootcert={not_pem}"),
                "PROCTOR_DATABASE_URL: sslrootcert:",
            ),
        ];
        for (url, expected) in cases {
            let err = settings(&[("database_url", &url)]).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = settings(&[("postgres_host", "db"), ("postgres_sslrootcert", not_pem)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("PROCTOR_POSTGRES_SSLROOTCERT:")
                && err.contains("holds no certificate"),
            "{err}"
        );
    }

    #[test]
    fn rediss_addresses_use_tls_with_the_ca_file() {
        let (ca, not_pem) = ca_files();
        let key = hex::encode([1u8; 32]);
        let s = settings(&[
            ("redis_address", "rediss://cache.internal:6380/"),
            ("redis_ca_file", ca.to_str().unwrap()),
            ("secrets_key", &key),
        ])
        .unwrap();
        let redis = s.redis.unwrap();
        assert!(redis.tls);
        assert_eq!(redis.ca_pem.unwrap(), std::fs::read(&ca).unwrap());

        let s = settings(&[
            ("redis_address", "rediss://cache:6380/"),
            ("secrets_key", &key),
        ])
        .unwrap();
        let redis = s.redis.unwrap();
        assert!(redis.tls && redis.ca_pem.is_none(), "the public web roots");

        let err = settings(&[
            ("redis_address", "rediss://cache:6380/"),
            ("redis_ca_file", not_pem.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("PROCTOR_REDIS_CA_FILE:") && err.contains("holds no certificate"),
            "{err}"
        );
    }

    #[test]
    fn tls_settings_without_their_service_are_warned_about() {
        let s = settings(&[
            ("postgres_sslmode", "require"),
            ("redis_ca_file", "/ca.pem"),
        ])
        .unwrap();
        assert!(s.is_embedded());
        for name in ["PROCTOR_POSTGRES_SSLMODE", "PROCTOR_REDIS_CA_FILE"] {
            assert!(
                s.warnings.iter().any(|w| w.starts_with(name)),
                "{name}: {:?}",
                s.warnings
            );
        }
    }

    #[test]
    fn the_original_redis_address_form_becomes_a_url() {
        let key = hex::encode([1u8; 32]);
        let s = settings(&[("redis_address", "localhost:6379"), ("secrets_key", &key)]).unwrap();
        assert_eq!(s.redis.unwrap().url.expose(), "redis://localhost:6379/");
    }

    #[test]
    fn original_log_levels_map_onto_tracing_levels() {
        for (given, expected) in [("fatal", "error"), ("panic", "error"), ("DEBUG", "debug")] {
            assert_eq!(
                settings(&[("log_level", given)]).unwrap().log_level,
                expected
            );
        }
    }

    #[test]
    fn new_relic_and_unknown_variables_are_warned_about() {
        let s = settings(&[("new_relic_licence_key", "x"), ("app_prot", "1")]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("Prometheus")));
        assert!(s.warnings.iter().any(|w| w.contains("PROCTOR_APP_PROT")));
    }

    #[test]
    fn retention_keeps_a_year_of_runs_and_a_month_of_lines_and_zero_means_for_ever() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.retention.execution_days, Some(365));
        assert_eq!(s.retention.log_days, Some(30));
        assert_eq!(s.retention.interval, Duration::from_secs(600));
        let s = settings(&[
            ("execution_retention_days", "0"),
            ("log_retention_days", "400"),
        ])
        .unwrap();
        assert_eq!(s.retention.execution_days, None, "0 keeps records for ever");
        assert_eq!(
            s.retention.log_days,
            Some(400),
            "then lines may be kept longer than a year"
        );
        let s = settings(&[("log_retention_days", "0")]).unwrap();
        assert_eq!(s.retention.log_days, None, "lines as long as their record");
    }

    #[test]
    fn versions_accept_a_leading_v_and_missing_parts() {
        assert_eq!(parse_version("v0.2"), Some(semver::Version::new(0, 2, 0)));
        assert_eq!(parse_version("1.2.3"), Some(semver::Version::new(1, 2, 3)));
        assert_eq!(parse_version("x"), None);
    }

    /// The README and `.env.sample` document exactly the settings the code reads.
    #[test]
    fn readme_and_env_sample_list_every_setting() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let sample = std::fs::read_to_string(root.join(".env.sample")).unwrap();
        let mut keys: Vec<String> = default_values().into_keys().collect();
        keys.sort();
        for key in &keys {
            let name = variable_name(key);
            assert!(
                readme.contains(&format!("`{name}`")),
                "README.md lacks `{name}`"
            );
            assert!(
                sample.contains(&format!("{name}=")),
                ".env.sample lacks {name}="
            );
        }
        for line in sample.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some((name, _)) = line.split_once('=')
                && let Some(key) = name.strip_prefix("PROCTOR_")
                && !META_VARIABLES.contains(&name)
            {
                assert!(
                    keys.contains(&key.to_ascii_lowercase()),
                    ".env.sample names {name}, which is not a setting"
                );
            }
        }
    }
}
