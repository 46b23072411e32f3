//! `sai validate`: JSON Schema, real parser and semantic rules, with every
//! problem printed as `file:line:col: message`.

use std::path::Path;
use std::process::ExitCode;

use jsonschema::error::ValidationErrorKind;
use sai_core::config::schema::{
    ConfigKind, Diagnostic, FieldPath, PathSegment, locate_nearest, validate_semantics,
};
use sai_core::config::{Format, line_col_of_offset};
use serde_json::Value;

/// Check every file; print problems to stderr and `file: ok (<kind>)` to
/// stdout. Exit 1 when any file has an error.
pub fn run(files: &[std::path::PathBuf], kind: Option<ConfigKind>) -> ExitCode {
    let mut failed = false;
    for file in files {
        let name = file.display().to_string();
        let (detected, diagnostics) = check_file(file, &name, kind);
        let mut errors = 0;
        for d in &diagnostics {
            eprintln!("{d}");
            if d.is_error() {
                errors += 1;
            }
        }
        match detected {
            Some(kind) if errors == 0 => println!("{name}: ok ({kind})"),
            _ => failed = true,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The kind of the file (when known) and every diagnostic for it.
pub fn check_file(
    path: &Path,
    name: &str,
    forced: Option<ConfigKind>,
) -> (Option<ConfigKind>, Vec<Diagnostic>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return (
                None,
                vec![Diagnostic::error(
                    name,
                    1,
                    1,
                    format!("cannot read file: {e}"),
                )],
            );
        }
    };
    check_bytes(&bytes, name, forced)
}

/// [`check_file`] on bytes already read.
pub fn check_bytes(
    bytes: &[u8],
    name: &str,
    forced: Option<ConfigKind>,
) -> (Option<ConfigKind>, Vec<Diagnostic>) {
    let format = if forced == Some(ConfigKind::Saifile) {
        Format::Json
    } else {
        Format::from_file_name(name)
    };
    let value = to_value(bytes, name, format);
    let kind = forced.or_else(|| match &value {
        Ok(v) => ConfigKind::detect(name, v),
        Err(_) => ConfigKind::detect_unparsed(name, &String::from_utf8_lossy(bytes), format),
    });
    let Some(kind) = kind else {
        let mut out = Vec::new();
        if let Err(d) = value {
            out.push(d);
        }
        let markers: Vec<String> = ConfigKind::ALL
            .iter()
            .map(|k| format!("\"{}\"", k.marker()))
            .collect();
        out.push(Diagnostic::error(
            name,
            1,
            1,
            format!(
                "cannot tell what kind of file this is: add a \"schema\" member ({}), \
                 name it like server.conf / builder.yaml / x.sai.json, or pass --kind",
                markers.join(", ")
            ),
        ));
        return (None, out);
    };

    let text = String::from_utf8_lossy(bytes);
    let schema_diags = match &value {
        Ok(v) => schema_errors(kind, v, &text, name, format),
        Err(_) => Vec::new(),
    };
    // The real parser and the semantic rules. They report the syntax error
    // when the text did not parse at all. Where one of their messages and a
    // schema error point at the same line, theirs is kept: it is the more
    // specific one.
    let mut semantic = validate_semantics(kind, bytes, name);
    // "missing field `x`" from serde repeats the schema's "\"x\" is a
    // required property", which points at the object that lacks it.
    semantic.retain(|d| {
        let Some(field) = d
            .message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        else {
            return true;
        };
        let required = format!("\"{field}\" is a required property");
        !schema_diags.iter().any(|s| s.message.contains(&required))
    });
    let mut out: Vec<Diagnostic> = schema_diags
        .into_iter()
        .filter(|s| !semantic.iter().any(|d| d.is_error() && d.line == s.line))
        .collect();
    out.extend(semantic);
    out.sort_by_key(|d| (d.line, d.column));
    out.dedup();
    (Some(kind), out)
}

/// The document as a JSON value, or the syntax error with its position.
fn to_value(bytes: &[u8], name: &str, format: Format) -> Result<Value, Diagnostic> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col_of_offset(bytes, e.valid_up_to());
        Diagnostic::error(name, line, col, format!("invalid UTF-8: {e}"))
    })?;
    match format {
        Format::Json => {
            let blanked = sai_core::jsonc::blank_comments(text);
            serde_json::from_str(&blanked).map_err(|e| {
                let msg = e.to_string();
                let msg = msg
                    .rsplit_once(" at line ")
                    .map_or(msg.as_str(), |(m, _)| m);
                Diagnostic::error(name, e.line(), e.column(), msg)
            })
        }
        Format::Yaml => serde_norway::from_str(text).map_err(|e| {
            let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m);
            Diagnostic::error(name, line, col, msg)
        }),
    }
}

/// Every JSON Schema violation, positioned at the offending key.
fn schema_errors(
    kind: ConfigKind,
    value: &Value,
    text: &str,
    name: &str,
    format: Format,
) -> Vec<Diagnostic> {
    let schema = kind.generate();
    let validator = match jsonschema::draft202012::new(&schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![Diagnostic::error(
                name,
                1,
                1,
                format!("internal error: the {kind} schema does not compile: {e}"),
            )];
        }
    };
    validator
        .iter_errors(value)
        .map(|error| {
            let mut path = FieldPath::from_json_pointer(error.instance_path().as_str());
            if let ValidationErrorKind::AdditionalProperties { unexpected } = error.kind()
                && let Some(first) = unexpected.first()
            {
                path.0.push(PathSegment::Key(first.clone()));
            }
            let (line, col) = locate_nearest(text, format, &path);
            let instance = FieldPath::from_json_pointer(error.instance_path().as_str());
            let text = shorten(&error.to_string());
            let message = if instance.is_root() {
                text
            } else {
                format!("{instance}: {text}")
            };
            Diagnostic::error(name, line, col, message)
        })
        .collect()
}

/// Schema messages quote the offending value, which may be huge.
fn shorten(message: &str) -> String {
    const MAX: usize = 400;
    if message.chars().count() <= MAX {
        return message.to_string();
    }
    let head: String = message.chars().take(MAX).collect();
    format!("{head}... (message shortened)")
}
