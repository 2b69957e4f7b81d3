//! `proctor audit`: who changed what, newest first (admins).

use reqwest::Method;
use serde_json::Value;

use super::client::Client;
use super::error::CliError;
use super::output::{self, Format, text};

/// What `proctor audit` filters on.
#[derive(Debug, clap::Args)]
pub struct AuditQuery {
    /// Only changes by this actor (an e-mail, or cli:USER for proctord commands)
    #[arg(long)]
    pub actor: Option<String>,
    /// Only changes to this kind of object
    #[arg(long, value_parser = ["proc", "secret", "schedule", "user", "token", "session", "execution"])]
    pub kind: Option<String>,
    /// Only changes to this object (a proc or execution name, a schedule id, an e-mail)
    #[arg(long)]
    pub object: Option<String>,
    /// Only this action (proc.updated, schedule.disabled, ...)
    #[arg(long)]
    pub action: Option<String>,
    /// Only changes at or after this RFC 3339 time
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only changes before this RFC 3339 time
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only changes older than this id (for the next page)
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// How many (1-500)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
}

pub async fn list(client: &Client, query: AuditQuery, format: Format) -> Result<(), CliError> {
    let mut params: Vec<(&str, String)> = vec![("limit", query.limit.to_string())];
    for (key, value) in [
        ("actor", query.actor),
        ("kind", query.kind),
        ("object", query.object),
        ("action", query.action),
        ("since", query.since),
        ("until", query.until),
        ("before", query.before.map(|b| b.to_string())),
    ] {
        if let Some(value) = value {
            params.push((key, value));
        }
    }
    let request = client.request(Method::GET, "/api/v1/audit").query(&params);
    let response = client
        .send(
            request,
            "this proctord has no audit log (it is older than GET /api/v1/audit)",
        )
        .await?;
    let page: Value = client.read_json(response).await?;
    let events = page["events"].as_array().cloned().unwrap_or_default();
    if format == Format::Json {
        output::json(&events);
        return Ok(());
    }
    if events.is_empty() {
        output::line("No changes found");
        return Ok(());
    }
    let mut table = output::table(&[
        "ID", "TIME", "ACTOR", "ADDRESS", "ACTION", "OBJECT", "DETAILS",
    ]);
    for event in &events {
        table.add_row(vec![
            event["id"].to_string(),
            output::time(&event["at"]),
            text(event, "actor").to_owned(),
            event["address"].as_str().unwrap_or("-").to_owned(),
            text(event, "action").to_owned(),
            text(event, "object").to_owned(),
            crate::model::ids::truncate(&event["details"].to_string(), 120),
        ]);
    }
    output::print_table(table);
    if let Some(next) = page["next_before"].as_i64() {
        anstream::eprintln!("More: proctor audit --before {next}");
    }
    Ok(())
}
