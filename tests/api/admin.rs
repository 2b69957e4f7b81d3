//! `proctord` itself: its admin commands and its start-up checks, run as a process.

use std::process::{Command, Output};

use reqwest::Method;

use crate::helpers::{
    Backend, TEST_SECRETS_KEY, backends, create_postgres_database, drop_postgres_database, temp_dir,
};

pub(crate) fn proctord(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_proctord"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PROCTOR_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().expect("proctord runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[actix_web::test]
async fn a_token_made_with_the_admin_commands_opens_the_api() {
    let data_dir = temp_dir("admin");
    let dir = data_dir.to_str().unwrap();
    let env = [("PROCTOR_DATA_DIR", dir), ("PROCTOR_LOG_LEVEL", "error")];

    let added = proctord(
        &[
            "user",
            "add",
            "Ops@Example.com",
            "--group",
            "ops",
            "--admin",
        ],
        &env,
    );
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(
        stdout(&added),
        "user ops@example.com saved as an admin (groups: ops)\n"
    );

    let created = proctord(&["token", "create", "ops@example.com"], &env);
    assert!(created.status.success(), "{}", stderr(&created));
    let token = stdout(&created).trim().to_owned();
    assert!(token.starts_with("pct_") && token.len() > 40, "{token}");
    assert!(stderr(&created).contains("shown only once"));

    let listed = proctord(&["user", "list"], &env);
    assert_eq!(stdout(&listed), "ops@example.com\tadmin\tops\n");

    let unknown = proctord(&["token", "create", "ghost@example.com"], &env);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no user ghost@example.com: add one first"),
        "{}",
        stderr(&unknown)
    );

    // The same data directory served with auth on: the printed token works.
    let (settings, ..) = crate::helpers::test_settings(Backend::Embedded, &[("data_dir", dir)]);
    let app = proctor::app::Application::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let client = crate::helpers::http_client();
    let response = client
        .request(Method::GET, format!("{address}/jobs/metadata"))
        .header("Email-Id", "ops@example.com")
        .header("Access-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let revoked = proctord(&["token", "revoke", "ops@example.com", "--all"], &env);
    assert_eq!(stdout(&revoked), "revoked 1 token(s) of ops@example.com\n");
    let response = client
        .request(Method::GET, format!("{address}/jobs/metadata"))
        .header("Email-Id", "ops@example.com")
        .header("Access-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[actix_web::test]
async fn named_expiring_tokens_are_listed_revoked_by_name_and_audited() {
    let data_dir = temp_dir("tokens");
    let dir = data_dir.to_str().unwrap();
    let env = [
        ("PROCTOR_DATA_DIR", dir),
        ("PROCTOR_LOG_LEVEL", "error"),
        ("USER", "operator"),
        ("SUDO_USER", ""),
    ];
    let env: Vec<(&str, &str)> = env.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    assert!(
        proctord(&["user", "add", "ci@example.com"], &env)
            .status
            .success()
    );
    assert!(
        proctord(&["user", "add", "ci@example.com", "--group", "ops"], &env)
            .status
            .success()
    );

    let created = proctord(
        &[
            "token",
            "create",
            "ci@example.com",
            "--name",
            "deploy-2027",
            "--expires-in",
            "90d",
        ],
        &env,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let token = stdout(&created).trim().to_owned();
    assert!(token.starts_with("pct_"));
    assert!(
        stderr(&created).contains("token \"deploy-2027\" for ci@example.com, valid until 20"),
        "{}",
        stderr(&created)
    );
    let second = proctord(
        &["token", "create", "ci@example.com", "--name", "laptop"],
        &env,
    );
    assert!(second.status.success());
    let again = proctord(
        &["token", "create", "ci@example.com", "--name", "laptop"],
        &env,
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already has a token named \"laptop\""),
        "{}",
        stderr(&again)
    );
    for (bad, expected) in [
        ("soon", "expected a duration such as 90d"),
        ("5s", "must be between a minute and ten years"),
    ] {
        let output = proctord(
            &["token", "create", "ci@example.com", "--expires-in", bad],
            &env,
        );
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&output).contains(expected),
            "{bad}: {}",
            stderr(&output)
        );
    }
    let listed = stdout(&proctord(&["token", "list", "ci@example.com"], &env));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("deploy-2027\tcreated 20"), "{listed}");
    assert!(
        lines[0].contains("\texpires 20") && lines[0].ends_with("\tlast used -"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with("laptop\t") && lines[1].contains("\texpires -"),
        "{listed}"
    );
    assert!(!listed.contains("pct_"), "never a token's text");

    let revoked = proctord(
        &["token", "revoke", "ci@example.com", "--name", "laptop"],
        &env,
    );
    assert_eq!(stdout(&revoked), "revoked 1 token(s) of ci@example.com\n");
    let missing = proctord(
        &["token", "revoke", "ci@example.com", "--name", "laptop"],
        &env,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("has no token named \"laptop\""));
    let neither = proctord(&["token", "revoke", "ci@example.com"], &env);
    assert_eq!(
        neither.status.code(),
        Some(2),
        "--name or --all is required"
    );

    // The changes are in the audit log, by cli:<unix user>, never with a token.
    let settings = proctor::config::Settings::from_overrides([("data_dir", dir)]).unwrap();
    let db = proctor::store::Db::ready(&settings.database).await.unwrap();
    let mut events = proctor::store::AuditStore::new(db)
        .list(proctor::store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    events.reverse();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.saved",
            "user.saved",
            "token.created",
            "token.created",
            "token.revoked"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.actor == "cli:operator" && e.address.is_none())
    );
    assert_eq!(events[1].details["groups"], serde_json::json!(["ops"]));
    assert_eq!(events[1].details["before"]["groups"], serde_json::json!([]));
    assert_eq!(events[2].details["name"], "deploy-2027");
    assert!(
        events[2].details["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    assert_eq!(events[4].details["name"], "laptop");
    for event in &events {
        assert!(!event.details.to_string().contains(&token));
    }
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let cases = [
        (
            "PROCTOR_APP_PORT",
            "eighty",
            "proctord: PROCTOR_APP_PORT: expected a port number (0-65535), got \"eighty\"\n",
        ),
        (
            "PROCTOR_JOB_POD_ANNOTATIONS",
            "nope",
            "proctord: PROCTOR_JOB_POD_ANNOTATIONS: expected a JSON object of strings",
        ),
        (
            "PROCTOR_SECRETS_KEY",
            "hunter2hunter2",
            "proctord: PROCTOR_SECRETS_KEY: expected",
        ),
    ];
    for (variable, value, expected) in cases {
        let output = proctord(&["serve"], &[(variable, value)]);
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let err = stderr(&output);
        assert!(err.starts_with(expected), "{variable}: {err:?}");
        assert_eq!(err.lines().count(), 1, "{variable}: one line: {err:?}");
        if variable == "PROCTOR_SECRETS_KEY" {
            assert!(!err.contains(value), "the key is never printed");
        }
    }
}

#[test]
fn keygen_prints_a_usable_secrets_key() {
    let output = proctord(&["keygen"], &[]);
    assert!(output.status.success());
    let key = stdout(&output);
    assert!(
        proctor::config::parse_secrets_key(key.trim()).is_ok(),
        "{key}"
    );
}

#[test]
fn postgres_must_be_migrated_before_serving_and_migrate_is_idempotent() {
    if !backends().contains(&Backend::Production) {
        return;
    }
    let (name, url) = create_postgres_database();
    let data_dir = temp_dir("migrate");
    let env = [
        ("PROCTOR_DATABASE_URL", url.as_str()),
        ("PROCTOR_SECRETS_KEY", TEST_SECRETS_KEY),
        ("PROCTOR_DATA_DIR", data_dir.to_str().unwrap()),
        ("PROCTOR_APP_PORT", "0"),
        ("PROCTOR_LOG_LEVEL", "error"),
    ];
    let refused = proctord(&["serve"], &env);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("pending migration(s): run `proctord migrate` first"),
        "{}",
        stderr(&refused)
    );
    // Migrations need only the database settings: no secrets key, and a setting for
    // something else that is wrong does not stop them.
    let database_only = [
        ("PROCTOR_DATABASE_URL", url.as_str()),
        ("PROCTOR_DATA_DIR", data_dir.to_str().unwrap()),
        ("PROCTOR_APP_PORT", "not a port"),
    ];
    let first = proctord(&["migrate"], &database_only);
    assert!(first.status.success(), "{}", stderr(&first));
    // Every migration the crate carries is applied, each named by its version.
    let carried = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert!(
        stdout(&first).starts_with(&format!("applied {carried} migration(s): ")),
        "{}",
        stdout(&first)
    );
    let second = proctord(&["migrate"], &env);
    assert_eq!(stdout(&second), "the database is up to date\n");
    let user = proctord(&["user", "add", "a@b.co"], &env);
    assert!(user.status.success(), "{}", stderr(&user));
    drop_postgres_database(&name);
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[test]
fn an_unreachable_postgres_stops_start_up_with_a_clear_message() {
    let data_dir = temp_dir("unreachable");
    let env = [
        (
            "PROCTOR_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/nothing",
        ),
        ("PROCTOR_SECRETS_KEY", TEST_SECRETS_KEY),
        ("PROCTOR_DATA_DIR", data_dir.to_str().unwrap()),
        ("PROCTOR_LOG_LEVEL", "error"),
    ];
    let output = proctord(&["serve"], &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot reach PostgreSQL to check its schema"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_dir_all(data_dir).unwrap();
}

/// Connections to `database` other than this one's.
fn connections_to(database: &str) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut admin = diesel::PgConnection::establish(&crate::helpers::postgres_url()).unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(database)
        .get_result::<Count>(&mut admin)
        .unwrap()
        .n
}

/// An app whose System has ended lets go of its database, though the process goes on
/// (a process that starts many, like this one): no actor thread of it is left holding
/// the pool or syncing schedules against a database that may be gone.
#[test]
fn an_app_whose_system_ended_holds_no_connection_to_its_database() {
    if !backends().contains(&Backend::Production) {
        return;
    }
    let (settings, data_dir, database, prefix) =
        crate::helpers::test_settings(Backend::Production, &[]);
    let database = database.unwrap();
    let held = {
        let database = database.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                proctor::store::Db::open(&settings.database)
                    .unwrap()
                    .migrate()
                    .await
                    .expect("migrate the test database");
                let app = proctor::app::Application::build(settings)
                    .await
                    .expect("the app starts");
                let url = format!("http://127.0.0.1:{}/ping", app.port());
                actix_web::rt::spawn(app.run_until_stopped());
                let ping = reqwest::get(&url).await.unwrap();
                assert_eq!(ping.status().as_u16(), 200);
                // The Ticker's first load, after ready, takes a connection of the pool.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                connections_to(&database)
            })
        })
        .join()
        .unwrap()
    };
    assert!(held > 0, "the running app used its database");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = connections_to(&database);
    while left > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = connections_to(&database);
    }
    assert_eq!(
        left, 0,
        "connections left 10 s after the app's System ended"
    );
    drop_postgres_database(&database);
    if let Some(prefix) = prefix {
        crate::helpers::clear_redis_prefix(&prefix);
    }
    let _ = std::fs::remove_dir_all(data_dir);
}
