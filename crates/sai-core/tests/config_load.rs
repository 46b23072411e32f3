//! `config::load`: the one way daemons read a config. Every problem comes
//! back at the `file:line:col` of the field it is about, found in the parse
//! tree of the text, for every kind and in both formats.

use sai_core::config::device::DeviceConfig;
use sai_core::config::expect::ExpectScript;
use sai_core::config::jig::JigConfig;
use sai_core::config::server::ServerConfig;
use sai_core::config::{Format, load};

fn problems<T: sai_core::config::schema::ConfigType + std::fmt::Debug>(
    name: &str,
    text: &str,
) -> Vec<String> {
    let e = load::<T>(name, text.as_bytes(), Format::from_file_name(name)).unwrap_err();
    e.0.iter().map(ToString::to_string).collect()
}

#[test]
fn semantic_problems_are_placed_at_their_field() {
    let yaml = "listen: 127.0.0.1:4444\nprojects:\n  - name: a\n  - {name: a}\nlog_flush_ms: 0\n";
    assert_eq!(
        problems::<ServerConfig>("server.yaml", yaml),
        [
            "server.yaml:4:6: projects[1].name: \"a\" is listed twice",
            "server.yaml:5:1: log_flush_ms: must be greater than 0",
        ]
    );
    let json = "{\"devices\": [\n  {\"name\": \"a\", \"type\": \"t\",\n   \"ttys\": [{\"name\": \"c\", \"tty\": \"rel\"}]}]}";
    assert_eq!(
        problems::<DeviceConfig>("devices.conf", json),
        ["devices.conf:3:27: devices[0].ttys[0].tty: tty path \"rel\" must be absolute"]
    );
    let jig = "targets:\n  - name: t\n    gpios: []\n    sequences:\n      - name: s\n        seq: [{gpio: nRest, value: 0}]\n";
    let p = problems::<JigConfig>("jig.yaml", jig);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "jig.yaml:6:16: targets[0].sequences[0].seq[0].gpio: unknown gpio 'nRest'"
        ),
        "{p:?}"
    );
    let script = "{\"steps\": [{\"send\": \"x\"}, {\"tty\": 2, \"send\": \"y\"}]}";
    assert_eq!(
        problems::<ExpectScript>("s.expect.json", script),
        ["s.expect.json:1:28: steps[1].tty: must be 0 or 1, found 2"]
    );
}

#[test]
fn unknown_and_repeated_keys_are_placed_at_the_key() {
    let json = "{\"projects\": [{\"name\": \"a\"}],\n  \"listne\": \"x\"}";
    let p = problems::<ServerConfig>("conf", json);
    assert!(
        p[0].starts_with("conf:2:3: unknown field `listne`"),
        "{p:?}"
    );
    let json = "{\"log_flush_ms\": 5,\n \"retention\": {},\n \"log_flush_ms\": 6}";
    let p = problems::<ServerConfig>("conf", json);
    assert!(
        p[0].starts_with("conf:3:2: duplicate field `log_flush_ms`"),
        "{p:?}"
    );
    let yaml = "retention:\n  max_age_days: 3\n  max_age_days: 4\n";
    let p = problems::<ServerConfig>("conf.yaml", yaml);
    assert!(
        p[0].starts_with("conf.yaml:3:3: retention: duplicate field `max_age_days`"),
        "{p:?}"
    );
}
