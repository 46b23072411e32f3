//! Config kinds, their JSON Schemas, and semantic checks with positions.
//!
//! Every kind of file Sai reads has a [`ConfigKind`]. [`ConfigKind::generate`]
//! derives its JSON Schema (draft 2020-12) from the Rust types with schemars,
//! so the schemas checked in under `schemas/` can never drift from what the
//! daemons accept (a test compares them). [`ConfigKind::detect`] tells the
//! kind of a file from its `schema` member or its name, and
//! [`validate_semantics`] runs the real parser plus the type's `validate()`
//! and turns every problem into a `file:line:col` [`Diagnostic`].
//!
//! Semantic problems carry a [`FieldPath`]; [`locate`] finds the field in the
//! original text (JSON with `#` comments, or YAML) so the diagnostic points at
//! the offending key.

use std::fmt;

use schemars::JsonSchema;
use serde_json::{Map, Value};

use super::{ConfigError, Format};

/// Base of the `$id` of every generated schema.
pub const SCHEMA_ID_BASE: &str = "https://sai.invalid/schemas/";

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

    /// Parse the dotted form printed by [`Display`](fmt::Display)
    /// (`platforms[0].name`); `None` when `text` is not such a path.
    pub fn parse_dotted(text: &str) -> Option<FieldPath> {
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return None;
            }
            segments.push(PathSegment::Key(name.to_string()));
            while let Some(inner) = rest.strip_prefix('[') {
                let close = inner.find(']')?;
                segments.push(PathSegment::Index(inner[..close].parse().ok()?));
                rest = &inner[close + 1..];
            }
            if !rest.is_empty() {
                return None;
            }
        }
        Some(FieldPath(segments))
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

    /// A warning at `line`:`column` (0 is raised to 1).
    pub fn warning(
        source_name: &str,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(source_name, line, column, message)
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

/// Every kind of file Sai reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    /// A project's `.sai.json`.
    Saifile,
    /// `sai-server` config.
    Server,
    /// `sai-web` config.
    Web,
    /// `sai-builder` config.
    Builder,
    /// `sai-device` config.
    Device,
    /// `sai-jig` config.
    Jig,
    /// A `sai-expect` script.
    ExpectScript,
    /// A rack: server, web and every builder in one file.
    Rack,
}

impl ConfigKind {
    /// Every kind, in a stable order.
    pub const ALL: [ConfigKind; 8] = [
        ConfigKind::Saifile,
        ConfigKind::Server,
        ConfigKind::Web,
        ConfigKind::Builder,
        ConfigKind::Device,
        ConfigKind::Jig,
        ConfigKind::ExpectScript,
        ConfigKind::Rack,
    ];

    /// Short name, as used on the command line: `saifile`, `server`, `web`,
    /// `builder`, `device`, `jig`, `expect`.
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::Saifile => "saifile",
            ConfigKind::Server => "server",
            ConfigKind::Web => "web",
            ConfigKind::Builder => "builder",
            ConfigKind::Device => "device",
            ConfigKind::Jig => "jig",
            ConfigKind::ExpectScript => "expect",
            ConfigKind::Rack => "rack",
        }
    }

    /// The kind with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<ConfigKind> {
        ConfigKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Value of the `schema` member that marks a file of this kind.
    pub fn marker(self) -> &'static str {
        match self {
            ConfigKind::Saifile => "sai-1",
            ConfigKind::Server => "sai-server",
            ConfigKind::Web => "sai-web",
            ConfigKind::Builder => "sai-builder",
            ConfigKind::Device => "sai-device",
            ConfigKind::Jig => "sai-jig",
            ConfigKind::ExpectScript => "sai-expect",
            ConfigKind::Rack => super::rack::SCHEMA_MARKER,
        }
    }

    /// The kind whose [`marker`](Self::marker) is `marker`.
    pub fn from_marker(marker: &str) -> Option<ConfigKind> {
        ConfigKind::ALL.into_iter().find(|k| k.marker() == marker)
    }

    /// File name of the checked-in schema: `server.schema.json`, ...
    pub fn schema_file_name(self) -> String {
        format!("{}.schema.json", self.name())
    }

    /// `$id` of the generated schema.
    pub fn schema_id(self) -> String {
        format!("{SCHEMA_ID_BASE}{}", self.schema_file_name())
    }

    /// Human title of the schema.
    pub fn title(self) -> &'static str {
        match self {
            ConfigKind::Saifile => "Sai project file (.sai.json)",
            ConfigKind::Server => "sai-server config",
            ConfigKind::Web => "sai-web config",
            ConfigKind::Builder => "sai-builder config",
            ConfigKind::Device => "sai-device config",
            ConfigKind::Jig => "sai-jig config",
            ConfigKind::ExpectScript => "sai-expect script",
            ConfigKind::Rack => "Sai rack",
        }
    }

    /// The JSON Schema (draft 2020-12) of this kind, with `$id`, `title` and
    /// `description`, generated from the Rust types.
    pub fn generate(self) -> Value {
        let schema = match self {
            ConfigKind::Saifile => crate::saifile::saifile_schema().to_value(),
            ConfigKind::Server => root_schema::<super::server::ServerConfig>(),
            ConfigKind::Web => root_schema::<super::web::WebConfig>(),
            ConfigKind::Builder => root_schema::<super::builder::BuilderConfig>(),
            ConfigKind::Device => root_schema::<super::device::DeviceConfig>(),
            ConfigKind::Jig => root_schema::<super::jig::JigConfig>(),
            ConfigKind::ExpectScript => root_schema::<super::expect::ExpectScript>(),
            ConfigKind::Rack => root_schema::<super::rack::RackConfig>(),
        };
        self.decorate(schema)
    }

    /// [`generate`](Self::generate) as written under `schemas/`: pretty
    /// JSON with a trailing newline.
    pub fn generate_pretty(self) -> String {
        let mut text = serde_json::to_string_pretty(&self.generate())
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    }

    fn decorate(self, schema: Value) -> Value {
        let Value::Object(mut body) = schema else {
            return schema;
        };
        let mut out = Map::new();
        out.insert(
            "$schema".to_string(),
            body.remove("$schema")
                .unwrap_or_else(|| "https://json-schema.org/draft/2020-12/schema".into()),
        );
        out.insert("$id".to_string(), self.schema_id().into());
        body.remove("$id");
        out.insert("title".to_string(), self.title().into());
        body.remove("title");
        let description = body
            .remove("description")
            .unwrap_or_else(|| format!("Schema of a {}.", self.title()).into());
        out.insert("description".to_string(), description);
        out.extend(body);
        let mut out = Value::Object(out);
        unwrap_descriptions(&mut out);
        out
    }

    /// Tell the kind of a file: by its `schema` member first, then by its name.
    ///
    /// Names: `*.sai.json` is a saifile; `server.*`, `web.*`, `builder.*`,
    /// `jig.*` name themselves; `device*` and `devices*` are device configs;
    /// `*.expect.json|yaml|yml` are expect scripts; a file called `conf`
    /// (any extension) takes the kind of its folder (`/etc/sai/server/conf`,
    /// `/etc/sai/devices/conf`, ...).
    pub fn detect(file_name: &str, value: &Value) -> Option<ConfigKind> {
        if let Some(kind) = value
            .get("schema")
            .and_then(Value::as_str)
            .and_then(ConfigKind::from_marker)
        {
            return Some(kind);
        }
        ConfigKind::detect_by_name(file_name)
    }

    /// The name-based half of [`detect`](Self::detect).
    pub fn detect_by_name(file_name: &str) -> Option<ConfigKind> {
        let mut parts = file_name.rsplit(['/', '\\']);
        let base = parts.next().unwrap_or("").to_ascii_lowercase();
        let parent = parts.next().unwrap_or("").to_ascii_lowercase();
        if base == ".sai.json" || base.ends_with(".sai.json") {
            return Some(ConfigKind::Saifile);
        }
        if [".expect.json", ".expect.yaml", ".expect.yml"]
            .iter()
            .any(|s| base.ends_with(s))
        {
            return Some(ConfigKind::ExpectScript);
        }
        let stem = base.split('.').next().unwrap_or("");
        let by_stem = |stem: &str| match stem {
            "server" => Some(ConfigKind::Server),
            "web" => Some(ConfigKind::Web),
            "builder" => Some(ConfigKind::Builder),
            "jig" => Some(ConfigKind::Jig),
            "rack" => Some(ConfigKind::Rack),
            s if s.starts_with("device") => Some(ConfigKind::Device),
            _ => None,
        };
        if stem == "conf" {
            return by_stem(&parent);
        }
        by_stem(stem)
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Doc comments are wrapped at ~80 columns; join the wrapped lines of every
/// `description` (keeping blank-line paragraph breaks) so editors show
/// flowing text.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "description"
                    && let Value::String(text) = v
                {
                    *text = text
                        .split("\n\n")
                        .map(|para| {
                            para.split('\n')
                                .map(str::trim)
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .collect::<Vec<_>>()
                        .join("\n\n");
                } else {
                    unwrap_descriptions(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

fn root_schema<T: JsonSchema>() -> Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// Parse `bytes` as a `kind` file with the real parser and run its semantic
/// checks. Returns every problem (and, for a saifile, every warning of the
/// parser and expansion), each with `file:line:col`; an empty list means the
/// file is good. The format is picked from `source_name`.
pub fn validate_semantics(kind: ConfigKind, bytes: &[u8], source_name: &str) -> Vec<Diagnostic> {
    let format = Format::from_file_name(source_name);
    let problems: Result<Vec<ConfigProblem>, ConfigError> = match kind {
        ConfigKind::Saifile => return saifile_diagnostics(bytes, source_name),
        ConfigKind::Server => {
            super::parse::<super::server::ServerConfig>(source_name, bytes, format)
                .map(|c| semantic_problems(&c))
        }
        ConfigKind::Web => {
            super::parse::<super::web::WebConfig>(source_name, bytes, format).map(|c| c.validate())
        }
        ConfigKind::Builder => {
            super::parse::<super::builder::BuilderConfig>(source_name, bytes, format)
                .map(|c| c.validate())
        }
        ConfigKind::Device => {
            super::parse::<super::device::DeviceConfig>(source_name, bytes, format)
                .map(|c| semantic_problems(&c))
        }
        ConfigKind::Jig => super::parse::<super::jig::JigConfig>(source_name, bytes, format)
            .map(|c| semantic_problems(&c)),
        ConfigKind::ExpectScript => {
            super::parse::<super::expect::ExpectScript>(source_name, bytes, format)
                .map(|c| semantic_problems(&c))
        }
        ConfigKind::Rack => super::parse::<super::rack::RackConfig>(source_name, bytes, format)
            .map(|c| c.validate()),
    };
    match problems {
        Err(e) => vec![point_at_unknown_key(e, bytes, format).into()],
        Ok(problems) => {
            // The parse succeeded, so the text is valid UTF-8.
            let text = String::from_utf8_lossy(bytes);
            problems
                .into_iter()
                .map(|p| {
                    let (line, column) = locate_problem(&text, format, &p).unwrap_or((1, 1));
                    Diagnostic::error(source_name, line, column, p.to_string())
                })
                .collect()
        }
    }
}

/// serde reports an unknown field just after its key; point at the key
/// itself, where the typo is.
fn point_at_unknown_key(mut e: ConfigError, bytes: &[u8], format: Format) -> ConfigError {
    let Some(name) = e
        .message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return e;
    };
    let Some(line) = bytes.split(|&b| b == b'\n').nth(e.line.saturating_sub(1)) else {
        return e;
    };
    let line = String::from_utf8_lossy(line);
    let needle = match format {
        Format::Json => format!("\"{name}\""),
        Format::Yaml => name.to_string(),
    };
    // The last occurrence before the reported column is the key.
    let before: String = line.chars().take(e.column.max(1)).collect();
    if let Some(at) = before.rfind(&needle) {
        e.column = before[..at].chars().count() + 1;
    }
    e
}

/// Semantic checks of one config type, whatever shape its `validate()` has.
trait Semantics {
    fn problems(&self) -> Vec<ConfigProblem>;
}

/// Problems reported as plain strings (`"<where>: <what>"`).
fn from_strings(messages: Vec<String>) -> Vec<ConfigProblem> {
    messages
        .into_iter()
        .map(|m| ConfigProblem::new(FieldPath::root(), m))
        .collect()
}

impl Semantics for super::server::ServerConfig {
    fn problems(&self) -> Vec<ConfigProblem> {
        from_strings(self.validate())
    }
}

impl Semantics for super::device::DeviceConfig {
    fn problems(&self) -> Vec<ConfigProblem> {
        from_strings(self.validate())
    }
}

impl Semantics for super::jig::JigConfig {
    fn problems(&self) -> Vec<ConfigProblem> {
        from_strings(self.validate())
    }
}

impl Semantics for super::expect::ExpectScript {
    fn problems(&self) -> Vec<ConfigProblem> {
        from_strings(self.validate())
    }
}

fn semantic_problems<T: Semantics>(config: &T) -> Vec<ConfigProblem> {
    config.problems()
}

fn saifile_diagnostics(bytes: &[u8], source_name: &str) -> Vec<Diagnostic> {
    let saifile = match crate::saifile::parse(source_name, bytes) {
        Ok(saifile) => saifile,
        Err(e) => return vec![Diagnostic::error(source_name, e.line, e.column, e.message)],
    };
    let mut out: Vec<Diagnostic> = saifile
        .warnings()
        .iter()
        .map(|w| Diagnostic::warning(source_name, w.line, w.column, w.message.clone()))
        .collect();
    if let Err(e) = saifile.expand(None) {
        out.push(Diagnostic::error(source_name, e.line, e.column, e.message));
    }
    out
}

/// Find the position of a problem: by its path, or, for problems given as
/// text only, by a leading dotted path or a quoted name in the message.
fn locate_problem(text: &str, format: Format, problem: &ConfigProblem) -> Option<(usize, usize)> {
    if !problem.path.is_root() {
        return locate(text, format, &problem.path);
    }
    let message = &problem.message;
    if let Some((head, _)) = message.split_once(": ")
        && let Some(path) = FieldPath::parse_dotted(head)
        && let Some(pos) = locate(text, format, &path)
    {
        return Some(pos);
    }
    // A leading dotted path ended by a space: "x_ms (5) must be ...".
    if let Some(head) = message.split([' ', ':']).next()
        && let Some(path) = FieldPath::parse_dotted(head)
        && let Some(pos) = locate(text, format, &path)
    {
        return Some(pos);
    }
    // A quoted name ('esp32-1' or "esp32-1") that occurs in the text.
    for quote in ['\'', '"'] {
        let mut rest = message.as_str();
        while let Some(start) = rest.find(quote) {
            let after = &rest[start + 1..];
            let Some(end) = after.find(quote) else { break };
            let word = &after[..end];
            if !word.is_empty() {
                let needle = match format {
                    Format::Json => format!("\"{word}\""),
                    Format::Yaml => word.to_string(),
                };
                if let Some(offset) = text.find(&needle) {
                    return Some(super::line_col_of_offset(text.as_bytes(), offset));
                }
            }
            rest = &after[end + 1..];
        }
    }
    None
}

/// 1-based line and column of the field at `path` in a config text: the
/// position of its key for object members, of the element for array
/// elements. `None` when the field cannot be found (then the caller points at
/// the start of the file or of the nearest parent).
pub fn locate(text: &str, format: Format, path: &FieldPath) -> Option<(usize, usize)> {
    match format {
        Format::Json => {
            let blanked = crate::jsonc::blank_comments(text);
            let mut scanner = JsonScanner {
                bytes: blanked.as_bytes(),
                pos: 0,
            };
            let offset = scanner.find(&path.0)?;
            Some(super::line_col_of_offset(text.as_bytes(), offset))
        }
        Format::Yaml => locate_yaml(text, &path.0),
    }
}

/// Like [`locate`], but falls back to the nearest parent that can be found,
/// and finally to 1:1.
pub fn locate_nearest(text: &str, format: Format, path: &FieldPath) -> (usize, usize) {
    let mut segments = path.0.clone();
    loop {
        if let Some(pos) = locate(text, format, &FieldPath(segments.clone())) {
            return pos;
        }
        if segments.pop().is_none() {
            return (1, 1);
        }
    }
}

/// A tolerant walker over JSON text (comments already blanked) that finds
/// the byte offset of a path.
struct JsonScanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl JsonScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// At a `"`: skip the string, return its raw contents.
    fn string(&mut self) -> Option<&[u8]> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.pos + 1;
        let mut i = start;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.pos = i + 1;
                    return Some(&self.bytes[start..i]);
                }
                _ => i += 1,
            }
        }
        None
    }

    fn skip_value(&mut self) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }

    fn find(&mut self, path: &[PathSegment]) -> Option<usize> {
        self.skip_ws();
        let Some(first) = path.first() else {
            return Some(self.pos);
        };
        match self.peek()? {
            b'{' => {
                let want = match first {
                    PathSegment::Key(k) => k.clone(),
                    PathSegment::Index(n) => n.to_string(),
                };
                self.pos += 1;
                loop {
                    self.skip_ws();
                    if self.peek()? == b'}' {
                        return None;
                    }
                    let key_at = self.pos;
                    let key = self.string()?;
                    let matched = key == want.as_bytes();
                    self.skip_ws();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.pos += 1;
                    if matched {
                        return if path.len() == 1 {
                            Some(key_at)
                        } else {
                            self.find(&path[1..])
                        };
                    }
                    self.skip_value()?;
                    self.skip_ws();
                    if self.peek()? == b',' {
                        self.pos += 1;
                    }
                }
            }
            b'[' => {
                let PathSegment::Index(want) = first else {
                    return None;
                };
                self.pos += 1;
                let mut index = 0;
                loop {
                    self.skip_ws();
                    if self.peek()? == b']' {
                        return None;
                    }
                    if index == *want {
                        return self.find(&path[1..]);
                    }
                    self.skip_value()?;
                    self.skip_ws();
                    if self.peek()? == b',' {
                        self.pos += 1;
                    }
                    index += 1;
                }
            }
            _ => None,
        }
    }
}

/// Best-effort block-YAML locator: follows keys by indentation and counts
/// `- ` items for indices. Flow style (`{a: 1}`) is not followed.
fn locate_yaml(text: &str, path: &[PathSegment]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut line_no = 0usize; // where the search for the next segment starts
    let mut parent_indent: isize = -1;
    let mut found = (1usize, 1usize);
    // Items of one line: ("- - key: v" has several starts); returns
    // (column of each dash, column of the content after the dashes).
    fn split_dashes(line: &str) -> (Vec<usize>, usize) {
        let mut col = line.len() - line.trim_start_matches(' ').len();
        let mut dashes = Vec::new();
        loop {
            let rest = &line[col..];
            if rest == "-" || rest.starts_with("- ") {
                dashes.push(col);
                col += 1;
                col += line[col..].len() - line[col..].trim_start_matches(' ').len();
            } else {
                return (dashes, col);
            }
        }
    }
    let is_blank = |line: &str| {
        let t = line.trim_start();
        t.is_empty() || t.starts_with('#') || t == "---"
    };
    for (si, segment) in path.iter().enumerate() {
        // When the previous segment was an index, the item's first key sits
        // on the dash line itself.
        let same_line_ok = si > 0 && matches!(path[si - 1], PathSegment::Index(_));
        let mut hit = None;
        match segment {
            PathSegment::Key(key) => {
                let mut i = line_no;
                while i < lines.len() {
                    let line = lines[i];
                    if is_blank(line) {
                        i += 1;
                        continue;
                    }
                    let (dashes, content_col) = split_dashes(line);
                    let first_col = dashes.first().copied().unwrap_or(content_col);
                    let is_start_line = i == line_no && same_line_ok;
                    if !is_start_line && (first_col as isize) <= parent_indent && i > line_no {
                        break;
                    }
                    let content = &line[content_col..];
                    let candidates = [
                        format!("{key}:"),
                        format!("\"{key}\":"),
                        format!("'{key}':"),
                    ];
                    if (content_col as isize) > parent_indent
                        && candidates.iter().any(|c| {
                            content.starts_with(c.as_str())
                                && content[c.len()..]
                                    .chars()
                                    .next()
                                    .is_none_or(|ch| ch == ' ' || ch == '\t')
                        })
                    {
                        hit = Some((i, content_col));
                        break;
                    }
                    i += 1;
                }
                let (i, col) = hit?;
                found = (i + 1, col + 1);
                line_no = i + 1;
                parent_indent = col as isize;
            }
            PathSegment::Index(want) => {
                let mut i = line_no;
                let mut dash_col: Option<usize> = None;
                let mut count = 0usize;
                while i < lines.len() {
                    let line = lines[i];
                    if is_blank(line) {
                        i += 1;
                        continue;
                    }
                    let (dashes, content_col) = split_dashes(line);
                    let first_col = dashes.first().copied().unwrap_or(content_col);
                    if (first_col as isize) <= parent_indent && dashes.is_empty() {
                        break;
                    }
                    match dash_col {
                        None if !dashes.is_empty() => {
                            dash_col = Some(dashes[0]);
                        }
                        None => {
                            i += 1;
                            continue;
                        }
                        Some(_) => {}
                    }
                    let dc = dash_col.unwrap_or(0);
                    if first_col < dc {
                        break;
                    }
                    if first_col == dc && !dashes.is_empty() {
                        if count == *want {
                            hit = Some((i, dc));
                            break;
                        }
                        count += 1;
                    }
                    i += 1;
                }
                let (i, col) = hit?;
                found = (i + 1, col + 1);
                line_no = i;
                parent_indent = col as isize;
            }
        }
    }
    Some(found)
}
