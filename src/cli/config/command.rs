//! `proctor config set KEY=VALUE ...` and `proctor config show`.

use std::path::Path;

use serde_json::json;
use serde_yaml_ng::{Mapping, Value};

use super::{
    CONFIG_HOME, Config, EMAIL, FILE_NAME, HOST, KEYS, Source, TIMEOUT, TOKEN, URL, check_email,
    check_token, config_dir, read_file, server_url, timeout_secs,
};
use crate::cli::error::CliError;
use crate::cli::output::{self, Details, Format};

/// `proctor config set KEY=VALUE ...`: merges into the file (an empty VALUE removes the
/// key), keeping what else it holds. The file is readable by its owner only.
pub fn set(pairs: &[String]) -> Result<(), CliError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let dir = config_dir(&env)?;
    let path = dir.join(FILE_NAME);
    let mut mapping = read_file(&path)
        .map_err(|e| e.with_hint(format!("fix or remove {}, then set again", path.display())))?
        .unwrap_or_default();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CliError::usage(format!(
                "Incorrect config key-value pair format: {pair}. Correct format: CONFIG_KEY=VALUE"
            )));
        };
        let key = key.trim();
        let value = value.trim();
        let checked = match key {
            HOST | URL => server_url(value).map(|_| ()),
            EMAIL => check_email(value),
            TOKEN => check_token(value),
            TIMEOUT => timeout_secs(value).map(|_| ()),
            _ => {
                return Err(
                    CliError::usage(format!("Proctor doesn't support config key: {key}"))
                        .with_hint(format!("the keys are {}", KEYS.join(", "))),
                );
            }
        };
        if value.is_empty() {
            mapping.shift_remove(key);
            continue;
        }
        checked.map_err(|problem| CliError::usage(format!("{key} {problem}")))?;
        // One address only: the other key would otherwise win or lose silently.
        match key {
            HOST => {
                mapping.shift_remove(URL);
            }
            URL => {
                mapping.shift_remove(HOST);
            }
            _ => {}
        }
        let value = match key {
            TIMEOUT => Value::Number(timeout_secs(value).expect("checked").into()),
            _ => Value::String(value.to_owned()),
        };
        mapping.insert(Value::String(key.to_owned()), value);
    }
    write_file(&dir, &path, &mapping)?;
    output::line(&format!(
        "Proctor client configured successfully: {}",
        path.display()
    ));
    Ok(())
}

fn write_file(dir: &Path, path: &Path, mapping: &Mapping) -> Result<(), CliError> {
    let failed = |e: std::io::Error| {
        CliError::usage(format!("cannot write {}: {e}", path.display()))
            .with_hint(format!("set {CONFIG_HOME} to a folder you may write to"))
    };
    let text = serde_yaml_ng::to_string(mapping).expect("a mapping serializes");
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(failed)?;
    let temp = path.with_extension("yaml.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    {
        use std::io::Write as _;
        let mut file = options.open(&temp).map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
    }
    std::fs::rename(&temp, path).map_err(failed)
}

/// `proctor config show`: what is in force and where it came from, the token masked.
pub fn show(config: &Config, format: Format) {
    fn describe(
        value: Option<(&str, Source, &'static str)>,
    ) -> (String, &'static str, &'static str) {
        match value {
            Some((value, source, key)) => (value.to_owned(), source.as_str(), key),
            None => (String::new(), "unset", ""),
        }
    }
    let server = describe(
        config
            .server
            .as_ref()
            .map(|s| (s.value.as_str(), s.source, s.key)),
    );
    let email = describe(
        config
            .email
            .as_ref()
            .map(|s| (s.value.as_str(), s.source, s.key)),
    );
    let token = config
        .token
        .as_ref()
        .map(|t| (output::mask(&t.value), t.source));
    if format == Format::Json {
        output::json(&json!({
            "file": config.path,
            "file_exists": config.file_exists,
            "server": {
                "value": config.server.as_ref().map(|s| &s.value),
                "source": server.1,
                "key": server.2,
            },
            "email_id": {
                "value": config.email.as_ref().map(|s| &s.value),
                "source": email.1,
            },
            "access_token": {
                "value": token.as_ref().map(|t| &t.0),
                "source": token.as_ref().map_or("unset", |t| t.1.as_str()),
            },
            "connection_timeout_secs": {
                "value": config.timeout.value,
                "source": config.timeout.source.as_str(),
            },
        }));
        return;
    }
    let shown = |value: &str, source: &str| {
        if value.is_empty() {
            "(not set)".to_owned()
        } else {
            format!("{value}  ({source})")
        }
    };
    let mut details = Details::new();
    details
        .row(
            "Config file",
            format!(
                "{}{}",
                config.path.display(),
                if config.file_exists {
                    ""
                } else {
                    "  (not found)"
                }
            ),
        )
        .row("Server", shown(&server.0, server.1))
        .row(EMAIL, shown(&email.0, email.1))
        .row(
            TOKEN,
            match &token {
                Some((masked, source)) => shown(masked, source.as_str()),
                None => shown("", ""),
            },
        )
        .row(
            TIMEOUT,
            shown(
                &config.timeout.value.to_string(),
                config.timeout.source.as_str(),
            ),
        );
    details.print();
}
