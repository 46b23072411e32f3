//! Serde types describing the `.sai.json` format, for its JSON Schema.
//!
//! These mirror what [`super::parse`] accepts and exist to generate
//! `schemas/saifile.schema.json` (editor completion and `sai validate`); the
//! parser itself works on the positioned tree so it can report duplicate keys
//! and positions. The schema lists every known key and rejects others, while
//! the parser accepts unknown keys with a warning.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `.sai.json` file: the build platforms a project supports and the
/// configurations to build on them. Sai creates one task per configuration
/// and selected platform on every push. `#` starts a comment (outside strings).
/// Guide with examples: docs/saifile.md in the Sai repository.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sai .sai.json")]
pub struct SaifileDoc {
    /// Format marker, `"sai-1"`. Its value is not checked.
    pub schema: Option<String>,
    /// Build platforms, keyed by platform tuple
    /// `os[-distro[-ver]]/arch[-vendor...][/toolchain]` (e.g.
    /// `linux-fedora-32/x86_64-amd/gcc`; no dots). A task's platform is this key.
    /// See docs/saifile.md, "Platforms".
    #[serde(default)]
    pub platforms: BTreeMap<String, PlatformDoc>,
    /// Build configurations, keyed by name (the task name). Each configuration
    /// is built on every platform it selects. See docs/saifile.md,
    /// "Configurations and macros".
    #[serde(default)]
    pub configurations: BTreeMap<String, ConfigurationDoc>,
}

/// How to build on one platform.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformDoc {
    /// Shell script run in the checked-out source; each line is one build step.
    /// `${prep}`, `${cmake}` and `${cpack}` are replaced by the configuration's
    /// values; any other `${name}` is an error; `$VAR` is left to the shell.
    /// A platform without build steps is ignored. See docs/saifile.md,
    /// "Steps: one per line of build".
    pub build: Option<BuildDoc>,
    /// Whether configurations without an explicit `platforms` list build on
    /// this platform. Absent means yes; `false`, `0` or any string other than
    /// `on`/`yes`/`true` (or a non-zero number) means only when selected by name.
    /// See docs/saifile.md, "Platforms".
    pub default: Option<DefaultDoc>,
}

/// A platform's build script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BuildDoc {
    /// The whole script; lines separated by `\n`.
    Script(String),
    /// Steps, joined with `\n`.
    Steps(Vec<String>),
    /// Named steps; the values are joined with `\n` in file order.
    Named(BTreeMap<String, String>),
}

/// A platform's `default` flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DefaultDoc {
    /// `true` or `false`.
    Bool(bool),
    /// Non-zero means default.
    Number(f64),
    /// `on`, `yes`, `true` (any case) or a non-zero number mean default.
    Text(String),
}

/// One build configuration.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationDoc {
    /// Replaces `${prep}` in platform build scripts (commands run first).
    pub prep: Option<String>,
    /// Replaces `${cmake}` in platform build scripts (usually cmake options).
    pub cmake: Option<String>,
    /// Replaces `${cpack}` in platform build scripts (packaging commands or
    /// other per-configuration text).
    pub cpack: Option<String>,
    /// Comma-separated packages the build depends on.
    pub deps: Option<String>,
    /// Platform selection, tokens separated by commas or spaces: `none` drops
    /// the default platforms, `not X` drops platforms matching `X`, `X` adds
    /// platforms matching `X`. `X` matches per `/`-element by prefix (`linux`
    /// matches `linux-fedora-32/x86_64-amd/gcc`; `linux//gcc` skips the arch).
    /// Without it, the default platforms are used; a list that does not start
    /// with `none` adds to them. See docs/saifile.md, "Choosing platforms".
    pub platforms: Option<String>,
    /// Comma-separated globs (relative to the source) of files to upload as
    /// artifacts after a successful build. See docs/saifile.md, "Artifacts".
    pub artifacts: Option<String>,
    /// Comma- or space-separated branch names: only pushes to these branches
    /// build this configuration. See docs/saifile.md, "Branches".
    pub branches: Option<String>,
    /// Idle-time scheduling value used by newer saifiles (e.g. `2`). Accepted
    /// and passed on; its meaning belongs to the scheduler.
    pub idle: Option<u64>,
    /// Name of a builder/resource pool used by newer saifiles (e.g. `fuzz`).
    /// Accepted and passed on; its meaning belongs to the scheduler.
    pub pool: Option<String>,
    /// Comma-separated globs (relative to the source, `**` crosses
    /// directories) of JUnit XML test reports, e.g.
    /// `build/Testing/**/*.xml` as written by `ctest --output-junit`. The
    /// builder uploads them after the steps, passed or failed; the server
    /// records each test case. See docs/saifile.md, "Test reports".
    pub test_reports: Option<String>,
}

/// The JSON Schema of `.sai.json` files (written to
/// `schemas/saifile.schema.json`).
pub fn saifile_schema() -> schemars::Schema {
    SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(never_null))
        .into_generator()
        .into_root_schema_for::<SaifileDoc>()
}

/// A saifile has no `null` anywhere (the parser rejects it): an optional
/// member may be absent, but when present it has its value's type. So the
/// "or null" schemars adds to every `Option` is taken out again.
fn never_null(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            obj.insert("type".to_owned(), only);
        }
    }
    let is_null = |s: &Value| s.get("type").is_some_and(|t| t == "null");
    let Some(Value::Array(any_of)) = obj.get("anyOf") else {
        return;
    };
    if let [value, null] = any_of.as_slice()
        && is_null(null)
        && let Value::Object(value) = value
    {
        let mut replaced = value.clone();
        obj.remove("anyOf");
        replaced.append(obj);
        *obj = replaced;
    }
}
