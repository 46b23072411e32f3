//! `ConfigKind` names and detection, and `locate` in JSON and YAML texts.

use sai_core::config::Format;
use sai_core::config::schema::{ConfigKind, FieldPath, locate, locate_nearest};
use serde_json::json;

#[test]
fn names_markers_and_file_names() {
    let names: Vec<&str> = ConfigKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "saifile", "server", "web", "builder", "device", "jig", "expect"
        ]
    );
    for kind in ConfigKind::ALL {
        assert_eq!(ConfigKind::from_name(kind.name()), Some(kind));
        assert_eq!(ConfigKind::from_marker(kind.marker()), Some(kind));
        assert_eq!(
            kind.schema_file_name(),
            format!("{}.schema.json", kind.name())
        );
    }
    assert_eq!(ConfigKind::Saifile.marker(), "sai-1");
    assert_eq!(ConfigKind::ExpectScript.marker(), "sai-expect");
    assert_eq!(
        ConfigKind::Server.schema_id(),
        "https://sai.invalid/schemas/server.schema.json"
    );
}

#[test]
fn detect_by_marker_wins_over_name() {
    let v = json!({"schema": "sai-builder"});
    assert_eq!(
        ConfigKind::detect("server.conf", &v),
        Some(ConfigKind::Builder)
    );
    // An unknown marker falls back to the name.
    let v = json!({"schema": "sai-nope"});
    assert_eq!(ConfigKind::detect("web.yaml", &v), Some(ConfigKind::Web));
}

#[test]
fn detect_by_name() {
    let null = json!(null);
    let cases = [
        (".sai.json", Some(ConfigKind::Saifile)),
        ("repo/.sai.json", Some(ConfigKind::Saifile)),
        ("2020-x.sai.json", Some(ConfigKind::Saifile)),
        ("server.conf", Some(ConfigKind::Server)),
        ("/etc/sai/server.yaml", Some(ConfigKind::Server)),
        ("web.json", Some(ConfigKind::Web)),
        ("builder.yml", Some(ConfigKind::Builder)),
        ("devices.conf", Some(ConfigKind::Device)),
        ("device-lab.yaml", Some(ConfigKind::Device)),
        ("jig.conf", Some(ConfigKind::Jig)),
        ("boot.expect.json", Some(ConfigKind::ExpectScript)),
        ("boot.expect.yaml", Some(ConfigKind::ExpectScript)),
        ("/etc/sai/server/conf", Some(ConfigKind::Server)),
        ("/etc/sai/web/conf", Some(ConfigKind::Web)),
        ("/etc/sai/builder/conf", Some(ConfigKind::Builder)),
        ("/etc/sai/devices/conf", Some(ConfigKind::Device)),
        ("/etc/sai/jig/conf.yaml", Some(ConfigKind::Jig)),
        ("conf", None),
        ("settings.json", None),
        ("webserver.conf", None),
    ];
    for (name, want) in cases {
        assert_eq!(ConfigKind::detect(name, &null), want, "{name}");
    }
}

#[test]
fn field_paths() {
    let p = FieldPath::root()
        .key("platforms")
        .index(2)
        .key("servers")
        .index(0)
        .key("token");
    assert_eq!(p.to_string(), "platforms[2].servers[0].token");
    assert_eq!(
        FieldPath::from_json_pointer("/platforms/2/servers/0/token"),
        p
    );
    assert_eq!(
        FieldPath::from_json_pointer("/a~1b/c~0d").to_string(),
        "a/b.c~d"
    );
}

#[test]
fn locate_in_json_with_comments() {
    let text = "# \"a\": here\n{\n  \"a\": {\"b\": [1, {\"c\": \"#\"}, [2, {\"d\": 3}]]},\n  \"e\": true\n}\n";
    let at = |p: FieldPath| locate(text, Format::Json, &p);
    assert_eq!(at(FieldPath::root().key("a")), Some((3, 3)));
    assert_eq!(
        at(FieldPath::root().key("a").key("b").index(1).key("c")),
        Some((3, 19))
    );
    assert_eq!(
        at(FieldPath::root()
            .key("a")
            .key("b")
            .index(2)
            .index(1)
            .key("d")),
        Some((3, 35))
    );
    assert_eq!(at(FieldPath::root().key("e")), Some((4, 3)));
    assert_eq!(at(FieldPath::root().key("zz")), None);
    assert_eq!(
        locate_nearest(text, Format::Json, &FieldPath::root().key("a").key("zz")),
        (3, 3)
    );
}

#[test]
fn locate_in_yaml() {
    let text = "# c\nhome: /h\nplatforms:\n  - name: a\n    servers:\n      - url: u1\n      - url: u2\n        token: t\n  - name: b\nhost: h\n";
    let at = |p: FieldPath| locate(text, Format::Yaml, &p);
    assert_eq!(at(FieldPath::root().key("home")), Some((2, 1)));
    assert_eq!(at(FieldPath::root().key("host")), Some((10, 1)));
    assert_eq!(
        at(FieldPath::root().key("platforms").index(1)),
        Some((9, 3))
    );
    assert_eq!(
        at(FieldPath::root().key("platforms").index(1).key("name")),
        Some((9, 5))
    );
    let token = FieldPath::root()
        .key("platforms")
        .index(0)
        .key("servers")
        .index(1)
        .key("token");
    assert_eq!(at(token), Some((8, 9)));
    assert_eq!(
        at(FieldPath::root().key("platforms").index(1).key("servers")),
        None
    );
}
