//! `.sai.json` parsing and task expansion.
//!
//! A `.sai.json` (JSON with `#` line comments) names build **platforms**
//! (tuple name -> shell `build` steps) and **configurations** (name -> cmake
//! options, platform selection, artifacts...). [`parse`] reads one into a
//! [`Saifile`], collecting [`Warning`]s for things the original server
//! silently accepted (duplicate keys, unknown keys, dotted platform names);
//! [`Saifile::expand`] turns it into one [`TaskSpec`] per selected
//! configuration x platform pair, following the original server's rules
//! (see `platform_list` and `expand` for the details).
//!
//! Differences from the original C server, all deliberate:
//! * `platforms` and `configurations` may come in any order (the original
//!   needed `platforms` first).
//! * A duplicated key is a warning and the **later definition wins, at the
//!   later definition's position in file order** (the original created the
//!   duplicated platform's tasks twice).
//! * `branches` is honoured when a git ref is given (the original checked it
//!   in a dry-run loop only, so it had no effect).
//! * Tasks are listed configuration by configuration in file order, and within
//!   one configuration in platform file order. (The original pushed platforms
//!   on the head of a list and so created each configuration's tasks in
//!   *reverse* platform file order; only task `uid`s, i.e. scheduling
//!   priority ties, depended on that.)

mod expand;
mod macros;
pub mod platform_list;
mod read;
mod schema;

use std::fmt;

pub use schema::{BuildDoc, ConfigurationDoc, DefaultDoc, PlatformDoc, SaifileDoc, saifile_schema};

/// A parsed `.sai.json`: platforms and configurations in file order, plus
/// the warnings found while reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saifile {
    pub(crate) source_name: String,
    pub(crate) schema: Option<String>,
    pub(crate) platforms: Vec<PlatformDef>,
    pub(crate) configurations: Vec<Configuration>,
    pub(crate) warnings: Vec<Warning>,
}

/// One entry of the top-level `platforms` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformDef {
    /// The platform key verbatim, e.g. `linux-fedora-32/x86_64-amd/gcc`.
    pub name: String,
    /// 1-based line of the key.
    pub line: usize,
    /// 1-based column (characters) of the key.
    pub column: usize,
    /// The build script: a string, or array / object elements joined with `\n`.
    /// Each non-blank line is one build step.
    pub build: String,
    /// Selected by configurations that have no `platforms` list (or whose list
    /// does not decide otherwise).
    pub default: bool,
    /// Every `${name}` in `build`, with its position in the file.
    pub macros: Vec<MacroUse>,
}

/// A `${name}` found in a platform's `build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroUse {
    /// The macro name, e.g. `cmake`.
    pub name: String,
    /// 1-based line of the `$`.
    pub line: usize,
    /// 1-based column (characters) of the `$`.
    pub column: usize,
}

/// One entry of the top-level `configurations` object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configuration {
    /// The configuration key (becomes the task name).
    pub name: String,
    /// 1-based line of the key.
    pub line: usize,
    /// 1-based column (characters) of the key.
    pub column: usize,
    /// Substituted for `${prep}` (empty if absent).
    pub prep: String,
    /// Substituted for `${cmake}` (empty if absent).
    pub cmake: String,
    /// Substituted for `${cpack}` (empty if absent).
    pub cpack: String,
    /// `deps` split on commas and trimmed: packages the task needs.
    pub deps: Vec<String>,
    /// The `platforms` selection list, verbatim, if given.
    pub platforms: Option<String>,
    /// `artifacts` split on commas and trimmed: globs to upload.
    pub artifacts: Vec<String>,
    /// `branches` split on commas/whitespace: only pushes to these branches
    /// create this configuration's tasks. Empty = every branch.
    pub branches: Vec<String>,
    /// `idle` (newer saifiles), kept for the scheduler; not interpreted here.
    pub idle: Option<u64>,
    /// `pool` (newer saifiles), kept for the scheduler; not interpreted here.
    pub pool: Option<String>,
    /// `test_reports` split on commas and trimmed: globs of JUnit XML files
    /// the builder uploads after the steps, passed or failed.
    pub test_reports: Vec<String>,
}

/// Something suspicious but accepted, at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was noticed and what was done about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// A `.sai.json` that cannot be used, with the place it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {message}")]
pub struct SaifileError {
    /// The file (or other source) the text came from.
    pub source_name: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was wrong.
    pub message: String,
}

/// One task to create: a configuration built on a platform.
///
/// Serialises with exactly the keys `configuration`, `platform`, `steps`,
/// `artifacts`, plus `packages` only when the configuration has `deps` and
/// `test_reports` only when it has `test_reports`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// The configuration key (the task name).
    pub configuration: String,
    /// The saifile platform key, verbatim.
    pub platform: String,
    /// Build steps: the non-blank lines of the platform's `build` after
    /// `${prep}`/`${cmake}`/`${cpack}` substitution, in order.
    pub steps: Vec<String>,
    /// Artifact globs from the configuration's `artifacts`.
    pub artifacts: Vec<String>,
    /// Packages from the configuration's `deps`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub packages: Vec<String>,
    /// JUnit XML report globs from the configuration's `test_reports`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub test_reports: Vec<String>,
}

/// Parse a whole `.sai.json`. `source_name` is used in error messages.
/// Anything but whitespace and comments after the top-level object is an error.
pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Saifile, SaifileError> {
    let node = crate::jsonc::parse(bytes).map_err(|e| json_error(source_name, e))?;
    read::build(source_name, bytes, &node)
}

/// Parse a `.sai.json` that may be followed by other bytes (e.g. the hook's
/// trailing newline or junk): returns the saifile and the number of bytes the
/// top-level object used. What follows is not examined.
pub fn parse_prefix(source_name: &str, bytes: &[u8]) -> Result<(Saifile, usize), SaifileError> {
    let (node, used) = crate::jsonc::parse_prefix(bytes).map_err(|e| json_error(source_name, e))?;
    Ok((read::build(source_name, bytes, &node)?, used))
}

fn json_error(source_name: &str, e: crate::jsonc::JsonError) -> SaifileError {
    SaifileError {
        source_name: source_name.to_string(),
        line: e.line,
        column: e.column,
        message: e.message,
    }
}

impl Saifile {
    /// Warnings found while parsing, in file order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Platform keys, in file order (a duplicated key once, at its last place).
    pub fn platform_names(&self) -> impl Iterator<Item = &str> {
        self.platforms.iter().map(|p| p.name.as_str())
    }

    /// The platforms, in file order.
    pub fn platforms(&self) -> &[PlatformDef] {
        &self.platforms
    }

    /// The configurations, in file order.
    pub fn configurations(&self) -> &[Configuration] {
        &self.configurations
    }

    /// The top-level `schema` value, if any (normally `sai-1`; not checked).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The source name given to [`parse`].
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Expand into tasks: every configuration x every platform it selects.
    ///
    /// `git_ref` is the pushed ref (`refs/heads/main`, `refs/tags/v1`...). With
    /// a ref, a configuration that has `branches` only yields tasks when the
    /// ref is `refs/heads/<one of them>`; without a ref (`None`, e.g. the CLI
    /// without `--ref`) `branches` filters nothing.
    ///
    /// Fails on the first selected platform whose `build` uses a macro other
    /// than `${prep}`, `${cmake}` and `${cpack}` (the original aborted the
    /// whole push).
    pub fn expand(&self, git_ref: Option<&str>) -> Result<Vec<TaskSpec>, SaifileError> {
        expand::expand(self, git_ref)
    }
}
