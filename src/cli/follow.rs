//! Following one execution's log to its end: the websocket first (every line, then a
//! close frame whose reason is the final status), the stored log over HTTP when the
//! socket cannot be used or closes early (the client fell behind, proctord restarted).
//! While it waits for the run to start it shows a spinner; Ctrl-C asks whether to
//! cancel the run or detach from it.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, LogSocket};
use super::error::{CliError, Exit, warn};
use super::output;
use super::procs::segment;

/// Lines asked for per stored-log request.
const PAGE: i64 = 10_000;
/// How often the stored log is read again while the run goes on.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long to keep trying when proctord stops answering mid-run (a restart).
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub const NO_RUN_HINT: &str = "`proctor executions` lists recent runs";

/// How following a run ended.
pub enum Ending {
    /// The run reached this final status.
    Finished(String),
    /// The user chose to leave the run going.
    Detached,
}

/// Whether a status is final (a newer proctord's unknown status counts as not final).
pub fn is_final(status: &str) -> bool {
    status
        .parse::<crate::model::Status>()
        .is_ok_and(|s| s.is_final())
}

pub struct Follow<'a> {
    pub client: &'a Client,
    pub name: &'a str,
    /// Log lines go to stderr (stdout is kept for a JSON document).
    pub lines_to_stderr: bool,
    /// Ctrl-C asks to cancel or detach (`execute`); otherwise it ends the command.
    pub interruptible: bool,
}

enum Source {
    Socket(Box<LogSocket>),
    Poll {
        at: Instant,
        failing_since: Option<Instant>,
    },
}

enum Event {
    Line(String),
    Closed { code: u16, reason: String },
    SocketLost(String),
    Poll,
    Tick,
    Interrupt,
}

impl Follow<'_> {
    /// Streams every line of the run to the end; returns how it ended.
    pub async fn run(self) -> Result<Ending, CliError> {
        let mut seen: i64 = 0;
        let mut spinner = std::io::stderr().is_terminal().then(|| {
            let spinner = ProgressBar::new_spinner()
                .with_style(
                    ProgressStyle::with_template("{spinner:.green} {msg}")
                        .expect("a valid template"),
                )
                .with_message(format!("waiting for {} to start", self.name));
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        let mut interrupts = if self.interruptible {
            Some(
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                    .map_err(|e| CliError::usage(format!("cannot watch for Ctrl-C: {e}")))?,
            )
        } else {
            None
        };
        let mut source = match self.client.open_log_socket(self.name).await {
            Ok(socket) => Source::Socket(Box::new(socket)),
            Err(e) if e.exit == Exit::Server => {
                warn(&format!("{e}; reading the stored log instead"));
                poll_now()
            }
            Err(e) => {
                stop(&mut spinner);
                return Err(e);
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));

        loop {
            let spinning = spinner.is_some();
            let event = match &mut source {
                Source::Socket(socket) => tokio::select! {
                    frame = socket.next() => match frame {
                        Some(Ok(Message::Text(text))) => Event::Line(text.to_string()),
                        Some(Ok(Message::Close(Some(frame)))) => Event::Closed {
                            code: frame.code.into(),
                            reason: frame.reason.to_string(),
                        },
                        Some(Ok(Message::Close(None))) => Event::Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => Event::SocketLost(e.to_string()),
                        None => Event::SocketLost("the connection ended".into()),
                    },
                    _ = interrupted(&mut interrupts) => Event::Interrupt,
                    _ = tick.tick(), if spinning => Event::Tick,
                },
                Source::Poll { at, .. } => tokio::select! {
                    _ = tokio::time::sleep_until(*at) => Event::Poll,
                    _ = interrupted(&mut interrupts) => Event::Interrupt,
                },
            };
            match event {
                Event::Line(line) => {
                    stop(&mut spinner);
                    self.emit(&line);
                    seen += 1;
                }
                Event::Closed { code: 1000, reason } if is_final(&reason) => {
                    stop(&mut spinner);
                    return Ok(Ending::Finished(reason));
                }
                Event::Closed { code: 1008, reason } => {
                    warn(&format!("{reason}; reading the rest from the stored log"));
                    source = poll_now();
                }
                Event::Closed { reason, .. } | Event::SocketLost(reason) => {
                    // proctord restarting, a proxy cutting the socket: the stored log
                    // has every line, so nothing is lost or repeated.
                    if !reason.is_empty() {
                        warn(&format!(
                            "the log stream closed ({reason}); reading the stored log"
                        ));
                    }
                    source = poll_now();
                }
                Event::Poll => {
                    let Source::Poll { failing_since, .. } = &mut source else {
                        unreachable!("polled while not polling")
                    };
                    match self.read_stored(seen).await {
                        Ok(page) => {
                            if !page.lines.is_empty() {
                                stop(&mut spinner);
                            }
                            for line in &page.lines {
                                self.emit(line);
                            }
                            seen = page.last_seq.max(seen);
                            if is_final(&page.status) && !page.full {
                                stop(&mut spinner);
                                return Ok(Ending::Finished(page.status));
                            }
                            if page.status == "RUNNING" {
                                stop(&mut spinner);
                            }
                            let wait = if page.full {
                                Duration::ZERO
                            } else {
                                POLL_EVERY
                            };
                            source = Source::Poll {
                                at: Instant::now() + wait,
                                failing_since: None,
                            };
                        }
                        Err(e) if e.exit == Exit::Server => {
                            let since = *failing_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > RECONNECT_FOR {
                                stop(&mut spinner);
                                return Err(e);
                            }
                            source = Source::Poll {
                                at: Instant::now() + POLL_EVERY * 2,
                                failing_since: Some(since),
                            };
                        }
                        Err(e) => {
                            stop(&mut spinner);
                            return Err(e);
                        }
                    }
                }
                Event::Tick => {
                    let status = self.status().await.unwrap_or_default();
                    if status == "RUNNING" || is_final(&status) {
                        stop(&mut spinner);
                    } else if status == "QUEUED"
                        && let Some(spinner) = &spinner
                    {
                        let ahead = self.queue_position().await.unwrap_or(0);
                        spinner.set_message(format!(
                            "{} is queued ({ahead} ahead): waiting for a slot of its proc",
                            self.name
                        ));
                    }
                }
                Event::Interrupt => {
                    stop(&mut spinner);
                    if self.ask(&mut interrupts).await {
                        self.cancel().await?;
                    } else {
                        return Ok(Ending::Detached);
                    }
                }
            }
        }
    }

    fn emit(&self, line: &str) {
        if self.lines_to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        } else {
            output::line(line);
        }
    }

    /// The status as plain text (the original's route).
    async fn status(&self) -> Result<String, CliError> {
        let path = format!("/jobs/execute/{}/status", segment(self.name));
        let response = self
            .client
            .send(self.client.request(Method::GET, &path), NO_RUN_HINT)
            .await?;
        Ok(response.text().await.unwrap_or_default().trim().to_owned())
    }

    /// How many runs wait ahead of this one in its proc's queue (`None` when it does not
    /// wait, or the record cannot be read).
    async fn queue_position(&self) -> Option<i64> {
        let path = format!("/api/v1/executions/{}", segment(self.name));
        let record: serde_json::Value = self.client.get_json(&path, NO_RUN_HINT).await.ok()?;
        record["queue_position"].as_i64()
    }

    /// The stored lines after `seen`.
    async fn read_stored(&self, seen: i64) -> Result<StoredPage, CliError> {
        read_stored(self.client, self.name, seen).await
    }

    /// Asks, on a terminal, whether Ctrl-C means cancel (true) or detach (false).
    /// Without a terminal, or on a second Ctrl-C, it detaches.
    async fn ask(&self, interrupts: &mut Option<tokio::signal::unix::Signal>) -> bool {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return false;
        }
        let style = anstyle::Style::new().bold();
        anstream::eprint!("\n{style}Ctrl-C: cancel the run or detach? [c/d]{style:#} ");
        let _ = std::io::stderr().flush();
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        // A plain thread: a blocked read of stdin must not hold up the exit.
        std::thread::spawn(move || {
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            let _ = answer_tx.send(answer);
        });
        tokio::select! {
            answer = answer_rx => answer.is_ok_and(|a| a.trim().to_ascii_lowercase().starts_with('c')),
            _ = interrupted(interrupts) => false,
        }
    }

    async fn cancel(&self) -> Result<(), CliError> {
        anstream::eprintln!("Cancelling {}...", self.name);
        let path = format!("/api/v1/executions/{}/cancel", segment(self.name));
        match self
            .client
            .send(self.client.request(Method::POST, &path), NO_RUN_HINT)
            .await
        {
            Ok(_) => Ok(()),
            // Already over: the stream's end says how.
            Err(e) if e.message.contains("already ended") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn poll_now() -> Source {
    Source::Poll {
        at: Instant::now(),
        failing_since: None,
    }
}

fn stop(spinner: &mut Option<ProgressBar>) {
    if let Some(spinner) = spinner.take() {
        spinner.finish_and_clear();
    }
}

/// Resolves on Ctrl-C when interrupts are watched, never otherwise.
async fn interrupted(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// One page of the stored log.
pub struct StoredPage {
    pub lines: Vec<String>,
    /// The seq of the last line given (where the next page starts).
    pub last_seq: i64,
    /// The execution's status when the page was read.
    pub status: String,
    /// Whether the page was full, so more lines may be waiting.
    pub full: bool,
}

/// `GET /api/v1/executions/{name}/logs?since_seq=`: the stored lines after `seen`.
pub async fn read_stored(client: &Client, name: &str, seen: i64) -> Result<StoredPage, CliError> {
    let path = format!("/api/v1/executions/{}/logs", segment(name));
    let request = client
        .request(Method::GET, &path)
        .query(&[("since_seq", seen), ("limit", PAGE)]);
    let response = client.send(request, NO_RUN_HINT).await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let last_seq = header("Proctor-Last-Seq")
        .and_then(|v| v.parse().ok())
        .unwrap_or(seen);
    let status = header("Proctor-Status").unwrap_or_default();
    let body = response
        .text()
        .await
        .map_err(|e| client.network_error(&e))?;
    let mut lines: Vec<String> = body.split('\n').map(str::to_owned).collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    let full = last_seq - seen >= PAGE;
    Ok(StoredPage {
        lines,
        last_seq,
        status,
        full,
    })
}
