//! The application: stores, then the HTTP server bound to its listener. Both `proctord`
//! and the tests start it through [`Application::build`].

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use tracing_actix_web::TracingLogger;

use std::sync::Arc;
use std::time::Duration;

use crate::actors::{self, Actors, RunDefaults};
use crate::api::{self, ApiState};
use crate::config::{AuthMode, ExecutorKind, Settings};
use crate::error;
use crate::executor::{self, Executor, KubernetesExecutor, LocalExecutor};
use crate::store::{KeySource, Stores};
use crate::web as web_console;

pub struct Application {
    /// Held while the embedded default serves: a second proctord on the same SQLite
    /// file is refused.
    _lock: Option<crate::store::ReplicaLock>,
    port: u16,
    server: Server,
    stores: Stores,
    actors: Actors,
    executor: Arc<dyn Executor>,
}

/// How long a graceful shutdown may take before the rest is cut short.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(20);

impl Application {
    /// Opens the stores and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        let (stores, key_source) = Stores::open(&settings).await?;
        match key_source {
            KeySource::KeyFile {
                path,
                created: true,
            } => tracing::warn!(
                "generated a new secrets key at {}: back it up, secrets cannot be read without it",
                path.display()
            ),
            KeySource::KeyFile {
                path,
                created: false,
            } => {
                tracing::info!("secrets are sealed with the key in {}", path.display())
            }
            KeySource::Setting => tracing::info!("secrets are sealed with PROCTOR_SECRETS_KEY"),
        }
        if settings.auth == AuthMode::Off {
            tracing::warn!(
                "AUTHENTICATION IS OFF (PROCTOR_AUTH=off or the embedded default on loopback): \
                 every caller is an admin. Set PROCTOR_AUTH=on to require tokens."
            );
        }

        if settings.database.kind == crate::config::DatabaseKind::Postgres {
            tracing::info!(
                sslmode = settings
                    .database
                    .sslmode
                    .map_or("prefer (libpq's default)", |mode| mode.as_str()),
                sslrootcert = settings
                    .database
                    .sslrootcert
                    .as_deref()
                    .unwrap_or("(libpq's default)"),
                "TLS to PostgreSQL"
            );
        }
        if let Some(redis) = &settings.redis {
            tracing::info!(
                tls = redis.tls,
                roots = match (redis.tls, &redis.ca_pem) {
                    (false, _) => "none",
                    (true, Some(_)) => "PROCTOR_REDIS_CA_FILE",
                    (true, None) => "the public web roots",
                },
                "TLS to Redis"
            );
        }
        let single = settings.database.kind == crate::config::DatabaseKind::Sqlite;
        let _lock = match single {
            true => Some(crate::store::lock_single_replica(&settings.database)?),
            false => None,
        };
        tracing::info!(
            replica = %stores.leases.ownership().replica,
            lease_seconds = settings.lease.as_secs(),
            "this replica's id"
        );
        let (actors, executor) = start_actors(&settings, &stores).await?;
        // Runs left by replicas that are gone (and, for the one SQLite replica, by
        // itself before a restart); never the runs of a live replica.
        let taken = actors
            .cluster
            .send(actors::cluster::ClaimNow { everything: single })
            .await
            .context("the Cluster did not start")??;
        if taken > 0 {
            tracing::warn!(
                "took over {taken} execution(s) left unfinished by a replica that is gone"
            );
        }

        crate::telemetry::metrics();
        let address = (settings.app_host, settings.app_port);
        let listener = TcpListener::bind(address)
            .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(ApiState {
            stores: stores.clone(),
            actors: actors.clone(),
            executor: executor.clone(),
            auth: settings.auth,
            min_client_version: settings.min_client_version.clone(),
            console_session: settings.console_session,
            brake: api::brake::Brake::new(settings.bad_credentials_per_minute),
            trust_forwarded_for: settings.trust_forwarded_for,
            pod_policy: settings.kube.pod_policy.clone(),
        });
        let max_request_bytes = settings.max_request_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(api::auth::check_origin))
                .wrap(actix_web::middleware::from_fn(api::metrics::count_requests))
                .wrap(TracingLogger::default())
                .wrap(sentry_actix::Sentry::new())
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_request_bytes)
                        .content_type_required(false)
                        .error_handler(error::json_error),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .configure(api::routes)
                .configure(web_console::routes)
                .default_service(web::to(api::unknown_route))
        })
        // Without it, a websocket's small frames wait for the client's delayed ACK
        // (Nagle): a live log line could sit up to ~40 ms in the kernel.
        .tcp_nodelay(true)
        .listen(listener)?
        .shutdown_timeout(10)
        .disable_signals()
        .run();
        tracing::info!(
            "proctord listening on http://{}:{port} ({:?} database, procs in {})",
            settings.app_host,
            settings.database.kind,
            if settings.redis.is_some() {
                "Redis"
            } else {
                "the database"
            },
        );
        Ok(Self {
            _lock,
            port,
            server,
            stores,
            actors,
            executor,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The stores, for admin commands and tests.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The actors' addresses, for tests.
    pub fn actors(&self) -> &Actors {
        &self.actors
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM stop it gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stopping = Stopping {
            _lock: self._lock,
            handle: self.server.handle(),
            stores: self.stores.clone(),
            actors: self.actors.clone(),
            executor: self.executor.clone(),
        };
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            stopping.stop().await;
        });
        self.server.await
    }
}

/// SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop proctord with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// What a graceful shutdown needs.
struct Stopping {
    _lock: Option<crate::store::ReplicaLock>,
    handle: actix_web::dev::ServerHandle,
    stores: Stores,
    actors: Actors,
    executor: Arc<dyn Executor>,
}

impl Stopping {
    /// Stops firing schedules (other replicas' claims take over) and purging, ends the local runs
    /// as interrupted and waits until that is written, stops following Kubernetes
    /// runs, stores every buffered line and closes the log sessions after their last
    /// line, hands the Kubernetes runs' leases over, then stops the HTTP server.
    async fn stop(self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        if let Some(ticker) = &self.actors.ticker {
            let _ = ticker.send(crate::actors::ticker::Pause).await;
        }
        // Queued runs stay queued for the other replicas (or this one's next start).
        let _ = self
            .actors
            .dispatcher
            .send(crate::actors::dispatcher::PauseQueue)
            .await;
        let _ = self.actors.purger.send(crate::actors::purger::Stop).await;
        let handed_over = match tokio::time::timeout_at(deadline, self.executor.shutdown()).await {
            Ok(runs) => runs,
            Err(_) => {
                tracing::warn!("runs did not stop in time");
                Vec::new()
            }
        };
        let kind = self.executor.kind();
        while tokio::time::Instant::now() < deadline {
            match self.stores.executions.unfinished().await {
                Ok(open)
                    if open.iter().any(|e| {
                        e.executor == kind
                            && kind == "local"
                            && (e.status != crate::model::Status::Queued || e.owner.is_some())
                    }) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break,
            }
        }
        let _ = tokio::time::timeout_at(
            deadline,
            self.actors.fanout.send(crate::actors::log_fanout::Shutdown),
        )
        .await;
        // Every line this replica read is stored: the next owner resumes after them.
        let _ = tokio::time::timeout_at(
            deadline,
            self.actors
                .cluster
                .send(crate::actors::cluster::Release { runs: handed_over }),
        )
        .await;
        self.handle.stop(true).await;
        tracing::info!("proctord stopped");
    }
}

/// The executor the settings pick, and the actors around it.
async fn start_actors(
    settings: &Settings,
    stores: &Stores,
) -> anyhow::Result<(Actors, Arc<dyn Executor>)> {
    let (sinks, streams) = executor::channels();
    let executor: Arc<dyn Executor> = match settings.executor {
        ExecutorKind::Local => Arc::new(LocalExecutor::new(
            &settings.data_dir,
            settings.local_max_concurrent_runs,
            sinks,
        )),
        ExecutorKind::Kubernetes => Arc::new(
            KubernetesExecutor::connect(&settings.kube, sinks)
                .await
                .map_err(anyhow::Error::msg)?,
        ),
    };
    tracing::info!("executions run on the {} executor", executor.kind());
    let defaults = RunDefaults {
        deadline: std::time::Duration::from_secs(settings.kube.job_active_deadline_seconds),
        retries: settings.kube.job_retries,
    };
    let actors = actors::start(settings, stores, executor.clone(), streams, defaults);
    Ok((actors, executor))
}
