//! Config kinds: the one registry of every kind of file Sai reads, their
//! JSON Schemas, and semantic checks with positions.
//!
//! Every kind has a [`ConfigKind`] and one [`KindSpec`] entry in
//! [`ConfigKind::spec`]: its names, its schema (generated from the Rust types
//! with schemars, so the schemas checked in under `schemas/` can never drift
//! from what the daemons accept; a test compares them) and its checks.
//! [`ConfigKind::detect`] tells the kind of a file from its `schema` member or
//! its name, and [`validate_semantics`] runs the real parser plus the type's
//! `validate()` and turns every problem into a `file:line:col` [`Diagnostic`].
//!
//! Adding a kind (see CONTRIBUTING.md): a variant in [`ConfigKind`] and
//! [`ConfigKind::ALL`], one arm in [`ConfigKind::spec`], a [`ConfigType`]
//! impl for its config type, and (optional) a file-name rule in
//! [`ConfigKind::detect_by_name`].

use std::fmt;

use schemars::JsonSchema;
use serde_json::{Map, Value};

use super::Format;
pub use super::locate::{locate, locate_nearest};
pub use super::problem::{
    ConfigProblem, ConfigType, Diagnostic, FieldPath, InvalidConfig, PathSegment, Severity,
};

/// Base of the `$id` of every generated schema.
pub const SCHEMA_ID_BASE: &str = "https://sai.invalid/schemas/";

/// What Sai knows about one kind of file.
pub struct KindSpec {
    /// Short name, as used on the command line (`--kind builder`).
    pub name: &'static str,
    /// Value of the `schema` member that marks a file of this kind.
    pub marker: &'static str,
    /// Human title of the schema.
    pub title: &'static str,
    /// The JSON Schema, generated from the types.
    schema: fn() -> Value,
    /// Parse a text of this kind and report every problem with its position.
    check: fn(&[u8], &str, Format) -> Vec<Diagnostic>,
}

impl KindSpec {
    /// The spec of a config kind whose type is `T` (its marker is `T`'s).
    fn config<T: ConfigType>(name: &'static str, title: &'static str) -> KindSpec {
        KindSpec {
            name,
            marker: T::MARKER,
            title,
            schema: root_schema::<T>,
            check: |bytes, source_name, format| match super::load::<T>(source_name, bytes, format) {
                Ok(_) => Vec::new(),
                Err(InvalidConfig(diagnostics)) => diagnostics,
            },
        }
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

    /// The one registry entry of this kind.
    pub fn spec(self) -> KindSpec {
        use super::{
            builder::BuilderConfig, device::DeviceConfig, expect::ExpectScript, jig::JigConfig,
            rack::RackConfig, server::ServerConfig, web::WebConfig,
        };
        match self {
            ConfigKind::Saifile => KindSpec {
                name: "saifile",
                marker: "sai-1",
                title: "Sai project file (.sai.json)",
                schema: || crate::saifile::saifile_schema().to_value(),
                check: |bytes, source_name, _| saifile_diagnostics(bytes, source_name),
            },
            ConfigKind::Server => KindSpec::config::<ServerConfig>("server", "sai-server config"),
            ConfigKind::Web => KindSpec::config::<WebConfig>("web", "sai-web config"),
            ConfigKind::Builder => {
                KindSpec::config::<BuilderConfig>("builder", "sai-builder config")
            }
            ConfigKind::Device => KindSpec::config::<DeviceConfig>("device", "sai-device config"),
            ConfigKind::Jig => KindSpec::config::<JigConfig>("jig", "sai-jig config"),
            ConfigKind::ExpectScript => {
                KindSpec::config::<ExpectScript>("expect", "sai-expect script")
            }
            ConfigKind::Rack => KindSpec::config::<RackConfig>("rack", "Sai rack"),
        }
    }

    /// Short name, as used on the command line: `saifile`, `server`, `web`,
    /// `builder`, `device`, `jig`, `expect`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kind with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<ConfigKind> {
        ConfigKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Value of the `schema` member that marks a file of this kind.
    pub fn marker(self) -> &'static str {
        self.spec().marker
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
        self.spec().title
    }

    /// The JSON Schema (draft 2020-12) of this kind, with `$id`, `title` and
    /// `description`, generated from the Rust types.
    pub fn generate(self) -> Value {
        self.decorate((self.spec().schema)())
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

    /// [`detect`](Self::detect) for a text that does not parse: its
    /// `schema` member is read from the part before the syntax error.
    pub fn detect_unparsed(file_name: &str, text: &str, format: Format) -> Option<ConfigKind> {
        super::locate::schema_marker(text, format)
            .and_then(|marker| ConfigKind::from_marker(&marker))
            .or_else(|| ConfigKind::detect_by_name(file_name))
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
    (kind.spec().check)(bytes, source_name, Format::from_file_name(source_name))
}

fn saifile_diagnostics(bytes: &[u8], source_name: &str) -> Vec<Diagnostic> {
    let saifile = match crate::saifile::parse(source_name, bytes) {
        Ok(saifile) => saifile,
        Err(e) => return vec![Diagnostic::error(source_name, e.line, e.column, e.message)],
    };
    let mut out: Vec<Diagnostic> = saifile
        .warnings()
        .iter()
        .map(|w| Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(source_name, w.line, w.column, w.message.clone())
        })
        .collect();
    if let Err(e) = saifile.expand(None) {
        out.push(Diagnostic::error(source_name, e.line, e.column, e.message));
    }
    out
}
