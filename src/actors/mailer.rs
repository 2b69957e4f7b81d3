//! The Mailer tells a schedule's notification addresses how its run ended, over SMTP
//! (STARTTLS when the server offers it), retrying transient failures with backoff.
//! Sending happens off the actor's turn: a slow or dead server delays nothing else.

use std::time::Duration;

use actix::prelude::*;
use backon::{ExponentialBuilder, Retryable as _};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message as Mail, Tokio1Executor};

use crate::config::MailSettings;
use crate::store::{Execution, LogStore, ScheduleStore};

/// Log lines quoted at the end of a mail.
const TAIL_LINES: i64 = 20;

/// A scheduled execution ended: mail its schedule's addresses.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Notify {
    pub execution: Execution,
}

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    schedules: ScheduleStore,
    logs: LogStore,
    retry: ExponentialBuilder,
}

impl Mailer {
    pub fn new(settings: &MailSettings, schedules: ScheduleStore, logs: LogStore) -> Self {
        let transport = settings.server_host.as_ref().map(|host| {
            let tls = TlsParameters::new(host.clone())
                .map(Tls::Opportunistic)
                .unwrap_or(Tls::None);
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(settings.server_port)
                .tls(tls)
                .timeout(Some(Duration::from_secs(20)));
            if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
                builder =
                    builder.credentials(Credentials::new(user.clone(), password.expose().clone()));
            }
            builder.build()
        });
        let from = format!("Proctor <{}>", settings.from)
            .parse()
            .unwrap_or_else(|_| {
                "Proctor <proctor@localhost>"
                    .parse()
                    .expect("a valid address")
            });
        Self {
            transport,
            from,
            schedules,
            logs,
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(30))
                .with_max_times(4),
        }
    }

    /// Shorter retry delays, for tests.
    pub fn with_retry(mut self, retry: ExponentialBuilder) -> Self {
        self.retry = retry;
        self
    }
}

impl Actor for Mailer {
    type Context = Context<Self>;
}

impl Supervised for Mailer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Mailer restarting");
        crate::telemetry::report("the Mailer actor restarted", &[("actor", "Mailer")]);
    }
}

/// Builds the mail (subject: proc and status; body: run details and the log's tail).
fn compose(
    from: &Mailbox,
    to: &[Mailbox],
    execution: &Execution,
    tail: &[String],
) -> Result<Mail, String> {
    let time = |t: Option<chrono::NaiveDateTime>| {
        t.map(|t| {
            t.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| "-".to_owned())
    };
    let args = if execution.args.is_empty() {
        "(none)".to_owned()
    } else {
        execution
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outcome = match (&execution.exit_code, &execution.reason) {
        (_, Some(reason)) => reason.clone(),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "-".to_owned(),
    };
    let body = format!(
        "Proc:      {proc}\nExecution: {name}\nStatus:    {status}\nArgs:      {args}\nStarted:   {started}\nFinished:  {finished}\nResult:    {outcome}\n\nLast lines of the log:\n{tail}\n",
        proc = execution.proc_name,
        name = execution.name,
        status = execution.status,
        started = time(execution.started_at),
        finished = time(execution.finished_at),
        tail = if tail.is_empty() {
            "(no output)".to_owned()
        } else {
            tail.join("\n")
        },
    );
    let mut builder = Mail::builder().from(from.clone()).subject(format!(
        "[Proctor] {} {}",
        execution.proc_name, execution.status
    ));
    for address in to {
        builder = builder.to(address.clone());
    }
    builder.body(body).map_err(|e| e.to_string())
}

/// Sends the mail for a finished scheduled execution, in the background.
impl Handler<Notify> for Mailer {
    type Result = ();

    fn handle(&mut self, msg: Notify, _: &mut Context<Self>) {
        let Some(transport) = self.transport.clone() else {
            tracing::debug!(execution = %msg.execution.name, "mail is not configured (PROCTOR_MAIL_SERVER_HOST); no notification sent");
            return;
        };
        let (schedules, logs, from, retry) = (
            self.schedules.clone(),
            self.logs.clone(),
            self.from.clone(),
            self.retry,
        );
        actix::spawn(async move {
            let execution = msg.execution;
            let Some(schedule_id) = execution.schedule_id.clone() else {
                return;
            };
            let schedule = match schedules.get(&schedule_id).await {
                Ok(Some(schedule)) => schedule,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(execution = %execution.name, error = %e, "cannot read the schedule to mail about");
                    return;
                }
            };
            let to: Vec<Mailbox> = schedule
                .emails()
                .iter()
                .filter_map(|e| e.parse().ok())
                .collect();
            if to.is_empty() {
                return;
            }
            let last_seq = logs.last_seq(&execution.id).await.unwrap_or(0);
            let tail: Vec<String> = logs
                .read(&execution.id, (last_seq - TAIL_LINES).max(0), TAIL_LINES)
                .await
                .map(|lines| lines.into_iter().map(|l| l.line).collect())
                .unwrap_or_default();
            let mail = match compose(&from, &to, &execution, &tail) {
                Ok(mail) => mail,
                Err(e) => {
                    tracing::error!(execution = %execution.name, error = %e, "cannot build the notification mail");
                    return;
                }
            };
            let send = || async { transport.send(mail.clone()).await };
            let sent = send
                .retry(retry)
                .when(|e: &lettre::transport::smtp::Error| e.is_transient() || e.is_timeout() || e.to_string().contains("connection"))
                .notify(|e, after| tracing::warn!(execution = %execution.name, error = %e, ?after, "mail not sent yet; retrying"))
                .await;
            match sent {
                Ok(_) => {
                    metrics::counter!(crate::telemetry::names::MAILS, "result" => "sent")
                        .increment(1);
                    tracing::info!(execution = %execution.name, recipients = to.len(), "notification mailed");
                }
                Err(e) => {
                    metrics::counter!(crate::telemetry::names::MAILS, "result" => "failed")
                        .increment(1);
                    tracing::error!(execution = %execution.name, error = %e, "notification mail failed");
                    crate::telemetry::report(
                        &format!("notification mail for {} failed: {e}", execution.name),
                        &[
                            ("execution", &execution.name),
                            ("proc", &execution.proc_name),
                            ("user", &execution.user_email),
                        ],
                    );
                }
            }
        });
    }
}
