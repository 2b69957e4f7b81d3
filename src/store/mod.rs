//! The only place diesel and redis appear: the connection pools, the embedded
//! migrations, and one store per kind of record.
//!
//! Queries are written once and compiled for each backend by [`with_backend!`], so a
//! backend difference is a `match` arm, never a second copy of a query.

use std::path::Path;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::{DatabaseKind, DatabaseSettings, Settings};

/// Runs `$body` with `$c` bound to the concrete connection of either backend.
macro_rules! with_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::DbConnection::Postgresql($c) => $body,
            $crate::store::DbConnection::Sqlite($c) => $body,
        }
    };
}

pub mod audit;
pub mod bus;
pub mod crypto;
pub mod executions;
pub mod leases;
pub mod logs;
pub mod notifications;
pub mod procs;
pub mod purge;
pub mod redis;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod users;

pub use self::audit::{AuditEvent, AuditFilter, AuditStore, NewEvent};
pub use self::bus::{Announcement, Bus};
pub use self::executions::{
    Admitted, Bucket, BucketCounts, Execution, ExecutionFilter, ExecutionStore, NewExecution,
    ProcStats, Stats, StatsQuery, Transition,
};
pub use self::leases::{Claimed, LeaseStore, Ownership};
pub use self::logs::{LogStore, Resume, StoredLine};
pub use self::notifications::{Attempt, Delivery, NotificationStore};
pub use self::procs::ProcStore;
pub use self::purge::{PurgeReport, PurgeStore};
pub use self::redis::Redis;
pub use self::schedules::{Fire, NewSchedule, Schedule, ScheduleStore};
pub use self::secrets::SecretStore;
pub use self::users::{TokenCheck, TokenInfo, User, UserStore};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// One connection type over both databases.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// What can go wrong below the API. Messages never carry secret values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("Redis is unavailable: {0}")]
    RedisUnavailable(String),
    #[error("not found")]
    NotFound,
    /// The request conflicts with what is stored (the message says how; no secret in it).
    #[error("{0}")]
    Conflict(String),
    /// A value the store cannot take (the message says why; no secret in it).
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("Redis error: {0}")]
    Redis(::redis::RedisError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("a storage task failed: {0}")]
    Task(String),
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_connection_dropped()
        {
            StoreError::RedisUnavailable(e.to_string())
        } else {
            StoreError::Redis(e)
        }
    }
}

/// Whether `e` is a database blip that the same statement may survive on a new
/// connection: the connection dropped (a restart, a failover, a proxy cut), the server
/// is starting or stopping, or SQLite's lock was busy.
pub fn is_transient(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            [
                "server closed the connection",
                "terminating connection",
                "no connection to the server",
                "could not receive data",
                "could not send data",
                "connection to server",
                "the database system is",
                "database is locked",
                "database is busy",
            ]
            .iter()
            .any(|phrase| message.contains(phrase))
        }
        Error::BrokenTransactionManager => true,
        _ => false,
    }
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::DatabaseUnavailable(_) | StoreError::RedisUnavailable(_) => true,
            StoreError::Database(e) => is_transient(e),
            _ => false,
        }
    }
}

/// Opens connections for the r2d2 pool, picking the backend from the settings (never by
/// guessing from the URL, so a down PostgreSQL can never turn into a new SQLite file).
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    kind: DatabaseKind,
    url: String,
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match self.kind {
            DatabaseKind::Postgres => PgConnection::establish(&self.url)
                .map(DbConnection::Postgresql)
                .map_err(postgres_connection_error),
            DatabaseKind::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url)?;
                // WAL lets readers run beside the writer; busy_timeout makes writers queue
                // instead of failing; foreign keys are off by default in SQLite.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// libpq's reason on one line, saying what failed: `could not connect to PostgreSQL:
/// connection to server at "db" (10.0.0.5), port 5432 failed: server certificate for
/// "localhost" does not match host name "db"`. libpq's messages name the host, port,
/// user and database, never the password.
fn postgres_connection_error(e: diesel::ConnectionError) -> diesel::ConnectionError {
    match e {
        diesel::ConnectionError::BadConnection(message) => {
            let lines: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            diesel::ConnectionError::BadConnection(format!(
                "could not connect to PostgreSQL: {}",
                lines.join("; ")
            ))
        }
        other => other,
    }
}

/// A pool that connects on first use (never at build time).
fn build_pool(
    manager: &ConnectionManager,
    max_size: u32,
    max_lifetime: Option<Duration>,
) -> r2d2::Pool<ConnectionManager> {
    r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .max_lifetime(max_lifetime)
        .connection_timeout(Duration::from_secs(5))
        .error_handler(Box::new(r2d2::LoggingErrorHandler))
        .build_unchecked(manager.clone())
}

/// Initialises the OpenSSL that libpq's TLS uses (linked from source for libpq
/// alone) without its exit-time clean-up. By default OpenSSL frees its global state
/// from an `atexit` handler, while pool threads may still be inside a TLS connection to
/// PostgreSQL: a process exiting then crashes (SIGSEGV) now and then. Call it before
/// any PostgreSQL connection is made; calling it again does nothing.
pub fn init_libpq_tls() {
    openssl_sys::init();
}

/// The relational database: a pool and the one way to use it, [`Db::run`].
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<ConnectionManager>,
    kind: DatabaseKind,
    /// How to open more connections (for [`Db::reserved`]).
    manager: ConnectionManager,
}

impl Db {
    /// Builds the pool without connecting; the first use (or [`Db::check`]) connects.
    pub fn open(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        init_libpq_tls();
        if settings.kind == DatabaseKind::Sqlite
            && let Some(dir) = Path::new(settings.url.expose()).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::DatabaseUnavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let max_size = match settings.kind {
            DatabaseKind::Postgres => settings.max_connections,
            // One writer at a time anyway; a few readers beside it under WAL.
            DatabaseKind::Sqlite => settings.max_connections.min(8),
        };
        let manager = ConnectionManager {
            kind: settings.kind,
            url: settings.url.expose().clone(),
        };
        let pool = build_pool(&manager, max_size, Some(settings.connection_max_lifetime));
        Ok(Self {
            pool,
            kind: settings.kind,
            manager,
        })
    }

    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// (idle, in use) connections of the pool.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (
            state.idle_connections,
            state.connections - state.idle_connections,
        )
    }

    /// A pool of its own with one connection, on the same database: work that must
    /// not queue behind everything else for a connection (the Ticker's claims, the
    /// execution writer).
    pub fn reserved(&self) -> Self {
        Self {
            pool: build_pool(&self.manager, 1, self.pool.max_lifetime()),
            kind: self.kind,
            manager: self.manager.clone(),
        }
    }

    /// A pooled connection for a thread of its own that may block (the execution
    /// writer, on its [`Db::reserved`] pool); everything else goes through [`Db::run`].
    pub(crate) fn connection(
        &self,
    ) -> Result<r2d2::PooledConnection<ConnectionManager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))
    }

    /// Runs `f` with a pooled connection on the blocking pool, inside the caller's span.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        crate::telemetry::spawn_blocking_with_tracing(move || {
            let mut conn = pool
                .get()
                .map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Connects within `timeout` and runs `SELECT 1`: the readiness check.
    pub async fn check(&self, timeout: Duration) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        crate::telemetry::spawn_blocking_with_tracing(move || {
            let mut conn = pool
                .get_timeout(timeout)
                .map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))?;
            conn.batch_execute("SELECT 1")
                .map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Opens the database for serving: SQLite is migrated in place; an un-migrated
    /// PostgreSQL is refused with the command that fixes it.
    pub async fn ready(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let db = Self::open(settings)?;
        match db.kind() {
            DatabaseKind::Sqlite => {
                db.migrate().await?;
                let pragmas = db.sqlite_pragmas().await?;
                tracing::info!("SQLite settings in effect: {pragmas}");
            }
            DatabaseKind::Postgres => {
                let pending = db.pending_migrations().await.map_err(|e| {
                    anyhow::anyhow!("cannot reach PostgreSQL to check its schema: {e}")
                })?;
                if pending > 0 {
                    anyhow::bail!(
                        "the PostgreSQL database has {pending} pending migration(s): run `proctord migrate` first"
                    );
                }
            }
        }
        Ok(db)
    }

    /// The SQLite settings a pooled connection actually has (they are set per
    /// connection, so this proves the set-up ran): `journal_mode=wal synchronous=1 ...`.
    pub async fn sqlite_pragmas(&self) -> Result<String, StoreError> {
        #[derive(diesel::QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        self.run(|conn| {
            let DbConnection::Sqlite(c) = conn else {
                return Ok(String::new());
            };
            let mut settings = Vec::new();
            for (pragma, column) in [
                ("journal_mode", "journal_mode"),
                ("synchronous", "synchronous"),
                ("busy_timeout", "timeout"),
                ("foreign_keys", "foreign_keys"),
            ] {
                let query = format!("SELECT CAST({column} AS TEXT) AS value FROM pragma_{pragma}");
                let rows: Vec<Value> = diesel::RunQueryDsl::load(diesel::sql_query(query), c)?;
                let value = rows.into_iter().next().map(|v| v.value).unwrap_or_default();
                settings.push(format!("{pragma}={value}"));
            }
            Ok(settings.join(" "))
        })
        .await
    }

    /// Applies the pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.run(|conn| {
            let applied = with_backend!(conn, |c| c
                .run_pending_migrations(migrations_for(c))
                .map(|versions| versions.iter().map(|v| v.to_string()).collect()));
            applied.map_err(|e| StoreError::Migration(e.to_string()))
        })
        .await
    }

    /// How many embedded migrations the database has not applied yet.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        self.run(|conn| {
            let pending = with_backend!(conn, |c| c
                .pending_migrations(migrations_for(c))
                .map(|m| m.len()));
            pending.map_err(|e| StoreError::Migration(e.to_string()))
        })
        .await
    }
}

/// The migration set for a connection's backend, picked by its type.
trait BackendMigrations {
    const MIGRATIONS: EmbeddedMigrations;
}
impl BackendMigrations for PgConnection {
    const MIGRATIONS: EmbeddedMigrations = POSTGRES_MIGRATIONS;
}
impl BackendMigrations for SqliteConnection {
    const MIGRATIONS: EmbeddedMigrations = SQLITE_MIGRATIONS;
}
fn migrations_for<C: BackendMigrations>(_: &C) -> EmbeddedMigrations {
    C::MIGRATIONS
}

/// Every store the server uses, opened from the settings.
#[derive(Clone)]
pub struct Stores {
    pub db: Db,
    pub redis: Option<Redis>,
    pub procs: ProcStore,
    pub secrets: SecretStore,
    pub users: UserStore,
    /// Who changed what (see [`audit`]).
    pub audit: AuditStore,
    pub executions: ExecutionStore,
    pub logs: LogStore,
    pub schedules: ScheduleStore,
    /// The delivery log of notifications (webhooks, Slack, callbacks).
    pub notifications: NotificationStore,
    /// This replica's leases on the executions it follows.
    pub leases: LeaseStore,
    /// Announcements between replicas.
    pub bus: Bus,
    /// Retention: removes old runs and lines, on a connection of its own.
    pub purge: PurgeStore,
}

/// What a message at start-up says about the secrets key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Setting,
    KeyFile {
        path: std::path::PathBuf,
        created: bool,
    },
}

impl Stores {
    /// Opens the pools and readies the schema ([`Db::ready`]).
    pub async fn open(settings: &Settings) -> anyhow::Result<(Self, KeySource)> {
        let db = Db::ready(&settings.database).await?;
        let redis = settings.redis.as_ref().map(Redis::open).transpose()?;
        let (key, source) = match &settings.secrets_key {
            Some(key) => (*key.expose(), KeySource::Setting),
            None => {
                let path = settings.data_dir.join("secrets.key");
                let (key, created) = crypto::load_or_create_key_file(&path)?;
                (key, KeySource::KeyFile { path, created })
            }
        };
        let sealer = crypto::Sealer::new(&key);
        let procs = match &redis {
            Some(redis) => ProcStore::Redis(redis.clone()),
            None => ProcStore::Db(db.clone()),
        };
        let secrets = match &redis {
            Some(redis) => SecretStore::redis(redis.clone(), sealer),
            None => SecretStore::db(db.clone(), sealer),
        };
        let ownership = Ownership {
            replica: settings
                .replica_id
                .clone()
                .unwrap_or_else(crate::config::default_replica_id)
                .into(),
            lease: settings.lease,
        };
        let users = UserStore::new(db.clone());
        let audit = AuditStore::new(db.clone());
        let executions = ExecutionStore::new(db.clone(), ownership.clone());
        let logs = LogStore::new(db.clone(), ownership.replica.clone());
        let leases = LeaseStore::new(&db, ownership);
        let bus = match &redis {
            Some(redis) => Bus::redis(redis),
            None => Bus::local(),
        };
        let schedules = ScheduleStore::new(db.clone());
        let notifications = NotificationStore::new(db.clone());
        let purge = PurgeStore::new(db.reserved(), procs.clone(), settings.retention);
        Ok((
            Self {
                db,
                redis,
                procs,
                secrets,
                users,
                audit,
                executions,
                logs,
                schedules,
                notifications,
                leases,
                bus,
                purge,
            },
            source,
        ))
    }
}

/// An exclusive lock on the embedded default's database, held while proctord serves:
/// SQLite is one replica, and a second proctord on the same file would take the first
/// one's runs for its own. Released when dropped (or when the process dies); it is the
/// process's, so closing any other descriptor of the lock file releases it too (only
/// this function opens it).
pub struct ReplicaLock {
    _file: std::fs::File,
}

/// Takes the lock file beside the SQLite database (`proctor.db.lock`), or says which
/// proctord holds it.
pub fn lock_single_replica(settings: &DatabaseSettings) -> anyhow::Result<ReplicaLock> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let path = format!("{}.lock", settings.url.expose());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the lock file {path}: {e}"))?;
    // A POSIX record lock belongs to the process: another process is refused, while
    // this one may open the database again (tests restart proctord in-process).
    // SAFETY: an all-zero flock struct is valid; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    // SAFETY: fcntl(F_SETLK) only takes an advisory lock on a descriptor this function
    // owns, described by a valid struct.
    let locked = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0;
    if !locked {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        anyhow::bail!(
            "another proctord (pid {}) already serves the SQLite database {}: the embedded default is a single replica; stop it first, or use PostgreSQL (PROCTOR_DATABASE_URL) to run several",
            holder.split_whitespace().next().unwrap_or("unknown"),
            settings.url.expose()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    let _ = writeln!(file, "{}", std::process::id());
    Ok(ReplicaLock { _file: file })
}

/// Now, in UTC, as the naive timestamp both schemas store (to the microsecond).
pub fn now() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}
