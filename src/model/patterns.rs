//! The shapes of names and texts that cross the API, as regular expressions. The
//! validators match them, and the OpenAPI document states the very same strings, so
//! the two cannot drift apart.
//!
//! They are written in the part of the syntax that Rust's `regex`, ECMA-262 (what
//! JSON Schema's `pattern` means) and Python's `re` (what contract testers generate
//! from) read alike: explicit character ranges, no `\s`, `\w` or `\d` (their meanings
//! differ between engines), anchored with `^` and `$`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock};

use regex::Regex;

/// A proc name: a DNS-1123 label of at most 48 characters (a proc name plus `-` and a
/// 14-character suffix makes an execution name, a Kubernetes Job name of at most 63).
pub const PROC_NAME: &str = "^[a-z0-9]([-a-z0-9]{0,46}[a-z0-9])?$";

/// An execution name: a DNS-1123 label (a Kubernetes Job name).
pub const EXECUTION_NAME: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// An environment variable name (an arg or a secret).
pub const ENV_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";

/// A schedule id: a UUID in its hyphenated form.
pub const SCHEDULE_ID: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A container image reference: printable ASCII without spaces.
pub const IMAGE_NAME: &str = "^[!-~]{1,512}$";

/// Characters never part of a group name or an e-mail address: controls and every
/// Unicode space.
const NOT_IN_A_WORD: &str =
    "\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// A group name: 1 to 128 characters, no spaces or control characters.
pub static GROUP_NAME: LazyLock<String> =
    LazyLock::new(|| format!("^[^{NOT_IN_A_WORD}]{{1,128}}$"));

/// Text without NUL characters (an arg's value, a part of a command).
pub const NO_NUL: &str = "^[^\\x00]*$";

/// Where the White_Space characters `str::trim` removes are listed, for patterns that
/// must agree with a trim (Python's `\s` also takes `\x1c`-`\x1f`; this list does not).
const WHITE_SPACE: &str =
    "\\t\\n\\x0b\\x0c\\r\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// An e-mail address, blanks around it ignored (the sign-in's `email`).
pub fn email_pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| format!("^[{WHITE_SPACE}]*{}[{WHITE_SPACE}]*$", address()))
}

/// `local@domain`, at most 64 + 1 + 189 characters, the domain neither starting nor
/// ending with a dot, no comma, space or control anywhere.
fn address() -> String {
    let c = format!("[^@,{NOT_IN_A_WORD}]");
    let edge = format!("[^@,.{NOT_IN_A_WORD}]");
    format!("{c}{{1,64}}@{edge}({c}{{0,187}}{edge})?")
}

/// `notification_emails`: comma-separated addresses, blanks around them and empty
/// entries ignored; an address is `local@domain`, at most 64 + 1 + 189 characters, the
/// domain neither starting nor ending with a dot, no space or control anywhere.
pub fn email_list_pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let entry = format!("[{WHITE_SPACE}]*({}[{WHITE_SPACE}]*)?", address());
        format!("^{entry}(,{entry})*$")
    })
}

/// A comma-separated list holding at least one entry that is not blank (`tags`).
pub fn nonempty_list_pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| format!("[^,{WHITE_SPACE}]"))
}

/// Text that is not blank once trimmed (`group_name`).
pub fn not_blank_pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| format!("[^{WHITE_SPACE}]"))
}

/// An http(s) URL with a host, as `callback_url` and notify targets take it.
pub const URL: &str = "^[hH][tT][tT][pP][sS]?://[^\\x00-\\x20\\x7f/?#@\\\\]";

/// Whether `text` matches `pattern` (one of the above), with each pattern compiled once.
pub fn matches(pattern: &str, text: &str) -> bool {
    static COMPILED: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);
    // A clone of a compiled regex shares it; the lock is not held while matching.
    let regex = COMPILED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(pattern.to_owned())
        .or_insert_with(|| Regex::new(pattern).expect("the patterns above compile"))
        .clone();
    regex.is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_what_they_describe() {
        assert!(matches(PROC_NAME, "say-hello-world"));
        assert!(matches(PROC_NAME, "a"));
        assert!(!matches(PROC_NAME, "-a"));
        assert!(!matches(PROC_NAME, "a-"));
        assert!(!matches(PROC_NAME, "A"));
        assert!(!matches(PROC_NAME, &"a".repeat(49)));
        assert!(matches(PROC_NAME, &"a".repeat(48)));
        assert!(
            !matches(PROC_NAME, "a\n"),
            "no trailing newline slips through"
        );
        assert!(matches(EXECUTION_NAME, &"a".repeat(63)));
        assert!(!matches(EXECUTION_NAME, &"a".repeat(64)));
        assert!(matches(ENV_NAME, "_A1"));
        assert!(!matches(ENV_NAME, "1A"));
        assert!(matches(SCHEDULE_ID, "0b7c3a54-4a43-4d33-9a1b-6f2bb7f6f6e1"));
        assert!(!matches(SCHEDULE_ID, "0b7c3a544a434d339a1b6f2bb7f6f6e1"));
        assert!(matches(IMAGE_NAME, "ghcr.io/acme/report:1.2@sha256:ab"));
        assert!(!matches(IMAGE_NAME, "with space"));
        assert!(matches(&GROUP_NAME, "ops"));
        assert!(matches(&GROUP_NAME, "équipe"));
        assert!(!matches(&GROUP_NAME, "two words"));
        assert!(!matches(&GROUP_NAME, "nbsp\u{a0}"));
        assert!(!matches(&GROUP_NAME, "ideographic\u{3000}"));
        assert!(!matches(&GROUP_NAME, ""));
        assert!(matches(NO_NUL, "fine"));
        assert!(!matches(NO_NUL, "a\0b"));
    }
}
