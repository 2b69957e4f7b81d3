//! Support for multi-process tests: [`Replica`], one real `proctord` process as
//! production runs several, and [`TcpProxy`], a cuttable link to PostgreSQL or Redis.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// How long [`Replica::start`] waits for `GET /ping`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines a panic about a replica quotes.
const LOG_TAIL_LINES: usize = 60;

/// One `proctord serve` process with its own log file; killed when dropped.
pub struct Replica {
    label: String,
    port: u16,
    pid: i32,
    child: tokio::process::Child,
    dir: PathBuf,
}

impl Replica {
    /// Starts proctord with `env` (PROCTOR_* variables) plus PROCTOR_APP_PORT=<a free
    /// port>, PROCTOR_LOG_LEVEL=info and PROCTOR_DATA_DIR=<its temp dir>/data unless `env`
    /// sets them; inherited PROCTOR_* and RUST_LOG variables are not passed on. Stdout
    /// and stderr go to `<temp dir>/proctor-replica-<label>-<uuid>/proctord.log`.
    /// Returns once `GET /ping` answers 200; panics with the log's tail if it has not
    /// within 30 s or the process exits first.
    pub async fn start(label: &str, env: &[(String, String)]) -> Replica {
        let dir =
            std::env::temp_dir().join(format!("proctor-replica-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the replica's temp dir");
        let log = std::fs::File::create(dir.join("proctord.log")).expect("create proctord.log");
        let stdout = log.try_clone().expect("a second handle on proctord.log");

        let set = |key: &str| env.iter().any(|(k, _)| k == key);
        let port = match env.iter().find(|(k, _)| k == "PROCTOR_APP_PORT") {
            Some((_, port)) => port.parse().expect("PROCTOR_APP_PORT is a port number"),
            None => free_port(),
        };
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_proctord"));
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PROCTOR_")) || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command.env("PROCTOR_APP_PORT", port.to_string());
        if !set("PROCTOR_LOG_LEVEL") {
            command.env("PROCTOR_LOG_LEVEL", "info");
        }
        if !set("NO_COLOR") {
            // A log file, not a terminal: no colour codes in the way of `log()` searches.
            command.env("NO_COLOR", "1");
        }
        if !set("PROCTOR_DATA_DIR") {
            command.env("PROCTOR_DATA_DIR", dir.join("data"));
        }
        let child = command
            .envs(env.iter().filter(|(k, _)| k != "PROCTOR_APP_PORT").cloned())
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn proctord");
        let pid = child.id().expect("a process just spawned has a pid") as i32;
        // Built before the wait so that a panic below still kills the process.
        let mut replica = Replica {
            label: label.to_owned(),
            port,
            pid,
            child,
            dir,
        };
        replica.wait_until_ready().await;
        replica
    }

    /// Polls `GET /ping` every 50 ms until it answers 200.
    async fn wait_until_ready(&mut self) {
        let client = crate::helpers::http_client();
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "replica {} exited ({status}) before answering /ping:\n{}",
                    self.label,
                    self.log_tail()
                );
            }
            let ping = client.get(self.url("/ping")).send();
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), ping).await
                && response.status() == 200
            {
                return;
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "replica {} did not answer /ping within {START_TIMEOUT:?}:\n{}",
                    self.label,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The name given to [`Replica::start`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The port of its HTTP API, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (still reported after it exits).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL (a node lost), then reaps the process; does nothing once it has exited.
    pub async fn kill9(&mut self) {
        // start_kill refuses a child already reaped, so no other process is signalled.
        let _ = self.child.start_kill();
        self.child.wait().await.expect("reap proctord");
    }

    /// SIGTERM (a rolling update); does not wait for the exit.
    pub fn sigterm(&self) {
        // `id()` is None once the child is reaped, and reaping needs `&mut self`: the
        // pid is still this process's.
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }

    /// Waits for the process to exit; panics with the log's tail if it has not within
    /// `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for proctord"),
            Err(_) => panic!(
                "replica {} still running after {within:?}:\n{}",
                self.label,
                self.log_tail()
            ),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The whole log file so far.
    pub fn log(&self) -> String {
        let bytes = std::fs::read(self.dir.join("proctord.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last lines of the log, for panic messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.start_kill();
            // Reaped here, so the process is gone before its directory is removed.
            for _ in 0..500 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if std::env::var_os("KEEP_REPLICA_LOGS").is_some() {
            eprintln!(
                "replica {} kept its logs in {}",
                self.label,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, on a thread and runtime of its own,
/// that can cut its connections and refuse new ones; dropping it cuts all and stops.
pub struct TcpProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the proxy's thread and the test's handle share.
struct ProxyShared {
    /// Bumped by each cut: a connection ends when it differs from the one it began in.
    generation: watch::Sender<u64>,
    /// Open connections (id → generation). Registering under this lock and cutting
    /// under it makes every connection either older than a cut (and cut) or newer.
    live: Mutex<BTreeMap<u64, u64>>,
    /// Signalled whenever a connection closes.
    closed: Condvar,
    refuse: AtomicBool,
    accepted: AtomicU64,
}

impl ProxyShared {
    fn live(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends every connection open now; returns once all are closed (false if some
    /// were still open after 10 s).
    fn cut(&self) -> bool {
        let live = self.live();
        self.generation.send_modify(|g| *g += 1);
        let current = *self.generation.borrow();
        let (live, timeout) = self
            .closed
            .wait_timeout_while(live, Duration::from_secs(10), |live| {
                live.values().any(|&g| g < current)
            })
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(live);
        !timeout.timed_out()
    }
}

/// Removes a connection from [`ProxyShared::live`] when its task ends, however it ends.
struct Registration {
    shared: Arc<ProxyShared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.live().remove(&self.id);
        self.shared.closed.notify_all();
    }
}

impl TcpProxy {
    /// Listens on 127.0.0.1:<free port> and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener for tokio");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let shared = Arc::new(ProxyShared {
            generation: watch::Sender::new(0),
            live: Mutex::default(),
            closed: Condvar::new(),
            refuse: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let accepting = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("register the proxy's listener");
                    tokio::select! {
                        () = accept_loop(listener, upstream, accepting) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task with its sockets.
            })
            .expect("spawn the proxy thread");
        TcpProxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every open connection abruptly on both sides (a reset, as a server restart
    /// does); returns once they are all closed.
    pub fn cut(&self) {
        assert!(
            self.shared.cut(),
            "the proxy's connections did not close within 10 s"
        );
    }

    /// While `true`, new connections are accepted and reset at once without reaching
    /// upstream (a server that is down or starting); `false` forwards again.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.live().len()
    }

    /// Connections accepted since start, forwarded or refused.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.cut();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until the listener fails for good; each is refused or
/// forwarded on a task of its own.
async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<ProxyShared>) {
    let mut next_id = 0u64;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of file descriptors and the like: try again shortly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            reset(client);
            continue;
        }
        next_id += 1;
        let generation = {
            let mut live = shared.live();
            let generation = *shared.generation.borrow();
            live.insert(next_id, generation);
            generation
        };
        let registration = Registration {
            shared: shared.clone(),
            id: next_id,
        };
        let cut = shared.generation.subscribe();
        tokio::spawn(forward(client, upstream, cut, generation, registration));
    }
}

/// Copies both ways between `client` and a new connection to `upstream` until either
/// side closes or a cut comes after `generation`; a cut or an error resets both.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<u64>,
    generation: u64,
    _registration: Registration,
) {
    // A closed sender (the proxy stopping) counts as a cut too.
    let cut_signal = cut.wait_for(|g| *g != generation);
    tokio::pin!(cut_signal);
    let mut server = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(server) => server,
            Err(_) => return reset(client),
        },
        _ = &mut cut_signal => return reset(client),
    };
    let clean = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut server) => copied.is_ok(),
        _ = &mut cut_signal => false,
    };
    if !clean {
        reset(client);
        reset(server);
    }
}

/// Closes `stream` with a reset rather than an orderly shutdown.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// `scheme://[credentials@]`, `host[:port]` and the rest of `url`.
fn url_parts(url: &str) -> (&str, &str, &str) {
    let after_scheme = url.find("://").expect("a URL with a scheme") + 3;
    let end = after_scheme
        + url[after_scheme..]
            .find(['/', '?'])
            .unwrap_or(url.len() - after_scheme);
    let host = after_scheme + url[after_scheme..end].rfind('@').map_or(0, |at| at + 1);
    (&url[..host], &url[host..end], &url[end..])
}

/// The address of the server a postgres:// or redis:// URL names (its port, or the
/// scheme's default), IPv4 first.
pub fn upstream_of(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs as _;
    let (_, authority, _) = url_parts(url);
    let default_port = if url.starts_with("redis") { 6379 } else { 5432 };
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .expect("the URL's host resolves")
        .min_by_key(|address| !address.is_ipv4())
        .expect("the URL's host has an address")
}

/// `url` with its host and port replaced by 127.0.0.1:`port` (a [`TcpProxy`]'s).
pub fn through_proxy(url: &str, port: u16) -> String {
    let (before, _, after) = url_parts(url);
    format!("{before}127.0.0.1:{port}{after}")
}

#[test]
fn through_proxy_replaces_only_the_host_and_port() {
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:7000/postgres",
            "credentials and a database",
        ),
        (
            "postgres://u:p%40ss@db.example:5433/x?sslmode=disable",
            "postgres://u:p%40ss@127.0.0.1:7000/x?sslmode=disable",
            "a password and a query",
        ),
        (
            "redis://127.0.0.1:6379/",
            "redis://127.0.0.1:7000/",
            "no credentials",
        ),
        (
            "redis://localhost",
            "redis://127.0.0.1:7000",
            "no port, no path",
        ),
        (
            "postgres://h/db?user=a@b",
            "postgres://127.0.0.1:7000/db?user=a@b",
            "an @ after the host",
        ),
    ];
    for (url, expected, case) in cases {
        assert_eq!(through_proxy(url, 7000), expected, "{case}");
    }
    assert_eq!(
        upstream_of("redis://127.0.0.1").to_string(),
        "127.0.0.1:6379",
        "Redis's default port"
    );
    assert_eq!(
        upstream_of("postgres://u@127.0.0.1/db").to_string(),
        "127.0.0.1:5432",
        "PostgreSQL's default port"
    );
}

#[test]
fn a_proxy_forwards_postgres_and_a_cut_breaks_the_connection_until_it_reconnects() {
    use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

    if !crate::helpers::backends().contains(&crate::helpers::Backend::Production) {
        eprintln!("SKIPPING the proxy test: the production services are not all up (reason above)");
        return;
    }
    let proxy = TcpProxy::start(upstream_of(&crate::helpers::postgres_url()));
    let url = through_proxy(&crate::helpers::postgres_url(), proxy.port());
    let select_one =
        |conn: &mut PgConnection| diesel::sql_query("SELECT 1").execute(conn).map(|_| ());

    let mut conn = PgConnection::establish(&url).expect("connect through the proxy");
    select_one(&mut conn).expect("SELECT 1 through the proxy");
    assert_eq!(proxy.open_connections(), 1, "one forwarded connection");

    proxy.cut();
    assert_eq!(proxy.open_connections(), 0, "cut closes it");
    assert!(
        select_one(&mut conn).is_err(),
        "the next query on a cut connection fails"
    );
    drop(conn);

    proxy.refuse(true);
    let before = proxy.accepted();
    assert!(
        PgConnection::establish(&url).is_err(),
        "a refusing proxy lets no connection through"
    );
    assert!(proxy.accepted() > before, "the attempt reached the proxy");
    assert_eq!(
        proxy.open_connections(),
        0,
        "a refused connection is not kept"
    );

    proxy.refuse(false);
    let mut conn = PgConnection::establish(&url).expect("connect again once it forwards");
    select_one(&mut conn).expect("SELECT 1 on the new connection");
    assert_eq!(proxy.open_connections(), 1);
}

#[actix_web::test]
async fn a_replica_starts_answers_and_dies_on_kill_9() {
    let data_dir = crate::helpers::temp_dir("replica-data");
    let env = [(
        "PROCTOR_DATA_DIR".to_owned(),
        data_dir.to_string_lossy().into_owned(),
    )];
    let mut replica = Replica::start("kill9", &env).await;
    assert!(replica.is_running());
    assert_eq!(replica.label(), "kill9");
    assert_eq!(
        replica.ws_url("/jobs/logs"),
        format!("ws://127.0.0.1:{}/jobs/logs", replica.port())
    );
    let client = crate::helpers::http_client();
    let pong = client
        .get(replica.url("/ping"))
        .send()
        .await
        .expect("GET /ping")
        .text()
        .await
        .expect("the /ping body");
    assert_eq!(pong, "pong");
    drop(client);

    replica.kill9().await;
    assert!(!replica.is_running(), "killed and reaped");
    // SAFETY: signal 0 only asks whether the (reaped) pid still names a process.
    let alive = unsafe { libc::kill(replica.pid(), 0) } == 0;
    assert!(!alive, "no process {} any more", replica.pid());
    let refused = std::net::TcpStream::connect(("127.0.0.1", replica.port()))
        .expect_err("nothing listens on a killed replica's port");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    replica.kill9().await; // a second time: nothing to do
    drop(replica);
    let _ = std::fs::remove_dir_all(data_dir);
}

#[actix_web::test]
async fn a_replica_exits_cleanly_on_sigterm() {
    let data_dir = crate::helpers::temp_dir("replica-data");
    let env = [(
        "PROCTOR_DATA_DIR".to_owned(),
        data_dir.to_string_lossy().into_owned(),
    )];
    let mut replica = Replica::start("sigterm", &env).await;
    replica.sigterm();
    let status = replica.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "a clean exit: {status}\n{}",
        replica.log()
    );
    assert!(!replica.is_running());
    drop(replica);
    let _ = std::fs::remove_dir_all(data_dir);
}

#[test]
fn connections_accepted_during_cuts_are_either_cut_on_both_sides_or_forwarded() {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::AtomicUsize;

    // An echo server that counts the connections it holds, until `stopped`.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let upstream = echo.local_addr().expect("the echo server's address");
    let held = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let (counted, stopping) = (held.clone(), stopped.clone());
    let echo_server = std::thread::spawn(move || {
        for stream in echo.incoming().flatten() {
            if stopping.load(Ordering::SeqCst) {
                break;
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let counted = counted.clone();
            std::thread::spawn(move || {
                if let Ok(mut reader) = stream.try_clone() {
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                }
                counted.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });

    let proxy = TcpProxy::start(upstream);
    let connect =
        || std::net::TcpStream::connect(("127.0.0.1", proxy.port())).expect("connect to the proxy");
    // Cuts back to back while the first half of 100 connections is made, so that
    // connections arrive before, during and after cuts.
    let connected = AtomicUsize::new(0);
    let mut clients = std::thread::scope(|scope| {
        let cutter = scope.spawn(|| {
            while connected.load(Ordering::SeqCst) < 50 {
                proxy.cut();
            }
        });
        let clients: Vec<_> = (0..100)
            .map(|_| {
                let client = connect();
                connected.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
                client
            })
            .collect();
        cutter.join().expect("the cutting thread");
        clients
    });
    clients.extend((0..5).map(|_| connect()));

    let mut forwarded = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        let mut echoed = [0u8; 5];
        let answer = client
            .write_all(b"ping\n")
            .and_then(|()| client.read_exact(&mut echoed));
        match answer {
            Ok(()) => {
                assert_eq!(&echoed, b"ping\n", "client {i}: an echo");
                forwarded += 1;
            }
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "client {i}: neither forwarded nor closed (half-open): {e}"
            ),
        }
    }
    assert!(
        forwarded >= 5,
        "connections after the last cut are forwarded"
    );
    assert_eq!(
        proxy.open_connections(),
        forwarded,
        "the proxy holds the forwarded ones"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while held.load(Ordering::SeqCst) != forwarded && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        held.load(Ordering::SeqCst),
        forwarded,
        "upstream holds exactly the forwarded ones: the cut ones are closed there too"
    );
    drop(clients);
    drop(proxy);
    stopped.store(true, Ordering::SeqCst);
    drop(std::net::TcpStream::connect(upstream));
    echo_server.join().expect("the echo server stops");
}
