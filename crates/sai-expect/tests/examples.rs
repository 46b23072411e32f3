//! The example configs of the embedded helpers pass the checked-in JSON
//! Schema, the parser and `validate()`; the expect scripts also compile.

use std::path::{Path, PathBuf};

use sai_core::config::device::DeviceConfig;
use sai_core::config::expect::ExpectScript;
use sai_core::config::jig::JigConfig;
use sai_core::config::problem::ConfigProblem;
use sai_core::config::schema::ConfigType;
use sai_core::config::{Format, parse};
use serde::de::DeserializeOwned;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn as_json(name: &str, bytes: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(bytes).unwrap();
    match Format::from_file_name(name) {
        Format::Yaml => serde_norway::from_str(text).unwrap(),
        Format::Json => serde_json::from_str(&sai_core::jsonc::blank_comments(text)).unwrap(),
    }
}

fn check_schema(schema_file: &str, name: &str, bytes: &[u8]) {
    let schema_text = std::fs::read_to_string(root().join("schemas").join(schema_file)).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let instance = as_json(name, bytes);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} against {schema_file}: {errors:?}"
    );
}

fn examples(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no examples/{prefix}*");
    out
}

/// Every `examples/<prefix>*`: it passes `schema_file`, parses as a `T`
/// and `validate` finds no problem in it; returns them, by file name.
fn valid_examples<T: DeserializeOwned>(
    prefix: &str,
    schema_file: &str,
    validate: impl Fn(&T) -> Vec<ConfigProblem>,
) -> Vec<(String, T)> {
    examples(prefix)
        .into_iter()
        .map(|(name, bytes)| {
            check_schema(schema_file, &name, &bytes);
            let c: T = parse(&name, &bytes, Format::from_file_name(&name)).unwrap();
            assert_eq!(validate(&c), Vec::<ConfigProblem>::new(), "{name}");
            (name, c)
        })
        .collect()
}

#[test]
fn device_example_is_valid() {
    valid_examples("device", "device.schema.json", DeviceConfig::validate);
}

#[test]
fn jig_example_is_valid() {
    valid_examples("jig", "jig.schema.json", JigConfig::validate);
}

#[test]
fn expect_examples_are_valid() {
    for (name, s) in valid_examples("expect-", "expect.schema.json", ExpectScript::validate) {
        sai_expect::matcher::compile(&s).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[test]
fn schemas_reject_typos() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/jig.schema.json")).unwrap(),
    )
    .unwrap();
    let bad =
        serde_json::json!({"targets": [{"name": "t", "gpios": [], "sequences": [], "gpio": []}]});
    assert!(!jsonschema::is_valid(&schema, &bad));
}
