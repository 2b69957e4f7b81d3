//! TLS to PostgreSQL and to Redis, against servers each test starts itself with a
//! certificate for `localhost` from a CA the test makes (rcgen). The PostgreSQL server
//! accepts only TLS connections (`hostssl`), so a plain one is refused by the server.
//! A test that cannot start its server here is skipped with the reason (CI=true fails
//! it instead).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::RunQueryDsl as _;
use proctor::app::Application;
use proctor::config::{Settings, SslMode};
use proctor::store::{Db, DbConnection, Redis};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::helpers::{
    Backend, TEST_SECRETS_KEY, captured_logs, init_test_process, json_body, sample_proc,
    spawn_app_with, temp_dir,
};

/// The PostgreSQL password of the test server: no message may contain it.
const PASSWORD: &str = "tls-test-password-7f3a";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Skips the test with `problem` printed, or fails it under CI=true.
fn skip(test: &str, problem: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true requires this test's server: {problem}"
    );
    eprintln!("SKIPPING {test}: {problem}");
}

/// A CA, a server certificate it signed for the DNS name `localhost` only (no IP
/// address), and a second CA that signed nothing here: all as PEM files in `dir`.
struct Certificates {
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: String,
    server_key: String,
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn certificates() -> Certificates {
    let dir = temp_dir("tls");
    let ca_issuer = make_ca("Proctor test CA");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    // No common name: the one DNS name is all a client may match.
    params.distinguished_name = DistinguishedName::new();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server = params.signed_by(&server_key, &ca_issuer).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_issuer.pem()).unwrap();
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, make_ca("Some other CA").pem()).unwrap();
    Certificates {
        dir,
        ca,
        other_ca,
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a private key readable by its owner only.
fn write_key(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A PostgreSQL server of the test's own, on a free port of `localhost`, with `ssl = on`
/// and only `hostssl` lines in pg_hba.conf. Stopped (immediately) and removed on drop.
struct OwnPostgres {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
}

/// `program` run as the `postgres` user when this process is root (initdb and postgres
/// refuse root), else as this user.
fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| "there is no postgres user".to_owned())
    };
    Ok((id("-u")?, id("-g")?))
}

impl OwnPostgres {
    fn start(certificates: &Certificates) -> Result<Self, String> {
        let output = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map_err(|e| format!("pg_config: {e}"))?;
        let bindir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if !bindir.join("initdb").exists() {
            return Err(format!("no initdb in {}", bindir.display()));
        }
        let dir = temp_dir("postgres-tls");
        let server = Self {
            dir: dir.clone(),
            bindir,
            port: free_port(),
        };
        // SAFETY: as above.
        let owner = match unsafe { libc::geteuid() } {
            0 => Some(postgres_ids()?),
            _ => None,
        };
        let chown = |path: &Path| match owner {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", path.display())),
            None => Ok(()),
        };
        chown(&dir)?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown(&pwfile)?;
        let data = dir.join("data");
        run(
            as_postgres(&server.bindir.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        )?;
        std::fs::write(data.join("server.crt"), &certificates.server_cert).unwrap();
        write_key(&data.join("server.key"), &certificates.server_key);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
        )
        .unwrap();
        for file in ["server.crt", "server.key", "pg_hba.conf"] {
            chown(&data.join(file))?;
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nlisten_addresses = 'localhost'\nport = {}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             fsync = off\nmax_connections = 40\n",
            server.port,
            dir.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        run(
            as_postgres(&server.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            format!("{e}\n{log}")
        })?;
        Ok(server)
    }

    /// A URL for this server with `query` (sslmode, sslrootcert, ...).
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Settings over the defaults with `pairs` (and the secrets key PostgreSQL needs).
fn settings(pairs: &[(&str, &str)]) -> Settings {
    init_test_process();
    let mut all = vec![("secrets_key", TEST_SECRETS_KEY)];
    all.extend_from_slice(pairs);
    Settings::from_overrides(all).expect("valid settings")
}

/// Whether the pooled connection `db` hands out is encrypted (PostgreSQL's own view).
async fn uses_tls(db: &Db) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    db.run(|conn| {
        let DbConnection::Postgresql(c) = conn else {
            panic!("a PostgreSQL connection")
        };
        let row: Ssl =
            diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .get_result(c)?;
        Ok(row.ssl)
    })
    .await
    .unwrap()
}

/// What connecting with `database_url` says (the readiness check's error).
async fn postgres_refusal(url: &str) -> String {
    let settings = settings(&[("database_url", url)]);
    let db = Db::open(&settings.database).unwrap();
    let error = db
        .check(Duration::from_secs(3))
        .await
        .expect_err("the connection is refused")
        .to_string();
    assert!(!error.contains(PASSWORD), "no password in {error:?}");
    assert!(!error.contains('\n'), "one line: {error:?}");
    error
}

#[actix_web::test]
async fn postgres_verify_full_with_the_servers_ca_connects_and_serves_proctord() {
    let test = "postgres_verify_full_with_the_servers_ca_connects";
    let certificates = certificates();
    let server = match OwnPostgres::start(&certificates) {
        Ok(server) => server,
        Err(problem) => return skip(test, &problem),
    };
    let ca = certificates.ca.to_str().unwrap();
    let other_ca = certificates.other_ca.to_str().unwrap();

    // The URL form: sslmode and sslrootcert as URL parameters.
    let url = server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let by_url = settings(&[("database_url", &url)]);
    assert_eq!(by_url.database.sslmode, Some(SslMode::VerifyFull));
    let db = Db::open(&by_url.database).unwrap();
    db.migrate().await.expect("migrations run over TLS");
    assert!(uses_tls(&db).await, "the connection is encrypted");

    // The original's settings: host parts with PROCTOR_POSTGRES_SSLMODE/_SSLROOTCERT.
    let port = server.port.to_string();
    let by_parts = settings(&[
        ("postgres_host", "localhost"),
        ("postgres_port", &port),
        ("postgres_user", "postgres"),
        ("postgres_password", PASSWORD),
        ("postgres_database", "postgres"),
        ("postgres_sslmode", "verify-full"),
        ("postgres_sslrootcert", ca),
    ]);
    let db = Db::open(&by_parts.database).unwrap();
    db.check(Duration::from_secs(5)).await.unwrap();
    assert!(uses_tls(&db).await, "the connection is encrypted");

    // The URL plus the explicit settings, appended to it.
    let url_alone = server.url("localhost", "connect_timeout=5");
    let combined = settings(&[
        ("database_url", &url_alone),
        ("postgres_sslmode", "verify-full"),
        ("postgres_sslrootcert", ca),
    ]);
    let db = Db::open(&combined.database).unwrap();
    assert!(uses_tls(&db).await, "the connection is encrypted");

    // proctord itself, configured by its environment as an operator would: the original
    // settings, then libpq's `system` roots, which the OpenSSL built for libpq finds
    // through SSL_CERT_FILE only.
    let proctord = |env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proctord"));
        command.arg("migrate");
        for (key, _) in
            std::env::vars().filter(|(k, _)| k.starts_with("PROCTOR_") || k.starts_with("SSL_CERT"))
        {
            command.env_remove(key);
        }
        command
            .env("PROCTOR_SECRETS_KEY", TEST_SECRETS_KEY)
            .env("PROCTOR_LOG_LEVEL", "error")
            .envs(env.iter().copied())
            .output()
            .expect("proctord runs")
    };
    let parts = [
        ("PROCTOR_POSTGRES_HOST", "localhost"),
        ("PROCTOR_POSTGRES_PORT", port.as_str()),
        ("PROCTOR_POSTGRES_PASSWORD", PASSWORD),
        ("PROCTOR_POSTGRES_DATABASE", "postgres"),
        ("PROCTOR_POSTGRES_SSLMODE", "verify-full"),
    ];
    let with_ca = proctord(&[&parts[..], &[("PROCTOR_POSTGRES_SSLROOTCERT", ca)]].concat());
    assert!(
        with_ca.status.success(),
        "{}",
        String::from_utf8_lossy(&with_ca.stderr)
    );
    let system = [&parts[..], &[("PROCTOR_POSTGRES_SSLROOTCERT", "system")]].concat();
    let with_system_roots = proctord(&[&system[..], &[("SSL_CERT_FILE", ca)]].concat());
    assert!(
        with_system_roots.status.success(),
        "{}",
        String::from_utf8_lossy(&with_system_roots.stderr)
    );
    let without = proctord(&[&system[..], &[("SSL_CERT_FILE", other_ca)]].concat());
    let stderr = String::from_utf8_lossy(&without.stderr);
    eprintln!("proctord migrate, roots without the CA: {stderr}");
    assert!(!without.status.success());
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    // A whole proctord on it: ready, and its records stored over TLS.
    let app = spawn_app_with(
        Backend::Embedded,
        &[("database_url", &url), ("secrets_key", TEST_SECRETS_KEY)],
    )
    .await;
    let body = json_body(app.ready().await, 200).await;
    assert_eq!(body["checks"]["database"], "ok");
    json_body(
        app.register(&sample_proc("over-tls"), &app.admin).await,
        201,
    )
    .await;
    let listed = json_body(app.list_procs(&app.admin).await, 200).await;
    assert_eq!(listed[0]["name"], "over-tls");
    assert!(uses_tls(&app.stores.db).await);
}

#[actix_web::test]
async fn postgres_refuses_a_wrong_ca_a_wrong_host_name_and_plain_text_clearly() {
    let test = "postgres_refuses_a_wrong_ca_a_wrong_host_name_and_plain_text";
    let certificates = certificates();
    let server = match OwnPostgres::start(&certificates) {
        Ok(server) => server,
        Err(problem) => return skip(test, &problem),
    };
    let ca = certificates.ca.to_str().unwrap();
    let other_ca = certificates.other_ca.to_str().unwrap();
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "a CA that did not sign the server's certificate",
            server.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other_ca}"),
            ),
            &["SSL error: certificate verify failed"],
        ),
        (
            "verify-ca checks the CA too",
            server.url(
                "localhost",
                &format!("sslmode=verify-ca&sslrootcert={other_ca}"),
            ),
            &["SSL error: certificate verify failed"],
        ),
        (
            "a host name the certificate does not name (it names localhost only)",
            server.url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            &["server certificate for \"localhost\" does not match host name \"127.0.0.1\""],
        ),
        (
            "plain text against a server that accepts only TLS (hostssl)",
            server.url("localhost", "sslmode=disable"),
            &["no pg_hba.conf entry for host", "no encryption"],
        ),
    ];
    for (case, url, expected) in &cases {
        let error = postgres_refusal(url).await;
        eprintln!("{case}: {error}");
        assert!(
            error.contains("could not connect to PostgreSQL: "),
            "{case}: {error:?}"
        );
        for fragment in *expected {
            assert!(
                error.contains(fragment),
                "{case}: want {fragment:?} in {error:?}"
            );
        }
    }

    // verify-ca does not check the name: 127.0.0.1 passes with the right CA.
    let verify_ca = settings(&[(
        "database_url",
        &server.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
    )]);
    let db = Db::open(&verify_ca.database).unwrap();
    assert!(uses_tls(&db).await);

    // proctord itself stops at start-up with the reason, never the password.
    let (settings, ..) = crate::helpers::test_settings(
        Backend::Embedded,
        &[
            ("database_url", &cases[0].1),
            ("secrets_key", TEST_SECRETS_KEY),
        ],
    );
    let error = match Application::build(settings).await {
        Ok(_) => panic!("proctord must not start with a certificate it cannot verify"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("start-up: {error}");
    assert!(
        error.contains("cannot reach PostgreSQL") && error.contains("certificate verify failed"),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
}

/// A redis-server of the test's own that speaks only TLS, on a free port of
/// `localhost`; killed on drop.
struct OwnTlsRedis {
    child: Child,
    port: u16,
}

impl OwnTlsRedis {
    fn start(certificates: &Certificates) -> Result<Self, String> {
        let cert = certificates.dir.join("redis.crt");
        let key = certificates.dir.join("redis.key");
        std::fs::write(&cert, &certificates.server_cert).unwrap();
        write_key(&key, &certificates.server_key);
        let port = free_port();
        let log = certificates.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "-::1"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&certificates.ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--logfile"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        let mut redis = Self { child, port };
        for _ in 0..250 {
            if let Ok(Some(status)) = redis.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server exited ({status}): {log}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not listen within 5 s".into())
    }
}

impl Drop for OwnTlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proctor's Redis store for `address`, with `ca_file` when given.
fn redis_store(address: &str, ca_file: Option<&Path>) -> Redis {
    let ca = ca_file.map(|p| p.to_str().unwrap().to_owned());
    let mut pairs = vec![("redis_address", address)];
    if let Some(ca) = &ca {
        pairs.push(("redis_ca_file", ca));
    }
    let settings = settings(&pairs);
    Redis::open(settings.redis.as_ref().unwrap()).unwrap()
}

#[actix_web::test]
async fn rediss_with_the_servers_ca_stores_and_reads_and_serves_proctord() {
    let test = "rediss_with_the_servers_ca_stores_and_reads";
    let certificates = certificates();
    let server = match OwnTlsRedis::start(&certificates) {
        Ok(server) => server,
        Err(problem) => return skip(test, &problem),
    };
    let address = format!("rediss://localhost:{}/", server.port);
    let redis = redis_store(&address, Some(&certificates.ca));
    let key = redis.key("tls-test");
    redis
        .query::<()>(redis::cmd("SET").arg(&key).arg("over TLS"))
        .await
        .expect("SET over TLS");
    let value: String = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    assert_eq!(value, "over TLS");

    // A whole proctord keeping its procs there.
    let ca = certificates.ca.to_str().unwrap();
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("redis_address", &address),
            ("redis_ca_file", ca),
            ("secrets_key", TEST_SECRETS_KEY),
        ],
    )
    .await;
    let body = json_body(app.ready().await, 200).await;
    assert_eq!(body["checks"]["redis"], "ok");
    json_body(
        app.register(&sample_proc("over-tls"), &app.admin).await,
        201,
    )
    .await;
    let listed = json_body(app.list_procs(&app.admin).await, 200).await;
    assert_eq!(listed[0]["name"], "over-tls");
    let stored: Vec<String> = redis
        .scan_keys("*")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.contains("over-tls"))
        .collect();
    assert!(!stored.is_empty(), "the proc is in the TLS Redis");
}

#[actix_web::test]
async fn rediss_refuses_a_wrong_ca_a_wrong_host_name_and_plain_text_clearly() {
    let test = "rediss_refuses_a_wrong_ca_a_wrong_host_name_and_plain_text";
    let certificates = certificates();
    let server = match OwnTlsRedis::start(&certificates) {
        Ok(server) => server,
        Err(problem) => return skip(test, &problem),
    };
    let port = server.port;
    let cases = [
        (
            "a CA that did not sign the server's certificate",
            format!("rediss://localhost:{port}/"),
            Some(certificates.other_ca.as_path()),
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "the public web roots (the default) do not know the test CA",
            format!("rediss://localhost:{port}/"),
            None,
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "a host name the certificate does not name (it names localhost only)",
            format!("rediss://127.0.0.1:{port}/"),
            Some(certificates.ca.as_path()),
            "certificate not valid for name \"127.0.0.1\"",
        ),
    ];
    for (case, address, ca, expected) in cases {
        let error = redis_store(&address, ca)
            .check(Duration::from_secs(3))
            .await
            .expect_err(case)
            .to_string();
        eprintln!("{case}: {error}");
        assert!(
            error.starts_with("Redis is unavailable: ") && error.contains(expected),
            "{case}: want {expected:?} in {error:?}"
        );
    }

    // proctord starts (Redis connects on first use) and its readiness check says 503,
    // logging the reason.
    let other_ca = certificates.other_ca.to_str().unwrap();
    let address = format!("rediss://localhost:{port}/");
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("redis_address", &address),
            ("redis_ca_file", other_ca),
            ("secrets_key", TEST_SECRETS_KEY),
        ],
    )
    .await;
    let body = json_body(app.ready().await, 503).await;
    assert_eq!(body["error"], "redis unavailable");
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("readiness check failed")
                && line.contains("invalid peer certificate: UnknownIssuer")),
        "the reason is logged"
    );

    // Plain text to the TLS port: the server never answers in plain text.
    let error = redis_store(&format!("redis://localhost:{port}/"), None)
        .check(Duration::from_secs(3))
        .await
        .expect_err("plain text to a TLS port fails")
        .to_string();
    eprintln!("plain text: {error}");
    assert!(error.starts_with("Redis is unavailable"), "{error}");
}
