//! `[log]`: the access log's format and destination.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub access: Option<String>,
}

/// How access lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs after a timestamp, as the process's other logs (the default).
    #[default]
    Text,
    /// One JSON object per line, with the field names docs/operations.md lists.
    Json,
}

/// Where access lines go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessTarget {
    /// Standard error, with the process's other logs (the default).
    #[default]
    Stderr,
    /// Appended to this file, reopened on SIGUSR1 (for logrotate).
    File(PathBuf),
    /// Not written at all.
    Off,
}

/// Validated `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub access: AccessTarget,
}

pub(super) fn validate(l: &RawLog) -> Result<LogSettings, ConfigError> {
    let format = match l.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(invalid(
                "log.format",
                format!("{other:?} is not a format (use \"text\" or \"json\")"),
            ))
        }
    };
    let access = match l.access.as_deref() {
        None | Some("stderr") => AccessTarget::Stderr,
        Some("off") => AccessTarget::Off,
        Some(p) if p.trim().is_empty() => {
            return Err(invalid(
                "log.access",
                "use \"stderr\", \"off\" or a file path",
            ))
        }
        Some(p) => AccessTarget::File(PathBuf::from(p)),
    };
    Ok(LogSettings { format, access })
}
