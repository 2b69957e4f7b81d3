//! A proc: an automation script packaged as a container image, with what it needs.
//! The JSON shape is the original Proctor's, plus `command` for the local executor.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ids::{EnvName, ProcName};

/// One declared arg or secret: it reaches the run as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvVar {
    pub name: EnvName,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvVars {
    #[serde(default)]
    pub secrets: Vec<EnvVar>,
    #[serde(default)]
    pub args: Vec<EnvVar>,
}

/// What `POST /jobs/metadata` takes and `GET /jobs/metadata` gives back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcMetadata {
    pub name: ProcName,
    #[serde(default)]
    pub description: String,
    pub image_name: String,
    #[serde(default)]
    pub env_vars: EnvVars,
    /// Groups whose members may see and run the proc; empty means every user.
    #[serde(default)]
    pub authorized_groups: Vec<String>,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub contributors: String,
    #[serde(default)]
    pub organization: String,
    /// The program and its arguments that the local executor runs (the image's
    /// entrypoint plays this part on Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// This proc's deadline, overriding PROCTOR_KUBE_JOB_ACTIVE_DEADLINE_SECONDS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    /// At most this many runs of the proc at once, across all replicas; runs beyond it
    /// wait as QUEUED, first in first out, and start as slots free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_concurrent_runs: Option<u32>,
    /// Kubernetes pod options of its runs (resources, nodeSelector, tolerations,
    /// serviceAccountName, imagePullSecrets, labels), within the operator's allowlists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<super::pod::PodOptions>,
    /// Days this proc's finished runs are kept (0: for ever), overriding
    /// PROCTOR_EXECUTION_RETENTION_DAYS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 36500)]
    pub execution_retention_days: Option<u32>,
    /// Days the log lines of this proc's finished runs are kept (0: as long as the
    /// run), overriding PROCTOR_LOG_RETENTION_DAYS; never longer than the run is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 36500)]
    pub log_retention_days: Option<u32>,
}

/// The largest `max_concurrent_runs` a proc may declare.
pub const MAX_CONCURRENT_RUNS: u32 = 1000;

/// The longest free text (description, author, ...), in characters.
pub const MAX_TEXT: usize = 4096;
/// The longest deadline a proc may ask for: a year.
pub const MAX_ACTIVE_DEADLINE_SECONDS: u64 = 366 * 24 * 3600;
/// The longest retention a proc may ask for: 100 years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl ProcMetadata {
    /// Every way the metadata breaks the shape the API document states (patterns,
    /// lengths, ranges), as sentences naming the field; empty when it fits.
    pub fn problems(&self) -> Vec<String> {
        use super::patterns::{GROUP_NAME, IMAGE_NAME, NO_NUL, matches};
        let mut problems = Vec::new();
        if self.image_name.is_empty() {
            problems.push("image_name must not be empty".to_owned());
        } else if !matches(IMAGE_NAME, &self.image_name) {
            problems.push(
                "image_name must be an image reference: printable ASCII without spaces, at most 512"
                    .to_owned(),
            );
        }
        for (field, text) in [
            ("description", &self.description),
            ("author", &self.author),
            ("contributors", &self.contributors),
            ("organization", &self.organization),
        ] {
            if text.chars().count() > MAX_TEXT {
                problems.push(format!("{field} is longer than {MAX_TEXT} characters"));
            }
        }
        for group in &self.authorized_groups {
            if !matches(&GROUP_NAME, group) {
                problems.push(format!(
                    "authorized_groups: {:?} is not a group name (1 to 128 characters, no spaces)",
                    super::ids::truncate(group, 64)
                ));
            }
        }
        if let Some(command) = &self.command {
            if command.is_empty() {
                problems.push(
                    "command must start with the program to run, e.g. [\"sh\", \"-c\", \"echo hi\"]"
                        .to_owned(),
                );
            }
            if command.iter().any(|part| !matches(NO_NUL, part)) {
                problems.push("command must not contain NUL characters".to_owned());
            }
        }
        if let Some(seconds) = self.active_deadline_seconds
            && !(1..=MAX_ACTIVE_DEADLINE_SECONDS).contains(&seconds)
        {
            problems.push(format!(
                "active_deadline_seconds must be between 1 and {MAX_ACTIVE_DEADLINE_SECONDS}, not {seconds}"
            ));
        }
        if let Some(max) = self.max_concurrent_runs
            && !(1..=MAX_CONCURRENT_RUNS).contains(&max)
        {
            problems.push(format!(
                "max_concurrent_runs must be between 1 and {MAX_CONCURRENT_RUNS}, not {max} (leave it out for no limit)"
            ));
        }
        for (field, days) in [
            ("execution_retention_days", self.execution_retention_days),
            ("log_retention_days", self.log_retention_days),
        ] {
            if let Some(days) = days
                && days > MAX_RETENTION_DAYS
            {
                problems.push(format!(
                    "{field} must be at most {MAX_RETENTION_DAYS} (0 keeps for ever), got {days}"
                ));
            }
        }
        problems
    }

    /// Every rule between fields that the metadata breaks (a JSON Schema cannot state
    /// these): names declared twice, a blank program, logs kept longer than their run.
    pub fn conflicts(&self) -> Vec<String> {
        let mut conflicts = Vec::new();
        let mut seen = BTreeSet::new();
        for (kind, vars) in [
            ("args", &self.env_vars.args),
            ("secrets", &self.env_vars.secrets),
        ] {
            for var in vars {
                if !seen.insert(var.name.as_str()) {
                    conflicts.push(format!(
                        "env_vars.{kind}: {} is declared more than once (args and secrets share one environment)",
                        var.name
                    ));
                }
            }
        }
        if let Some(program) = self.command.as_ref().and_then(|c| c.first())
            && program.trim().is_empty()
        {
            conflicts.push(
                "command must start with the program to run, e.g. [\"sh\", \"-c\", \"echo hi\"]"
                    .to_owned(),
            );
        }
        if let (Some(runs), Some(logs)) = (self.execution_retention_days, self.log_retention_days)
            && runs > 0
            && (logs == 0 || logs > runs)
        {
            conflicts.push(format!(
                "log_retention_days ({logs}) must not be longer than execution_retention_days ({runs}): a run's lines go with its record"
            ));
        }
        conflicts
    }

    /// Whether a member of `groups` may see and run this proc (admins always may).
    pub fn allows_any_of<'a>(&self, mut groups: impl Iterator<Item = &'a str>) -> bool {
        self.authorized_groups.is_empty()
            || groups.any(|g| self.authorized_groups.iter().any(|a| a == g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProcMetadata {
        serde_json::from_value(serde_json::json!({
            "name": "say-hello-world",
            "description": "says hello",
            "image_name": "proctor/say-hello-world:latest",
            "env_vars": {
                "secrets": [{"name": "SLACK_TOKEN", "description": "token"}],
                "args": [{"name": "NAME", "description": "who"}]
            },
            "authorized_groups": ["ops"],
            "author": "a@b.c",
            "contributors": "d@e.f",
            "organization": "proctor"
        }))
        .unwrap()
    }

    #[test]
    fn the_original_json_shape_round_trips() {
        let proc = sample();
        assert!(proc.problems().is_empty(), "{:?}", proc.problems());
        let json = serde_json::to_value(&proc).unwrap();
        assert_eq!(json["env_vars"]["args"][0]["name"], "NAME");
        assert!(
            json.get("command").is_none(),
            "absent command is not written"
        );
        assert!(
            json.get("execution_retention_days").is_none()
                && json.get("log_retention_days").is_none(),
            "absent retention is not written: older readers see the metadata they know"
        );
        assert_eq!(serde_json::from_value::<ProcMetadata>(json).unwrap(), proc);
    }

    #[test]
    fn problems_name_each_bad_field() {
        let mut proc = sample();
        proc.image_name = " ".into();
        proc.env_vars.secrets.push(EnvVar {
            name: EnvName::parse("NAME").unwrap(),
            description: String::new(),
        });
        proc.authorized_groups.push("two words".into());
        proc.command = Some(vec![]);
        proc.execution_retention_days = Some(7);
        proc.log_retention_days = Some(40);
        let problems = [proc.problems(), proc.conflicts()].concat().join("\n");
        assert!(
            proc.conflicts()
                .iter()
                .all(|c| c.contains("declared more than once") || c.contains("log_retention_days")),
            "rules between fields are conflicts, not shape problems: {:?}",
            proc.conflicts()
        );
        for needle in [
            "image_name",
            "NAME is declared more than once",
            "authorized_groups",
            "command",
            "log_retention_days (40) must not be longer than execution_retention_days (7)",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing from {problems}"
            );
        }
    }

    #[test]
    fn max_concurrent_runs_is_checked_and_written_only_when_set() {
        for (max, ok) in [(0, false), (1, true), (1000, true), (1001, false)] {
            let proc = ProcMetadata {
                max_concurrent_runs: Some(max),
                ..sample()
            };
            assert_eq!(
                proc.problems().is_empty(),
                ok,
                "{max}: {:?}",
                proc.problems()
            );
        }
        let json = serde_json::to_value(sample()).unwrap();
        assert!(json.get("max_concurrent_runs").is_none());
    }

    #[test]
    fn groups_gate_access_unless_none_are_set() {
        let proc = sample();
        assert!(proc.allows_any_of(["dev", "ops"].into_iter()));
        assert!(!proc.allows_any_of(["dev"].into_iter()));
        let open = ProcMetadata {
            authorized_groups: vec![],
            ..sample()
        };
        assert!(open.allows_any_of(std::iter::empty()));
    }
}
