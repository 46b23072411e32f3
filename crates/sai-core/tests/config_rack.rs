//! The `sai-rack` kind: the example loads, builder entries map onto builder
//! configs field for field, and broken racks are refused at the right field.

mod common;
use common::only_diagnostic;

use sai_core::config::rack::{RackConfig, Runs};
use sai_core::config::schema::ConfigType;
use sai_core::config::schema::{ConfigKind, validate_semantics};
use sai_core::config::{Format, parse};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../../examples/rack.json");

fn example() -> RackConfig {
    parse("rack.json", EXAMPLE.as_bytes(), Format::Json).expect("example rack parses")
}

#[test]
fn example_rack_is_plain_json_and_valid() {
    // Nix reads it with lib.importJSON: no comments allowed.
    let _: Value = serde_json::from_str(EXAMPLE).expect("plain JSON");
    let rack = example();
    assert!(rack.validate().is_empty(), "{:?}", rack.validate());
    let runs: Vec<Runs> = rack.builders.iter().map(|b| b.runs).collect();
    for needed in [Runs::Oci, Runs::Nspawn, Runs::Qemu, Runs::Nixos] {
        assert!(runs.contains(&needed), "example lacks a {needed:?} builder");
    }
    assert!(rack.server.is_some() && rack.web.is_some());
}

#[test]
fn every_builder_renders_a_valid_builder_config() {
    for b in example().builders {
        let conf = b.builder_config();
        assert_eq!(conf.host, b.name);
        assert_eq!(conf.platforms, b.platforms);
        assert!(
            conf.validate().is_empty(),
            "{}: {:?}",
            b.name,
            conf.validate()
        );
        assert_eq!(b.device_config().is_some(), !b.devices.is_empty());
    }
}

/// A field added to the builder config must get its rack counterpart.
#[test]
fn rack_builder_has_every_builder_config_field() {
    let builder = ConfigKind::Builder.generate();
    let rack = ConfigKind::Rack.generate();
    let rack_builder = &rack["$defs"]["RackBuilder"]["properties"];
    for key in builder["properties"].as_object().unwrap().keys() {
        let counterpart = match key.as_str() {
            "schema" => continue,
            "host" => "name",
            k => k,
        };
        assert!(
            rack_builder.get(counterpart).is_some(),
            "builder config field {key} has no counterpart in a rack builder"
        );
    }
}

fn diagnostics_of(edit: impl Fn(&mut Value)) -> Vec<String> {
    let mut v: Value = serde_json::from_str(EXAMPLE).unwrap();
    edit(&mut v);
    let text = serde_json::to_string_pretty(&v).unwrap();
    validate_semantics(ConfigKind::Rack, text.as_bytes(), "rack.json")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn broken_racks_are_refused_at_the_field() {
    let d = diagnostics_of(|v| v["builders"][1]["name"] = "deb12-oci".into());
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].contains("builders[1].name") && d[0].contains("unique"),
        "{d:?}"
    );
    assert!(d[0].starts_with("rack.json:"), "{d:?}");

    let d = diagnostics_of(|v| v["builders"][2]["arch"] = "xtensa".into());
    assert!(
        d.iter()
            .any(|m| m.contains("builders[2].arch: qemu cannot emulate")),
        "{d:?}"
    );

    let d = diagnostics_of(|v| {
        v["builders"][1]["devices"] = serde_json::json!([
            {"name": "b", "type": "t", "ttys": [{"name": "console", "tty": "/dev/ttyUSB0"}]}
        ])
    });
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].contains("builders[1].devices[0].ttys[0].tty"), "{d:?}");

    let d = diagnostics_of(|v| {
        v["builders"][0]["platforms"][0]["name"] = "linux-debian-12.1/x86_64".into()
    });
    assert!(
        d.iter()
            .any(|m| m.contains("builders[0].platforms[0].name") && m.contains("dots")),
        "{d:?}"
    );

    let d = diagnostics_of(|v| v["builders"][0]["release"] = "12".into());
    assert!(d.iter().any(|m| m.contains("\"bookworm\"")), "{d:?}");

    let d = diagnostics_of(|v| v["builders"][2]["devices"] = v["builders"][0]["devices"].clone());
    assert!(
        d.iter()
            .any(|m| m.contains("qemu builder cannot take boards")),
        "{d:?}"
    );

    let d = diagnostics_of(|v| v["server"]["config"]["listen"] = "nowhere".into());
    assert!(
        d.iter().any(|m| m.contains("server.config.listen")),
        "{d:?}"
    );

    let d = diagnostics_of(|v| {
        v["builders"][0]["platforms"][0]["servers"][0]["url"] = "http://x/".into()
    });
    assert!(
        d.iter()
            .any(|m| m.contains("builders[0].platforms[0].servers[0].url")),
        "{d:?}"
    );

    let d = diagnostics_of(|v| v["builders"][3]["packages"] = serde_json::json!(["git"]));
    assert!(
        d.iter().any(|m| m.contains("builders[3].packages")),
        "{d:?}"
    );
}

#[test]
fn unknown_fields_are_refused_with_position() {
    let text = EXAMPLE.replacen("\"arch\": \"x86_64\"", "\"arhc\": \"x86_64\"", 1);
    let d = only_diagnostic(ConfigKind::Rack, &text, "rack.json");
    let line = text.lines().position(|l| l.contains("\"arhc\"")).unwrap() + 1;
    assert_eq!(d.line, line, "{d:?}");
    assert!(d.message.contains("arhc"), "{d:?}");
}
