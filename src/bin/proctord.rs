//! `proctord`: the server (`serve`, the default) and its admin commands.

use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};

use proctor::app::Application;
use proctor::config::{DatabaseSettings, ExecutorKind, Settings};
use proctor::model::Email;
use proctor::store::{AuditStore, Db, NewEvent, StoreError, UserStore};

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
    /// Create an API token for a user and print it (shown only this once). A user may
    /// hold several, each with its own name, so one can be replaced without downtime.
    Create {
        email: String,
        /// The token's name, unique for the user (letters, digits, '.', '_', '-');
        /// made up when not given.
        #[arg(long)]
        name: Option<String>,
        /// How long it is valid: 90d, 12h, 2w, 1y ... (forever when not given).
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires_in: Option<chrono::Duration>,
    },
    /// A user's tokens: names, when made, when they expire, when last used.
    List { email: String },
    /// Revoke one token of a user (--name), or every one of them (--all).
    Revoke {
        email: String,
        /// The token to revoke.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Revoke every token of the user.
        #[arg(long)]
        all: bool,
    },
}

/// `90d`, `12h`, `2w`: a token's lifetime, from a minute to ten years.
fn parse_lifetime(text: &str) -> Result<chrono::Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("expected a duration such as 90d, 12h or 2w: {e}"))?;
    if duration < std::time::Duration::from_secs(60)
        || duration > std::time::Duration::from_secs(10 * 366 * 86_400)
    {
        return Err("must be between a minute and ten years".into());
    }
    chrono::Duration::from_std(duration).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    proctor::store::init_libpq_tls();
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
    if !matches!(command, Command::Serve | Command::Purge { .. }) {
        // Admin commands need the database settings only (no secrets key, no Redis).
        let database = match Settings::load_database() {
            Ok(database) => database,
            Err(e) => {
                eprintln!("proctord: {e}");
                return ExitCode::from(2);
            }
        };
        let result = actix_web::rt::System::new().block_on(admin(command, database));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("proctord: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("proctord: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(command, Command::Serve) && settings.executor == ExecutorKind::Local {
        // Forked now, while proctord is still one thread: Sentry, tracing and the
        // runtime start theirs just below.
        if let Err(e) = proctor::executor::guard::start() {
            eprintln!("proctord: cannot start the guard process of local runs: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _sentry = proctor::telemetry::init_sentry(&settings);
    proctor::telemetry::init_tracing(&settings);
    let result = actix_web::rt::System::new().block_on(async move {
        match command {
            Command::Purge { dry_run } => purge(settings, dry_run).await,
            _ => serve(settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proctord: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    Ok(())
}

/// `proctord purge`: one whole pass now (it reads the procs' own retention, so it
/// needs the stores, and so every setting).
async fn purge(settings: Settings, dry_run: bool) -> anyhow::Result<()> {
    let (stores, _) = proctor::store::Stores::open(&settings).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let removed = proctor::actors::purger::count_removed();
    let Some(report) = stores.purge.run(dry_run, stop, removed).await? else {
        anyhow::bail!(
            "another proctord is purging this database now; nothing was removed (try again when it is done)"
        );
    };
    print!("{}", purge_summary(&settings, &report));
    Ok(())
}

/// The commands that need only the database.
async fn admin(command: Command, database: DatabaseSettings) -> anyhow::Result<()> {
    match command {
        Command::Serve | Command::Keygen => unreachable!("handled in main"),
        Command::Migrate => {
            let db = Db::open(&database)?;
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
            let db = Db::ready(&database).await?;
            let users = UserStore::new(db.clone());
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
                    let before = users
                        .list()
                        .await?
                        .into_iter()
                        .find(|u| u.email == email.as_str());
                    let user = users.upsert(&email, groups, admin).await?;
                    let details = serde_json::json!({
                        "groups": user.groups,
                        "is_admin": user.is_admin,
                        "before": before.map(|b| serde_json::json!({"groups": b.groups, "is_admin": b.is_admin})),
                    });
                    audit(&db, "user.saved", "user", &user.email, details).await?;
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
            let db = Db::ready(&database).await?;
            let users = UserStore::new(db.clone());
            match command {
                TokenCommand::Create {
                    email,
                    name,
                    expires_in,
                } => {
                    let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
                    let expires_at = expires_in.map(|d| proctor::store::now() + d);
                    let (token, info) = users
                        .create_token(&email, name.as_deref(), expires_at)
                        .await
                        .map_err(no_user(&email))?;
                    audit(
                        &db,
                        "token.created",
                        "token",
                        email.as_str(),
                        serde_json::json!({"name": info.name, "expires_at": info.expires_at.map(utc)}),
                    )
                    .await?;
                    eprintln!(
                        "token {:?} for {email}{} (shown only once; send it as the Access-Token header):",
                        info.name,
                        match info.expires_at {
                            Some(at) => format!(", valid until {}", utc(at)),
                            None => String::new(),
                        }
                    );
                    println!("{token}");
                }
                TokenCommand::List { email } => {
                    let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
                    let tokens = users.tokens(&email).await.map_err(no_user(&email))?;
                    if tokens.is_empty() {
                        println!("{email} has no tokens");
                    }
                    let never = || "-".to_owned();
                    for token in tokens {
                        println!(
                            "{}\tcreated {}\texpires {}\tlast used {}",
                            token.name,
                            utc(token.created_at),
                            token.expires_at.map(utc).unwrap_or_else(never),
                            token.last_used_at.map(utc).unwrap_or_else(never),
                        );
                    }
                }
                TokenCommand::Revoke { email, name, all } => {
                    let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
                    let name = if all { None } else { name };
                    let revoked = users.revoke_tokens(&email, name.as_deref()).await?;
                    if revoked == 0
                        && let Some(name) = &name
                    {
                        anyhow::bail!(
                            "{email} has no token named {name:?} (`proctord token list {email}` lists them)"
                        );
                    }
                    audit(
                        &db,
                        "token.revoked",
                        "token",
                        email.as_str(),
                        serde_json::json!({"name": name, "all": all, "revoked": revoked}),
                    )
                    .await?;
                    println!("revoked {revoked} token(s) of {email}");
                }
            }
        }
        Command::Purge { .. } => unreachable!("needs every setting: handled in main"),
    }
    Ok(())
}

/// The error for a store call about `email`, saying how to add a missing user.
fn no_user(email: &Email) -> impl Fn(StoreError) -> anyhow::Error + '_ {
    move |e| match e {
        StoreError::NotFound => {
            anyhow::anyhow!("no user {email}: add one first with `proctord user add {email}`")
        }
        other => anyhow::Error::from(other),
    }
}

/// A time as RFC 3339 UTC, to the second.
fn utc(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Records a change made from this command line in the audit log, by `cli:<unix user>`.
async fn audit(
    db: &Db,
    action: &str,
    kind: &'static str,
    object: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid-{}", process_uid()));
    AuditStore::new(db.clone())
        .record(NewEvent {
            actor: format!("cli:{user}"),
            address: None,
            action: action.to_owned(),
            kind,
            object: object.to_owned(),
            details,
        })
        .await
        .context("writing the audit record of this change")
}

/// This process's user id, read from /proc (no unsafe call needed).
fn process_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What `proctord purge` prints: the retention in effect, then one line per table.
fn purge_summary(settings: &Settings, report: &proctor::store::PurgeReport) -> String {
    let days = |d: Option<u32>, never: &str| d.map_or(never.to_owned(), |d| format!("{d} days"));
    let retention = &settings.retention;
    let mut text = format!(
        "retention: runs {}, log lines {} (a proc's metadata may set its own), audit records {}\n",
        days(retention.execution_days, "for ever"),
        days(retention.log_days, "as long as their run"),
        days(retention.audit_days, "for ever"),
    );
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for table in [
        "executions",
        "execution_logs",
        "schedule_fires",
        "audit_events",
    ]
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
