//! `BuilderConfig`: defaults, limits, tokens and every semantic rule.

mod common;
use common::{assert_problems_start_with, builder_problems, only_diagnostic, parse_builder};

use sai_core::config::builder::{
    BuilderConfig, DEFAULT_JOB_RETENTION_SECS, DEFAULT_LOG_LIMIT_BYTES, DEFAULT_STEP_TIMEOUT_SECS,
};
use sai_core::config::schema::ConfigKind;
use sai_core::config::schema::ConfigType;
use sai_core::config::{Format, parse};

const MINIMAL: &str = r#"{
  "home": "/home/sai",
  "host": "bigbox",
  "platforms": [
    {
      "name": "linux-debian-12/x86_64-amd/gcc",
      "servers": [{"url": "wss://ci.example.org/sai/builder", "token_file": "/etc/t"}]
    }
  ]
}"#;

#[test]
fn minimal_config_gets_defaults_and_is_valid() {
    let c = parse_builder(MINIMAL);
    assert_eq!(c.step_timeout_secs, DEFAULT_STEP_TIMEOUT_SECS);
    assert_eq!(c.step_timeout_secs, 30 * 60);
    assert_eq!(c.log_limit_bytes, DEFAULT_LOG_LIMIT_BYTES);
    assert_eq!(c.job_retention_secs, DEFAULT_JOB_RETENTION_SECS);
    assert_eq!(c.parallel, None);
    assert_eq!(c.run_as, None);
    assert_eq!(c.platforms[0].instances, 1);
    assert!(c.validate().is_empty(), "{:?}", c.validate());
}

#[test]
fn per_platform_limits_override_builder_wide_ones() {
    let text = MINIMAL.replace(
        "\"servers\"",
        "\"limits\": {\"step_timeout_secs\": 60, \"parallel\": 3}, \"servers\"",
    );
    let c = parse_builder(&text);
    let p = &c.platforms[0];
    assert_eq!(p.step_timeout_secs(&c), 60);
    assert_eq!(p.log_limit_bytes(&c), DEFAULT_LOG_LIMIT_BYTES);
    assert_eq!(p.parallel(&c, 16), 3);
    let plain = parse_builder(MINIMAL);
    assert_eq!(
        plain.platforms[0].parallel(&plain, 16),
        16,
        "CPU count when absent"
    );
}

#[test]
fn servers_are_deduplicated_by_url() {
    let text = r#"{ "home": "/h", "host": "h", "platforms": [
        {"name": "linux/x86_64", "servers": [{"url": "wss://a/builder", "token_file": "/t"},
                                              {"url": "wss://b/sai/builder", "token": "tok"}]},
        {"name": "linux/aarch64", "servers": [{"url": "wss://a/builder", "token_file": "/t"}]}
    ]}"#;
    let c = parse_builder(text);
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let servers = c.servers();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0].0.url, "wss://a/builder");
    assert_eq!(servers[0].1, vec!["linux/x86_64", "linux/aarch64"]);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"{
  "schema": "sai-web",
  "home": "relative/home",
  "host": "big.box",
  "run_as": "0root",
  "step_timeout_secs": 0,
  "log_limit_bytes": 10,
  "parallel": 0,
  "job_retention_secs": 0,
  "platforms": [
    {
      "name": "linux-ubuntu-20.04/x86_64/gcc",
      "instances": 0,
      "servers": [
        {"url": "https://ci/builder", "token": "a", "token_file": "/b"},
        {"url": "wss://ci/sai/other"},
        {"url": "wss://shared/builder", "token_file": "/one"}
      ],
      "env": {"SAI_PARALLEL": "1", "1BAD": "x", "GOOD": "y", "HOME": "/h", "PATH": "/opt/cross/bin:/usr/bin"},
      "limits": {"parallel": 0}
    },
    {
      "name": "linux/x86_64",
      "servers": [
        {"url": "wss://shared/builder", "token_file": "/two"},
        {"url": "wss://shared/builder", "token_file": "/one"}
      ]
    },
    {"name": "linux/x86_64", "servers": []}
  ]
}"#;
    let problems = builder_problems(text);
    let expect = [
        "schema: expected \"sai-builder\"",
        "home: \"relative/home\" must be an absolute path",
        "host: \"big.box\" contains '.'",
        "run_as: \"0root\"",
        "step_timeout_secs: must be at least 1",
        "log_limit_bytes: 10 is too small",
        "parallel: must be at least 1",
        "job_retention_secs: must be at least 1",
        "platforms[0].name: \"linux-ubuntu-20.04/x86_64/gcc\": platform name contains '.'",
        "platforms[0].instances: must be at least 1",
        "platforms[0].servers[0].url: \"https://ci/builder\": scheme \"https\"",
        "platforms[0].servers[0].token: give token_file or token, not both",
        "platforms[0].servers[1].url: \"wss://ci/sai/other\" must end with",
        "platforms[0].servers[1]: missing token_file",
        "platforms[0].env.SAI_PARALLEL: \"SAI_PARALLEL\" is set by sai-builder",
        "platforms[0].env.1BAD: \"1BAD\" is not an environment variable name",
        "platforms[0].env.HOME: \"HOME\" is set by sai-builder",
        "platforms[0].limits.parallel: must be at least 1",
        "platforms[1].servers[0]: server \"wss://shared/builder\" gets a different token",
        "platforms[1].servers[1].url: server \"wss://shared/builder\" is listed twice",
        "platforms[2].name: platform \"linux/x86_64\" is already offered by platforms[1]",
        "platforms[2].servers: list at least one server",
    ];
    assert_problems_start_with(&problems, &expect);
}

#[test]
fn no_platforms_is_a_problem() {
    let text = r#"{"home": "/h", "host": "h", "platforms": []}"#;
    assert_eq!(
        builder_problems(text),
        vec!["platforms: list at least one platform this builder offers"]
    );
}

#[test]
fn semantic_diagnostics_point_at_the_field_in_json_and_yaml() {
    let json = MINIMAL.replace(
        "\"token_file\": \"/etc/t\"",
        "\"token_file\": \"/etc/t\", \"token\": \"x\"",
    );
    let d = only_diagnostic(ConfigKind::Builder, &json, "builder.conf");
    assert_eq!((d.line, d.column), (7, 87), "{d}");

    let yaml = "home: /h\nhost: h\nplatforms:\n  - name: linux/x86_64\n    servers:\n      - url: wss://a/builder\n        token: x\n        token_file: /t\n";
    assert_eq!(
        only_diagnostic(ConfigKind::Builder, yaml, "builder.yaml").to_string(),
        "builder.yaml:7:9: platforms[0].servers[0].token: give token_file or token, not both (token_file is preferred)"
    );
}

#[test]
fn wrong_type_is_reported_with_position() {
    let text = MINIMAL.replace(
        "\"host\": \"bigbox\",",
        "\"host\": \"bigbox\",\n  \"parallel\": \"8\",",
    );
    let e = parse::<BuilderConfig>("builder.conf", text.as_bytes(), Format::Json).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("invalid type: string \"8\""), "{e}");
}
