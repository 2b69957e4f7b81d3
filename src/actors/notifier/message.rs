//! What a notification says: the body for each kind of target and its signature.

use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::model::{NotifyKind, Status};
use crate::store::Execution;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under key>`: the timestamp is
/// signed with the body, so a receiver can refuse old (replayed) requests.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The run's page in the web console, when the public URL is known.
fn link(public_url: Option<&str>, execution: &Execution) -> Option<String> {
    public_url.map(|base| format!("{base}/runs/{}", execution.name))
}

fn rfc3339(t: Option<chrono::NaiveDateTime>) -> Option<String> {
    t.map(|t| {
        t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

/// How long the run took, in seconds (from its start, or its creation if it never ran).
fn duration_seconds(execution: &Execution) -> Option<f64> {
    let finished = execution.finished_at?;
    let started = execution.started_at.unwrap_or(execution.created_at);
    Some((finished - started).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The JSON body a target of `kind` gets.
pub fn body(kind: NotifyKind, execution: &Execution, public_url: Option<&str>) -> Value {
    let url = link(public_url, execution);
    match kind {
        NotifyKind::Callback => json!({"name": execution.name, "status": execution.status}),
        NotifyKind::Webhook => json!({
            "event": "execution.finished",
            "name": execution.name,
            "proc_name": execution.proc_name,
            "status": execution.status,
            "reason": execution.reason,
            "exit_code": execution.exit_code,
            "args": execution.args,
            "user_email": execution.user_email,
            "schedule_id": execution.schedule_id,
            "attempts": execution.attempts,
            "created_at": rfc3339(Some(execution.created_at)),
            "started_at": rfc3339(execution.started_at),
            "finished_at": rfc3339(execution.finished_at),
            "duration_seconds": duration_seconds(execution),
            "url": url,
        }),
        NotifyKind::Slack => {
            let icon = if execution.status == Status::Succeeded {
                ":white_check_mark:"
            } else {
                ":x:"
            };
            let took = duration_seconds(execution)
                .map(|s| format!(" in {s:.0}s"))
                .unwrap_or_default();
            let mut text = format!(
                "{icon} *{proc}* {status}{took}: run `{name}` by {who}",
                proc = execution.proc_name,
                status = execution.status,
                name = execution.name,
                who = execution.user_email,
            );
            if let Some(reason) = &execution.reason {
                text.push_str(&format!("\n> {reason}"));
            }
            if let Some(url) = url {
                text.push_str(&format!("\n<{url}|Open the run>"));
            }
            json!({ "text": text })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = signature(b"key", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(b"key", 1_700_000_001, b"{}"));
        assert_ne!(a, signature(b"key", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{}"));
    }
}
