//! The `proctor` binary against a spawned proctord: each command's output and exit
//! code, a log streamed before its run ends, detach, cancel and Ctrl-C, JSON output
//! parsed back, the configuration file, and the messages for an unreachable server,
//! a silent one and bad credentials.
//!
//! The binary runs as a child process through `tokio::process`, so the proctord
//! serving it on this test's runtime keeps running while the test waits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::{
    Backend, Caller, TestApp, json_body, register_script, sample_proc, spawn_app, spawn_app_with,
    temp_dir,
};

/// The longest any one `proctor` run may take in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// Variables of the developer's own shell that must not reach the binary.
const CLIENT_VARIABLES: &[&str] = &[
    "PROCTOR_HOST",
    "PROCTOR_URL",
    "EMAIL_ID",
    "ACCESS_TOKEN",
    "CONNECTION_TIMEOUT_SECS",
    "PROCTOR_CONFIG_HOME",
    "LOCAL_CONFIG_DIR",
];

/// A `proctor` with its own config folder and only the environment a test gives it.
struct Proctor {
    home: PathBuf,
    env: Vec<(String, String)>,
    /// Whether dropping it removes `home` (not for a copy sharing it).
    owns_home: bool,
}

/// How one run of the binary ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Proctor {
    /// No configuration at all: an empty config folder and no variables.
    fn unconfigured() -> Self {
        Self {
            home: temp_dir("cli-home"),
            env: Vec::new(),
            owns_home: true,
        }
    }

    /// The same config folder, without this one's variables.
    fn sharing_home(&self) -> Self {
        Self {
            home: self.home.clone(),
            env: Vec::new(),
            owns_home: false,
        }
    }

    /// Pointed at `app` as `who` through environment variables.
    fn for_app(app: &TestApp, who: &Caller) -> Self {
        Self::unconfigured()
            .with("PROCTOR_URL", &app.address)
            .with("EMAIL_ID", &who.email)
            .with("ACCESS_TOKEN", &who.token)
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn config_file(&self) -> PathBuf {
        self.home.join("proctor.yaml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proctor"));
        command.args(args);
        for name in CLIENT_VARIABLES {
            command.env_remove(name);
        }
        command
            .env("PROCTOR_CONFIG_HOME", &self.home)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `proctor args...` to its end.
    async fn run(&self, args: &[&str]) -> Run {
        let output = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("proctor {args:?} did not finish within {WAIT:?}"))
            .expect("the proctor binary runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `proctor args...` with stdout and stderr piped.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the proctor binary starts")
    }
}

impl Drop for Proctor {
    fn drop(&mut self) {
        if self.owns_home {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

impl Run {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    #[track_caller]
    fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}\n--- stdout\n{}",
            self.stderr,
            self.stdout
        );
        self
    }
}

/// Reads `child`'s stdout until a line equal to `wanted`; returns the lines read.
async fn read_until(stdout: &mut BufReader<ChildStdout>, wanted: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let read = async {
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).await.unwrap();
            assert!(n > 0, "stdout ended before {wanted:?}; got {lines:?}");
            let line = line.trim_end().to_owned();
            let done = line == wanted;
            lines.push(line);
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {wanted:?} on stdout within {WAIT:?}"));
    lines
}

/// Waits for `child` to exit; returns its code, the rest of its stdout, and its stderr.
async fn finish(mut child: Child, mut stdout: BufReader<ChildStdout>) -> Run {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut rest = String::new();
    let mut errors = String::new();
    let read = async {
        tokio::try_join!(
            stdout.read_to_string(&mut rest),
            stderr.read_to_string(&mut errors)
        )
        .unwrap();
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(WAIT, read)
        .await
        .expect("proctor exits in time");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: rest,
        stderr: errors,
    }
}

fn take_stdout(child: &mut Child) -> BufReader<ChildStdout> {
    BufReader::new(child.stdout.take().expect("stdout is piped"))
}

/// A script that prints `first`, waits for a file `go` in its working folder (at most
/// 30 s), then prints `second`.
const GATED: &str = "echo first; i=0; while [ ! -f \"$HOME/go\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo second";

/// Lets a GATED run go on.
fn open_gate(app: &TestApp, execution: &str) {
    std::fs::write(app.data_dir.join("runs").join(execution).join("go"), "").unwrap();
}

/// The newest execution of `proc`.
async fn newest_execution(app: &TestApp, proc: &str) -> Value {
    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/executions?proc={proc}&limit=1"),
            Some(&app.admin),
        )
        .send()
        .await
        .unwrap();
    let page = json_body(response, 200).await;
    page["executions"][0].clone()
}

#[actix_web::test]
async fn list_and_describe_show_the_procs_and_everything_about_one() {
    let app = spawn_app(Backend::Embedded).await;
    json_body(app.register(&sample_proc("greeter"), &app.admin).await, 201).await;
    let mut ops_only = sample_proc("ops-report");
    ops_only["description"] = json!("Reports to ops");
    ops_only["authorized_groups"] = json!(["ops"]);
    json_body(app.register(&ops_only, &app.admin).await, 201).await;
    let proctor = Proctor::for_app(&app, &app.member);

    let list = proctor.run(&["list"]).await;
    list.expect(0)
        .stdout_has("NAME")
        .stdout_has("DESCRIPTION")
        .stdout_has("greeter")
        .stdout_has("Says hello to NAME")
        .stdout_has("Reports to ops");

    let describe = proctor.run(&["describe", "greeter"]).await;
    for needle in [
        "Says hello to NAME",
        "proctor/say-hello-world:latest",
        "NAME",
        "who to greet",
        "SLACK_TOKEN",
        "where to post",
        "(every user)",
        "admin@example.com",
        "member@example.com",
        "Organization:",
        "proctor execute greeter NAME=...",
    ] {
        describe.expect(0).stdout_has(needle);
    }
    proctor
        .run(&["describe", "ops-report"])
        .await
        .expect(0)
        .stdout_has("Authorized groups:")
        .stdout_has("ops");

    let procs = proctor
        .run(&["list", "--output", "json"])
        .await
        .expect(0)
        .json();
    let names: Vec<&str> = procs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greeter", "ops-report"], "sorted by name");
    let one = proctor
        .run(&["describe", "greeter", "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(one["env_vars"]["secrets"][0]["name"], "SLACK_TOKEN");

    // Not found, forbidden: exit 2, the server's words, and a hint.
    proctor
        .run(&["describe", "nope"])
        .await
        .expect(2)
        .stderr_has("no proc named nope")
        .stderr_has("hint: `proctor list`");
    Proctor::for_app(&app, &app.outsider)
        .run(&["describe", "ops-report"])
        .await
        .expect(2)
        .stderr_has("Access Denied : You are Not Authorized to Perform this action.")
        .stderr_has("hint:");
}

#[actix_web::test]
async fn execute_streams_the_log_before_the_run_ends_then_exits_0() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "gated", GATED, &["WHO"], json!({})).await;
    let proctor = Proctor::for_app(&app, &app.member);

    let mut child = proctor.spawn(&["execute", "gated", "WHO=ada"]);
    let mut stdout = take_stdout(&mut child);
    assert_eq!(read_until(&mut stdout, "first").await, ["first"]);
    // The first line arrived while the run still waits for its gate.
    let execution = newest_execution(&app, "gated").await;
    assert_eq!(execution["status"], "RUNNING", "{execution}");
    assert_eq!(execution["user_email"], "member@example.com");
    assert_eq!(execution["args"]["WHO"], "ada");
    let name = execution["name"].as_str().unwrap().to_owned();
    open_gate(&app, &name);

    let run = finish(child, stdout).await;
    run.expect(0)
        .stdout_has("second")
        .stderr_has(&format!("Executing gated with WHO=ada as {name}"))
        .stderr_has(&format!("{name} SUCCEEDED"));
    assert!(
        !run.stdout.contains("SUCCEEDED"),
        "stdout holds the log only: {}",
        run.stdout
    );
}

#[actix_web::test]
async fn execute_exits_with_a_distinct_code_for_each_way_a_run_ends() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "fails", "echo oops; exit 3", &[], json!({})).await;
    register_script(
        &app,
        "too-slow",
        "echo start; sleep 20",
        &[],
        json!({"active_deadline_seconds": 1}),
    )
    .await;
    register_script(
        &app,
        "needs-secret",
        "echo hi",
        &[],
        json!({"env_vars": {"args": [], "secrets": [{"name": "TOKEN"}]}}),
    )
    .await;
    register_script(&app, "greets", "echo Hello $NAME", &["NAME"], json!({})).await;
    let proctor = Proctor::for_app(&app, &app.admin);

    let cases: &[(&[&str], i32, &str, &str)] = &[
        (
            &["execute", "greets", "NAME=Ada"],
            0,
            "SUCCEEDED",
            "a run that succeeds: 0",
        ),
        (&["execute", "fails"], 1, "FAILED", "a run that fails: 1"),
        (
            &["execute", "too-slow"],
            3,
            "TIMED_OUT",
            "a run past its deadline: 3",
        ),
        (
            &["execute", "needs-secret"],
            5,
            "REQUIREMENT_NOT_MET",
            "a run that cannot start: 5",
        ),
        (
            &["execute", "nope"],
            2,
            "no proc named nope",
            "an unknown proc: 2",
        ),
        (
            &["execute", "greets"],
            2,
            "missing args: NAME",
            "a missing arg: 2",
        ),
        (
            &["execute", "greets", "NAME"],
            2,
            "Incorrect variable format: NAME",
            "a malformed arg: 2",
        ),
        (&["execute"], 2, "Usage:", "no proc at all: 2"),
    ];
    for (args, code, needle, what) in cases {
        let run = proctor.run(args).await;
        assert_eq!(run.code, *code, "{what}: {run:?}");
        assert!(
            run.stderr.contains(needle),
            "{what}: stderr lacks {needle:?}: {run:?}"
        );
    }
    proctor
        .run(&["execute", "fails"])
        .await
        .expect(1)
        .stdout_has("oops")
        .stderr_has("(exit code 3)");

    // Args from a file, the command line winning; JSON mode prints the final record.
    let args_file = proctor.home.join("args.yaml");
    std::fs::write(&args_file, "NAME: FromFile\n").unwrap();
    let run = proctor
        .run(&[
            "execute",
            "greets",
            "-f",
            args_file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await;
    run.expect(0).stderr_has("Hello FromFile");
    let record = run.json();
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(record["args"]["NAME"], "FromFile");
    let run = proctor
        .run(&[
            "execute",
            "greets",
            "-f",
            args_file.to_str().unwrap(),
            "NAME=Flag",
        ])
        .await;
    run.expect(0).stdout_has("Hello Flag");
}

#[actix_web::test]
async fn detach_prints_the_name_and_logs_follow_reattaches() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "gated", GATED, &[], json!({})).await;
    let proctor = Proctor::for_app(&app, &app.admin);

    let started = std::time::Instant::now();
    let run = proctor.run(&["execute", "gated", "--detach"]).await;
    run.expect(0);
    let name = run.stdout.trim().to_owned();
    assert!(
        name.starts_with("gated-") && !name.contains('\n'),
        "stdout is exactly the execution's name: {:?}",
        run.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "returns at once"
    );
    let json = proctor
        .run(&["execute", "gated", "-d", "-o", "json"])
        .await
        .expect(0)
        .json();
    let other = json["name"].as_str().unwrap().to_owned();
    assert!(other.starts_with("gated-"), "{json}");
    app.wait_for_status(&name, "RUNNING", WAIT).await;

    let status = proctor.run(&["status", &name]).await;
    status
        .expect(0)
        .stdout_has(&name)
        .stdout_has("RUNNING")
        .stdout_has("Proc:");

    let mut follow = proctor.spawn(&["logs", &name, "--follow"]);
    let mut stdout = take_stdout(&mut follow);
    read_until(&mut stdout, "first").await;
    open_gate(&app, &name);
    finish(follow, stdout)
        .await
        .expect(0)
        .stdout_has("second")
        .stderr_has(&format!("{name} SUCCEEDED"));

    proctor
        .run(&["logs", &name])
        .await
        .expect(0)
        .stdout_has("first\nsecond\n");
    let record = proctor
        .run(&["status", &name, "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(record["exit_code"], 0);

    open_gate(&app, &other);
    app.wait_until_final(&other, WAIT).await;
    proctor
        .run(&["logs", "gated-doesnotexist0"])
        .await
        .expect(2)
        .stderr_has("no execution named gated-doesnotexist0")
        .stderr_has("hint: `proctor executions`");
}

#[actix_web::test]
async fn cancel_ends_a_run_and_the_attached_execute_exits_4() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "sleepy", "echo started; sleep 60", &[], json!({})).await;
    register_script(&app, "quick", "echo done", &[], json!({})).await;
    let proctor = Proctor::for_app(&app, &app.admin);

    let mut attached = proctor.spawn(&["execute", "sleepy"]);
    let mut stdout = take_stdout(&mut attached);
    read_until(&mut stdout, "started").await;
    let name = newest_execution(&app, "sleepy").await["name"]
        .as_str()
        .unwrap()
        .to_owned();

    proctor
        .run(&["cancel", &name])
        .await
        .expect(0)
        .stdout_has(&format!("{name} CANCELLED"));
    finish(attached, stdout)
        .await
        .expect(4)
        .stderr_has(&format!("{name} CANCELLED"));
    let again = proctor
        .run(&["cancel", &name, "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(again["status"], "CANCELLED", "a repeat is a no-op");

    let done = app.run("quick", json!({})).await;
    app.wait_until_final(&done, WAIT).await;
    proctor
        .run(&["cancel", &done])
        .await
        .expect(2)
        .stderr_has("already ended SUCCEEDED");
}

#[actix_web::test]
async fn ctrl_c_without_a_terminal_detaches_and_says_how_to_reattach() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "sleepy", "echo started; sleep 60", &[], json!({})).await;
    let proctor = Proctor::for_app(&app, &app.admin);

    let mut child = proctor.spawn(&["execute", "sleepy"]);
    let mut stdout = take_stdout(&mut child);
    read_until(&mut stdout, "started").await;
    let pid = child.id().expect("still running") as i32;
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let run = finish(child, stdout).await;
    let name = newest_execution(&app, "sleepy").await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    run.expect(130)
        .stderr_has(&format!("Detached from {name}"))
        .stderr_has(&format!("proctor logs {name} --follow"))
        .stderr_has(&format!("proctor cancel {name}"));
    assert_eq!(
        app.execution(&name).await["status"],
        "RUNNING",
        "the run goes on"
    );
    json_body(app.cancel(&name, &app.admin).await, 200).await;
}

#[actix_web::test]
async fn executions_lists_the_history_as_a_table_and_as_json() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "ok", "echo fine", &[], json!({})).await;
    register_script(&app, "bad", "exit 1", &[], json!({})).await;
    let mut names = Vec::new();
    for proc in ["ok", "ok", "bad"] {
        let name = app.run(proc, json!({})).await;
        app.wait_until_final(&name, WAIT).await;
        names.push(name);
    }
    let proctor = Proctor::for_app(&app, &app.admin);

    let table = proctor.run(&["executions"]).await;
    table
        .expect(0)
        .stdout_has("NAME")
        .stdout_has("STATUS")
        .stdout_has("DURATION");
    for name in &names {
        table.stdout_has(name);
    }
    table.stdout_has("SUCCEEDED").stdout_has("FAILED");

    let ok = proctor
        .run(&["executions", "--proc", "ok", "-o", "json"])
        .await
        .expect(0)
        .json();
    let ok: Vec<&str> = ok
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(ok, [names[1].as_str(), names[0].as_str()], "newest first");

    let failed = proctor
        .run(&["executions", "--status", "failed", "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["name"], names[2].as_str());

    let page = proctor.run(&["executions", "--limit", "1"]).await;
    page.expect(0)
        .stdout_has(&names[2])
        .stderr_has("--offset 1");
    proctor
        .run(&["executions", "--status", "SIDEWAYS"])
        .await
        .expect(2);
    proctor.run(&["executions", "--limit", "0"]).await.expect(2);
}

#[actix_web::test]
async fn audit_shows_who_changed_what_to_admins_only() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "audited", "echo hi", &[], json!({})).await;
    register_script(&app, "other", "echo hi", &[], json!({})).await;
    let admin = Proctor::for_app(&app, &app.admin);

    admin
        .run(&["audit"])
        .await
        .expect(0)
        .stdout_has("ACTION")
        .stdout_has("proc.registered")
        .stdout_has("admin@example.com")
        .stdout_has("127.0.0.1");
    let events = admin
        .run(&["audit", "--object", "audited", "-o", "json"])
        .await
        .expect(0)
        .json();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["action"], "proc.registered");
    assert_eq!(events[0]["object"], "audited");
    admin
        .run(&["audit", "--limit", "1"])
        .await
        .expect(0)
        .stdout_has("other")
        .stderr_has("proctor audit --before ");
    admin
        .run(&["audit", "--kind", "schedule"])
        .await
        .expect(0)
        .stdout_has("No changes found");
    admin.run(&["audit", "--kind", "planet"]).await.expect(2);
    admin
        .run(&["audit", "--since", "last tuesday"])
        .await
        .expect(2)
        .stderr_has("since must be an RFC 3339 time");
    Proctor::for_app(&app, &app.member)
        .run(&["audit"])
        .await
        .expect(2)
        .stderr_has("only admins may read the audit log");
}

#[actix_web::test]
async fn schedules_are_created_listed_described_paused_and_removed() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(&app, "nightly", "echo night", &["TARGET"], json!({})).await;
    let proctor = Proctor::for_app(&app, &app.admin);

    proctor
        .run(&["schedule", "list"])
        .await
        .expect(0)
        .stdout_has("No scheduled jobs found");
    assert_eq!(
        proctor
            .run(&["schedule", "list", "-o", "json"])
            .await
            .expect(0)
            .json(),
        json!([])
    );

    let yearly = "0 0 0 1 1 *";
    let created = proctor
        .run(&[
            "schedule",
            "nightly",
            "TARGET=db",
            "--time",
            yearly,
            "--notify",
            "ops@example.com",
            "--tags",
            "backup,db",
            "--group",
            "ops",
            "--time-zone",
            "Europe/Paris",
            "-o",
            "json",
        ])
        .await
        .expect(0)
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["args"]["TARGET"], "db");
    assert_eq!(created["time_zone"], "Europe/Paris");

    let table = proctor.run(&["schedule", "list"]).await;
    table
        .expect(0)
        .stdout_has(&id)
        .stdout_has("nightly")
        .stdout_has(yearly)
        .stdout_has("TARGET=db");
    proctor
        .run(&["schedule", "describe", &id])
        .await
        .expect(0)
        .stdout_has("ops@example.com")
        .stdout_has("backup,db")
        .stdout_has("Europe/Paris")
        .stdout_has("Next run:");

    proctor
        .run(&["schedule", "disable", &id])
        .await
        .expect(0)
        .stdout_has("disabled");
    let listed = proctor
        .run(&["schedule", "list", "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(listed[0]["enabled"], false);
    proctor
        .run(&["schedule", "enable", &id])
        .await
        .expect(0)
        .stdout_has("enabled");

    // The server's checks come back as exit 2 with its words.
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "schedule",
                "nightly",
                "TARGET=db",
                "--time",
                yearly,
                "--tags",
                "t",
                "--group",
                "ops",
            ],
            "already exists",
        ),
        (
            &[
                "schedule",
                "nightly",
                "TARGET=x",
                "--time",
                "every now",
                "--tags",
                "t",
                "--group",
                "g",
            ],
            "cron",
        ),
        (
            &[
                "schedule", "nightly", "TARGET=x", "--time", yearly, "--group", "g",
            ],
            "tags are required",
        ),
        (
            &[
                "schedule", "nightly", "TARGET=x", "--tags", "t", "--group", "g",
            ],
            "--time CRON is required",
        ),
        (
            &["schedule", "describe", "not-an-id"],
            "is not a schedule id",
        ),
    ];
    for (args, needle) in cases {
        let run = proctor.run(args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: {run:?}"
        );
    }

    proctor
        .run(&["schedule", "remove", &id])
        .await
        .expect(0)
        .stdout_has(&id);
    proctor
        .run(&["schedule", "describe", &id])
        .await
        .expect(2)
        .stderr_has("hint: `proctor schedule list`");
    proctor
        .run(&[
            "schedule", "create", "nightly", "TARGET=y", "--time", "@daily", "--tags", "t",
            "--group", "g",
        ])
        .await
        .expect(0)
        .stdout_has("Scheduled proc nightly with id");
}

#[actix_web::test]
async fn config_set_writes_the_file_show_masks_the_token_and_layers_override_it() {
    let app = spawn_app(Backend::Embedded).await;
    json_body(app.register(&sample_proc("greeter"), &app.admin).await, 201).await;
    let proctor = Proctor::unconfigured();
    let file = proctor.config_file();

    proctor
        .run(&["list"])
        .await
        .expect(2)
        .stderr_has(&format!("Config file not found in {}", file.display()))
        .stderr_has("hint: Setup config using `proctor config set PROCTOR_HOST=");

    let host = app.address.trim_start_matches("http://");
    proctor
        .run(&[
            "config",
            "set",
            &format!("PROCTOR_HOST={host}"),
            &format!("EMAIL_ID={}", app.member.email),
            &format!("ACCESS_TOKEN={}", app.member.token),
            "CONNECTION_TIMEOUT_SECS=5",
        ])
        .await
        .expect(0)
        .stdout_has("configured successfully");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains(&format!("PROCTOR_HOST: {host}")),
        "{written}"
    );
    assert!(written.contains("CONNECTION_TIMEOUT_SECS: 5"), "{written}");
    assert_owner_only(&file);

    proctor.run(&["list"]).await.expect(0).stdout_has("greeter");
    let show = proctor.run(&["config", "show"]).await;
    show.expect(0)
        .stdout_has(&file.display().to_string())
        .stdout_has(&app.address)
        .stdout_has(&app.member.email)
        .stdout_has("****");
    assert!(
        !show.stdout.contains(&app.member.token),
        "the token is masked: {}",
        show.stdout
    );
    let shown = proctor
        .run(&["config", "show", "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(shown["server"]["source"], "file");
    assert_eq!(shown["connection_timeout_secs"]["value"], 5);
    assert!(!shown.to_string().contains(&app.member.token));

    // The environment wins over the file, and flags over both.
    let dead = unused_address().await;
    let env = proctor.sharing_home().with("PROCTOR_HOST", &dead);
    env.run(&["list"])
        .await
        .expect(6)
        .stderr_has("Network Error!!!");
    env.run(&["list", "--host", &app.address])
        .await
        .expect(0)
        .stdout_has("greeter");

    // The original's form (`proctor config KEY=VALUE`), a key removed with an empty value.
    proctor
        .run(&[
            "config",
            &format!("PROCTOR_URL={}", app.address),
            "ACCESS_TOKEN=",
        ])
        .await
        .expect(0);
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("PROCTOR_URL:") && !written.contains("PROCTOR_HOST"),
        "{written}"
    );
    assert!(!written.contains("ACCESS_TOKEN"), "{written}");
    proctor
        .run(&["list"])
        .await
        .expect(2)
        .stderr_has("Unauthorized Access!!!")
        .stderr_has("EMAIL_ID or ACCESS_TOKEN is not present in proctor config file");

    // Bad input, and the original's messages for a broken file.
    proctor
        .run(&["config", "set", "COLOUR=blue"])
        .await
        .expect(2)
        .stderr_has("Proctor doesn't support config key: COLOUR");
    proctor
        .run(&["config", "set", "CONNECTION_TIMEOUT_SECS=soon"])
        .await
        .expect(2)
        .stderr_has("CONNECTION_TIMEOUT_SECS must be a whole number");
    std::fs::write(&file, "EMAIL_ID: someone@example.com\n").unwrap();
    proctor.run(&["list"]).await.expect(2).stderr_has(
        "Config Error!!! Mandatory config PROCTOR_HOST is missing in Proctor Config file",
    );
    std::fs::write(&file, "PROCTOR_HOST: [oops\n").unwrap();
    proctor
        .run(&["list"])
        .await
        .expect(2)
        .stderr_has("Config Error!!!")
        .stderr_has("not valid YAML");
    std::fs::write(&file, "PROCTOR_URL: ftp://example.com\n").unwrap();
    proctor
        .run(&["list"])
        .await
        .expect(2)
        .stderr_has("PROCTOR_URL must be an http:// or https:// address");
}

#[cfg(unix)]
fn assert_owner_only(file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the config file holds a token: owner only");
}

#[cfg(not(unix))]
fn assert_owner_only(_: &Path) {}

/// `127.0.0.1:PORT` where nothing listens.
async fn unused_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[actix_web::test]
async fn an_unreachable_server_and_a_silent_one_get_network_and_timeout_messages() {
    let proctor = Proctor::unconfigured().with("PROCTOR_HOST", &unused_address().await);
    proctor
        .run(&["list"])
        .await
        .expect(6)
        .stderr_has("error: Network Error!!! cannot reach proctord at http://127.0.0.1:")
        .stderr_has("hint: check that proctord runs there");

    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proctor = Proctor::unconfigured()
        .with(
            "PROCTOR_URL",
            &format!("http://{}", silent.local_addr().unwrap()),
        )
        .with("CONNECTION_TIMEOUT_SECS", "1");
    let started = std::time::Instant::now();
    proctor
        .run(&["executions"])
        .await
        .expect(6)
        .stderr_has("Connection Timeout!!!")
        .stderr_has("within 1 seconds")
        .stderr_has("hint: Please check your Internet/VPN connection");
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(silent);
}

#[actix_web::test]
async fn a_bad_token_gets_the_unauthorized_message_and_a_hint() {
    let app = spawn_app(Backend::Embedded).await;
    let proctor = Proctor::for_app(&app, &app.member).with("ACCESS_TOKEN", "not-the-token");
    let run = proctor.run(&["list"]).await;
    run.expect(2)
        .stderr_has("error: Unauthorized Access!!!")
        .stderr_has("hint: Please check the EMAIL_ID and ACCESS_TOKEN validity");
    assert_eq!(
        run.stderr.lines().count(),
        2,
        "one error line, one hint: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    // The websocket says the same.
    proctor
        .run(&["logs", "some-run-abc", "--follow"])
        .await
        .expect(2)
        .stderr_has("Unauthorized Access!!!");
}

#[actix_web::test]
async fn version_shows_both_versions_and_warns_a_client_proctord_calls_outdated() {
    let app = spawn_app(Backend::Embedded).await;
    let run = Proctor::for_app(&app, &app.member).run(&["version"]).await;
    run.expect(0)
        .stdout_has(&format!("proctor  {}", env!("CARGO_PKG_VERSION")))
        .stdout_has(&format!("proctord {}", env!("CARGO_PKG_VERSION")));
    assert!(!run.stderr.contains("outdated"), "{run:?}");

    let strict = spawn_app_with(Backend::Embedded, &[("min_client_version", "99.0.0")]).await;
    let proctor = Proctor::for_app(&strict, &strict.member);
    proctor
        .run(&["version"])
        .await
        .expect(0)
        .stderr_has(&format!(
            "Your Proctor client is using an outdated version: {} . Please upgrade to latest client (at least 99.0.0)",
            env!("CARGO_PKG_VERSION")
        ));
    let json = proctor
        .run(&["version", "-o", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json["outdated"], true);
    assert_eq!(json["min_client_version"], "99.0.0");
    // Every request sends Client-Version, so proctord refuses this client's requests.
    proctor
        .run(&["list"])
        .await
        .expect(2)
        .stderr_has("outdated version")
        .stderr_has("hint: this is proctor");
}

#[actix_web::test]
async fn the_sample_proc_registers_and_runs_from_the_cli() {
    let app = spawn_app(Backend::Embedded).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/say-hello-world");
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("metadata.json")).unwrap())
            .unwrap();
    let script = std::fs::read_to_string(root.join("say-hello-world.sh")).unwrap();
    assert_eq!(
        metadata["command"],
        json!(["sh", "-c", script]),
        "the local executor runs the same script the image's ENTRYPOINT runs"
    );
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY say-hello-world.sh") && dockerfile.contains("ENTRYPOINT"));

    let proctor = Proctor::for_app(&app, &app.admin);
    let metadata_path = root.join("metadata.json");
    proctor
        .run(&["register", metadata_path.to_str().unwrap()])
        .await
        .expect(0)
        .stdout_has("Registered proc say-hello-world");
    Proctor::for_app(&app, &app.member)
        .run(&["register", metadata_path.to_str().unwrap()])
        .await
        .expect(2)
        .stderr_has("only admins may register procs");

    let run = proctor
        .run(&["execute", "say-hello-world", "NAME=Ada"])
        .await;
    run.expect(0)
        .stdout_has("Hello, Ada! (1/3)\nHello, Ada! (2/3)\nHello, Ada! (3/3)\nGoodbye from say-hello-world-")
        .stderr_has("SUCCEEDED");
}

#[actix_web::test]
async fn register_dry_run_checks_metadata_and_stores_nothing() {
    let app = spawn_app(Backend::Embedded).await;
    let folder = temp_dir("dry-run");
    let good = folder.join("good.json");
    std::fs::write(&good, sample_proc("checked").to_string()).unwrap();
    let mut broken = sample_proc("broken");
    broken["image_name"] = json!("");
    let bad = folder.join("bad.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let proctor = Proctor::for_app(&app, &app.admin);

    proctor
        .run(&["register", "--dry-run", good.to_str().unwrap()])
        .await
        .expect(0)
        .stdout_has("Proc checked is valid (dry run: nothing was stored)");
    let response = app.describe("checked", &app.admin).await;
    assert_eq!(response.status().as_u16(), 404, "nothing was stored");
    proctor
        .run(&["register", "--dry-run", bad.to_str().unwrap()])
        .await
        .expect(2)
        .stderr_has("proc broken is invalid");
    let audit = app
        .request(reqwest::Method::GET, "/api/v1/audit", Some(&app.admin))
        .send()
        .await
        .unwrap();
    let audit = json_body(audit, 200).await;
    assert_eq!(audit["events"], json!([]), "a dry run changes nothing");
    proctor
        .run(&["register", good.to_str().unwrap()])
        .await
        .expect(0)
        .stdout_has("Registered proc checked");
}

#[actix_web::test]
async fn a_template_is_an_args_file_that_execute_takes() {
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "greet",
        "echo Hello $NAME x$TIMES",
        &["NAME", "TIMES"],
        json!({"description": "Greets someone", "env_vars": {"args": [
            {"name": "NAME", "description": "who to greet"},
            {"name": "TIMES", "description": "how often"}
        ], "secrets": []}}),
    )
    .await;
    let proctor = Proctor::for_app(&app, &app.member);
    let folder = temp_dir("template");
    let file = folder.join("greet.yaml");
    let path = file.to_str().unwrap();

    proctor
        .run(&["template", "greet", path])
        .await
        .expect(0)
        .stdout_has(&format!("proctor execute greet -f {path}"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# Args of proc greet: Greets someone\n"),
        "{text}"
    );
    assert!(text.contains("# who to greet\nNAME: \"\"\n"), "{text}");
    assert!(text.contains("# how often\nTIMES: \"\"\n"), "{text}");
    proctor
        .run(&["template", "greet", path])
        .await
        .expect(2)
        .stderr_has("already exists");
    proctor
        .run(&["template", "greet", "-"])
        .await
        .expect(0)
        .stdout_has("NAME: \"\"");
    proctor
        .run(&["template", "nope", "-"])
        .await
        .expect(2)
        .stderr_has("no proc named nope");

    // Filled in, it runs.
    std::fs::write(
        &file,
        text.replace("NAME: \"\"", "NAME: Ada")
            .replace("TIMES: \"\"", "TIMES: 3"),
    )
    .unwrap();
    proctor
        .run(&["execute", "greet", "-f", path])
        .await
        .expect(0)
        .stdout_has("Hello Ada x3");
}

#[actix_web::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    let proctor = Proctor::unconfigured();
    for (shell, marker) in [
        ("bash", "complete -F _proctor"),
        ("zsh", "#compdef proctor"),
        ("fish", "complete -c proctor"),
    ] {
        let run = proctor.run(&["completion", shell]).await;
        run.expect(0).stdout_has(marker);
        for command in ["execute", "schedule", "template", "audit", "completion"] {
            run.stdout_has(command);
        }
    }
    proctor
        .run(&["completion", "powershell-core"])
        .await
        .expect(2)
        .stderr_has("invalid value");
}

#[actix_web::test]
async fn a_schedule_is_run_now_and_backfilled_from_the_command_line() {
    use chrono::{DurationRound as _, TimeDelta, Timelike as _, Utc};
    let app = spawn_app(Backend::Embedded).await;
    register_script(
        &app,
        "nightly",
        "echo night for $TARGET",
        &["TARGET"],
        json!({}),
    )
    .await;
    let proctor = Proctor::for_app(&app, &app.member);
    // Each minute of the hour two hours ago: long past, and not due again today.
    let start = (Utc::now() - TimeDelta::hours(2))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    let time = format!("0 * {} * * *", start.hour());
    let created = proctor
        .run(&[
            "schedule",
            "nightly",
            "TARGET=db",
            "--time",
            &time,
            "--tags",
            "t",
            "--group",
            "ops",
            "-o",
            "json",
        ])
        .await
        .expect(0)
        .json();
    let id = created["id"].as_str().unwrap().to_owned();

    let run = proctor.run(&["schedule", "run", &id]).await;
    run.expect(0);
    let name = run.stdout.trim().to_owned();
    assert!(
        name.starts_with("nightly-"),
        "the execution's name: {run:?}"
    );
    app.wait_for_status(&name, "SUCCEEDED", Duration::from_secs(20))
        .await;
    assert_eq!(app.stored_logs(&name).await, ["night for db"]);

    let at =
        |m: i64| (start + TimeDelta::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let first = proctor
        .run(&[
            "schedule",
            "backfill",
            &id,
            "--from",
            &at(1),
            "--to",
            &at(3),
            "-o",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(first["started"].as_array().unwrap().len(), 2, "{first}");
    proctor
        .run(&[
            "schedule",
            "backfill",
            &id,
            "--from",
            &at(0),
            "--to",
            &at(5),
        ])
        .await
        .expect(0)
        .stdout_has("5 fires, 3 started, 2 skipped, 0 failed")
        .stdout_has("skipped: already ran")
        .stdout_has("nightly-");
    proctor
        .run(&[
            "schedule",
            "backfill",
            &id,
            "--from",
            "yesterday",
            "--to",
            &at(5),
        ])
        .await
        .expect(2)
        .stderr_has("not an RFC 3339 time");
}
