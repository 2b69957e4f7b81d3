use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{
    Backend, TEST_SECRETS_KEY, TestApp, backends, error_message, json_body, sample_proc, spawn_app,
    spawn_app_with,
};

#[actix_web::test]
async fn ping_answers_pong() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let response = app.ping().await;
        assert_eq!(response.status().as_u16(), 200, "{backend:?}");
        assert_eq!(response.text().await.unwrap(), "pong", "{backend:?}");
    }
}

#[actix_web::test]
async fn ready_is_200_listing_every_dependency_it_checked() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let body = json_body(app.ready().await, 200).await;
        assert_eq!(body["status"], "ready", "{backend:?}");
        assert_eq!(body["checks"]["database"], "ok", "{backend:?}");
        match backend {
            Backend::Embedded => assert!(body["checks"].get("redis").is_none()),
            Backend::Production => assert_eq!(body["checks"]["redis"], "ok"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix_web::test]
async fn ready_is_503_naming_redis_when_redis_is_unreachable() {
    let address = format!("127.0.0.1:{}", free_port());
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("redis_address", &address),
            ("secrets_key", TEST_SECRETS_KEY),
        ],
    )
    .await;
    let body = json_body(app.ready().await, 503).await;
    assert_eq!(body["error"], "redis unavailable");
    assert_eq!(body["detail"]["checks"]["redis"], "unavailable");
    assert_eq!(body["detail"]["checks"]["database"], "ok");

    // Requests that need Redis get a clear 503, not a 500 or a hang.
    let response = app.list_procs(&app.admin).await;
    let body = json_body(response, 503).await;
    assert_eq!(body["error"], "Redis is unavailable; try again shortly");
}

/// A redis-server of the test's own, so it can be stopped without touching others.
struct OwnRedis(Child, u16);

impl OwnRedis {
    /// Starts redis-server on `port`; `None` when it cannot run here.
    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self(child, port);
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A proctord keeping its procs in a redis-server of the test's own; `None` (the test is
/// skipped, which CI does not allow) when redis-server cannot run here.
async fn app_on_own_redis(test: &str) -> Option<(OwnRedis, TestApp)> {
    let Some(redis) = OwnRedis::start_on(free_port()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires redis-server on the PATH"
        );
        eprintln!("SKIPPING {test}: redis-server cannot be started");
        return None;
    };
    let address = format!("127.0.0.1:{}", redis.1);
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("redis_address", &address),
            ("secrets_key", TEST_SECRETS_KEY),
        ],
    )
    .await;
    Some((redis, app))
}

#[actix_web::test]
async fn ready_turns_503_when_redis_stops_and_200_when_it_returns() {
    let Some((redis, app)) = app_on_own_redis("ready_turns_503_when_redis_stops").await else {
        return;
    };
    json_body(app.ready().await, 200).await;

    let port = redis.1;
    drop(redis);
    let body = json_body(app.ready().await, 503).await;
    assert_eq!(body["error"], "redis unavailable");

    let _again = OwnRedis::start_on(port).expect("redis-server restarts");
    json_body(app.ready().await, 200).await;
}

/// Procs live in Redis here: while it is down requests get a clear 503, and the first
/// request after it restarts succeeds (the dropped connection is remade and the command
/// sent again) instead of failing on the dead connection.
#[actix_web::test]
async fn proc_requests_fail_clearly_while_redis_is_down_and_succeed_right_after_it_restarts() {
    let Some((redis, app)) = app_on_own_redis("proc_requests_..._after_it_restarts").await else {
        return;
    };
    json_body(app.register(&sample_proc("before"), &app.admin).await, 201).await;
    let listed = json_body(app.list_procs(&app.admin).await, 200).await;
    assert_eq!(listed[0]["name"], "before");

    // Restarted with no request in between: the first request meets the dead connection.
    // This Redis keeps nothing on disk, so it comes back empty.
    let port = redis.1;
    drop(redis);
    let again = OwnRedis::start_on(port).expect("redis-server restarts");
    let listed = json_body(app.list_procs(&app.admin).await, 200).await;
    assert_eq!(listed, serde_json::json!([]));
    json_body(app.register(&sample_proc("after"), &app.admin).await, 201).await;

    drop(again);
    let message = error_message(app.describe("after", &app.admin).await, 503).await;
    assert_eq!(message, "Redis is unavailable; try again shortly");
    let _third = OwnRedis::start_on(port).expect("redis-server restarts");
    json_body(app.register(&sample_proc("third"), &app.admin).await, 201).await;
    let described = json_body(app.describe("third", &app.admin).await, 200).await;
    assert_eq!(described["name"], "third");
}

#[actix_web::test]
async fn ready_is_503_naming_the_database_when_postgres_goes_away() {
    if !backends().contains(&Backend::Production) {
        return;
    }
    let app = spawn_app(Backend::Production).await;
    json_body(app.ready().await, 200).await;
    crate::helpers::drop_postgres_database(app.database_name.as_deref().unwrap());
    let body = json_body(app.ready().await, 503).await;
    assert_eq!(body["error"], "database unavailable");
    assert_eq!(body["detail"]["checks"]["redis"], "ok");
}

#[actix_web::test]
async fn unknown_routes_get_a_json_404() {
    let app = spawn_app(Backend::Embedded).await;
    let response = app
        .request(reqwest::Method::GET, "/no/such/thing", None)
        .send()
        .await
        .unwrap();
    let body = json_body(response, 404).await;
    assert_eq!(body["error"], "no route for GET /no/such/thing");
}

#[actix_web::test]
async fn every_sqlite_connection_runs_with_wal_normal_sync_a_busy_timeout_and_foreign_keys() {
    let app = spawn_app(Backend::Embedded).await;
    let pragmas = app.stores.db.sqlite_pragmas().await.unwrap();
    assert_eq!(
        pragmas,
        "journal_mode=wal synchronous=1 busy_timeout=10000 foreign_keys=1"
    );
}

/// The server's end of a connection this process opened from `client_port`, as a
/// `TcpStream` over a duplicate of its descriptor (the server runs in this process).
fn server_end_of(client_port: u16) -> Option<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: dup only makes a new descriptor; the TcpStream owns (and closes) the
        // copy, never the original. A descriptor that is not a TCP socket fails
        // peer_addr below and is dropped.
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            continue;
        }
        let stream = unsafe { std::net::TcpStream::from_raw_fd(copy) };
        if stream
            .peer_addr()
            .is_ok_and(|peer| peer.port() == client_port)
        {
            return Some(stream);
        }
    }
    None
}

#[actix_web::test]
async fn accepted_connections_send_small_writes_at_once_without_waiting_for_acks() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app(Backend::Embedded).await;
    let server = app.address.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&server).await.unwrap();
    client
        .write_all(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 256];
    let read = client.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    let client_port = client.local_addr().unwrap().port();
    let accepted = server_end_of(client_port).expect("the server's end of the connection");
    assert_eq!(
        accepted.local_addr().unwrap().to_string(),
        server,
        "found the server's end"
    );
    // Nagle's algorithm off: a websocket's log frames go out as written instead of
    // waiting for the client's delayed ACK.
    assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is set");
}
