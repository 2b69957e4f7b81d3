//! How results are shown: tables and aligned details for people, JSON for scripts
//! (`--output json`), colour only on a terminal (anstream strips it elsewhere and
//! honours NO_COLOR and CLICOLOR_FORCE).

use std::io::{IsTerminal as _, Write as _};

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use comfy_table::{
    Attribute, Cell, Color, ColumnConstraint, ContentArrangement, Table, Width, presets,
};
use serde_json::Value;

/// `--output`: what listing commands print on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and aligned details, for people.
    #[default]
    Table,
    /// JSON, for scripts: one document on stdout.
    Json,
}

/// Prints a JSON document on stdout.
pub fn json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    line(&text);
}

/// Writes one line on stdout. A closed stdout (`| head`) is not an error: the
/// command goes on, so its exit code still tells how the run ended.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Writes one styled line on stdout, the style stripped off a terminal.
pub fn styled_line(text: &str) {
    let _ = writeln!(anstream::stdout(), "{text}");
}

/// The style a status is shown in.
pub fn status_style(status: &str) -> Style {
    let color = match status {
        "SUCCEEDED" => AnsiColor::Green,
        "FAILED" | "TIMED_OUT" | "REQUIREMENT_NOT_MET" | "CREATION_FAILED" => AnsiColor::Red,
        "CANCELLED" => AnsiColor::Yellow,
        "QUEUED" => AnsiColor::Magenta,
        _ => AnsiColor::Cyan,
    };
    Style::new().bold().fg_color(Some(color.into()))
}

/// A status, styled.
pub fn status(status: &str) -> String {
    let style = status_style(status);
    format!("{style}{status}{style:#}")
}

fn status_color(status: &str) -> Color {
    match status {
        "SUCCEEDED" => Color::Green,
        "FAILED" | "TIMED_OUT" | "REQUIREMENT_NOT_MET" | "CREATION_FAILED" => Color::Red,
        "CANCELLED" => Color::Yellow,
        "QUEUED" => Color::Magenta,
        _ => Color::Cyan,
    }
}

/// A table cell showing a status in its colour.
pub fn status_cell(status: &str) -> Cell {
    Cell::new(status).fg(status_color(status))
}

/// A table with `header`: bordered and fitted to the width on a terminal, plain
/// space-separated columns elsewhere (easy to `grep` and `awk`).
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.set_header(
        header
            .iter()
            .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
    );
    if std::io::stdout().is_terminal() {
        // Styled on a terminal; anstream still removes it under NO_COLOR.
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .apply_modifier(comfy_table::modifiers::UTF8_ROUND_CORNERS)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .enforce_styling();
    } else {
        table.load_preset(presets::NOTHING).force_no_tty();
    }
    table
}

/// Prints a table made by [`table`].
pub fn print_table(mut table: Table) {
    if !std::io::stdout().is_terminal() {
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
    } else if let Some(last) = table.column_count().checked_sub(1) {
        // The last column (descriptions, tags) wraps; the others keep their width.
        let constraints = (0..last)
            .map(|_| ColumnConstraint::ContentWidth)
            .chain([ColumnConstraint::LowerBoundary(Width::Fixed(12))]);
        table.set_constraints(constraints);
    }
    for text in table.lines() {
        styled_line(text.trim_end());
    }
}

/// Aligned `Key: value` lines: what `describe` and `status` print.
#[derive(Default)]
pub struct Details {
    rows: Vec<(String, String)>,
}

impl Details {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn row(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.rows.push((key.to_owned(), value.into()));
        self
    }

    /// A row only when `value` is not empty.
    pub fn row_if(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        if !value.is_empty() {
            self.rows.push((key.to_owned(), value));
        }
        self
    }

    pub fn print(&self) {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let key_style = Style::new().bold();
        for (key, value) in &self.rows {
            let label = format!("{key}:");
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            styled_line(&format!("{key_style}{label:<width$}{key_style:#}  {first}"));
            for more in lines {
                styled_line(&format!("{:<width$}  {more}", ""));
            }
        }
    }
}

/// A command line as a shell would read it: parts with spaces or quotes are quoted.
pub fn shell_words(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| {
            let plain = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                (*part).to_owned()
            } else {
                format!("'{}'", part.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A string field of a JSON object ("" when absent or not a string).
pub fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An RFC 3339 time from proctord shown as `2026-01-02 03:04:05Z`; "" for none.
pub fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_default()
}

/// How long a run took (or has taken so far): `42s`, `3m05s`, `1h02m`.
pub fn duration(started: &Value, finished: &Value) -> String {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let Some(start) = parse(started) else {
        return String::new();
    };
    let end = parse(finished).unwrap_or_else(Utc::now);
    human_duration((end - start).num_milliseconds().max(0) as u64)
}

pub fn human_duration(millis: u64) -> String {
    let secs = millis / 1000;
    match secs {
        0..=9 => format!("{:.1}s", millis as f64 / 1000.0),
        10..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `KEY=VALUE, ...` for a JSON object of args.
pub fn args(value: &Value) -> String {
    value
        .as_object()
        .map(|args| {
            args.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A secret shown without giving it away: its last four characters at most.
pub fn mask(secret: &str) -> String {
    let count = secret.chars().count();
    if count < 12 {
        "****".to_owned()
    } else {
        let tail: String = secret.chars().skip(count - 4).collect();
        format!("****{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_as_a_shell_reads_them() {
        assert_eq!(
            shell_words(&["sh", "-c", "echo 'hi' there"]),
            r#"sh -c 'echo '\''hi'\'' there'"#
        );
        assert_eq!(shell_words(&["run.sh", ""]), "run.sh ''");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(1_234), "1.2s");
        assert_eq!(human_duration(42_000), "42s");
        assert_eq!(human_duration(185_000), "3m05s");
        assert_eq!(human_duration(3_720_000), "1h02m");
    }

    #[test]
    fn a_masked_token_keeps_at_most_its_last_four_characters() {
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("0123456789abcdef"), "****cdef");
    }

    #[test]
    fn times_and_args_are_shown_compactly() {
        assert_eq!(
            time(&serde_json::json!("2026-01-02T03:04:05Z")),
            "2026-01-02 03:04:05Z"
        );
        assert_eq!(time(&Value::Null), "");
        assert_eq!(
            args(&serde_json::json!({"A": "1", "B": "two"})),
            "A=1, B=two"
        );
    }
}
