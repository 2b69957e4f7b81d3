//! How a command ends: an exit code scripts can rely on and, for a failure, one line
//! on stderr saying what went wrong and one saying what to do about it.

use anstyle::{AnsiColor, Style};

/// The exit codes of `proctor`, listed in `proctor --help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked; a run it followed SUCCEEDED.
    Success,
    /// A run it followed ended FAILED.
    Failed,
    /// Bad usage or configuration, or proctord refused the request (400, 401, 403,
    /// 404, 409).
    Usage,
    /// A run it followed ended TIMED_OUT.
    TimedOut,
    /// A run it followed ended CANCELLED.
    Cancelled,
    /// A run it followed ended without running: REQUIREMENT_NOT_MET or CREATION_FAILED.
    NotRun,
    /// proctord could not be reached, did not answer in time, or failed (5xx).
    Server,
    /// Ctrl-C detached `execute` from a run that goes on.
    Detached,
}

impl Exit {
    pub const ALL: [Exit; 8] = [
        Exit::Success,
        Exit::Failed,
        Exit::Usage,
        Exit::TimedOut,
        Exit::Cancelled,
        Exit::NotRun,
        Exit::Server,
        Exit::Detached,
    ];

    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::TimedOut => 3,
            Exit::Cancelled => 4,
            Exit::NotRun => 5,
            Exit::Server => 6,
            Exit::Detached => 130,
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success; a followed run SUCCEEDED",
            Exit::Failed => "the run FAILED",
            Exit::Usage => {
                "usage or configuration error, or proctord refused the request (400, 401, 403, 404, 409)"
            }
            Exit::TimedOut => "the run TIMED_OUT",
            Exit::Cancelled => "the run was CANCELLED",
            Exit::NotRun => "the run never ran: REQUIREMENT_NOT_MET or CREATION_FAILED",
            Exit::Server => {
                "proctord unreachable, too slow (CONNECTION_TIMEOUT_SECS) or failing (5xx)"
            }
            Exit::Detached => "Ctrl-C detached `execute` from a run that goes on",
        }
    }

    /// The exit code for a run that ended with `status`.
    pub fn for_status(status: &str) -> Exit {
        match status {
            "SUCCEEDED" => Exit::Success,
            "FAILED" => Exit::Failed,
            "TIMED_OUT" => Exit::TimedOut,
            "CANCELLED" => Exit::Cancelled,
            _ => Exit::NotRun,
        }
    }

    /// The exit codes as the help text's table.
    pub fn help_table() -> String {
        let mut text = String::from("Exit codes:\n");
        for exit in Exit::ALL {
            text.push_str(&format!("  {:>3}  {}\n", exit.code(), exit.meaning()));
        }
        text
    }
}

/// A failed command: what went wrong, and what to do about it.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    /// Bad usage or configuration (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// proctord unreachable or failing (exit 6).
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(Exit::Server, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Writes the error and its hint to stderr, in colour on a terminal.
    pub fn print(&self) {
        let error = Style::new().bold().fg_color(Some(AnsiColor::Red.into()));
        let hint = Style::new().bold();
        anstream::eprintln!("{error}error:{error:#} {}", one_line(&self.message));
        if let Some(text) = &self.hint {
            anstream::eprintln!("{hint}hint:{hint:#} {}", one_line(text));
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Newlines folded, so an error is one line and its hint another.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A warning on stderr, in colour on a terminal.
pub fn warn(message: &str) {
    let style = Style::new().bold().fg_color(Some(AnsiColor::Yellow.into()));
    anstream::eprintln!("{style}warning:{style:#} {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_final_statuses_map_to_them() {
        let mut codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len(), "every exit code is distinct");
        for (status, exit) in [
            ("SUCCEEDED", Exit::Success),
            ("FAILED", Exit::Failed),
            ("TIMED_OUT", Exit::TimedOut),
            ("CANCELLED", Exit::Cancelled),
            ("REQUIREMENT_NOT_MET", Exit::NotRun),
            ("CREATION_FAILED", Exit::NotRun),
        ] {
            assert_eq!(Exit::for_status(status), exit, "{status}");
        }
    }

    #[test]
    fn an_error_message_is_folded_onto_one_line() {
        assert_eq!(
            one_line("Config Error!!!\nMandatory  config"),
            "Config Error!!! Mandatory config"
        );
    }
}
