//! When a schedule fires: the original's cron expressions (robfig/cron v1: six fields
//! with seconds first, `@hourly`-style descriptors, `@every 1h30m`) and standard five-field
//! ones, evaluated in the schedule's IANA time zone with daylight saving handled by
//! `croner` and `chrono-tz`.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// The longest cron expression taken.
pub const MAX_CRON_CHARS: usize = 256;

/// A parsed `time` of a schedule.
#[derive(Debug, Clone)]
pub enum CronSpec {
    Cron(Box<Cron>),
    /// `@every <duration>`: every `duration` from the schedule's creation.
    Every(Duration),
}

impl CronSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.chars().count() > MAX_CRON_CHARS {
            return Err(format!(
                "invalid cron expression: longer than {MAX_CRON_CHARS} characters"
            ));
        }
        let text = text.trim();
        let invalid = |why: String| format!("invalid cron expression {text:?}: {why}");
        if let Some(every) = text.strip_prefix("@every") {
            let duration = parse_go_duration(every.trim()).map_err(invalid)?;
            if duration < Duration::from_secs(1) {
                return Err(invalid("@every needs at least 1s".into()));
            }
            return Ok(CronSpec::Every(duration));
        }
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 0 1 * *".to_owned(),
            "@weekly" => "0 0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_owned(),
            "@hourly" => "0 0 * * * *".to_owned(),
            other if other.starts_with('@') => return Err(invalid("unknown descriptor".into())),
            _ => text.to_owned(),
        };
        let fields = expanded.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(invalid(format!(
                "expected 6 fields (seconds minutes hours day-of-month month day-of-week) or 5, got {fields}"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(&expanded)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(CronSpec::Cron(Box::new(cron)))
    }

    /// The first fire strictly after `after`, in `zone`; `anchor` starts `@every`.
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        zone: Tz,
        anchor: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            CronSpec::Cron(cron) => cron
                .find_next_occurrence(&after.with_timezone(&zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            CronSpec::Every(every) => {
                let step = TimeDelta::from_std(*every).ok()?;
                if after < anchor {
                    return Some(anchor + step);
                }
                let elapsed = (after - anchor).num_milliseconds();
                let steps = elapsed / step.num_milliseconds() + 1;
                Some(anchor + step * steps as i32)
            }
        }
    }

    /// The last fire at or before `at` (for catching up a missed fire).
    pub fn last_at_or_before(
        &self,
        at: DateTime<Utc>,
        zone: Tz,
        anchor: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            CronSpec::Cron(cron) => cron
                .find_previous_occurrence(&at.with_timezone(&zone), true)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            CronSpec::Every(every) => {
                let step = TimeDelta::from_std(*every).ok()?;
                if at < anchor + step {
                    return None;
                }
                let steps = (at - anchor).num_milliseconds() / step.num_milliseconds();
                Some(anchor + step * steps as i32)
            }
        }
    }

    /// The first `count` fires strictly after `after`, in `zone`; `@every` counts from
    /// `after` (as if the schedule were created then).
    pub fn upcoming(&self, after: DateTime<Utc>, zone: Tz, count: usize) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::with_capacity(count);
        let mut last = after;
        while fires.len() < count {
            match self.next_after(last, zone, after) {
                Some(next) if next > last => {
                    fires.push(next);
                    last = next;
                }
                _ => break,
            }
        }
        fires
    }

    /// The fires in `[from, to)`, oldest first, at most `limit` of them (ask for one
    /// more than allowed to learn that a range holds too many). `anchor` starts
    /// `@every`, which never fires before it.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        zone: Tz,
        anchor: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        let mut next = match self.last_at_or_before(from, zone, anchor) {
            Some(at) if at == from => Some(at),
            _ => self.next_after(from, zone, anchor),
        };
        while let Some(at) = next {
            if at >= to || fires.len() >= limit {
                break;
            }
            fires.push(at);
            next = self.next_after(at, zone, anchor).filter(|n| *n > at);
        }
        fires
    }

    /// The expression in English words (croner's describer), or `None` when it has none
    /// for this expression.
    pub fn describe(&self) -> Option<String> {
        let text = match self {
            CronSpec::Cron(cron) => {
                // A best-effort describer: one that panics must not fail the caller.
                let cron = std::panic::AssertUnwindSafe(cron);
                std::panic::catch_unwind(|| cron.describe()).ok()?
            }
            CronSpec::Every(every) => format!("Every {}", describe_duration(*every)),
        };
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }
}

/// `1 hour 30 minutes`, `90 seconds` is `1 minute 30 seconds`.
fn describe_duration(every: Duration) -> String {
    let ms = every.as_millis();
    let parts: Vec<String> = [
        (ms / 3_600_000, "hour"),
        (ms / 60_000 % 60, "minute"),
        (ms / 1000 % 60, "second"),
        (ms % 1000, "millisecond"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, unit)| format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
    .collect();
    parts.join(" ")
}

/// Go's duration syntax as `@every` takes it: `90s`, `1h30m`, `2m30s`, `500ms`.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("@every needs a duration such as 1h30m".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as 1h30m"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit = match unit {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(format!("{text:?} is not a duration such as 1h30m")),
        };
        total += unit * value as u32;
        rest = next;
    }
    Ok(total)
}

/// A schedule's IANA time zone (`UTC` when none is given).
pub fn parse_time_zone(text: &str) -> Result<Tz, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(text).map_err(|_| {
        format!(
            "{:?} is not an IANA time zone such as Europe/Paris",
            super::ids::truncate(text, 64)
        )
    })
}

/// What a fire does while the schedule's previous run is still going (as a
/// Kubernetes CronJob's concurrencyPolicy): start beside it (Allow), skip the fire
/// (Forbid), or cancel the previous run and then start (Replace). A QUEUED run counts
/// as going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConcurrencyPolicy {
    #[default]
    Allow,
    Forbid,
    Replace,
}

impl FromStr for ConcurrencyPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // Exactly as the API document's enum spells them.
        match text {
            "Allow" => Ok(Self::Allow),
            "Forbid" => Ok(Self::Forbid),
            "Replace" => Ok(Self::Replace),
            _ => Err(format!(
                "concurrency_policy must be Allow, Forbid or Replace, not {text:?}"
            )),
        }
    }
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Forbid => "Forbid",
            Self::Replace => "Replace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(spec: &str, zone: &str, after: &str) -> DateTime<Utc> {
        let anchor = utc("2026-01-01T00:00:00Z");
        CronSpec::parse(spec)
            .unwrap()
            .next_after(utc(after), parse_time_zone(zone).unwrap(), anchor)
            .unwrap()
    }

    #[test]
    fn between_takes_the_fires_from_included_to_excluded_up_to_a_limit() {
        let anchor = utc("2026-01-01T00:00:00Z");
        let minutely = CronSpec::parse("0 * * * * *").unwrap();
        let fires = minutely.between(
            utc("2026-11-25T08:00:00Z"),
            utc("2026-11-25T08:05:00Z"),
            Tz::UTC,
            anchor,
            100,
        );
        let expected: Vec<_> = (0..5)
            .map(|m| utc(&format!("2026-11-25T08:0{m}:00Z")))
            .collect();
        assert_eq!(fires, expected, "from is included, to is not");
        let from_inside = minutely.between(
            utc("2026-11-25T08:00:30Z"),
            utc("2026-11-25T08:02:00Z"),
            Tz::UTC,
            anchor,
            100,
        );
        assert_eq!(from_inside, [utc("2026-11-25T08:01:00Z")]);
        let limited = minutely.between(
            utc("2026-11-25T08:00:00Z"),
            utc("2026-11-26T08:00:00Z"),
            Tz::UTC,
            anchor,
            3,
        );
        assert_eq!(limited.len(), 3, "stops at the limit");
        let secondly = CronSpec::parse("* * * * * *").unwrap();
        assert_eq!(
            secondly.between(
                utc("2026-11-25T08:00:00.500Z"),
                utc("2026-11-25T08:00:03Z"),
                Tz::UTC,
                anchor,
                100
            ),
            [utc("2026-11-25T08:00:01Z"), utc("2026-11-25T08:00:02Z")],
            "a from between two fires takes the next"
        );
        let every = CronSpec::parse("@every 90s").unwrap();
        assert_eq!(
            every.between(
                utc("2025-12-31T00:00:00Z"),
                utc("2026-01-01T00:04:30Z"),
                Tz::UTC,
                anchor,
                100
            ),
            [utc("2026-01-01T00:01:30Z"), utc("2026-01-01T00:03:00Z")],
            "@every starts after its anchor; to is excluded"
        );
    }

    #[test]
    fn six_fields_have_seconds_first_and_five_fields_are_standard() {
        assert_eq!(
            next("*/10 * * * * *", "UTC", "2026-11-25T08:00:01Z"),
            utc("2026-11-25T08:00:10Z")
        );
        assert_eq!(
            next("0 30 9 * * *", "UTC", "2026-11-25T08:00:00Z"),
            utc("2026-11-25T09:30:00Z")
        );
        assert_eq!(
            next("30 9 * * *", "UTC", "2026-11-25T08:00:00Z"),
            utc("2026-11-25T09:30:00Z")
        );
        assert_eq!(
            next("@hourly", "UTC", "2026-11-25T08:00:00Z"),
            utc("2026-11-25T09:00:00Z")
        );
        assert_eq!(
            next("@daily", "UTC", "2026-11-25T08:00:00Z"),
            utc("2026-11-26T00:00:00Z")
        );
        assert_eq!(
            next("@every 90s", "UTC", "2026-01-01T00:02:00Z"),
            utc("2026-01-01T00:03:00Z")
        );
        assert_eq!(
            next("@every 1h30m", "UTC", "2026-01-01T00:00:00Z"),
            utc("2026-01-01T01:30:00Z")
        );
    }

    #[test]
    fn a_schedule_fires_at_the_right_utc_instant_in_its_time_zone() {
        // Kolkata is UTC+5:30 all year.
        assert_eq!(
            next("0 30 9 * * *", "Asia/Kolkata", "2026-11-25T00:00:00Z"),
            utc("2026-11-25T04:00:00Z")
        );
        // New York: 09:00 is 14:00Z in winter and 13:00Z after the change on 8 March 2026.
        assert_eq!(
            next("0 0 9 * * *", "America/New_York", "2026-03-07T12:00:00Z"),
            utc("2026-03-07T14:00:00Z")
        );
        assert_eq!(
            next("0 0 9 * * *", "America/New_York", "2026-03-08T00:00:00Z"),
            utc("2026-03-08T13:00:00Z")
        );
        // 02:30 does not exist on 8 March in New York: it runs right after the gap.
        assert_eq!(
            next("0 30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            utc("2026-03-08T07:00:00Z")
        );
        // 01:30 happens twice on 1 November: a fixed-time job runs once.
        let first = next("0 30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z");
        assert_eq!(first, utc("2026-11-01T05:30:00Z"));
        assert_eq!(
            next("0 30 1 * * *", "America/New_York", &first.to_rfc3339()),
            utc("2026-11-02T06:30:00Z")
        );
    }

    #[test]
    fn the_last_due_fire_is_found_for_misfires() {
        let spec = CronSpec::parse("0 0 * * * *").unwrap();
        let anchor = utc("2026-01-01T00:00:00Z");
        let last = spec.last_at_or_before(utc("2026-11-25T08:20:00Z"), Tz::UTC, anchor);
        assert_eq!(last, Some(utc("2026-11-25T08:00:00Z")));
        let every = CronSpec::parse("@every 10m").unwrap();
        assert_eq!(
            every.last_at_or_before(utc("2026-01-01T00:25:00Z"), Tz::UTC, anchor),
            Some(utc("2026-01-01T00:20:00Z"))
        );
        assert_eq!(
            every.last_at_or_before(utc("2026-01-01T00:05:00Z"), Tz::UTC, anchor),
            None
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        for bad in [
            "",
            "* * *",
            "61 * * * * *",
            "* * * * * * *",
            "@often",
            "@every",
            "@every 5x",
            "@every 10ms",
        ] {
            let err = CronSpec::parse(bad).unwrap_err();
            assert!(err.starts_with("invalid cron expression"), "{bad:?}: {err}");
        }
        assert!(
            parse_time_zone("Mars/Olympus")
                .unwrap_err()
                .contains("not an IANA time zone")
        );
        assert_eq!(parse_time_zone("").unwrap(), Tz::UTC);
        assert_eq!(
            "Forbid".parse::<ConcurrencyPolicy>(),
            Ok(ConcurrencyPolicy::Forbid)
        );
        assert!(
            "forbid".parse::<ConcurrencyPolicy>().is_err(),
            "spelled as the document's enum"
        );
        assert_eq!(
            "Replace".parse::<ConcurrencyPolicy>(),
            Ok(ConcurrencyPolicy::Replace)
        );
        assert!("sometimes".parse::<ConcurrencyPolicy>().is_err());
    }

    #[test]
    fn upcoming_fires_follow_each_other_and_the_words_say_when() {
        let paris = parse_time_zone("Europe/Paris").unwrap();
        let spec = CronSpec::parse("0 9 * * 1-5").unwrap();
        // Friday 4 December 2026, 12:00Z: next are Monday to Friday the week after.
        let fires = spec.upcoming(utc("2026-12-04T12:00:00Z"), paris, 3);
        assert_eq!(
            fires,
            [
                utc("2026-12-07T08:00:00Z"),
                utc("2026-12-08T08:00:00Z"),
                utc("2026-12-09T08:00:00Z")
            ]
        );
        let every = CronSpec::parse("@every 1h30m").unwrap();
        assert_eq!(
            every.upcoming(utc("2026-01-01T00:00:00Z"), Tz::UTC, 2),
            [utc("2026-01-01T01:30:00Z"), utc("2026-01-01T03:00:00Z")]
        );
        assert_eq!(every.describe().unwrap(), "Every 1 hour 30 minutes");
        let words = spec.describe().unwrap();
        assert!(words.contains("09:00"), "{words}");
        assert!(
            words.contains("Monday") && words.contains("Friday"),
            "{words}"
        );
    }
}
