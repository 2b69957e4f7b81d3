//! `proctor list`, `proctor describe PROC` and `proctor register FILE...`.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::Value;

use super::client::Client;
use super::error::CliError;
use super::output::{self, Details, Format, text};

const NO_PROC_HINT: &str = "`proctor list` shows the procs you may use";

/// `proctor list`: the procs the caller may use, by name, with their descriptions.
pub async fn list(client: &Client, format: Format) -> Result<(), CliError> {
    let mut procs: Vec<Value> = client.get_json("/jobs/metadata", NO_PROC_HINT).await?;
    procs.sort_by(|a, b| text(a, "name").cmp(text(b, "name")));
    if format == Format::Json {
        output::json(&procs);
        return Ok(());
    }
    if procs.is_empty() {
        output::line("No procs yet: an admin registers one with `proctor register metadata.json`");
        return Ok(());
    }
    let mut table = output::table(&["NAME", "DESCRIPTION"]);
    for proc in &procs {
        table.add_row([text(proc, "name"), text(proc, "description")]);
    }
    output::print_table(table);
    Ok(())
}

/// `proctor describe PROC`: what it does, what it takes, who may run it, who made it.
pub async fn describe(client: &Client, name: &str, format: Format) -> Result<(), CliError> {
    let proc: Value = client
        .get_json(&format!("/jobs/metadata/{}", segment(name)), NO_PROC_HINT)
        .await?;
    if format == Format::Json {
        output::json(&proc);
        return Ok(());
    }
    let vars = |kind: &str| -> String {
        let vars: Vec<&Value> = proc["env_vars"][kind]
            .as_array()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        if vars.is_empty() {
            return "(none)".into();
        }
        let width = vars
            .iter()
            .map(|v| text(v, "name").len())
            .max()
            .unwrap_or(0);
        vars.iter()
            .map(|v| {
                format!("{:<width$}  {}", text(v, "name"), text(v, "description"))
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let groups: Vec<&str> = proc["authorized_groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut details = Details::new();
    details
        .row("Name", text(&proc, "name"))
        .row("Description", text(&proc, "description"))
        .row("Image", text(&proc, "image_name"))
        .row("Args", vars("args"))
        .row("Secrets", vars("secrets"))
        .row(
            "Authorized groups",
            if groups.is_empty() {
                "(every user)".to_owned()
            } else {
                groups.join(", ")
            },
        )
        .row("Author", text(&proc, "author"))
        .row("Contributors", text(&proc, "contributors"))
        .row("Organization", text(&proc, "organization"));
    if let Some(command) = proc["command"].as_array() {
        let parts: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
        details.row("Command", output::shell_words(&parts));
    }
    if let Some(deadline) = proc["active_deadline_seconds"].as_u64() {
        details.row("Deadline", format!("{deadline}s"));
    }
    if let Some(max) = proc["max_concurrent_runs"].as_u64() {
        details.row(
            "Max concurrent runs",
            format!("{max} (more wait as QUEUED)"),
        );
    }
    details.print();
    let args: Vec<&str> = proc["env_vars"]["args"]
        .as_array()
        .map(|a| a.iter().map(|v| text(v, "name")).collect())
        .unwrap_or_default();
    output::line("");
    output::line(&format!(
        "Run it: proctor execute {}{}",
        text(&proc, "name"),
        args.iter().map(|a| format!(" {a}=...")).collect::<String>()
    ));
    Ok(())
}

/// `proctor register FILE...`: registers or updates the procs in metadata JSON files
/// (one proc or an array each); admins only.
pub async fn register(
    client: &Client,
    files: &[PathBuf],
    dry_run: bool,
    format: Format,
) -> Result<(), CliError> {
    let mut procs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            CliError::usage(format!("{} is not valid JSON: {e}", file.display())).with_hint(
                "a proc's metadata is a JSON object (see examples/say-hello-world/metadata.json)",
            )
        })?;
        match value {
            Value::Array(items) => procs.extend(items),
            other => procs.push(other),
        }
    }
    let mut request = client.request(Method::POST, "/jobs/metadata").json(&procs);
    if dry_run {
        request = request.query(&[("dry_run", "true")]);
    }
    let response = client.send(request, NO_PROC_HINT).await?;
    let stored: Vec<Value> = client.read_json(response).await?;
    if format == Format::Json {
        output::json(&stored);
        return Ok(());
    }
    for proc in &stored {
        if dry_run {
            output::line(&format!(
                "Proc {} is valid (dry run: nothing was stored)",
                text(proc, "name")
            ));
        } else {
            output::line(&format!("Registered proc {}", text(proc, "name")));
        }
    }
    Ok(())
}

/// `proctor template PROC FILE`: an args file with every arg of the proc, each with its
/// description as a comment, for `proctor execute PROC -f FILE`.
pub async fn template(
    client: &Client,
    proc: &str,
    file: &Path,
    force: bool,
) -> Result<(), CliError> {
    let to_stdout = file.as_os_str() == "-";
    if !to_stdout && !force && file.exists() {
        return Err(
            CliError::usage(format!("{} already exists", file.display()))
                .with_hint("pass --force to replace it, or pick another file"),
        );
    }
    let metadata: Value = client
        .get_json(&format!("/jobs/metadata/{}", segment(proc)), NO_PROC_HINT)
        .await?;
    let text = args_template(&metadata);
    if to_stdout {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(file, text)
        .map_err(|e| CliError::usage(format!("cannot write {}: {e}", file.display())))?;
    let name = output::text(&metadata, "name");
    output::line(&format!(
        "Wrote {}: fill it in, then `proctor execute {name} -f {}`",
        file.display(),
        file.display()
    ));
    Ok(())
}

/// The args file for a proc's metadata: a YAML mapping of every declared arg to an
/// empty value, each under its description.
pub fn args_template(metadata: &Value) -> String {
    let name = output::text(metadata, "name");
    let mut text = format!("# Args of proc {name}");
    let description = output::text(metadata, "description");
    if !description.is_empty() {
        text.push_str(&format!(": {}", one_line(description)));
    }
    text.push_str(&format!(
        "\n# Fill in the values, then run: proctor execute {name} -f <this file>\n"
    ));
    let args = metadata["env_vars"]["args"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if args.is_empty() {
        text.push_str("# (this proc takes no args)\n{}\n");
        return text;
    }
    for arg in &args {
        text.push('\n');
        let description = output::text(arg, "description");
        if !description.is_empty() {
            for line in description.lines() {
                text.push_str(&format!("# {}\n", line.trim_end()));
            }
        }
        text.push_str(&format!("{}: \"\"\n", output::text(arg, "name")));
    }
    text
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A name as one URL path segment (names are validated by proctord; this keeps a
/// stray `/` or `?` from changing the route).
pub fn segment(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_args_template_is_the_yaml_an_args_file_takes() {
        let metadata = serde_json::json!({
            "name": "greeter",
            "description": "Says hello\n to NAME",
            "env_vars": {"args": [
                {"name": "NAME", "description": "who to greet\nfirst name only"},
                {"name": "COUNT"}
            ]}
        });
        let text = args_template(&metadata);
        assert_eq!(
            text,
            "# Args of proc greeter: Says hello to NAME\n\
             # Fill in the values, then run: proctor execute greeter -f <this file>\n\
             \n# who to greet\n# first name only\nNAME: \"\"\n\nCOUNT: \"\"\n"
        );
        let parsed: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        let none = args_template(&serde_json::json!({"name": "bare", "env_vars": {"args": []}}));
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&none).unwrap();
        assert!(parsed.as_mapping().unwrap().is_empty());
    }
}
