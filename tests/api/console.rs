//! The web console in a real browser: a proctord with authentication on (SQLite, the
//! local executor) and a few procs, driven by `tests/console` (Playwright for Python and
//! Debian's Chromium). Skipped, with the reason printed, where Chromium or Playwright is
//! missing; with CI=true that is a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, TestApp, json_body, register_script, spawn_app_with, temp_dir};

/// The whole browser suite's bound; it takes about a minute.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

fn chromium() -> String {
    std::env::var("PROCTOR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Why the browser tests cannot run here, if they cannot.
fn missing_browser_tools() -> Option<String> {
    let chromium = chromium();
    if !Path::new(&chromium).is_file() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium, or set PROCTOR_CHROMIUM)"
        ));
    }
    let imports = std::process::Command::new("python3")
        .args(["-c", "import playwright.sync_api, pytest"])
        .output();
    match imports {
        Err(e) => Some(format!("cannot run python3: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "Playwright for Python or pytest is missing (python3 -m pip install playwright pytest; \
             never `playwright install`): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
        Ok(_) => None,
    }
}

/// Registers the procs `tests/console/conftest.py` names in `PROCS`.
async fn register_console_procs(app: &TestApp) {
    let author = json!({"author": "admin@example.com"});
    register_script(
        app,
        "counter",
        "for i in $(seq 1 12); do echo line $i; sleep 0.25; done",
        &[],
        author.clone(),
    )
    .await;
    register_script(
        app,
        "sleeper",
        "echo sleeping; sleep 300",
        &[],
        author.clone(),
    )
    .await;
    register_script(
        app,
        "greeter",
        "echo Hello $NAME",
        &["NAME"],
        json!({
            "description": "Says hello to NAME",
            "author": "admin@example.com",
            "env_vars": {
                "args": [{"name": "NAME", "description": "who to greet"}],
                "secrets": [{"name": "GREETING_TOKEN", "description": "the greeting service's key"}]
            }
        }),
    )
    .await;
    let secrets = json!({"job_name": "greeter", "secrets": {"GREETING_TOKEN": "s3cret"}});
    json_body(app.set_secrets(&secrets, &app.admin).await, 201).await;
    register_script(
        app,
        "one-at-a-time",
        "echo going; sleep 300",
        &[],
        json!({"author": "admin@example.com", "max_concurrent_runs": 1}),
    )
    .await;
    register_script(
        app,
        "failer",
        "echo about to fail; exit 3",
        &[],
        author.clone(),
    )
    .await;
    register_script(
        app,
        "many-lines",
        "seq -f 'line %g' 1 2000",
        &[],
        author.clone(),
    )
    .await;
    register_script(
        app,
        "markup",
        r#"printf '%s\n' '<b>bold</b>' '<img src=x onerror="window.__injected=1">' 'a & b'"#,
        &[],
        json!({"description": "<i>not italic</i> <script>window.__injected=1</script>"}),
    )
    .await;
    register_script(
        app,
        "other-only",
        "echo other work",
        &[],
        json!({
            "author": "admin@example.com",
            "authorized_groups": ["other"],
            "env_vars": {
                "args": [],
                "secrets": [{"name": "OTHER_TOKEN", "description": "never set"}]
            }
        }),
    )
    .await;
}

#[actix_web::test]
async fn the_console_works_in_a_real_browser() {
    if let Some(why) = missing_browser_tools() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires the console's browser tests to run: {why}"
        );
        eprintln!("SKIPPING the console browser tests: {why}");
        return;
    }
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("executor", "local"),
            // The pod options a proc's page shows; the local executor ignores them.
            ("kube_allowed_service_accounts", "*"),
            ("kube_allowed_image_pull_secrets", "*"),
            ("kube_allowed_node_selectors", "*"),
            ("kube_allowed_tolerations", "*"),
            ("kube_allowed_labels", "*"),
        ],
    )
    .await;
    register_console_procs(&app).await;

    let screenshots = std::env::var_os("PROCTOR_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp_dir("console-screenshots"));
    std::fs::create_dir_all(&screenshots).unwrap();
    println!("console screenshots: {}", screenshots.display());

    let suite = tokio::process::Command::new("python3")
        .args(["-m", "pytest", "tests/console", "-q", "--tb=short"])
        .args(["-p", "no:cacheprovider"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PROCTOR_URL", &app.address)
        .env("PROCTOR_ADMIN_EMAIL", &app.admin.email)
        .env("PROCTOR_ADMIN_TOKEN", &app.admin.token)
        .env("PROCTOR_MEMBER_EMAIL", &app.member.email)
        .env("PROCTOR_MEMBER_TOKEN", &app.member.token)
        .env("PROCTOR_SCREENSHOTS", &screenshots)
        .env("PROCTOR_CHROMIUM", chromium())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_TIMEOUT, suite)
        .await
        .unwrap_or_else(|_| panic!("the browser tests took over {SUITE_TIMEOUT:?}"))
        .expect("python3 runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the console's browser tests failed ({}); screenshots in {}:\n{output}",
        out.status,
        screenshots.display()
    );
    println!("{output}");
}
