//! A local run cannot outlive its proctord: a real `proctord` binary, killed, and the
//! processes left on the machine, as `/proc` shows them.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Child;

use proctor::executor::guard::PROCESS_NAME;

/// How long a run's processes (and the guard) may take to go once proctord is gone.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// A `proctord serve` on the embedded default, answering on its port.
struct Proctord {
    child: Child,
    base: String,
    data_dir: PathBuf,
}

impl Proctord {
    async fn start(what: &str) -> Self {
        let data_dir = crate::helpers::temp_dir(what);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_proctord"))
            .envs([
                ("PROCTOR_APP_PORT", port.to_string()),
                ("PROCTOR_DATA_DIR", data_dir.to_string_lossy().into_owned()),
                ("PROCTOR_EXECUTOR", "local".into()),
                ("PROCTOR_LOG_LEVEL", "warn".into()),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = crate::helpers::http_client();
        for _ in 0..200 {
            if client.get(format!("{base}/ping")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            base,
            data_dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id().expect("proctord not reaped yet") as i32
    }

    /// The guard processes: proctord's children named [`PROCESS_NAME`] (one, when it
    /// works).
    fn guards(&self) -> Vec<i32> {
        let proctord = self.pid();
        all_pids()
            .filter(|&pid| stat(pid).is_some_and(|s| s.comm == PROCESS_NAME && s.ppid == proctord))
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to the child proctord this test started.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    async fn exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("proctord exits")
            .unwrap()
    }
}

/// A few fields of `/proc/<pid>/stat`.
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or parentheses.
    let (head, tail) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { comm, state, ppid })
}

fn all_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// Whether `pid` is a live process: a zombie is dead, whether or not anyone reaps it.
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// The live processes of a run: the local executor sets `PROCTOR_EXECUTION_NAME` for
/// the run's program, and whatever it starts inherits it.
pub(crate) fn processes_of(execution: &str) -> Vec<i32> {
    let entry = format!("PROCTOR_EXECUTION_NAME={execution}");
    all_pids()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|variable| variable == entry.as_bytes())
            })
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Polls every 50 ms until `done` holds or [`GONE_WITHIN`] passes; answers how long
/// it took, or `None`.
async fn within_deadline(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < GONE_WITHIN {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done().then(|| start.elapsed())
}

#[actix_web::test]
async fn kill_9_of_proctord_leaves_no_process_of_a_local_run_behind() {
    let mut proctord = Proctord::start("orphans").await;
    let guards = proctord.guards();
    let client = crate::helpers::http_client();
    let base = &proctord.base;
    let proc = json!({"name": "forker", "image_name": "alpine:3",
        "command": ["sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]});
    let response = client
        .post(format!("{base}/jobs/metadata"))
        .json(&proc)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = client
        .post(format!("{base}/jobs/execute"))
        .json(&json!({"name": "forker"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = body["name"].as_str().unwrap().to_owned();

    let mut started = false;
    for _ in 0..400 {
        let response = client
            .get(format!("{base}/api/v1/executions/{name}/logs"))
            .send()
            .await
            .unwrap();
        let status = response
            .headers()
            .get("Proctor-Status")
            .and_then(|status| status.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let logs = response.text().await.unwrap();
        if status == "RUNNING" && logs.lines().any(|line| line == "started") {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the run is RUNNING and has said so");
    let processes = processes_of(&name);
    assert!(
        processes.len() >= 3,
        "sh and its two sleeps run: {processes:?}"
    );

    proctord.signal(libc::SIGKILL);
    proctord.exit().await;
    let took = within_deadline(|| processes_of(&name).is_empty()).await;
    let left = processes_of(&name);
    for &pid in &left {
        // SAFETY: the leftovers are this test's run's processes (by their environment).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        took.is_some(),
        "no process of the run outlives proctord by {GONE_WITHIN:?}; left: {left:?}"
    );
    assert!(
        within_deadline(|| !guards.iter().any(|&guard| alive(guard)))
            .await
            .is_some(),
        "the guard {guards:?} has done its job and exited"
    );
    eprintln!("the run's processes were gone {took:?} after proctord was killed");
    std::fs::remove_dir_all(&proctord.data_dir).unwrap();
}

#[actix_web::test]
async fn a_cleanly_stopped_proctord_leaves_no_guard_behind() {
    let mut proctord = Proctord::start("guard-exit").await;
    let guards = proctord.guards();
    assert_eq!(
        guards.len(),
        1,
        "one guard runs alongside proctord: {guards:?}"
    );
    let guard = guards[0];

    proctord.signal(libc::SIGTERM);
    let status = proctord.exit().await;
    assert!(status.success(), "a clean exit: {status}");
    assert!(
        within_deadline(|| !alive(guard)).await.is_some(),
        "the guard {guard} exits with proctord"
    );
    std::fs::remove_dir_all(&proctord.data_dir).unwrap();
}
