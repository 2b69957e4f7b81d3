//! `proctor schedule PROC KEY=VALUE ... --time CRON ...` and `proctor schedule
//! list | describe | remove | enable | disable | run | backfill`.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::Client;
use super::error::CliError;
use super::executions::collect_args;
use super::output::{self, Details, Format, text};
use super::procs::segment;

const NO_SCHEDULE_HINT: &str = "`proctor schedule list` shows the schedules you may see";

/// What `proctor schedule PROC ...` creates.
pub struct NewSchedule<'a> {
    pub proc: &'a str,
    pub pairs: &'a [String],
    pub file: Option<&'a Path>,
    pub time: &'a str,
    pub notify: &'a str,
    pub tags: &'a str,
    pub group: &'a str,
    pub time_zone: Option<&'a str>,
}

/// `proctor schedule PROC ...`: 201 with the stored schedule.
pub async fn create(
    client: &Client,
    schedule: NewSchedule<'_>,
    format: Format,
) -> Result<(), CliError> {
    let args = collect_args(schedule.pairs, schedule.file)?;
    let mut body = json!({
        "name": schedule.proc,
        "args": args,
        "time": schedule.time,
        "notification_emails": schedule.notify,
        "tags": schedule.tags,
        "group_name": schedule.group,
    });
    if let Some(zone) = schedule.time_zone {
        body["time_zone"] = json!(zone);
    }
    let created: Value = client
        .post_json(
            "/jobs/schedule",
            &body,
            "`proctor list` shows the procs you may use",
        )
        .await?;
    if format == Format::Json {
        output::json(&created);
        return Ok(());
    }
    output::line(&format!(
        "Scheduled proc {} with id {}",
        text(&created, "name"),
        text(&created, "id")
    ));
    let next = output::time(&created["next_fire_at"]);
    if !next.is_empty() {
        output::line(&format!("Next run at {next}"));
    }
    Ok(())
}

/// `proctor schedule list`: the schedules the caller may see.
pub async fn list(client: &Client, format: Format) -> Result<(), CliError> {
    let response = client
        .send(
            client.request(Method::GET, "/jobs/schedule"),
            NO_SCHEDULE_HINT,
        )
        .await?;
    let schedules: Vec<Value> = if response.status() == StatusCode::NO_CONTENT {
        Vec::new()
    } else {
        client.read_json(response).await?
    };
    if format == Format::Json {
        output::json(&schedules);
        return Ok(());
    }
    if schedules.is_empty() {
        output::line("No scheduled jobs found");
        return Ok(());
    }
    let mut table = output::table(&[
        "ID",
        "PROC",
        "TIME",
        "TIME ZONE",
        "ENABLED",
        "NEXT RUN",
        "ARGS",
        "TAGS",
    ]);
    for schedule in &schedules {
        table.add_row(vec![
            text(schedule, "id").to_owned(),
            text(schedule, "name").to_owned(),
            text(schedule, "time").to_owned(),
            text(schedule, "time_zone").to_owned(),
            enabled(schedule).to_owned(),
            output::time(&schedule["next_fire_at"]),
            output::args(&schedule["args"]),
            text(schedule, "tags").to_owned(),
        ]);
    }
    output::print_table(table);
    Ok(())
}

fn enabled(schedule: &Value) -> &'static str {
    if schedule["enabled"].as_bool().unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
}

/// `proctor schedule describe ID`.
pub async fn describe(client: &Client, id: &str, format: Format) -> Result<(), CliError> {
    let schedule: Value = client
        .get_json(&format!("/jobs/schedule/{}", segment(id)), NO_SCHEDULE_HINT)
        .await?;
    if format == Format::Json {
        output::json(&schedule);
        return Ok(());
    }
    print_schedule(&schedule);
    Ok(())
}

fn print_schedule(schedule: &Value) {
    let mut details = Details::new();
    details
        .row("Id", text(schedule, "id"))
        .row("Proc", text(schedule, "name"))
        .row("Args", output::args(&schedule["args"]))
        .row("Time", text(schedule, "time"))
        .row("Time zone", text(schedule, "time_zone"))
        .row("Enabled", enabled(schedule))
        .row_if("Next run", output::time(&schedule["next_fire_at"]))
        .row_if("Notify", text(schedule, "notification_emails"))
        .row("Tags", text(schedule, "tags"))
        .row("Group", text(schedule, "group_name"))
        .row_if("Concurrency", text(schedule, "concurrency_policy"))
        .row("Created by", text(schedule, "user_email"))
        .row("Created", output::time(&schedule["created_at"]));
    details.print();
}

/// `proctor schedule remove ID`.
pub async fn remove(client: &Client, id: &str, format: Format) -> Result<(), CliError> {
    let path = format!("/jobs/schedule/{}", segment(id));
    let response = client
        .send(client.request(Method::DELETE, &path), NO_SCHEDULE_HINT)
        .await?;
    let answer: Value = client.read_json(response).await?;
    match format {
        Format::Json => output::json(&answer),
        Format::Table => output::line(&format!("Removed schedule {}", text(&answer, "id"))),
    }
    Ok(())
}

/// `proctor schedule enable ID` and `disable ID`.
pub async fn set_enabled(
    client: &Client,
    id: &str,
    enable: bool,
    format: Format,
) -> Result<(), CliError> {
    let action = if enable { "enable" } else { "disable" };
    let schedule: Value = client
        .post_json(
            &format!("/jobs/schedule/{}/{action}", segment(id)),
            &json!({}),
            NO_SCHEDULE_HINT,
        )
        .await?;
    if format == Format::Json {
        output::json(&schedule);
        return Ok(());
    }
    let mut line = format!("Schedule {} {action}d", text(&schedule, "id"));
    let next = output::time(&schedule["next_fire_at"]);
    if !next.is_empty() {
        line.push_str(&format!("; next run at {next}"));
    }
    output::line(&line);
    Ok(())
}

/// `proctor schedule run ID`: prints the name of the run started.
pub async fn run_now(client: &Client, id: &str, format: Format) -> Result<(), CliError> {
    let execution: Value = client
        .post_json(
            &format!("/jobs/schedule/{}/run", segment(id)),
            &json!({}),
            NO_SCHEDULE_HINT,
        )
        .await?;
    match format {
        Format::Json => output::json(&execution),
        Format::Table => output::line(text(&execution, "name")),
    }
    Ok(())
}

/// How long a backfill may take to answer (it starts up to 1000 runs, one after
/// another), whatever CONNECTION_TIMEOUT_SECS says; connecting is still bounded by it.
const BACKFILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// `proctor schedule backfill ID --from TIME [--to TIME]`: the fires started, skipped
/// (they had run) and failed.
pub async fn backfill(
    client: &Client,
    id: &str,
    from: &str,
    to: Option<&str>,
    format: Format,
) -> Result<(), CliError> {
    let to = to
        .map(str::to_owned)
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let request = client
        .request(
            Method::POST,
            &format!("/jobs/schedule/{}/backfill", segment(id)),
        )
        .json(&json!({"from": from, "to": to}))
        .timeout(BACKFILL_TIMEOUT);
    let response = client.send(request, NO_SCHEDULE_HINT).await?;
    let report: Value = client.read_json(response).await?;
    if format == Format::Json {
        output::json(&report);
        return Ok(());
    }
    let count = |key: &str| report[key].as_array().map_or(0, Vec::len);
    output::line(&format!(
        "Backfilled schedule {} from {} to {}: {} fires, {} started, {} skipped, {} failed",
        text(&report, "schedule_id"),
        output::time(&report["from"]),
        output::time(&report["to"]),
        report["fires"].as_u64().unwrap_or(0),
        count("started"),
        count("skipped"),
        count("failed"),
    ));
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for fire in report["started"].as_array().into_iter().flatten() {
        rows.push((
            output::time(&fire["fire_at"]),
            "started".to_owned(),
            text(fire, "execution").to_owned(),
        ));
    }
    for key in ["skipped", "failed"] {
        for fire in report[key].as_array().into_iter().flatten() {
            rows.push((
                output::time(&fire["fire_at"]),
                format!("{key}: {}", text(fire, "reason")),
                String::new(),
            ));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort();
    let mut table = output::table(&["FIRE AT", "RESULT", "EXECUTION"]);
    for (at, result, execution) in rows {
        table.add_row(vec![at, result, execution]);
    }
    output::print_table(table);
    Ok(())
}
