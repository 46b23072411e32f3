//! Platform tuple names and the per-element left-prefix matching rule.

use sai_core::platform::{Platform, PlatformError, tuple_matches};

const FEDORA: &str = "linux-fedora-32/x86_64-amd/gcc";
const UBUNTU: &str = "linux-ubuntu-2004/x86_64-amd/gcc";

#[test]
fn exact_name_matches_itself() {
    assert!(tuple_matches(FEDORA, FEDORA));
}

#[test]
fn element_prefixes_match() {
    assert!(tuple_matches("linux", UBUNTU));
    assert!(tuple_matches("linux-f", FEDORA));
    assert!(!tuple_matches("linux-f", UBUNTU));
    assert!(tuple_matches("linux/x86", FEDORA));
    assert!(tuple_matches("linux-fedora/x86_64/g", FEDORA));
    assert!(!tuple_matches("linux/x86_64/llvm", FEDORA));
    assert!(!tuple_matches("freertos", FEDORA));
}

#[test]
fn prefix_is_per_element_not_across_slashes() {
    // "linux-fedora-32/x" is not a prefix of the first element alone.
    assert!(!tuple_matches("linux-fedora-32/x86_64-amd-zen", FEDORA));
    assert!(!tuple_matches("linux-fedora-32-x", FEDORA));
    // The request's element must not be longer than the offer's.
    assert!(!tuple_matches("linux-fedora-320", FEDORA));
}

#[test]
fn empty_request_element_matches_anything() {
    assert!(tuple_matches("linux//gcc", FEDORA));
    assert!(tuple_matches("//gcc", FEDORA));
    assert!(!tuple_matches("linux//llvm", FEDORA));
    assert!(tuple_matches("/x86_64", UBUNTU));
}

#[test]
fn request_longer_than_offer_does_not_match() {
    assert!(!tuple_matches("linux/x86_64/gcc", "linux/x86_64"));
    assert!(!tuple_matches("linux/x86_64/gcc/extra", FEDORA));
    assert!(!tuple_matches("linux//", "linux"));
    // ... but a single trailing slash is ignored, as in the original.
    assert!(tuple_matches("linux/", "linux"));
}

#[test]
fn request_shorter_than_offer_matches() {
    assert!(tuple_matches("linux-fedora-32", FEDORA));
    assert!(tuple_matches("linux-fedora-32/x86_64-amd", FEDORA));
}

#[test]
fn platform_type_wraps_the_same_rule() {
    let req = Platform::parse("linux/aarch64").unwrap();
    let rpi = Platform::parse("linux-centos-8/aarch64-a72-bcm2711-rpi4/gcc").unwrap();
    let amd = Platform::parse(FEDORA).unwrap();
    assert!(req.matches(&rpi));
    assert!(req.is_matched_by(&rpi));
    assert!(!req.matches(&amd));
    assert!(!rpi.matches(&req), "matching is directional");
}

#[test]
fn platform_parse_errors() {
    for (text, want) in [
        ("linux-ubuntu-20.04/x86_64/gcc", PlatformError::Dot(15)),
        ("a/b/c/d", PlatformError::TooManyElements(4)),
        ("linux//gcc", PlatformError::EmptyElement(2)),
        ("/x", PlatformError::EmptyElement(1)),
        ("linux,x", PlatformError::BadChar { ch: ',', at: 5 }),
        ("", PlatformError::Empty),
    ] {
        assert_eq!(Platform::parse(text), Err(want), "{text:?}");
    }
    let msg = Platform::parse("ubuntu-20.04").unwrap_err().to_string();
    assert!(msg.contains("dots are not allowed"), "{msg}");
}

#[test]
fn platform_display_serde_and_schema() {
    let p = Platform::parse(FEDORA).unwrap();
    assert_eq!(p.to_string(), FEDORA);
    assert_eq!(p.as_str(), FEDORA);
    assert_eq!(
        p.elements().collect::<Vec<_>>(),
        ["linux-fedora-32", "x86_64-amd", "gcc"]
    );
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, format!("\"{FEDORA}\""));
    assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), p);
    assert!(serde_json::from_str::<Platform>("\"a.b\"").is_err());

    let schema = schemars::schema_for!(Platform);
    let v = serde_json::to_value(&schema).unwrap();
    assert_eq!(v["type"], "string");
    let pattern = v["pattern"].as_str().unwrap();
    assert_eq!(pattern, sai_core::platform::PLATFORM_PATTERN);
    let validator = jsonschema::validator_for(&v).unwrap();
    assert!(validator.is_valid(&serde_json::json!(FEDORA)));
    assert!(validator.is_valid(&serde_json::json!("windows-10")));
    assert!(!validator.is_valid(&serde_json::json!("linux-ubuntu-20.04/x86_64/gcc")));
    assert!(!validator.is_valid(&serde_json::json!("a/b/c/d")));
}
