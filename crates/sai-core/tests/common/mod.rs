//! Helpers shared by the config tests.
// Each test binary uses only some of them.
#![allow(dead_code)]

use sai_core::config::builder::BuilderConfig;
use sai_core::config::schema::ConfigType;
use sai_core::config::schema::{ConfigKind, Diagnostic, validate_semantics};
use sai_core::config::{Format, parse};

/// A builder config from JSON text (which must parse).
pub fn parse_builder(text: &str) -> BuilderConfig {
    parse("builder.conf", text.as_bytes(), Format::Json).expect("parses")
}

/// The problems `BuilderConfig::validate` finds in `text`, as printed.
pub fn builder_problems(text: &str) -> Vec<String> {
    parse_builder(text)
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The one diagnostic `validate_semantics` reports for `text` read as
/// `source_name`; fails when there are none or several.
pub fn only_diagnostic(kind: ConfigKind, text: &str, source_name: &str) -> Diagnostic {
    let mut d = validate_semantics(kind, text.as_bytes(), source_name);
    assert_eq!(d.len(), 1, "{d:?}");
    d.remove(0)
}

/// Every entry of `expect` starts one of `problems`, and there are no others.
pub fn assert_problems_start_with(problems: &[String], expect: &[&str]) {
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "no problem starting with {e:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
}
