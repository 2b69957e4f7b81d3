//! `proctor execute`, `status`, `logs`, `cancel` and `executions` (the history).

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::error::{CliError, Exit};
use super::follow::{Ending, Follow, NO_RUN_HINT, read_stored};
use super::output::{self, Details, Format, text};
use super::procs::segment;

const NO_PROC_HINT: &str = "`proctor list` shows the procs you may use";

/// What `proctor execute` was asked to run.
pub struct ExecuteRequest<'a> {
    pub proc: &'a str,
    pub pairs: &'a [String],
    pub file: Option<&'a Path>,
    pub detach: bool,
}

/// `KEY=VALUE` pairs over the mapping of a YAML file (the pairs win).
pub fn collect_args(
    pairs: &[String],
    file: Option<&Path>,
) -> Result<BTreeMap<String, String>, CliError> {
    let mut args = BTreeMap::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
        let bad = |problem: String| {
            CliError::usage(format!("{}: {problem}", file.display()))
                .with_hint("an args file is a YAML mapping, e.g. `NAME: Ada`")
        };
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| bad(format!("not valid YAML: {e}")))?;
        let mapping = match value {
            serde_yaml_ng::Value::Mapping(mapping) => mapping,
            serde_yaml_ng::Value::Null => Default::default(),
            _ => return Err(bad("expected a mapping of KEY: value".into())),
        };
        for (key, value) in mapping {
            let key = key
                .as_str()
                .ok_or_else(|| bad("every key must be a name".into()))?
                .to_owned();
            let value = match value {
                serde_yaml_ng::Value::String(s) => s,
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                serde_yaml_ng::Value::Null => String::new(),
                _ => return Err(bad(format!("{key} must be a single value"))),
            };
            args.insert(key, value);
        }
    }
    for pair in pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                args.insert(key.trim().to_owned(), value.to_owned());
            }
            _ => {
                return Err(CliError::usage(format!(
                    "Incorrect variable format: {pair}. Correct format: KEY=VALUE"
                ))
                .with_hint("`proctor describe PROC` lists the args a proc takes"));
            }
        }
    }
    Ok(args)
}

/// `proctor execute PROC KEY=VALUE ...`: submits, then follows the run to its end
/// (or, with `--detach`, prints its name and returns).
pub async fn execute(
    client: &Client,
    request: ExecuteRequest<'_>,
    format: Format,
) -> Result<Exit, CliError> {
    let args = collect_args(request.pairs, request.file)?;
    let submitted: Value = client
        .post_json(
            "/jobs/execute",
            &json!({"name": request.proc, "args": args}),
            NO_PROC_HINT,
        )
        .await?;
    let name = text(&submitted, "name").to_owned();
    let status = text(&submitted, "status").to_owned();
    if request.detach {
        match format {
            Format::Json => output::json(&submitted),
            Format::Table => output::line(&name),
        }
        return Ok(Exit::Success);
    }
    let shown_args = output::args(&json!(args));
    anstream::eprintln!(
        "Executing {}{} as {name}{}",
        request.proc,
        if shown_args.is_empty() {
            String::new()
        } else {
            format!(" with {shown_args}")
        },
        if super::follow::is_final(&status) {
            String::new()
        } else {
            "; Ctrl-C cancels or detaches".to_owned()
        }
    );
    if status == "QUEUED" {
        let ahead = submitted["queue_position"].as_i64().unwrap_or(0);
        anstream::eprintln!(
            "{} ({ahead} ahead): proc {} runs at most its max_concurrent_runs at once; this run starts when a slot frees.",
            output::status("QUEUED"),
            request.proc
        );
    }
    // Even a run that ended before the answer came has a log to show: the stream
    // replays it, then closes with the final status.
    let ending = Follow {
        client,
        name: &name,
        lines_to_stderr: format == Format::Json,
        interruptible: true,
    }
    .run()
    .await?;
    match ending {
        Ending::Finished(status) => Ok(report_end(client, &name, &status, format).await),
        Ending::Detached => {
            anstream::eprintln!("Detached from {name}: it keeps running.");
            anstream::eprintln!(
                "Reattach with `proctor logs {name} --follow`; stop it with `proctor cancel {name}`."
            );
            Ok(Exit::Detached)
        }
    }
}

/// Prints how a run ended (a line on stderr, or its record as JSON) and returns the
/// exit code of its status.
async fn report_end(client: &Client, name: &str, status: &str, format: Format) -> Exit {
    let record: Option<Value> = client
        .get_json(
            &format!("/api/v1/executions/{}", segment(name)),
            NO_RUN_HINT,
        )
        .await
        .ok();
    if format == Format::Json {
        output::json(&record.unwrap_or_else(|| json!({"name": name, "status": status})));
        return Exit::for_status(status);
    }
    let mut summary = format!("{name} {}", output::status(status));
    if let Some(record) = &record {
        let took = output::duration(&record["started_at"], &record["finished_at"]);
        if !took.is_empty() {
            summary.push_str(&format!(" after {took}"));
        }
        if let Some(code) = record["exit_code"]
            .as_i64()
            .filter(|_| status != "SUCCEEDED")
        {
            summary.push_str(&format!(" (exit code {code})"));
        }
        let reason = text(record, "reason");
        if !reason.is_empty() && status != "SUCCEEDED" {
            summary.push_str(&format!(": {reason}"));
        }
    }
    anstream::eprintln!("{summary}");
    Exit::for_status(status)
}

/// `proctor status NAME`: one execution's record.
pub async fn status(client: &Client, name: &str, format: Format) -> Result<(), CliError> {
    let record: Value = client
        .get_json(
            &format!("/api/v1/executions/{}", segment(name)),
            NO_RUN_HINT,
        )
        .await?;
    if format == Format::Json {
        output::json(&record);
        return Ok(());
    }
    print_record(&record);
    Ok(())
}

fn print_record(record: &Value) {
    let status = text(record, "status");
    let mut details = Details::new();
    details
        .row("Name", text(record, "name"))
        .row("Proc", text(record, "proc_name"))
        .row(
            "Status",
            match record["queue_position"].as_i64() {
                Some(ahead) => format!("{} ({ahead} ahead)", output::status(status)),
                None => output::status(status),
            },
        )
        .row_if(
            "Exit code",
            record["exit_code"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        )
        .row_if("Reason", text(record, "reason"))
        .row_if("Args", output::args(&record["args"]))
        .row("User", text(record, "user_email"))
        .row_if("Schedule", text(record, "schedule_id"))
        .row("Executor", text(record, "executor"))
        .row("Image", text(record, "image"))
        .row(
            "Attempts",
            record["attempts"].as_i64().unwrap_or(0).to_string(),
        )
        .row("Created", output::time(&record["created_at"]))
        .row_if("Started", output::time(&record["started_at"]))
        .row_if("Finished", output::time(&record["finished_at"]))
        .row_if(
            "Duration",
            output::duration(&record["started_at"], &record["finished_at"]),
        );
    details.print();
}

/// `proctor logs NAME [--follow]`: the stored log, or (following) every line until
/// the run ends, exiting with the code of its final status.
pub async fn logs(client: &Client, name: &str, follow: bool) -> Result<Exit, CliError> {
    if follow {
        let ending = Follow {
            client,
            name,
            lines_to_stderr: false,
            interruptible: false,
        }
        .run()
        .await?;
        return Ok(match ending {
            Ending::Finished(status) => report_end(client, name, &status, Format::Table).await,
            Ending::Detached => Exit::Detached,
        });
    }
    let mut seen = 0;
    loop {
        let page = read_stored(client, name, seen).await?;
        for line in &page.lines {
            output::line(line);
        }
        seen = page.last_seq.max(seen);
        if !page.full {
            return Ok(Exit::Success);
        }
    }
}

/// `proctor cancel NAME`.
pub async fn cancel(client: &Client, name: &str, format: Format) -> Result<(), CliError> {
    let path = format!("/api/v1/executions/{}/cancel", segment(name));
    let response = client
        .send(client.request(Method::POST, &path), NO_RUN_HINT)
        .await?;
    let record: Value = client.read_json(response).await?;
    match format {
        Format::Json => output::json(&record),
        Format::Table => output::styled_line(&format!(
            "{} {}",
            text(&record, "name"),
            output::status(text(&record, "status"))
        )),
    }
    Ok(())
}

/// What `proctor executions` filters on.
pub struct HistoryQuery {
    pub proc: Option<String>,
    pub status: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// `proctor executions`: the history, newest first.
pub async fn history(client: &Client, query: HistoryQuery, format: Format) -> Result<(), CliError> {
    let mut params: Vec<(&str, String)> = vec![
        ("limit", query.limit.to_string()),
        ("offset", query.offset.to_string()),
    ];
    if let Some(proc) = query.proc {
        params.push(("proc", proc));
    }
    if let Some(status) = query.status {
        params.push(("status", status.trim().to_ascii_uppercase()));
    }
    let request = client
        .request(Method::GET, "/api/v1/executions")
        .query(&params);
    let response = client.send(request, NO_RUN_HINT).await?;
    let page: Value = client.read_json(response).await?;
    let executions = page["executions"].as_array().cloned().unwrap_or_default();
    if format == Format::Json {
        output::json(&executions);
        return Ok(());
    }
    if executions.is_empty() {
        output::line("No executions found");
        return Ok(());
    }
    let mut table = output::table(&["NAME", "PROC", "STATUS", "USER", "CREATED", "DURATION"]);
    for execution in &executions {
        table.add_row(vec![
            comfy_table::Cell::new(text(execution, "name")),
            comfy_table::Cell::new(text(execution, "proc_name")),
            output::status_cell(text(execution, "status")),
            comfy_table::Cell::new(text(execution, "user_email")),
            comfy_table::Cell::new(output::time(&execution["created_at"])),
            comfy_table::Cell::new(output::duration(
                &execution["started_at"],
                &execution["finished_at"],
            )),
        ]);
    }
    output::print_table(table);
    if let Some(next) = page["next_offset"].as_i64() {
        anstream::eprintln!("More: proctor executions --offset {next}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_pairs_win_over_the_args_file() {
        let file = std::env::temp_dir().join(format!("proctor-args-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&file, "NAME: Ada\nCOUNT: 3\nFLAG: true\n").unwrap();
        let args = collect_args(&["NAME=Grace".into(), "EXPR=a=b".into()], Some(&file)).unwrap();
        assert_eq!(args["NAME"], "Grace");
        assert_eq!(args["COUNT"], "3");
        assert_eq!(args["FLAG"], "true");
        assert_eq!(args["EXPR"], "a=b", "only the first = splits");
        std::fs::remove_file(file).unwrap();

        let error = collect_args(&["NAME".into()], None).unwrap_err();
        assert!(error.message.contains("Incorrect variable format: NAME"));
        assert_eq!(error.exit, Exit::Usage);
    }
}
