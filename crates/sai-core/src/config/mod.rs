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
pub mod rack;
pub mod schema;
pub mod server;
pub mod web;

use serde::de::DeserializeOwned;

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
    match format {
        Format::Json => {
            let blanked = crate::jsonc::blank_comments(text);
            serde_json::from_str(&blanked).map_err(|e| {
                let message = strip_serde_position(&e.to_string());
                fail(e.line(), e.column(), message)
            })
        }
        Format::Yaml => serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            fail(line, column, strip_serde_position(&e.to_string()))
        }),
    }
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
