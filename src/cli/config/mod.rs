//! The client's settings: `~/.proctor/proctor.yaml` with the original's keys, then
//! environment variables of the same names, then flags. `PROCTOR_CONFIG_HOME` (or the
//! original's `LOCAL_CONFIG_DIR`) names another folder for `proctor.yaml`.
//! `proctor config set` and `proctor config show` are in `command.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::error::{CliError, warn};

mod command;
pub use command::{set, show};

/// proctord's address as `host:port` (the original's key); `http://` is assumed.
pub const HOST: &str = "PROCTOR_HOST";
/// proctord's address as a full `http://` or `https://` URL; wins over PROCTOR_HOST.
pub const URL: &str = "PROCTOR_URL";
pub const EMAIL: &str = "EMAIL_ID";
pub const TOKEN: &str = "ACCESS_TOKEN";
pub const TIMEOUT: &str = "CONNECTION_TIMEOUT_SECS";
/// The original's; accepted and unused (this client follows a run to its end).
const POLL_COUNT: &str = "PROC_EXECUTION_STATUS_POLL_COUNT";
/// Every key `proctor config set` takes.
pub const KEYS: [&str; 5] = [HOST, URL, EMAIL, TOKEN, TIMEOUT];

/// The folder of `proctor.yaml` instead of `~/.proctor`.
pub const CONFIG_HOME: &str = "PROCTOR_CONFIG_HOME";
/// The original's name for [`CONFIG_HOME`].
const LOCAL_CONFIG_DIR: &str = "LOCAL_CONFIG_DIR";
pub const FILE_NAME: &str = "proctor.yaml";

pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
const MAX_TIMEOUT_SECS: u64 = 3600;

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Environment,
    Flag,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Environment => "environment",
            Source::Flag => "flag",
        }
    }
}

/// A value, where it came from and under which key.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
    pub key: &'static str,
}

/// The global flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub email: Option<String>,
    pub token: Option<String>,
    pub timeout: Option<u64>,
}

/// The settings in force for this command.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub file_exists: bool,
    /// proctord's base URL, without a trailing `/`.
    pub server: Option<Sourced<String>>,
    pub email: Option<Sourced<String>>,
    pub token: Option<Sourced<String>>,
    pub timeout: Sourced<u64>,
}

/// Values of one layer (file, environment or flags), not yet checked.
#[derive(Default)]
struct Layer {
    url: Option<String>,
    host: Option<String>,
    email: Option<String>,
    token: Option<String>,
    timeout: Option<String>,
}

impl Config {
    /// Reads the file, the environment and `overrides`; an invalid value is an error
    /// naming its key and where it was set.
    pub fn load(overrides: &Overrides) -> Result<Config, CliError> {
        Self::load_with(overrides, &|name| std::env::var(name).ok())
    }

    fn load_with(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, CliError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let path = config_dir(&env)?.join(FILE_NAME);
        let file = read_file(&path)?;
        let file_exists = file.is_some();
        let mut file_layer = Layer::default();
        if let Some(mapping) = &file {
            for (key, value) in mapping {
                let key = key.as_str().unwrap_or_default();
                let value = scalar(value).map_err(|problem| {
                    config_error(&format!("{key} {problem}"), &in_file(&path))
                })?;
                match key {
                    URL => file_layer.url = value,
                    HOST => file_layer.host = value,
                    EMAIL => file_layer.email = value,
                    TOKEN => file_layer.token = value,
                    TIMEOUT => file_layer.timeout = value,
                    POLL_COUNT => {}
                    other => warn(&format!(
                        "ignoring {other:?} in {}: Proctor doesn't support this config key (known: {})",
                        path.display(),
                        KEYS.join(", ")
                    )),
                }
            }
        }
        let env_layer = Layer {
            url: env(URL),
            host: env(HOST),
            email: env(EMAIL),
            token: env(TOKEN),
            timeout: env(TIMEOUT),
        };
        let flag_layer = Layer {
            url: overrides.host.clone(),
            host: None,
            email: overrides.email.clone(),
            token: overrides.token.clone(),
            timeout: overrides.timeout.map(|t| t.to_string()),
        };

        let mut config = Config {
            path: path.clone(),
            file_exists,
            server: None,
            email: None,
            token: None,
            timeout: Sourced {
                value: DEFAULT_TIMEOUT_SECS,
                source: Source::Default,
                key: TIMEOUT,
            },
        };
        let file_place = in_file(&path);
        for (layer, source, place) in [
            (file_layer, Source::File, file_place.as_str()),
            (env_layer, Source::Environment, "in the environment"),
            (flag_layer, Source::Flag, "given as a flag"),
        ] {
            let server = match (layer.url, layer.host) {
                (Some(url), _) => Some((
                    url,
                    if source == Source::Flag {
                        "--host"
                    } else {
                        URL
                    },
                )),
                (None, Some(host)) => Some((host, HOST)),
                (None, None) => None,
            };
            if let Some((value, key)) = server {
                let value =
                    server_url(&value).map_err(|p| config_error(&format!("{key} {p}"), place))?;
                config.server = Some(Sourced { value, source, key });
            }
            if let Some(value) = layer.email {
                check_email(&value).map_err(|p| config_error(&format!("{EMAIL} {p}"), place))?;
                config.email = Some(Sourced {
                    value: value.trim().to_owned(),
                    source,
                    key: EMAIL,
                });
            }
            if let Some(value) = layer.token {
                check_token(&value).map_err(|p| config_error(&format!("{TOKEN} {p}"), place))?;
                config.token = Some(Sourced {
                    value: value.trim().to_owned(),
                    source,
                    key: TOKEN,
                });
            }
            if let Some(value) = layer.timeout {
                let value = timeout_secs(&value)
                    .map_err(|p| config_error(&format!("{TIMEOUT} {p}"), place))?;
                config.timeout = Sourced {
                    value,
                    source,
                    key: TIMEOUT,
                };
            }
        }
        Ok(config)
    }

    /// proctord's base URL, or the original's messages when it is not configured.
    pub fn server(&self) -> Result<&str, CliError> {
        match &self.server {
            Some(server) => Ok(&server.value),
            None if !self.file_exists => Err(CliError::usage(format!(
                "Config file not found in {}",
                self.path.display()
            ))
            .with_hint(format!(
                "Setup config using `proctor config set {HOST}=127.0.0.1:5001 {EMAIL}=you@example.com {TOKEN}=...` \
                 (or set {HOST} / {URL} in the environment, or pass --host)"
            ))),
            None => Err(CliError::usage(format!(
                "Config Error!!! Mandatory config {HOST} is missing in Proctor Config file {}",
                self.path.display()
            ))
            .with_hint(format!(
                "set it with `proctor config set {HOST}=host:port` (or {URL}=https://host)"
            ))),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.value)
    }
}

fn in_file(path: &Path) -> String {
    format!("in {}", path.display())
}

fn config_error(problem: &str, place: &str) -> CliError {
    CliError::usage(format!("Config Error!!! {problem} ({place})"))
        .with_hint("fix it, or rewrite it with `proctor config set KEY=VALUE` (`proctor config show` shows what is in force)")
}

/// The folder of `proctor.yaml`.
fn config_dir(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, CliError> {
    if let Some(dir) = env(CONFIG_HOME).or_else(|| env(LOCAL_CONFIG_DIR)) {
        return Ok(PathBuf::from(dir));
    }
    match env("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".proctor")),
        None => Err(
            CliError::usage("HOME is not set, so ~/.proctor cannot be found")
                .with_hint(format!("set {CONFIG_HOME} to the folder of {FILE_NAME}")),
        ),
    }
}

/// The file's mapping, or `None` when there is no file.
fn read_file(path: &Path) -> Result<Option<Mapping>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::usage(format!(
                "Config Error!!! cannot read {}: {e}",
                path.display()
            )));
        }
    };
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Mapping(mapping)) => Ok(Some(mapping)),
        Ok(Value::Null) => Ok(Some(Mapping::new())),
        Ok(_) => Err(config_error(
            "the file must be a YAML mapping of KEY: value",
            &in_file(path),
        )),
        Err(e) => Err(config_error(
            &format!("the file is not valid YAML: {e}"),
            &in_file(path),
        )),
    }
}

/// A YAML value as text: strings, numbers and booleans; `None` for null or "".
fn scalar(value: &Value) -> Result<Option<String>, String> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Err("must be a single value, not a list or a mapping".into()),
    };
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

/// `host:port` or an `http(s)://` URL, as a base URL without a trailing `/`.
pub fn server_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    let full = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = reqwest::Url::parse(&full)
        .map_err(|e| format!("must be host:port or an http(s):// URL, got {value:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http:// or https:// address, got {value:?}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "must be host:port or an http(s):// URL without credentials or query, got {value:?}"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn check_email(value: &str) -> Result<(), String> {
    let value = value.trim();
    match value.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && !domain.is_empty() && !value.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!("must be an e-mail address, got {value:?}")),
    }
}

fn check_token(value: &str) -> Result<(), String> {
    if value.trim().chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("must be printable ASCII without spaces".into())
    }
}

fn timeout_secs(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(secs) if (1..=MAX_TIMEOUT_SECS).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECS}, got {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, vars: &[(&str, &str)], overrides: &Overrides) -> Result<Config, CliError> {
        let mut vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.push((CONFIG_HOME.into(), dir.to_string_lossy().into_owned()));
        Config::load_with(overrides, &move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("proctor-cli-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn addresses_become_base_urls() {
        for (given, expected) in [
            ("127.0.0.1:5001", "http://127.0.0.1:5001"),
            ("proctor.example.com", "http://proctor.example.com"),
            (
                "https://proctor.example.com/",
                "https://proctor.example.com",
            ),
            (
                "https://example.com/proctor/",
                "https://example.com/proctor",
            ),
            ("HTTP://Example.com:8080", "http://example.com:8080"),
        ] {
            assert_eq!(server_url(given).as_deref(), Ok(expected), "{given}");
        }
        for bad in [
            "ftp://example.com",
            "http://",
            "https://a@b.c",
            "http://h/?q=1",
            "",
        ] {
            assert!(server_url(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn the_file_then_the_environment_then_flags() {
        let dir = temp_dir();
        std::fs::write(
            dir.join(FILE_NAME),
            "PROCTOR_HOST: file.example.com:5001\nEMAIL_ID: file@example.com\nACCESS_TOKEN: file-token\nCONNECTION_TIMEOUT_SECS: 20\n",
        )
        .unwrap();
        let config = load(&dir, &[], &Overrides::default()).unwrap();
        assert_eq!(config.server().unwrap(), "http://file.example.com:5001");
        assert_eq!(config.timeout.value, 20);
        assert_eq!(config.email.as_ref().unwrap().source, Source::File);

        let config = load(
            &dir,
            &[(URL, "https://env.example.com"), (EMAIL, "env@example.com")],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.server().unwrap(), "https://env.example.com");
        assert_eq!(config.email.as_ref().unwrap().value, "env@example.com");
        assert_eq!(config.token.as_ref().unwrap().value, "file-token");

        let flags = Overrides {
            host: Some("flag.example.com:1".into()),
            timeout: Some(3),
            ..Default::default()
        };
        let config = load(&dir, &[(URL, "https://env.example.com")], &flags).unwrap();
        assert_eq!(config.server().unwrap(), "http://flag.example.com:1");
        assert_eq!(config.timeout.value, 3);
        assert_eq!(config.timeout.source, Source::Flag);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_and_invalid_settings_get_clear_messages() {
        let dir = temp_dir();
        let missing = load(&dir, &[], &Overrides::default()).unwrap();
        let error = missing.server().unwrap_err();
        assert!(
            error.message.starts_with("Config file not found in"),
            "{}",
            error.message
        );
        assert!(
            error
                .hint
                .unwrap()
                .contains("proctor config set PROCTOR_HOST=")
        );

        std::fs::write(dir.join(FILE_NAME), "EMAIL_ID: a@b.c\n").unwrap();
        let error = load(&dir, &[], &Overrides::default())
            .unwrap()
            .server()
            .unwrap_err();
        assert!(
            error
                .message
                .contains("Mandatory config PROCTOR_HOST is missing"),
            "{}",
            error.message
        );

        for (text, needle) in [
            (
                "PROCTOR_HOST: [a, b]\n",
                "PROCTOR_HOST must be a single value",
            ),
            (
                "CONNECTION_TIMEOUT_SECS: soon\n",
                "CONNECTION_TIMEOUT_SECS must be a whole number",
            ),
            (
                "PROCTOR_URL: ftp://x\n",
                "PROCTOR_URL must be an http:// or https://",
            ),
            ("EMAIL_ID: nobody\n", "EMAIL_ID must be an e-mail address"),
            ("PROCTOR_HOST: a: b: c\n", "not valid YAML"),
            ("- a\n- b\n", "must be a YAML mapping"),
        ] {
            std::fs::write(dir.join(FILE_NAME), text).unwrap();
            let error = load(&dir, &[], &Overrides::default()).unwrap_err();
            assert!(
                error.message.contains(needle),
                "{text:?}: {}",
                error.message
            );
            assert!(
                error.message.contains(FILE_NAME),
                "names the file: {}",
                error.message
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
