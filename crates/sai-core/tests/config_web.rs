//! `WebConfig`: defaults, typos with positions, and every semantic rule.

mod common;
use common::{assert_problems_start_with, only_diagnostic};

use sai_core::config::schema::ConfigKind;
use sai_core::config::schema::ConfigType;
use sai_core::config::web::{DEFAULT_SESSION_LIFETIME_SECS, WebConfig, check_argon2_phc};
use sai_core::config::{Format, parse};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn minimal() -> String {
    r#"{ "server_url": "http://127.0.0.1:4444", "session_key_file": "/k" }"#.to_string()
}

fn problems_of(json: &str) -> Vec<String> {
    let config: WebConfig = parse("web.conf", json.as_bytes(), Format::Json).expect("parses");
    config.validate().iter().map(ToString::to_string).collect()
}

#[test]
fn minimal_config_gets_defaults_and_is_valid() {
    let config: WebConfig = parse("web.conf", minimal().as_bytes(), Format::Json).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8081");
    assert_eq!(config.session_lifetime_secs, DEFAULT_SESSION_LIFETIME_SECS);
    assert!(config.users.is_empty());
    assert!(config.validate().is_empty(), "{:?}", config.validate());
}

#[test]
fn missing_required_field_is_named() {
    let e = parse::<WebConfig>("web.conf", b"{\n}\n", Format::Json).unwrap_err();
    assert!(e.message.contains("server_url"), "{e}");
    assert_eq!((e.line, e.source_name.as_str()), (2, "web.conf"));
}

#[test]
fn unknown_field_typo_points_at_its_line() {
    let text = "# web\n{\n  \"server_url\": \"http://s\",\n  \"session_key_file\": \"/k\",\n  \"listne\": \"x\"\n}\n";
    let e = parse::<WebConfig>("web.conf", text.as_bytes(), Format::Json).unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("unknown field `listne`"), "{e}");
}

#[test]
fn nested_structs_deny_unknown_fields_too() {
    let text = r#"{ "server_url": "http://s", "session_key_file": "/k",
        "users": [{"name": "a", "password_hash": "x", "pasword": "y"}] }"#;
    let e = parse::<WebConfig>("web.conf", text.as_bytes(), Format::Json).unwrap_err();
    assert!(e.message.contains("pasword"), "{e}");
}

#[test]
fn yaml_is_accepted() {
    let text = format!(
        "schema: sai-web\nserver_url: unix:/run/sai/server.sock\nsession_key_file: /k\nusers:\n  - name: ann\n    password_hash: '{HASH}'\n"
    );
    let config: WebConfig = parse("web.yaml", text.as_bytes(), Format::Yaml).unwrap();
    assert_eq!(config.users[0].name, "ann");
    assert!(config.validate().is_empty(), "{:?}", config.validate());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = format!(
        r#"{{
  "schema": "sai-server",
  "listen": "8081",
  "server_url": "ftp://x",
  "public_url": "ci.example.org",
  "users": [
    {{"name": "ann", "password_hash": "{HASH}"}},
    {{"name": "ann", "password_hash": "hunter2"}},
    {{"name": "b c", "password_hash": "$pbkdf2$x$y$z"}}
  ],
  "session_lifetime_secs": 5,
  "session_key_file": " ",
  "trusted_proxy": {{"addresses": ["10.0.0.0/33", "nope"], "header": "X Forwarded"}}
}}"#
    );
    let problems = problems_of(&text);
    let expect = [
        "schema: expected \"sai-web\"",
        "listen: \"8081\"",
        "server_url: \"ftp://x\": scheme \"ftp\"",
        "public_url: \"ci.example.org\" is not a URL",
        "users[1].name: user \"ann\" is listed twice",
        "users[1].password_hash: not a PHC string",
        "users[2].name: \"b c\" contains ' '",
        "users[2].password_hash: algorithm \"pbkdf2\"",
        "session_lifetime_secs: 5 is out of range",
        "session_key_file: must name",
        "trusted_proxy.addresses[0]: \"10.0.0.0/33\": prefix length",
        "trusted_proxy.addresses[1]: \"nope\" is not an IP address",
        "trusted_proxy.header: \"X Forwarded\"",
    ];
    assert_problems_start_with(&problems, &expect);
}

#[test]
fn listen_forms() {
    for ok in [
        "127.0.0.1:8081",
        "[::1]:80",
        "0.0.0.0:0",
        "localhost:8081",
        "unix:/run/w.sock",
        "unix:@sai-web",
    ] {
        let text = minimal().replace("{ ", &format!("{{ \"listen\": \"{ok}\", "));
        assert!(
            problems_of(&text).is_empty(),
            "{ok}: {:?}",
            problems_of(&text)
        );
    }
    for bad in [
        "8081",
        ":8081",
        "::1:80",
        "host:99999",
        "unix:rel/path",
        "my host:80",
    ] {
        let text = minimal().replace("{ ", &format!("{{ \"listen\": \"{bad}\", "));
        assert_eq!(problems_of(&text).len(), 1, "{bad}");
    }
}

#[test]
fn argon2_phc_shapes() {
    assert!(check_argon2_phc(HASH).is_ok());
    assert!(check_argon2_phc("$argon2i$m=4096,t=3,p=1$c2FsdA$aGFzaA").is_ok());
    for bad in [
        "",
        "password",
        "$argon2id$v=19$m=1,t=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=1,t=1,p=1$c2FsdA==$aGFzaA",
        "$argon2id$v=19$m=1,t=1,p=1$c2FsdA",
        "$bcrypt$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
    ] {
        assert!(check_argon2_phc(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn semantic_diagnostics_point_at_the_field() {
    let text = "{\n  \"server_url\": \"http://s\",\n  \"session_key_file\": \"/k\",\n  \"session_lifetime_secs\": 1\n}\n";
    assert_eq!(
        only_diagnostic(ConfigKind::Web, text, "/etc/sai/web/conf").to_string(),
        "/etc/sai/web/conf:4:3: session_lifetime_secs: 1 is out of range: give between 60 and 2678400 seconds"
    );
}
