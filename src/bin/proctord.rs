//! `proctord`: the server (`serve`, the default) and its admin commands.

use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};

use proctor::app::Application;
use proctor::config::{ExecutorKind, Settings};
use proctor::model::Email;
use proctor::store::{Db, UserStore};

/// Proctor's server. Settings come from config/default.toml and PROCTOR_* variables.
#[derive(Parser)]
#[command(name = "proctord", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the database migrations (idempotent).
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a new random PROCTOR_SECRETS_KEY.
    Keygen,
    /// Remove, now, the runs and log lines older than their retention (the server
    /// does it in the background every PROCTOR_PURGE_INTERVAL_MINUTES); prints the
    /// rows removed per table.
    Purge {
        /// Count what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or set an existing user's groups and admin flag.
    Add {
        email: String,
        /// A group the user belongs to (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// May register procs and set secrets.
        #[arg(long)]
        admin: bool,
    },
    /// List users and their groups.
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user and print it (shown only this once).
    Create { email: String },
    /// Revoke every token of a user.
    Revoke { email: String },
}

fn main() -> ExitCode {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Keygen = command {
        // Needs no settings: it is how a first PROCTOR_SECRETS_KEY is made.
        print_new_key();
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("proctord: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve = command
        && settings.executor == ExecutorKind::Local
    {
        // Forked now, while proctord is still one thread: Sentry, tracing and the
        // runtime start theirs just below.
        if let Err(e) = proctor::executor::guard::start() {
            eprintln!("proctord: cannot start the guard process of local runs: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _sentry = proctor::telemetry::init_sentry(&settings);
    proctor::telemetry::init_tracing(&settings);
    let result = actix_web::rt::System::new().block_on(run(command, settings));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proctord: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let db = Db::open(&settings.database)?;
            let applied = db.migrate().await.context("migrating the database")?;
            if applied.is_empty() {
                println!("the database is up to date");
            } else {
                println!(
                    "applied {} migration(s): {}",
                    applied.len(),
                    applied.join(", ")
                );
            }
        }
        Command::User(command) => {
            let users = UserStore::new(Db::ready(&settings.database).await?);
            match command {
                UserCommand::Add {
                    email,
                    groups,
                    admin,
                } => {
                    let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
                    if let Some(bad) = groups
                        .iter()
                        .find(|g| g.trim().is_empty() || g.contains(char::is_whitespace))
                    {
                        anyhow::bail!("{bad:?} is not a group name (non-empty, no spaces)");
                    }
                    let user = users.upsert(&email, groups, admin).await?;
                    println!(
                        "user {} saved{} (groups: {})",
                        user.email,
                        if user.is_admin { " as an admin" } else { "" },
                        if user.groups.is_empty() {
                            "none".into()
                        } else {
                            user.groups.join(", ")
                        }
                    );
                }
                UserCommand::List => {
                    for user in users.list().await? {
                        println!(
                            "{}\t{}\t{}",
                            user.email,
                            if user.is_admin { "admin" } else { "user" },
                            user.groups.join(",")
                        );
                    }
                }
            }
        }
        Command::Token(command) => {
            let users = UserStore::new(Db::ready(&settings.database).await?);
            match command {
                TokenCommand::Create { email } => {
                    let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
                    let token = users.create_token(&email).await.map_err(|e| match e {
                        proctor::store::StoreError::NotFound => anyhow::anyhow!(
                            "no user {email}: add one first with `proctord user add {email}`"
                        ),
                        other => other.into(),
                    })?;
                    eprintln!(
                        "token for {email} (shown only once; send it as the Access-Token header):"
                    );
                    println!("{token}");
                }
                TokenCommand::Revoke { email } => {
                    let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
                    let revoked = users.revoke_tokens(&email).await?;
                    println!("revoked {revoked} token(s) of {email}");
                }
            }
        }
        Command::Purge { dry_run } => {
            let (stores, _) = proctor::store::Stores::open(&settings).await?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let removed = proctor::actors::purger::count_removed();
            let Some(report) = stores.purge.run(dry_run, stop, removed).await? else {
                anyhow::bail!(
                    "another proctord is purging this database now; nothing was removed (try again when it is done)"
                );
            };
            print!("{}", purge_summary(&settings, &report));
        }
        Command::Keygen => print_new_key(),
    }
    Ok(())
}

/// What `proctord purge` prints: the retention in effect, then one line per table.
fn purge_summary(settings: &Settings, report: &proctor::store::PurgeReport) -> String {
    let days = |d: Option<u32>, never: &str| d.map_or(never.to_owned(), |d| format!("{d} days"));
    let retention = &settings.retention;
    let mut text = format!(
        "retention: runs {}, log lines {} (a proc's metadata may set its own)\n",
        days(retention.execution_days, "for ever"),
        days(retention.log_days, "as long as their run"),
    );
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for table in ["executions", "execution_logs", "schedule_fires"]
        .into_iter()
        .chain(report.removed.keys().copied())
        .collect::<std::collections::BTreeSet<_>>()
    {
        text.push_str(&format!(
            "{verb} {} row(s) of {table}\n",
            report.rows(table)
        ));
    }
    text.push_str(&format!(
        "runs keeping their record without their lines: {}{}\n",
        report.runs_without_lines,
        if report.dry_run {
            " (dry run: nothing was removed)"
        } else {
            ""
        }
    ));
    text
}

fn print_new_key() {
    let key: [u8; 32] = rand::random();
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
}
