//! The generated `.sai.json` JSON Schema accepts the whole real-world corpus,
//! rejects malformed files and describes every property.

use std::path::{Path, PathBuf};

use sai_core::jsonc::blank_comments;
use sai_core::saifile::{SaifileDoc, saifile_schema};
use serde_json::{Value, json};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/saifiles"
);

fn corpus_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            corpus_files(&p, out);
        } else if p.to_string_lossy().ends_with(".sai.json") {
            out.push(p);
        }
    }
}

fn validator() -> jsonschema::Validator {
    let schema = serde_json::to_value(saifile_schema()).unwrap();
    jsonschema::validator_for(&schema).expect("the generated schema is a valid JSON Schema")
}

#[test]
fn every_corpus_file_validates() {
    let v = validator();
    let mut files = Vec::new();
    corpus_files(Path::new(CORPUS), &mut files);
    assert_eq!(files.len(), 135);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&blank_comments(&text)).unwrap();
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        // The typed mirror reads it too.
        serde_json::from_value::<SaifileDoc>(doc)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn malformed_documents_are_rejected() {
    let v = validator();
    let good = json!({
        "schema": "sai-1",
        "platforms": {
            "a/x/gcc": {"build": "make ${cmake}", "default": false},
            "b/x/gcc": {"build": ["a", "b"], "default": "yes"},
            "c/x/gcc": {"build": {"one": "a"}, "default": 1}
        },
        "configurations": {"c": {"cmake": "-DX", "platforms": "none, a", "artifacts": "x", "deps": "d",
                                  "branches": "main", "prep": "", "cpack": "", "idle": 2, "pool": "p"}}
    });
    assert!(
        v.is_valid(&good),
        "{:?}",
        v.iter_errors(&good)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    let bad = [
        json!({"platforms": {"a/x/gcc": {"build": 42}}}),
        json!({"platforms": {"a/x/gcc": {"build": [1]}}}),
        json!({"platforms": {"a/x/gcc": {"build": "x", "default": null}}}),
        json!({"platforms": []}),
        json!({"configurations": {"c": {"cmake": 1}}}),
        json!({"configurations": {"c": {"idle": -1}}}),
        json!({"configurations": {"c": {"colour": "red"}}}),
        json!({"extra": 1}),
    ];
    for doc in bad {
        assert!(!v.is_valid(&doc), "should be rejected: {doc}");
    }
}

#[test]
fn every_property_is_described() {
    fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (k, p) in props {
                        if p.get("description")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            missing.push(format!("{path}/{k}"));
                        }
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{path}/{k}"), missing);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, path, missing)),
            _ => {}
        }
    }
    let schema = serde_json::to_value(saifile_schema()).unwrap();
    assert!(
        schema["description"]
            .as_str()
            .is_some_and(|d| d.contains(".sai.json"))
    );
    let mut missing = Vec::new();
    walk(&schema, "", &mut missing);
    assert!(missing.is_empty(), "undescribed properties: {missing:?}");
}
