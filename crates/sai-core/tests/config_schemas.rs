//! The JSON Schemas checked in under `schemas/` are exactly what the types
//! generate, and every property in them has a description.

use std::path::PathBuf;

use sai_core::config::schema::ConfigKind;
use serde_json::Value;

fn schemas_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
}

#[test]
fn committed_schemas_match_the_types() {
    let mut stale = Vec::new();
    for kind in ConfigKind::ALL {
        let path = schemas_dir().join(kind.schema_file_name());
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != kind.generate_pretty() {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these schemas differ from what the config types generate: {stale:?}\n\
         regenerate them with: cargo run -p sai -- schema --write schemas/"
    );
}

#[test]
fn no_stray_schema_files() {
    let expected: Vec<String> = ConfigKind::ALL
        .iter()
        .map(|k| k.schema_file_name())
        .collect();
    for entry in std::fs::read_dir(schemas_dir()).expect("schemas/ exists") {
        let name = entry.expect("read schemas/").file_name();
        let name = name.to_string_lossy().to_string();
        if name.ends_with(".schema.json") {
            assert!(
                expected.contains(&name),
                "schemas/{name} belongs to no config kind; delete it"
            );
        }
    }
}

#[test]
fn schemas_have_id_title_and_draft_2020_12() {
    for kind in ConfigKind::ALL {
        let schema = kind.generate();
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{kind}"
        );
        assert_eq!(
            schema["$id"],
            format!("https://sai.invalid/schemas/{}.schema.json", kind.name())
        );
        assert!(schema["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            schema["description"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("{kind} schema does not compile: {e}"));
    }
}

/// Every property (at any depth, in `$defs` too) has a non-empty
/// `description`, on itself or on the definition it refers to.
#[test]
fn every_property_is_described() {
    let mut missing = Vec::new();
    for kind in ConfigKind::ALL {
        let schema = kind.generate();
        walk(&schema, &schema, kind.name(), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "properties without a description (add a doc comment to the field):\n  {}",
        missing.join("\n  ")
    );
}

fn walk(root: &Value, node: &Value, at: &str, missing: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, prop) in props {
                    if !described(root, prop) {
                        missing.push(format!("{at}/properties/{name}"));
                    }
                }
            }
            for (key, child) in map {
                walk(root, child, &format!("{at}/{key}"), missing);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(root, child, &format!("{at}/{i}"), missing);
            }
        }
        _ => {}
    }
}

fn described(root: &Value, prop: &Value) -> bool {
    if prop
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| !d.trim().is_empty())
    {
        return true;
    }
    match prop.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .is_some_and(|target| described(root, target)),
        None => false,
    }
}

#[test]
fn undescribed_property_is_caught() {
    let schema = serde_json::json!({
        "properties": {"a": {"type": "string", "description": "A."}, "b": {"type": "string"}}
    });
    let mut missing = Vec::new();
    walk(&schema, &schema, "t", &mut missing);
    assert_eq!(missing, vec!["t/properties/b".to_string()]);
}
