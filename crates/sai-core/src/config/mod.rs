//! Config types of every Sai daemon, and the one loader they all share.
//!
//! Config files are JSON with `#` line comments (`.json`, `.conf`, or no
//! extension) or YAML (`.yaml`, `.yml`). Every struct denies unknown fields,
//! so a typo is an error naming the file, line and column. The JSON Schemas
//! under `schemas/` are generated from these types (see [`schema`]).

pub mod builder;
pub mod device;
pub mod expect;
pub mod jig;
pub mod locate;
pub mod problem;
pub mod rack;
pub mod schema;
pub mod server;
pub mod web;
mod yaml_walk;

use serde::de::DeserializeOwned;

use problem::{ConfigType, Diagnostic, InvalidConfig};

/// How a config text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON with `#` line comments.
    Json,
    /// YAML.
    Yaml,
}

impl Format {
    /// Pick the format from a file name: `.yaml`/`.yml` are YAML, anything else JSON.
    pub fn from_file_name(name: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else {
            Format::Json
        }
    }
}

/// A config that could not be read, with the place it went wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file (or other source) the text came from.
    pub source_name: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

/// Parse a config of type `T` from `bytes`, read from `source_name`.
pub fn parse<T: DeserializeOwned>(
    source_name: &str,
    bytes: &[u8],
    format: Format,
) -> Result<T, ConfigError> {
    let fail = |line: usize, column: usize, message: String| ConfigError {
        source_name: source_name.to_string(),
        line,
        column,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col_of_offset(bytes, e.valid_up_to());
        fail(line, column, format!("invalid UTF-8: {e}"))
    })?;
    let (line, column, message) = match format {
        Format::Json => {
            let blanked = crate::jsonc::blank_comments(text);
            match serde_json::from_str(&blanked) {
                Ok(config) => return Ok(config),
                Err(e) => (e.line(), e.column(), strip_serde_position(&e.to_string())),
            }
        }
        Format::Yaml => match serde_norway::from_str(text) {
            Ok(config) => return Ok(config),
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                (line, column, strip_serde_position(&e.to_string()))
            }
        },
    };
    let (line, column) = point_at_key(text, format, &message, (line, column));
    Err(fail(line, column, message))
}

/// Parse a config of type `T` and run its semantic checks: the one way every
/// daemon (and `sai validate`) reads its config. Every problem comes back as
/// a `file:line:col` [`Diagnostic`] placed at the field it is about.
pub fn load<T: ConfigType>(
    source_name: &str,
    bytes: &[u8],
    format: Format,
) -> Result<T, InvalidConfig> {
    let config: T = parse(source_name, bytes, format).map_err(|e| InvalidConfig(vec![e.into()]))?;
    let problems = config.validate();
    if problems.is_empty() {
        return Ok(config);
    }
    // The parse succeeded, so the text is valid UTF-8.
    let text = String::from_utf8_lossy(bytes);
    Err(InvalidConfig(
        problems
            .into_iter()
            .map(|p| {
                let (line, column) = locate::locate_nearest(&text, format, &p.path);
                Diagnostic::error(source_name, line, column, p.to_string())
            })
            .collect(),
    ))
}

/// serde names the key but places an unknown field just after it (JSON) and
/// a duplicate field at the start of its object; point at the key itself.
fn point_at_key(text: &str, format: Format, message: &str, at: (usize, usize)) -> (usize, usize) {
    let quoted = |prefix: &str| {
        message
            .rsplit(prefix)
            .next()
            .filter(|_| message.contains(prefix))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let found = if let Some(key) = quoted("unknown field `") {
        locate::locate_key_before(text, format, &key, at)
    } else if let Some(key) = quoted("duplicate field `") {
        locate::locate_duplicate_key(text, format, &key)
    } else {
        None
    };
    found.unwrap_or(at)
}

/// 1-based line and column of a byte offset.
pub fn line_col_of_offset(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

/// serde_json and serde_norway append " at line X column Y"; we report the
/// position ourselves in `file:line:col` form.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
