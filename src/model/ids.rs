//! Newtypes for the names that cross the edges, each with a validating `parse`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest proc name: a proc name plus `-` and a 14-character suffix makes an
/// execution name, which is a Kubernetes Job name and label value (at most 63).
pub const PROC_NAME_MAX: usize = 48;

/// A proc's name: a DNS-1123 label (lower-case letters, digits and `-`, starting and
/// ending with a letter or digit), at most [`PROC_NAME_MAX`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "say-hello-world")]
pub struct ProcName(String);

impl ProcName {
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("a proc name must not be empty".into());
        }
        if name.chars().count() > PROC_NAME_MAX {
            return Err(format!(
                "proc name {:?} is {} characters long; the limit is {PROC_NAME_MAX}",
                truncate(name, 64),
                name.chars().count()
            ));
        }
        if !super::patterns::matches(super::patterns::PROC_NAME, name) {
            return Err(format!(
                "proc name {:?} is invalid: use lower-case letters, digits and '-', \
                 starting and ending with a letter or digit",
                truncate(name, 64)
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProcName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProcName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An environment variable name (an arg or a secret): `[A-Za-z_][A-Za-z0-9_]*`, at most 128.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "NAME")]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(name: &str) -> Result<Self, String> {
        if !super::patterns::matches(super::patterns::ENV_NAME, name) {
            return Err(format!(
                "{:?} is not a valid environment variable name: use letters, digits and '_', \
                 not starting with a digit, at most 128 characters",
                truncate(name, 64)
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A user's e-mail address, as the `Email-Id` header carries it. Stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let valid = text.len() <= 254
            && text.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Err(format!(
                "{:?} is not a valid e-mail address",
                truncate(text, 64)
            ));
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most `max` characters of `text`, for quoting user input in messages.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_names_are_dns_labels_short_enough_for_execution_names() {
        let good = ["say-hello-world", "a", "x1", &"a".repeat(PROC_NAME_MAX)];
        for name in good {
            assert!(ProcName::parse(name).is_ok(), "{name} should be valid");
        }
        let bad = [
            ("", "empty"),
            ("Say", "upper case"),
            ("-lead", "leading dash"),
            ("trail-", "trailing dash"),
            ("under_score", "underscore"),
            ("dot.ted", "dot"),
            ("spa ce", "space"),
            ("ünï", "non-ascii"),
            (&"a".repeat(PROC_NAME_MAX + 1), "too long"),
        ];
        for (name, why) in bad {
            assert!(
                ProcName::parse(name).is_err(),
                "{why}: {name:?} should be rejected"
            );
        }
    }

    #[test]
    fn env_names_follow_the_shell_rules() {
        for name in ["NAME", "_x", "a1_B"] {
            assert!(EnvName::parse(name).is_ok(), "{name}");
        }
        for name in ["", "1A", "A-B", "A B", "É"] {
            assert!(EnvName::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            Email::parse(" Jo@Example.com ").unwrap().as_str(),
            "jo@example.com"
        );
        for bad in ["", "jo", "@x", "jo@", "jo@.x", "a b@x", "a@b@c"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn truncate_cuts_on_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
