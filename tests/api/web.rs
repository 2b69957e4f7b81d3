//! The web console over HTTP: its pages and files, the session cookie that signs a
//! browser in, and the refusal of cross-site requests. (What it does in a browser is in
//! `console.rs`.)

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{self, HeaderMap};
use serde_json::json;

use crate::helpers::{
    Backend, Caller, TestApp, backends, error_message, json_body, numbered, register_script,
    spawn_app, spawn_app_with,
};

/// The session cookie's `name=value`, from a sign-in's answer.
fn session_cookie(headers: &HeaderMap) -> String {
    let set = headers
        .get(header::SET_COOKIE)
        .expect("a sign-in sets a cookie")
        .to_str()
        .unwrap();
    session_cookie_from(set)
}

/// `POST /api/v1/session` with an e-mail and token, as the sign-in page sends it.
pub(crate) async fn sign_in_request(app: &TestApp, email: &str, token: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/session", None)
        .header(header::ORIGIN, &app.address)
        .json(&json!({"email": email, "token": token}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn sign_in(app: &TestApp, who: &Caller) -> String {
    let response = sign_in_request(app, &who.email, &who.token).await;
    let cookie = session_cookie(response.headers());
    let body = json_body(response, 200).await;
    assert_eq!(body["email"], who.email.as_str());
    cookie
}

/// A request carrying only the console's cookie (and the page's own Origin).
pub(crate) fn as_browser(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
) -> reqwest::RequestBuilder {
    app.request(method, path, None)
        .header(header::COOKIE, cookie)
        .header(header::ORIGIN, &app.address)
}

#[actix_web::test]
async fn every_console_page_is_the_app_with_a_strict_content_security_policy() {
    let app = spawn_app(Backend::Embedded).await;
    let mut script = None;
    for path in [
        "/",
        "/sign-in",
        "/procs",
        "/procs/say-hello",
        "/runs",
        "/runs/say-hello-1",
        "/schedules",
        "/schedules/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    ] {
        let response = app.request(Method::GET, path, None).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let page = response.text().await.unwrap();
        assert!(page.contains("<main id=\"main\""), "{path}");
        assert!(!page.contains("<script>"), "no inline script on {path}");
        let src = page
            .split("<script type=\"module\" src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page loads its script")
            .to_owned();
        assert!(
            src.starts_with("/assets/app.") && src.ends_with(".js"),
            "{src}"
        );
        script = Some(src);
    }

    // The script: under its content's hash, cached for a year, compressed on request.
    let script = script.unwrap();
    let response = app
        .request(Method::GET, &script, None)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = response.headers()[header::ETAG].clone();
    let again = app
        .request(Method::GET, &script, None)
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // An older release's file is a JSON 404, and so is a path the console does not have.
    let stale = app
        .request(Method::GET, "/assets/app.000000000000.js", None)
        .send()
        .await
        .unwrap();
    assert!(error_message(stale, 404).await.contains("reload the page"));
    let nowhere = app
        .request(Method::GET, "/procs/a/b", None)
        .send()
        .await
        .unwrap();
    error_message(nowhere, 404).await;
    // A browser asking for a page that does not exist gets the console, which says so.
    let browsing = app
        .request(Method::GET, "/nope", None)
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(browsing.status(), 404);
    assert!(browsing.text().await.unwrap().contains("<main id=\"main\""));
    let api = app
        .request(Method::GET, "/api/v1/nope", None)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    error_message(api, 404).await;
    let post = app
        .request(Method::POST, "/runs", None)
        .send()
        .await
        .unwrap();
    error_message(post, 405).await;
}

#[actix_web::test]
async fn a_console_session_signs_a_browser_in_until_it_signs_out() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        // A wrong token gets a clear 401 and no cookie.
        let refused = app
            .request(Method::POST, "/api/v1/session", None)
            .json(&json!({"email": app.member.email, "token": "pct_wrong"}))
            .send()
            .await
            .unwrap();
        assert!(refused.headers().get(header::SET_COOKIE).is_none());
        let message = error_message(refused, 401).await;
        assert!(
            message.contains("not valid for member@example.com"),
            "{message}"
        );
        let malformed = app
            .request(Method::POST, "/api/v1/session", None)
            .json(&json!({"email": "not an email", "token": "x"}))
            .send()
            .await
            .unwrap();
        error_message(malformed, 400).await;

        let response = app
            .request(Method::POST, "/api/v1/session", None)
            .json(&json!({"email": app.member.email, "token": app.member.token}))
            .send()
            .await
            .unwrap();
        let set = response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(set.starts_with("proctor_session="), "{set}");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
            assert!(set.contains(attribute), "{attribute} in {set}");
        }
        assert!(
            !set.contains(&app.member.token),
            "the token is not the cookie"
        );
        let body = json_body(response, 200).await;
        assert_eq!(body["groups"], json!(["ops"]));
        assert_eq!(body["is_admin"], false);
        let cookie = session_cookie_from(&set);

        // The cookie stands for the user: same visibility as the API gives them.
        crate::helpers::register_script(
            &app,
            "ops-only",
            "echo ops",
            &[],
            json!({"authorized_groups": ["ops"]}),
        )
        .await;
        crate::helpers::register_script(
            &app,
            "dev-only",
            "echo dev",
            &[],
            json!({"authorized_groups": ["dev"]}),
        )
        .await;
        let procs = json_body(
            as_browser(&app, Method::GET, "/jobs/metadata", &cookie)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let names: Vec<&str> = procs
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ops-only"], "{procs}");
        let hidden = as_browser(&app, Method::GET, "/jobs/metadata/dev-only", &cookie)
            .send()
            .await
            .unwrap();
        error_message(hidden, 403).await;
        let who = json_body(
            as_browser(&app, Method::GET, "/api/v1/session", &cookie)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(who["email"], "member@example.com");
        assert_eq!(who["auth"], "on");
        assert_eq!(who["signed_in"], true);
        let nobody = json_body(
            app.request(Method::GET, "/api/v1/session", None)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(nobody["signed_in"], false);

        // A write from the console's own page works; the log websocket accepts the cookie.
        let created = json_body(
            as_browser(&app, Method::POST, "/jobs/execute", &cookie)
                .json(&json!({"name": "ops-only"}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let name = created["name"].as_str().unwrap().to_owned();
        let transcript = browser_socket(&app, &name, &cookie, 0)
            .await
            .expect("the websocket opens with the cookie")
            .read_to_end(Duration::from_secs(20))
            .await;
        assert_eq!(transcript.lines, ["ops"]);
        assert_eq!(transcript.close_reason, "SUCCEEDED");
        let run = app.execution(&name).await;
        assert_eq!(run["user_email"], "member@example.com");

        // Signing out ends the session on the server: the old cookie no longer works.
        let out = as_browser(&app, Method::DELETE, "/api/v1/session", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), 204);
        let cleared = out.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        let after = as_browser(&app, Method::GET, "/jobs/metadata", &cookie)
            .send()
            .await
            .unwrap();
        assert!(error_message(after, 401).await.contains("sign in again"));

        // Revoking the user's tokens ends their sessions too.
        let cookie = sign_in(&app, &app.member).await;
        let email = proctor::model::Email::parse(&app.member.email).unwrap();
        app.stores.users.revoke_tokens(&email, None).await.unwrap();
        let revoked = as_browser(&app, Method::GET, "/jobs/metadata", &cookie)
            .send()
            .await
            .unwrap();
        error_message(revoked, 401).await;
    }
}

fn session_cookie_from(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Opens the log websocket as a browser on the console's page would.
async fn browser_socket(
    app: &TestApp,
    name: &str,
    cookie: &str,
    after: i64,
) -> Result<crate::helpers::LogSocket, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let url = format!(
        "{}/jobs/logs?job_name={name}&after={after}",
        app.address.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("Origin", app.address.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| crate::helpers::LogSocket(socket))
        .map_err(|e| e.to_string())
}

#[actix_web::test]
async fn requests_from_another_site_are_refused() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "echo", "echo hi", &[], json!({})).await;
    let cookie = sign_in(&app, &app.admin).await;

    // Another site's page posting with the user's cookie (CSRF).
    let forged = app
        .request(Method::POST, "/jobs/execute", None)
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "https://evil.example")
        .json(&json!({"name": "echo"}))
        .send()
        .await
        .unwrap();
    let message = error_message(forged, 403).await;
    assert!(message.contains("cross-site request refused"), "{message}");
    // A cookie-only write without an Origin is refused as well.
    let bare = app
        .request(Method::POST, "/jobs/execute", None)
        .header(header::COOKIE, &cookie)
        .json(&json!({"name": "echo"}))
        .send()
        .await
        .unwrap();
    error_message(bare, 403).await;
    // Another site opening the log websocket with the cookie (websocket hijacking).
    let run = app.run("echo", json!({})).await;
    let mut request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        format!(
            "{}/jobs/logs?job_name={run}",
            app.address.replacen("http", "ws", 1)
        )
        .into_client_request()
        .unwrap()
    };
    request
        .headers_mut()
        .insert("Cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    // Nothing was run by the refused requests.
    let runs = json_body(
        app.request(Method::GET, "/api/v1/executions", Some(&app.admin))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(runs["executions"].as_array().unwrap().len(), 1);
    // Scripts and the CLI (headers, no Origin) are not affected; reads never are.
    let read = as_browser(&app, Method::GET, "/jobs/metadata", &cookie)
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // With authentication off every caller is an admin, so another site's form post is
    // refused all the more.
    let open = spawn_app_with(Backend::Embedded, &[("auth", "off")]).await;
    let forged = open
        .request(Method::POST, "/jobs/metadata", None)
        .header(header::ORIGIN, "http://attacker.localhost:8000")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(r#"{"name":"x","image_name":"y"}"#)
        .send()
        .await
        .unwrap();
    error_message(forged, 403).await;
    let who = json_body(
        open.request(Method::GET, "/api/v1/session", None)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(who["auth"], "off");
    assert_eq!(who["is_admin"], true);
    let nothing_to_sign_in = open
        .request(Method::POST, "/api/v1/session", None)
        .json(&json!({"email": "a@b.c", "token": "pct_x"}))
        .send()
        .await
        .unwrap();
    // Well-formed; the server's state (authentication off) is what refuses it.
    let message = error_message(nothing_to_sign_in, 409).await;
    assert!(message.contains("nothing to sign in to"), "{message}");
}

#[actix_web::test]
async fn the_log_viewer_reads_pages_and_follows_after_the_lines_it_has() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        register_script(
            &app,
            "count",
            "i=1; while [ $i -le 2500 ]; do echo line $i; i=$((i+1)); done",
            &[],
            json!({}),
        )
        .await;
        let name = app.run("count", json!({})).await;
        app.wait_until_final(&name, Duration::from_secs(30)).await;

        // A page, with how many lines are stored in all.
        let page = app
            .request(
                Method::GET,
                &format!("/api/v1/executions/{name}/logs?since_seq=1000&limit=1000"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["Proctor-Stored-Lines"], "2500");
        assert_eq!(page.headers()["Proctor-Last-Seq"], "2000");
        let text = page.text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"line 1001"));
        assert_eq!(lines.len(), 1000);

        // The whole log as a file, in one response (more than a page of the store).
        let file = app
            .request(
                Method::GET,
                &format!("/api/v1/executions/{name}/logs?download=true"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), 200);
        let disposition = file.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(disposition, format!("attachment; filename=\"{name}.log\""));
        let all: Vec<String> = file
            .text()
            .await
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(all, numbered(2500));

        // The websocket from line 2,400 on: exactly the rest.
        let cookie = sign_in(&app, &app.admin).await;
        let transcript = browser_socket(&app, &name, &cookie, 2400)
            .await
            .unwrap()
            .read_to_end(Duration::from_secs(20))
            .await;
        assert_eq!(transcript.lines, numbered(2500)[2400..].to_vec());
        assert_eq!(transcript.close_reason, "SUCCEEDED");

        let negative = app
            .request(
                Method::GET,
                &format!("/jobs/logs?job_name={name}&after=-1"),
                Some(&app.admin),
            )
            .send()
            .await
            .unwrap();
        error_message(negative, 400).await;
    }
}
