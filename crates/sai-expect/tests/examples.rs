//! The example configs of the embedded helpers pass the checked-in JSON
//! Schema, the parser and `validate()`; the expect scripts also compile.

use std::path::{Path, PathBuf};

use sai_core::config::problem::ConfigProblem;
use sai_core::config::{Format, parse};

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

#[test]
fn device_example_is_valid() {
    for (name, bytes) in examples("device") {
        check_schema("device.schema.json", &name, &bytes);
        let c: sai_core::config::device::DeviceConfig =
            parse(&name, &bytes, Format::from_file_name(&name)).unwrap();
        assert_eq!(c.validate(), Vec::<ConfigProblem>::new(), "{name}");
    }
}

#[test]
fn jig_example_is_valid() {
    for (name, bytes) in examples("jig") {
        check_schema("jig.schema.json", &name, &bytes);
        let c: sai_core::config::jig::JigConfig =
            parse(&name, &bytes, Format::from_file_name(&name)).unwrap();
        assert_eq!(c.validate(), Vec::<ConfigProblem>::new(), "{name}");
    }
}

#[test]
fn expect_examples_are_valid() {
    for (name, bytes) in examples("expect-") {
        check_schema("expect.schema.json", &name, &bytes);
        let s: sai_core::config::expect::ExpectScript =
            parse(&name, &bytes, Format::from_file_name(&name)).unwrap();
        assert_eq!(s.validate(), Vec::<ConfigProblem>::new(), "{name}");
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
