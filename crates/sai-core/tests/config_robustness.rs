//! Whatever bytes arrive, config checking reports problems and never panics;
//! configs that serialize from the types validate against their own schema.

use proptest::prelude::*;
use sai_core::config::Format;
use sai_core::config::schema::{ConfigKind, FieldPath, PathSegment, locate, validate_semantics};

fn segment() -> impl Strategy<Value = PathSegment> {
    prop_oneof![
        "[a-z_]{1,8}".prop_map(PathSegment::Key),
        (0usize..4).prop_map(PathSegment::Index),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validate_semantics_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                       kind in 0usize..7, yaml in any::<bool>()) {
        let kind = ConfigKind::ALL[kind];
        let name = if yaml { "x.yaml" } else { "x.conf" };
        for d in validate_semantics(kind, &bytes, name) {
            prop_assert!(d.line >= 1 && d.column >= 1);
        }
    }

    #[test]
    fn json_ish_text_never_panics(text in r#"[\[\]{}",:# a-z0-9\n\\-]{0,200}"#,
                                  kind in 0usize..7,
                                  path in proptest::collection::vec(segment(), 0..4)) {
        let kind = ConfigKind::ALL[kind];
        let _ = validate_semantics(kind, text.as_bytes(), "x.conf");
        let _ = locate(&text, Format::Json, &FieldPath(path));
    }

    #[test]
    fn yaml_ish_text_never_panics(text in r#"[- :a-z0-9\n#'"\[\]{}]{0,200}"#,
                                  path in proptest::collection::vec(segment(), 0..4)) {
        let _ = validate_semantics(ConfigKind::Builder, text.as_bytes(), "x.yaml");
        if let Some((line, col)) = locate(&text, Format::Yaml, &FieldPath(path)) {
            prop_assert!(line >= 1 && col >= 1);
        }
    }
}

/// Typed configs serialized back to JSON still satisfy their schema and
/// parse to the same value.
#[test]
fn examples_round_trip_through_serde_and_the_schema() {
    use sai_core::config::{builder::BuilderConfig, parse, server::ServerConfig, web::WebConfig};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    let read = |f: &str| std::fs::read(format!("{dir}{f}")).expect("read example");

    fn check<T>(kind: ConfigKind, value: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_value(value).expect("serializes");
        let schema = kind.generate();
        let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:?}");
        let text = serde_json::to_string(&json).unwrap();
        let back: T = parse("rt.json", text.as_bytes(), Format::Json).expect("parses back");
        assert_eq!(&back, value);
    }

    let server: ServerConfig = parse("s", &read("server.conf"), Format::Json).unwrap();
    check(ConfigKind::Server, &server);
    let web: WebConfig = parse("w", &read("web.conf"), Format::Json).unwrap();
    check(ConfigKind::Web, &web);
    let builder: BuilderConfig = parse("b", &read("builder.conf"), Format::Json).unwrap();
    check(ConfigKind::Builder, &builder);
}
