//! Every config under `examples/` passes its JSON Schema, loads with the real
//! parser and passes the semantic rules.

use std::path::PathBuf;

use sai_core::config::schema::ConfigType;
use sai_core::config::schema::{ConfigKind, validate_semantics};
use sai_core::config::{Format, parse};
use serde_json::Value;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.expect("read examples/").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .collect();
    files.sort();
    files
}

fn to_value(text: &str, format: Format) -> Value {
    match format {
        Format::Json => serde_json::from_str(&sai_core::jsonc::blank_comments(text))
            .expect("example is JSON with # comments"),
        Format::Yaml => serde_norway::from_str(text).expect("example is YAML"),
    }
}

#[test]
fn every_example_is_valid() {
    let files = examples();
    for needed in ["server.conf", "web.conf", "builder.conf"] {
        assert!(
            files.iter().any(|p| p.ends_with(needed)),
            "examples/{needed} is missing"
        );
    }
    for path in files {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).expect("read example");
        let text = String::from_utf8(bytes.clone()).expect("example is UTF-8");
        let format = Format::from_file_name(&name);
        let value = to_value(&text, format);
        let kind = ConfigKind::detect(&name, &value)
            .unwrap_or_else(|| panic!("{name}: cannot tell its kind"));

        let schema = kind.generate();
        let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path().as_str()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} fails the {kind} schema: {errors:?}"
        );

        let diagnostics = validate_semantics(kind, &bytes, &name);
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn examples_load_with_the_typed_parsers() {
    use sai_core::config::{builder::BuilderConfig, server::ServerConfig, web::WebConfig};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    let read = |f: &str| std::fs::read(format!("{dir}{f}")).expect("read example");

    let server: ServerConfig = parse("server.conf", &read("server.conf"), Format::Json).unwrap();
    assert!(server.validate().is_empty(), "{:?}", server.validate());

    let web: WebConfig = parse("web.conf", &read("web.conf"), Format::Json).unwrap();
    assert!(web.validate().is_empty(), "{:?}", web.validate());

    let builder: BuilderConfig =
        parse("builder.conf", &read("builder.conf"), Format::Json).unwrap();
    assert!(builder.validate().is_empty(), "{:?}", builder.validate());
    assert_eq!(
        builder.servers().len(),
        1,
        "both platforms share one server"
    );
}
