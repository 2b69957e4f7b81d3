//! An execution's name and its status machine:
//! `RECEIVED → QUEUED → CREATED → RUNNING → SUCCEEDED | FAILED | TIMED_OUT | CANCELLED`,
//! with `REQUIREMENT_NOT_MET` and `CREATION_FAILED` as final states reached before
//! `CREATED`. `QUEUED` is taken only by runs of a proc with `max_concurrent_runs` that
//! must wait for a slot (a run that gets one at once goes from `RECEIVED` on); a queued
//! run may be cancelled, and is never started then. Transitions only go forward; a late
//! event for an older state is ignored.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::ProcName;

/// An execution's name: `<proc>-<14 random lower-case letters and digits>`, a valid
/// Kubernetes Job name (DNS-1123 label, at most 63 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ExecutionName(String);

const SUFFIX_LEN: usize = 14;

impl ExecutionName {
    /// A fresh, unique name for a run of `proc`.
    pub fn generate(proc: &ProcName) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let suffix: String = (0..SUFFIX_LEN)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        Self(format!("{proc}-{suffix}"))
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        let valid = super::patterns::matches(super::patterns::EXECUTION_NAME, name);
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "{:?} is not an execution name (lower-case letters, digits and '-', at most 63)",
                super::ids::truncate(name, 70)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Received,
    /// Waiting for a slot of its proc's `max_concurrent_runs` (first in, first out).
    Queued,
    Created,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    RequirementNotMet,
    CreationFailed,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Received,
        Status::Queued,
        Status::Created,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::RequirementNotMet,
        Status::CreationFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "RECEIVED",
            Status::Queued => "QUEUED",
            Status::Created => "CREATED",
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::TimedOut => "TIMED_OUT",
            Status::Cancelled => "CANCELLED",
            Status::RequirementNotMet => "REQUIREMENT_NOT_MET",
            Status::CreationFailed => "CREATION_FAILED",
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 4
    }

    fn rank(self) -> u8 {
        match self {
            Status::Received => 0,
            Status::Queued => 1,
            Status::Created => 2,
            Status::Running => 3,
            _ => 4,
        }
    }

    /// Whether an execution in `self` may move to `next`.
    pub fn can_move_to(self, next: Status) -> bool {
        let before_created = matches!(next, Status::RequirementNotMet | Status::CreationFailed);
        next.rank() > self.rank()
            && (!before_created || matches!(self, Status::Received | Status::Queued))
    }

    /// Every status from which `next` may be reached: the guard of a forward-only update.
    pub fn predecessors(next: Status) -> Vec<Status> {
        Status::ALL
            .into_iter()
            .filter(|s| s.can_move_to(next))
            .collect()
    }

    /// The names of the statuses a run has not ended in (for store filters).
    pub fn unfinished_names() -> Vec<&'static str> {
        Status::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| s.as_str())
            .collect()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase();
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == upper)
            .ok_or_else(|| {
                let names: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "{:?} is not a status; use one of {}",
                    super::ids::truncate(text, 32),
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_only_go_forward() {
        use Status::*;
        let allowed = [
            (Received, Created),
            (Received, Running),
            (Received, RequirementNotMet),
            (Received, CreationFailed),
            (Received, Cancelled),
            (Received, Queued),
            (Queued, Created),
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, RequirementNotMet),
            (Queued, CreationFailed),
            (Created, Running),
            (Created, Failed),
            (Created, Cancelled),
            (Running, Succeeded),
            (Running, Failed),
            (Running, TimedOut),
            (Running, Cancelled),
        ];
        for (from, to) in allowed {
            assert!(from.can_move_to(to), "{from} -> {to} should be allowed");
        }
        let refused = [
            (Running, Created),
            (Created, Received),
            (Succeeded, Failed),
            (Cancelled, Succeeded),
            (Created, RequirementNotMet),
            (Running, CreationFailed),
            (Running, Running),
            (Created, Queued),
            (Running, Queued),
            (Queued, Received),
            (Cancelled, Queued),
        ];
        for (from, to) in refused {
            assert!(!from.can_move_to(to), "{from} -> {to} should be refused");
        }
        assert_eq!(
            Status::predecessors(Status::Running),
            [Received, Queued, Created]
        );
        assert_eq!(
            Status::predecessors(Status::CreationFailed),
            [Received, Queued]
        );
    }

    #[test]
    fn statuses_parse_from_their_names() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert_eq!("timed_out".parse::<Status>(), Ok(Status::TimedOut));
        assert!(
            "DONE"
                .parse::<Status>()
                .unwrap_err()
                .contains("not a status")
        );
    }

    #[test]
    fn generated_names_are_valid_job_names() {
        let proc = ProcName::parse(&"p".repeat(super::super::ids::PROC_NAME_MAX)).unwrap();
        let name = ExecutionName::generate(&proc);
        assert_eq!(name.as_str().len(), 63);
        assert!(ExecutionName::parse(name.as_str()).is_ok());
        assert_ne!(name, ExecutionName::generate(&proc));
        assert!(ExecutionName::parse("Bad_Name").is_err());
    }
}

/// Where a pod's stored log ends: its last line's timestamp (the container runtime's,
/// in nanoseconds since the epoch) and how many stored lines of that pod carry exactly
/// that timestamp. A resumed log skips every line before it and that many at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub last_ns: i64,
    pub lines_at_last: usize,
}

impl Resume {
    /// Whether a line stamped `ns` is new, given `seen_at_last` lines stamped
    /// `last_ns` were already skipped (the count is advanced when one is skipped).
    pub fn is_new(&self, ns: i64, seen_at_last: &mut usize) -> bool {
        if ns < self.last_ns {
            return false;
        }
        if ns == self.last_ns && *seen_at_last < self.lines_at_last {
            *seen_at_last += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod resume_tests {
    use super::Resume;

    #[test]
    fn a_resumed_log_skips_what_is_stored_even_lines_with_the_same_timestamp() {
        let resume = Resume {
            last_ns: 20,
            lines_at_last: 2,
        };
        let mut seen = 0;
        let stamps = [10, 20, 20, 20, 21, 30];
        let new: Vec<i64> = stamps
            .into_iter()
            .filter(|ns| resume.is_new(*ns, &mut seen))
            .collect();
        assert_eq!(
            new,
            [20, 21, 30],
            "two lines at 20 were stored, the third is new"
        );
    }
}
