//! `proctor`, the command-line client: the command tree and [`run`].
//!
//! Each command group has its file: [`procs`] (list, describe, register),
//! [`executions`] (execute, status, logs, cancel, the history) with [`follow`] (a
//! run's log to its end), [`schedules`], and [`config`] (`~/.proctor/proctor.yaml`).
//! [`client`] speaks to proctord, [`output`] prints tables, details and JSON, and
//! [`error`] holds the exit codes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

pub mod audit;
pub mod client;
pub mod config;
pub mod error;
pub mod executions;
pub mod follow;
pub mod output;
pub mod procs;
pub mod schedules;

use client::{CLIENT_VERSION, Client};
use config::{Config, Overrides};
use error::{CliError, Exit};
use output::Format;

const ABOUT: &str = "Proctor's command-line client: list and describe procs, run one and watch its \
log live, check on runs, and manage schedules.";

const CONFIG_HELP: &str = "Configuration: ~/.proctor/proctor.yaml (another folder with \
PROCTOR_CONFIG_HOME) with the keys PROCTOR_HOST (host:port) or PROCTOR_URL (http:// or https://), \
EMAIL_ID, ACCESS_TOKEN and CONNECTION_TIMEOUT_SECS; environment variables of the same names \
override the file, and --host, --email, --token and --timeout override both.";

#[derive(Debug, Parser)]
#[command(
    name = "proctor",
    version,
    about = ABOUT,
    after_help = after_help(),
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

fn after_help() -> String {
    format!("{CONFIG_HELP}\n\n{}", Exit::help_table())
}

/// Flags every command takes.
#[derive(Debug, Args)]
struct Global {
    /// proctord's address: host:port or an http(s):// URL [overrides PROCTOR_URL, PROCTOR_HOST]
    #[arg(long, global = true, value_name = "HOST|URL")]
    host: Option<String>,
    /// Your e-mail address [overrides EMAIL_ID]
    #[arg(long, global = true, value_name = "EMAIL")]
    email: Option<String>,
    /// Your access token [overrides ACCESS_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Seconds to wait for proctord to answer [overrides CONNECTION_TIMEOUT_SECS; default 10]
    #[arg(long, global = true, value_name = "SECS")]
    timeout: Option<u64>,
    /// What to print: tables for people, or JSON for scripts
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The procs you may run, with their descriptions
    List,
    /// A proc: what it does, its args and secrets, who may run it, who made it
    Describe {
        /// The proc's name
        proc: String,
    },
    /// Run a proc: show a spinner until it starts, stream its log live, print how it
    /// ended, and exit with the code of its final status
    #[command(
        after_help = "Ctrl-C asks whether to cancel the run or detach from it \
(without a terminal it detaches). Log lines go to stdout; progress and the final status to stderr."
    )]
    Execute {
        /// The proc's name
        proc: String,
        /// Its args
        #[arg(value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Args from a YAML file of KEY: value (KEY=VALUE arguments win)
        #[arg(short, long = "file", value_name = "ARGS.yaml")]
        file: Option<PathBuf>,
        /// Print the execution's name and return at once
        #[arg(short, long)]
        detach: bool,
    },
    /// An execution's status, exit code, reason and times
    Status {
        /// The execution's name (what `execute` printed)
        name: String,
    },
    /// An execution's log; with --follow, until it ends (exiting with its status's code)
    Logs {
        /// The execution's name
        name: String,
        /// Stream new lines until the run ends
        #[arg(short = 'F', long)]
        follow: bool,
    },
    /// Cancel a running execution
    Cancel {
        /// The execution's name
        name: String,
    },
    /// Past and current executions, newest first
    Executions {
        /// Only this proc's
        #[arg(long)]
        proc: Option<String>,
        /// Only those with this status (SUCCEEDED, FAILED, RUNNING, ...)
        #[arg(long)]
        status: Option<String>,
        /// How many (1-500)
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Skip this many (for the next page)
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Run a proc on a cron schedule (`proctor schedule PROC KEY=VALUE ... --time CRON
    /// --tags T --group G`), or list, describe, remove, enable and disable schedules
    Schedule(Box<ScheduleArgs>),
    /// Register or update procs from metadata JSON files (admins)
    Register {
        /// Files of one proc's metadata or an array of them
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Only check the metadata with proctord; store nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Write an args file for a proc: every arg it takes with its description, ready
    /// to fill in and pass to `execute -f`
    Template {
        /// The proc's name
        proc: String,
        /// Where to write it (`-`: standard output)
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Print a completion script for a shell (e.g. `proctor completion bash >
    /// /etc/bash_completion.d/proctor`)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Set or show this client's configuration (`proctor config KEY=VALUE ...` sets too)
    #[command(args_conflicts_with_subcommands = true)]
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
        /// Settings to write, as `proctor config set` takes them
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// This client's version and proctord's; warns when proctord wants a newer client
    Version,
    /// Who changed what, newest first: procs, secrets (names only), schedules, users,
    /// tokens, sign-ins and cancelled runs (admins)
    Audit(audit::AuditQuery),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ScheduleArgs {
    #[command(subcommand)]
    action: Option<ScheduleAction>,
    #[command(flatten)]
    create: ScheduleCreate,
}

impl ScheduleArgs {
    /// Usage errors, found before any configuration is read.
    fn check(&self) -> Result<(), CliError> {
        match &self.action {
            None => self.create.proc_and_time().map(|_| ()),
            Some(ScheduleAction::Create(create)) => create.proc_and_time().map(|_| ()),
            Some(_) => Ok(()),
        }
    }
}

impl ScheduleCreate {
    fn proc_and_time(&self) -> Result<(&str, &str), CliError> {
        let Some(proc) = self.proc.as_deref() else {
            return Err(CliError::usage(
                "give a proc to schedule, or one of list, describe, remove, enable, disable",
            )
            .with_hint("`proctor schedule --help` shows how"));
        };
        let Some(time) = self.time.as_deref() else {
            return Err(
                CliError::usage("--time CRON is required to schedule a proc").with_hint(
                    "e.g. --time '0 0 9 * * 1-5' (seconds first), --time '@daily' or --time '@every 1h'",
                ),
            );
        };
        Ok((proc, time))
    }
}

#[derive(Debug, Subcommand)]
enum ScheduleAction {
    /// Schedule a proc (the same as `proctor schedule PROC ...`)
    Create(ScheduleCreate),
    /// The schedules you may see
    List,
    /// One schedule
    Describe { id: String },
    /// Stop and delete a schedule
    Remove { id: String },
    /// Resume a paused schedule
    Enable { id: String },
    /// Pause a schedule
    Disable { id: String },
    /// Run a schedule once now, with its args (no fire: the next one happens as due)
    Run { id: String },
    /// Run the past fires of a range that never ran, once each (at most 1000)
    Backfill {
        id: String,
        /// The start of the range, included (RFC 3339: 2026-12-01T00:00:00Z)
        #[arg(long, value_name = "TIME")]
        from: String,
        /// The end of the range, excluded (RFC 3339; default now)
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ScheduleCreate {
    /// The proc to run
    proc: Option<String>,
    /// Its args
    #[arg(value_name = "KEY=VALUE")]
    args: Vec<String>,
    /// Args from a YAML file of KEY: value (KEY=VALUE arguments win)
    #[arg(short, long = "file", value_name = "ARGS.yaml")]
    file: Option<PathBuf>,
    /// When: cron with seconds first (`0 0 9 * * 1-5`), five fields, `@daily` or `@every 1h`
    #[arg(long, value_name = "CRON")]
    time: Option<String>,
    /// Who gets a mail after each run, comma-separated
    #[arg(long, value_name = "EMAILS", default_value = "")]
    notify: String,
    /// Tags, comma-separated (at least one)
    #[arg(long, value_name = "TAGS", default_value = "")]
    tags: String,
    /// The group the schedule belongs to
    #[arg(long, value_name = "GROUP", default_value = "")]
    group: String,
    /// The IANA time zone the cron is read in (default UTC)
    #[arg(long, value_name = "TZ")]
    time_zone: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Write settings to proctor.yaml (an empty VALUE removes the key)
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// The settings in force and where each comes from (the token masked)
    Show,
}

/// Runs the command line and returns the process's exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            CliError::usage(format!("cannot start: {e}")).print();
            return Exit::Usage.code();
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // A thread still reading an answer from stdin must not hold up the exit.
    runtime.shutdown_background();
    match result {
        Ok(exit) => exit.code(),
        Err(error) => {
            error.print();
            error.exit.code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<Exit, CliError> {
    let overrides = Overrides {
        host: cli.global.host,
        email: cli.global.email,
        token: cli.global.token,
        timeout: cli.global.timeout,
    };
    let format = cli.global.output;
    if let Command::Config { action, pairs } = &cli.command {
        return match action {
            Some(ConfigAction::Set { pairs }) => config::set(pairs).map(|()| Exit::Success),
            None if !pairs.is_empty() => config::set(pairs).map(|()| Exit::Success),
            Some(ConfigAction::Show) | None => {
                config::show(&Config::load(&overrides)?, format);
                Ok(Exit::Success)
            }
        };
    }
    if let Command::Completion { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "proctor", &mut std::io::stdout());
        return Ok(Exit::Success);
    }
    if let Command::Schedule(args) = &cli.command {
        args.check()?;
    }
    let config = Config::load(&overrides)?;
    if let Command::Version = cli.command {
        return version(&config, format).await;
    }
    let client = Client::new(&config)?;
    let done = |result: Result<(), CliError>| result.map(|()| Exit::Success);
    match cli.command {
        Command::List => done(procs::list(&client, format).await),
        Command::Describe { proc } => done(procs::describe(&client, &proc, format).await),
        Command::Register { files, dry_run } => {
            done(procs::register(&client, &files, dry_run, format).await)
        }
        Command::Template { proc, file, force } => {
            done(procs::template(&client, &proc, &file, force).await)
        }
        Command::Execute {
            proc,
            args,
            file,
            detach,
        } => {
            let request = executions::ExecuteRequest {
                proc: &proc,
                pairs: &args,
                file: file.as_deref(),
                detach,
            };
            executions::execute(&client, request, format).await
        }
        Command::Status { name } => done(executions::status(&client, &name, format).await),
        Command::Logs { name, follow } => executions::logs(&client, &name, follow).await,
        Command::Cancel { name } => done(executions::cancel(&client, &name, format).await),
        Command::Executions {
            proc,
            status,
            limit,
            offset,
        } => {
            let query = executions::HistoryQuery {
                proc,
                status,
                limit,
                offset,
            };
            done(executions::history(&client, query, format).await)
        }
        Command::Schedule(args) => {
            let ScheduleArgs { action, create } = *args;
            done(schedule(&client, action, create, format).await)
        }
        Command::Audit(query) => done(audit::list(&client, query, format).await),
        Command::Config { .. } | Command::Version | Command::Completion { .. } => {
            unreachable!("handled above")
        }
    }
}

async fn schedule(
    client: &Client,
    action: Option<ScheduleAction>,
    create: ScheduleCreate,
    format: Format,
) -> Result<(), CliError> {
    let create = match action {
        None => create,
        Some(ScheduleAction::Create(create)) => create,
        Some(ScheduleAction::List) => return schedules::list(client, format).await,
        Some(ScheduleAction::Describe { id }) => {
            return schedules::describe(client, &id, format).await;
        }
        Some(ScheduleAction::Remove { id }) => return schedules::remove(client, &id, format).await,
        Some(ScheduleAction::Enable { id }) => {
            return schedules::set_enabled(client, &id, true, format).await;
        }
        Some(ScheduleAction::Disable { id }) => {
            return schedules::set_enabled(client, &id, false, format).await;
        }
        Some(ScheduleAction::Run { id }) => return schedules::run_now(client, &id, format).await,
        Some(ScheduleAction::Backfill { id, from, to }) => {
            return schedules::backfill(client, &id, &from, to.as_deref(), format).await;
        }
    };
    let (proc, time) = create.proc_and_time()?;
    let schedule = schedules::NewSchedule {
        proc,
        pairs: &create.args,
        file: create.file.as_deref(),
        time,
        notify: &create.notify,
        tags: &create.tags,
        group: &create.group,
        time_zone: create.time_zone.as_deref(),
    };
    schedules::create(client, schedule, format).await
}

/// `proctor version`: this client's version, proctord's, and a warning when proctord
/// wants a newer client.
async fn version(config: &Config, format: Format) -> Result<Exit, CliError> {
    if format == Format::Table {
        output::line(&format!("proctor  {CLIENT_VERSION}"));
    }
    let client = Client::new(config)?;
    let server: serde_json::Value = client
        .get_json("/version", "this proctord is older than GET /version")
        .await?;
    let server_version = output::text(&server, "version").to_owned();
    let minimum = output::text(&server, "min_client_version").to_owned();
    let outdated = match (
        crate::config::parse_version(CLIENT_VERSION),
        crate::config::parse_version(&minimum),
    ) {
        (Some(mine), Some(minimum)) => mine < minimum,
        _ => false,
    };
    if format == Format::Json {
        output::json(&json!({
            "client": CLIENT_VERSION,
            "server": server_version,
            "server_url": client.base(),
            "min_client_version": server["min_client_version"],
            "outdated": outdated,
        }));
    } else {
        output::line(&format!("proctord {server_version}  ({})", client.base()));
    }
    if outdated {
        error::warn(&format!(
            "Your Proctor client is using an outdated version: {CLIENT_VERSION} . Please upgrade to latest client (at least {minimum})"
        ));
    }
    Ok(Exit::Success)
}
