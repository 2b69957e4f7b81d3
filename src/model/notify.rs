//! Notification targets: where to tell that a run ended (a webhook or a Slack incoming
//! webhook), and on which outcome. A target's URL may be a credential (a Slack webhook
//! URL is one), so it is shown only [`masked`](NotifyTarget::masked): in API answers,
//! logs, the delivery log and `Debug` output alike.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Status;

/// At most this many targets per execution or schedule.
pub const MAX_TARGETS: usize = 10;
/// At most this many bytes in a target's URL.
pub const MAX_URL_BYTES: usize = 2048;

/// What a target is, which decides the body it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// The run as JSON, signed (`Proctor-Signature`).
    Webhook,
    /// A Slack incoming webhook: `{"text": ...}` with a link to the run.
    Slack,
    /// The original's `callback_url`: `{"name", "status"}` (signed too).
    Callback,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Callback => "callback",
        }
    }
}

/// Which outcomes a target is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// SUCCEEDED.
    Success,
    /// Any other final status (FAILED, TIMED_OUT, CANCELLED, REQUIREMENT_NOT_MET,
    /// CREATION_FAILED).
    Failure,
    /// Every final status.
    #[default]
    Always,
}

impl NotifyOn {
    /// Whether a run that ended `status` is told to a target with this setting.
    pub fn matches(self, status: Status) -> bool {
        status.is_final()
            && match self {
                NotifyOn::Always => true,
                NotifyOn::Success => status == Status::Succeeded,
                NotifyOn::Failure => status != Status::Succeeded,
            }
    }
}

/// One place to tell how a run ended: `{"kind", "url", "on"}` (`on` defaults to `always`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// `webhook` or `slack` (`callback` is the execute request's `callback_url`).
    pub kind: NotifyKind,
    /// An http(s) URL; shown masked (`https://hooks.slack.com/…`) in every answer.
    pub url: String,
    #[serde(default)]
    pub on: NotifyOn,
}

impl fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("kind", &self.kind)
            .field("url", &mask_url(&self.url))
            .field("on", &self.on)
            .finish()
    }
}

impl NotifyTarget {
    /// The same target with its URL masked.
    pub fn masked(&self) -> NotifyTarget {
        NotifyTarget {
            kind: self.kind,
            url: mask_url(&self.url),
            on: self.on,
        }
    }
}

/// A URL reduced to its scheme, host and port, with `/…` when it had more: what can
/// be shown of a URL that may hold a credential in its path or query.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.has_host() => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let more = parsed.path() != "/" || parsed.query().is_some();
            format!(
                "{}://{host}{port}{}",
                parsed.scheme(),
                if more { "/…" } else { "" }
            )
        }
        _ => "(an invalid URL)".to_owned(),
    }
}

/// Checks one URL: http(s), a host, no user info, at most [`MAX_URL_BYTES`].
pub fn check_url(what: &str, url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "{what}: the URL must be at most {MAX_URL_BYTES} bytes"
        ));
    }
    match url::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.has_host()
                && parsed.username().is_empty()
                && parsed.password().is_none() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{what}: {} is not an http(s) URL with a host (and no user or password)",
            mask_url(url)
        )),
    }
}

/// Checks a list of targets: at most [`MAX_TARGETS`], each URL valid, no callback
/// kind (that is `callback_url`); the message names the bad one by its index.
pub fn check_targets(targets: &[NotifyTarget]) -> Result<(), String> {
    if targets.len() > MAX_TARGETS {
        return Err(format!(
            "notify: at most {MAX_TARGETS} targets, got {}",
            targets.len()
        ));
    }
    for (i, target) in targets.iter().enumerate() {
        if target.kind == NotifyKind::Callback {
            return Err(format!(
                "notify[{i}].kind: expected webhook or slack (use callback_url for a callback)"
            ));
        }
        check_url(&format!("notify[{i}].url"), &target.url)?;
    }
    Ok(())
}

/// Serializes targets with their URLs masked (the only way they leave the server).
pub fn serialize_masked<S: serde::Serializer>(
    targets: &[NotifyTarget],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(targets.iter().map(NotifyTarget::masked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: NotifyKind, url: &str) -> NotifyTarget {
        NotifyTarget {
            kind,
            url: url.into(),
            on: NotifyOn::Always,
        }
    }

    #[test]
    fn masking_keeps_only_scheme_host_and_port() {
        for (url, masked, why) in [
            (
                "https://hooks.slack.com/services/T0/B0/secret",
                "https://hooks.slack.com/…",
                "a Slack URL's path is its secret",
            ),
            (
                "http://127.0.0.1:8080/hook?token=abc",
                "http://127.0.0.1:8080/…",
                "a query may hold a token",
            ),
            (
                "https://example.com/",
                "https://example.com",
                "nothing hidden",
            ),
            ("not a url", "(an invalid URL)", "garbage"),
        ] {
            assert_eq!(mask_url(url), masked, "{why}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_url() {
        let t = target(
            NotifyKind::Slack,
            "https://hooks.slack.com/services/T0/B0/secret",
        );
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn targets_are_checked_with_a_message_naming_the_problem() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        for (targets, expected, why) in [
            (
                vec![target(NotifyKind::Webhook, "ftp://example.com/x")],
                "notify[0].url",
                "ftp is refused",
            ),
            (
                vec![target(NotifyKind::Webhook, "https://u:p@example.com/")],
                "notify[0].url",
                "user info is refused",
            ),
            (
                vec![target(NotifyKind::Webhook, &long)],
                "at most 2048 bytes",
                "too long",
            ),
            (
                vec![target(NotifyKind::Callback, "https://example.com/")],
                "notify[0].kind",
                "callback is callback_url's",
            ),
            (
                vec![target(NotifyKind::Slack, "https://example.com/"); MAX_TARGETS + 1],
                "at most 10 targets",
                "too many",
            ),
        ] {
            let err = check_targets(&targets).unwrap_err();
            assert!(err.contains(expected), "{why}: {err}");
        }
        assert!(check_targets(&[target(NotifyKind::Slack, "https://hooks.slack.com/x")]).is_ok());
    }

    #[test]
    fn on_matches_outcomes() {
        assert!(NotifyOn::Success.matches(Status::Succeeded));
        assert!(!NotifyOn::Success.matches(Status::Failed));
        assert!(NotifyOn::Failure.matches(Status::TimedOut));
        assert!(!NotifyOn::Failure.matches(Status::Succeeded));
        assert!(NotifyOn::Always.matches(Status::Cancelled));
        assert!(!NotifyOn::Always.matches(Status::Running));
    }
}
