//! What is wrong in a config, and where: [`FieldPath`] into the document,
//! [`ConfigProblem`] (a rule broken at a path, found by a type's
//! `validate()`), [`ConfigType`] (a config type and its checks), and
//! [`Diagnostic`] (a problem placed at `file:line:col`).

use std::fmt;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::ConfigError;

/// A config type of one kind: read with serde, described by schemars,
/// checked by its `validate()`.
pub trait ConfigType: DeserializeOwned + JsonSchema {
    /// Value of the `schema` member that marks a file of this kind.
    const MARKER: &'static str;

    /// Check what the schema cannot express: every problem found, each
    /// with the path of the field it concerns; empty means valid.
    fn validate(&self) -> Vec<ConfigProblem>;
}

/// One step of a path into a config document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A member of an object.
    Key(String),
    /// An element of an array (0-based).
    Index(usize),
}

/// Where in a config document a field is: `platforms[0].servers[1].token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<PathSegment>);

impl FieldPath {
    /// The document itself.
    pub fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    /// This path extended by the object member `key`.
    pub fn key(&self, key: &str) -> FieldPath {
        let mut segments = self.0.clone();
        segments.push(PathSegment::Key(key.to_string()));
        FieldPath(segments)
    }

    /// This path extended by array element `index`.
    pub fn index(&self, index: usize) -> FieldPath {
        let mut segments = self.0.clone();
        segments.push(PathSegment::Index(index));
        FieldPath(segments)
    }

    /// Whether this is the document itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Parse a JSON Pointer (`/platforms/0/name`), as reported by JSON
    /// Schema validators. All-digit segments become [`PathSegment::Index`].
    pub fn from_json_pointer(pointer: &str) -> FieldPath {
        FieldPath(
            pointer
                .split('/')
                .skip(1)
                .map(|raw| {
                    let seg = raw.replace("~1", "/").replace("~0", "~");
                    match seg.parse::<usize>() {
                        Ok(n) if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) => {
                            PathSegment::Index(n)
                        }
                        _ => PathSegment::Key(seg),
                    }
                })
                .collect(),
        )
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(k) if i == 0 => write!(f, "{k}")?,
                PathSegment::Key(k) => write!(f, ".{k}")?,
                PathSegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A semantic problem in a config that parsed: a rule JSON Schema cannot
/// express (both `token` and `token_file`, a duplicate name, a bad URL...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field the problem is about; the root when it concerns the whole file.
    pub path: FieldPath,
    /// What is wrong and what to do instead.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: FieldPath, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file is rejected.
    Error,
    /// The file is accepted, but probably not as meant.
    Warning,
}

/// One problem found in a file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or other source) the text came from.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error at `line`:`column` (0 is raised to 1).
    pub fn error(
        source_name: &str,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            source_name: source_name.to_string(),
            line: line.max(1),
            column: column.max(1),
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// Whether this rejects the file.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl From<ConfigError> for Diagnostic {
    fn from(e: ConfigError) -> Self {
        Diagnostic::error(&e.source_name, e.line, e.column, e.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.source_name, self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A config file that was rejected, with every problem found in it.
/// Displayed one `file:line:col: message` per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct InvalidConfig(pub Vec<Diagnostic>);

/// The problems of the `schema` member, where every `validate()` starts:
/// one when it names another kind than `expected`, else none.
pub fn check_marker(found: Option<&str>, expected: &str) -> Vec<ConfigProblem> {
    found
        .filter(|f| *f != expected)
        .map(|f| {
            ConfigProblem::new(
                FieldPath::root().key("schema"),
                format!("expected \"{expected}\", found {f:?}"),
            )
        })
        .into_iter()
        .collect()
}

/// Why `value` is not a socket address (`ip:port`, `[ipv6]:port`), as the
/// daemons that bind one check it; `example` is a good value for the message.
pub fn check_socket_addr(value: &str, example: &str) -> Result<(), String> {
    match value.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{value:?} is not an address:port such as \"{example}\""
        )),
    }
}

/// The problems as text, after checking that each of `wanted` is part of
/// one of them (the failure names the missing text and lists them all).
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_mentions(problems: &[ConfigProblem], wanted: &[&str]) -> Vec<String> {
    let p: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for want in wanted {
        assert!(p.iter().any(|m| m.contains(want)), "{want:?} not in {p:?}");
    }
    p
}
