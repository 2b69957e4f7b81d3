//! `peer` (in a folder of its own: a `benches/*.rs` file would be a bench target of its
//! own for Cargo): the same workload on Proctor and on Prefect 3, one after the other in the
//! same sitting, printed side by side with the ratios.
//!
//! The workload: a run of `sh -c 'echo hello $NAME; echo two; echo three'` with a
//! `NAME` parameter, submitted over each system's HTTP API. Measured for each system:
//! submit → accepted (one at a time, and 8 clients at once), submit → final state for
//! runs submitted one after another, completed runs a second for runs submitted by 8
//! clients at once (until every one is final; each must succeed and its three lines be
//! readable back), idle and peak RSS summed over every process of the system (children
//! included), and CPU-seconds per run (all those processes, reaped children included).
//!
//! Proctor is measured here with a real proctord; the end of a run is learnt without
//! polling, from its log websocket closing (proctord closes it once the final status is
//! written). Prefect is measured by `benches/peer_bench.py` in a virtualenv under
//! `~/.cache/proctor-bench-prefect3` (`PROCTOR_PEER_VENV`), made and filled from PyPI
//! (`prefect>=3,<4`) by this bench when missing; full mode only. Smoke mode, or any
//! failure to install or run Prefect, prints the reason and Proctor's rows alone; so
//! does `PROCTOR_PEER_PREFECT=off` (Proctor's half alone, e.g. to profile it).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Plan, Row, Server, percentile, sorted};

/// What each run executes; `NAME` is the run's parameter.
const COMMAND: &str = "echo hello $NAME; echo two; echo three";
/// Clients submitting at once in the throughput measurement.
const CLIENTS: usize = 8;

/// One system's figures.
struct Side {
    /// Submit → accepted, one at a time (ms, sorted).
    accepted: Vec<f64>,
    /// Submit → accepted with `CLIENTS` clients submitting at once (ms, sorted).
    accepted_busy: Vec<f64>,
    /// Submit → final state seen by the client, one run after another (ms, sorted).
    final_state: Vec<f64>,
    /// Runs submitted at once, and seconds from the first submit to the last final state.
    runs: usize,
    seconds: f64,
    /// Every one of them succeeded with its three lines readable back.
    all_ok: bool,
    idle_kib: u64,
    peak_kib: u64,
    /// CPU of every process of the system from the first submit of the busy phase to
    /// 1 s after its last run ended.
    cpu_seconds: f64,
}

impl Side {
    fn runs_per_second(&self) -> f64 {
        self.runs as f64 / self.seconds
    }

    fn cpu_per_run(&self) -> f64 {
        self.cpu_seconds / self.runs as f64
    }
}

/// Prefect's side, measured once (by the first backend's turn) and compared with each
/// backend's Proctor: its figures and the script's whole answer, or why it is missing.
type Measured = Result<(Side, Value), String>;
static PREFECT: Mutex<Option<Measured>> = Mutex::new(None);

pub(crate) async fn peer(plan: &Plan, backend: &str, rows: &mut Vec<Row>) {
    let ours = proctor_side(plan, backend).await;
    let cached = PREFECT.lock().unwrap().take();
    let prefect = match cached {
        Some(measured) => measured,
        None if plan.smoke => Err("smoke mode (the Prefect half installs Prefect from PyPI \
                                    and runs minutes): `cargo bench --bench proctor -- peer`"
            .into()),
        None if std::env::var("PROCTOR_PEER_PREFECT").as_deref() == Ok("off") => {
            Err("PROCTOR_PEER_PREFECT=off".into())
        }
        None => {
            let (runs, sequential) = (plan.peer_runs, plan.peer_sequential);
            tokio::task::spawn_blocking(move || prefect_side(sequential, runs))
                .await
                .unwrap_or_else(|e| Err(format!("the Prefect half panicked: {e}")))
        }
    };
    if let Err(reason) = &prefect {
        eprintln!("SKIPPING the Prefect half of the peer bench: {reason}");
    }
    push_rows(backend, &ours, prefect.as_ref().ok(), rows);
    *PREFECT.lock().unwrap() = Some(prefect);
}

fn push_rows(backend: &str, ours: &Side, prefect: Option<&(Side, Value)>, rows: &mut Vec<Row>) {
    let theirs = prefect.map(|(side, _)| side);
    let about = prefect.map_or("Prefect skipped".to_owned(), |(_, v)| {
        format!(
            "Prefect {} on SQLite, runner limit {}, poll {} s; final state from its events websocket",
            v["version"].as_str().unwrap_or("?"),
            v["config"]["runner_limit"],
            v["config"]["runner_query_seconds"]
        )
    });
    // `f(side)` for each system, then their ratio (`theirs ÷ ours`, or `ours ÷ theirs`
    // where more is better).
    let mut row = |metric: String,
                   f: &dyn Fn(&Side) -> String,
                   ratio: &dyn Fn(&Side, &Side) -> f64,
                   target: &'static str| {
        let value = match theirs {
            Some(t) => format!("{}; {}; {:.0}×", f(ours), f(t), ratio(ours, t)),
            None => format!("{}; –; –", f(ours)),
        };
        rows.push(Row {
            scenario: "peer",
            backend: backend.to_owned(),
            metric: format!("{metric} — Proctor; Prefect; ratio ({about})"),
            value,
            target,
        });
    };
    let p = |v: &[f64], q: f64| percentile(v, q);
    row(
        "submit → accepted, one at a time, p50 / p90 (ms)".into(),
        &|s| format!("{:.2} / {:.2}", p(&s.accepted, 50.0), p(&s.accepted, 90.0)),
        &|o, t| p(&t.accepted, 50.0) / p(&o.accepted, 50.0),
        "",
    );
    row(
        format!("submit → accepted, {CLIENTS} clients at once, p50 / p90 (ms)"),
        &|s| {
            format!(
                "{:.2} / {:.2}",
                p(&s.accepted_busy, 50.0),
                p(&s.accepted_busy, 90.0)
            )
        },
        &|o, t| p(&t.accepted_busy, 50.0) / p(&o.accepted_busy, 50.0),
        "",
    );
    row(
        format!(
            "submit → final state, {} runs one after another, p50 / p90 (ms)",
            ours.final_state.len()
        ),
        &|s| {
            format!(
                "{:.1} / {:.1}",
                p(&s.final_state, 50.0),
                p(&s.final_state, 90.0)
            )
        },
        &|o, t| p(&t.final_state, 50.0) / p(&o.final_state, 50.0),
        "",
    );
    row(
        format!(
            "completed runs/s, {} runs submitted by {CLIENTS} clients, until all final (all succeeded with their 3 lines)",
            ours.runs
        ),
        &|s| format!("{:.1} ({})", s.runs_per_second(), s.all_ok),
        &|o, t| o.runs_per_second() / t.runs_per_second(),
        "≥ 100×",
    );
    row(
        "CPU-seconds per run (every process, children included)".into(),
        &|s| format!("{:.4}", s.cpu_per_run()),
        &|o, t| t.cpu_per_run() / o.cpu_per_run(),
        "",
    );
    row(
        "RSS of every process, idle / peak while the runs went (MiB)".into(),
        &|s| {
            format!(
                "{:.1} / {:.1}",
                s.idle_kib as f64 / 1024.0,
                s.peak_kib as f64 / 1024.0
            )
        },
        &|o, t| t.peak_kib as f64 / o.peak_kib as f64,
        "",
    );
}

/// Reads a run's log websocket to its close: the lines, and when it closed.
async fn watch(port: u16, name: &str) -> (Vec<String>, Instant) {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/jobs/logs?job_name={name}"
    ))
    .await
    .unwrap();
    let mut lines = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Text(text) => lines.push(text.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    (lines, Instant::now())
}

/// Submits one run; its name and how long the 201 took (ms).
async fn submit(client: &reqwest::Client, base: &str, name: &str) -> (String, f64) {
    let sent = Instant::now();
    let response = client
        .post(format!("{base}/jobs/execute"))
        .json(&json!({"name": "hello", "args": {"NAME": name}}))
        .send()
        .await
        .unwrap();
    let took = sent.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.unwrap();
    (body["name"].as_str().unwrap().to_owned(), took)
}

fn expected(name: &str) -> Vec<String> {
    vec![format!("hello {name}"), "two".into(), "three".into()]
}

async fn proctor_side(plan: &Plan, backend: &str) -> Side {
    let server = Server::start(backend, &[]).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    server
        .register(&client, "hello", json!(["sh", "-c", COMMAND]), &["NAME"])
        .await;
    let (warm, _) = submit(&client, &base, "warm-up").await;
    watch(server.port, &warm).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = server.pid();
    let idle_kib = tree_rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(idle_kib));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(tree_rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    // One after another: submit, then the log websocket until it closes.
    let (mut accepted, mut final_state) = (Vec::new(), Vec::new());
    for i in 0..plan.peer_sequential {
        let sent = Instant::now();
        let name = format!("seq-{i}");
        let (execution, took) = submit(&client, &base, &name).await;
        let (lines, closed) = watch(server.port, &execution).await;
        final_state.push((closed - sent).as_secs_f64() * 1000.0);
        accepted.push(took);
        assert_eq!(lines, expected(&name), "{execution}");
    }

    // CLIENTS clients, each submitting its share back to back and following each run's
    // websocket from its 201 on.
    let cpu_before = tree_cpu_seconds(pid);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, base, port) = (client.clone(), base.clone(), server.port);
            let runs = plan.peer_runs;
            tokio::spawn(async move {
                let (mut accepted, mut watching) = (Vec::new(), Vec::new());
                for i in (c..runs).step_by(CLIENTS) {
                    let name = format!("run-{i}");
                    let (execution, took) = submit(&client, &base, &name).await;
                    accepted.push(took);
                    watching.push(tokio::spawn(async move {
                        let (lines, closed) = watch(port, &execution).await;
                        (execution, name, lines, closed)
                    }));
                }
                let mut ended = Vec::new();
                for w in watching {
                    ended.push(w.await.unwrap());
                }
                (accepted, ended)
            })
        })
        .collect();
    let (mut accepted_busy, mut ended) = (Vec::new(), Vec::new());
    for c in clients {
        let (a, e) = c.await.unwrap();
        accepted_busy.extend(a);
        ended.extend(e);
    }
    let last = ended.iter().map(|e| e.3).max().unwrap();
    let seconds = (last - started).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_seconds = tree_cpu_seconds(pid) - cpu_before;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();

    // Every run succeeded, and its three lines are stored.
    let mut all_ok = true;
    for (execution, name, lines, _) in &ended {
        let record: Value = client
            .get(format!("{base}/api/v1/executions/{execution}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored = client
            .get(format!("{base}/api/v1/executions/{execution}/logs"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let stored: Vec<String> = stored.lines().map(str::to_owned).collect();
        let ok = record["status"] == "SUCCEEDED" && stored == expected(name) && *lines == stored;
        if !ok {
            eprintln!(
                "peer: {execution} {}: {stored:?} {lines:?}",
                record["status"]
            );
        }
        all_ok &= ok;
    }
    Side {
        accepted: sorted(accepted),
        accepted_busy: sorted(accepted_busy),
        final_state: sorted(final_state),
        runs: plan.peer_runs,
        seconds,
        all_ok,
        idle_kib,
        peak_kib: peak.load(Ordering::Relaxed),
        cpu_seconds,
    }
}

/// The virtualenv holding Prefect 3, made and filled from PyPI when missing.
fn prefect_python() -> Result<std::path::PathBuf, String> {
    let venv = std::env::var_os("PROCTOR_PEER_VENV")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::Path::new(&h).join(".cache/proctor-bench-prefect3"))
        })
        .ok_or("no HOME for the virtualenv")?;
    let python = venv.join("bin/python");
    let run = |program: &std::path::Path, args: &[&str]| -> Result<(), String> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{} cannot start: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{} {} failed: {}",
                program.display(),
                args.join(" "),
                err.trim().lines().last().unwrap_or("")
            ))
        }
    };
    if !python.exists() {
        eprintln!(
            "peer: making a virtualenv for Prefect in {}",
            venv.display()
        );
        run(
            std::path::Path::new("python3"),
            &["-m", "venv", venv.to_str().ok_or("a non-UTF-8 path")?],
        )?;
    }
    let check = "import sys, prefect; sys.exit(not prefect.__version__.startswith('3.'))";
    if run(&python, &["-c", check]).is_err() {
        eprintln!(
            "peer: installing prefect>=3,<4 from PyPI into {}",
            venv.display()
        );
        run(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "prefect>=3,<4",
            ],
        )?;
        run(&python, &["-c", check])?;
    }
    Ok(python)
}

/// Runs `benches/peer_bench.py` (blocking): Prefect's figures, or why there are none.
fn prefect_side(sequential: usize, runs: usize) -> Measured {
    let python = prefect_python()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer_bench.py");
    let out = Command::new(&python)
        .arg(script)
        .env("PEER_SEQUENTIAL", sequential.to_string())
        .env("PEER_RUNS", runs.to_string())
        .env("PEER_CLIENTS", CLIENTS.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{} cannot start: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| format!("peer_bench.py printed no result (exit {})", out.status))?;
    if let Some(error) = result["error"].as_str() {
        return Err(format!("peer_bench.py: {error}"));
    }
    let list = |key: &str| -> Vec<f64> {
        sorted(
            result[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
        )
    };
    let side = Side {
        accepted: list("accepted_ms"),
        accepted_busy: list("busy_accepted_ms"),
        final_state: list("final_ms"),
        runs: result["runs"].as_u64().unwrap_or(0) as usize,
        seconds: result["concurrent_seconds"].as_f64().unwrap_or(f64::NAN),
        all_ok: result["all_completed"] == true && result["lines_ok"] == true,
        idle_kib: result["idle_rss_kib"].as_u64().unwrap_or(0),
        peak_kib: result["peak_rss_kib"].as_u64().unwrap_or(0),
        cpu_seconds: result["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
    };
    eprintln!("peer: Prefect's answer: {result}");
    Ok((side, result))
}

/// `root` and its live descendants (one walk of /proc).
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(ppid) = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid) in &parents {
            if found.contains(ppid) && !found.contains(pid) {
                found.push(*pid);
                grew = true;
            }
        }
    }
    found
}

fn tree_rss_kib(root: u32) -> u64 {
    tree(root).into_iter().map(super::rss_kib_of).sum()
}

/// utime + stime + cutime + cstime of each live process of the tree: its own time and
/// that of the children it reaped, so nothing is counted twice.
fn tree_cpu_seconds(root: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tree(root)
        .into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .map(|(_, rest)| {
                    rest.split_whitespace()
                        .skip(11)
                        .take(4)
                        .filter_map(|v| v.parse::<f64>().ok())
                        .sum::<f64>()
                })
                .unwrap_or(0.0)
        })
        .sum::<f64>()
        / ticks
}
