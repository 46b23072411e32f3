//! Expansion of configurations x platforms into tasks.

use sai_core::saifile::{self, TaskSpec};

fn expand(src: &str, git_ref: Option<&str>) -> Vec<TaskSpec> {
    let sf = saifile::parse("t.sai.json", src.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    sf.expand(git_ref).unwrap_or_else(|e| panic!("{e}"))
}

fn pairs(tasks: &[TaskSpec]) -> Vec<(String, String)> {
    tasks
        .iter()
        .map(|t| (t.configuration.clone(), t.platform.clone()))
        .collect()
}

#[test]
fn macros_are_substituted_from_the_configuration() {
    let src = r#"{
  # a comment, with "quotes" and { braces
  "schema": "sai-1",
  "platforms": { "linux/x86_64/gcc": { "build": "${prep} cmake .. ${cmake} && ${cpack} # ${cmake}" } },
  "configurations": {
    "full": { "prep": "P;", "cmake": "-DA=1", "cpack": "export V=${STAMP} $HOME" },
    "bare": {}
  }
}"#;
    let tasks = expand(src, None);
    assert_eq!(tasks.len(), 2);
    // Substituted values are not re-expanded; `${STAMP}` and `$HOME` go to the shell.
    assert_eq!(
        tasks[0].steps,
        ["P; cmake .. -DA=1 && export V=${STAMP} $HOME # -DA=1"]
    );
    assert_eq!(tasks[1].steps, [" cmake ..  &&  # "]);
}

#[test]
fn build_forms_string_array_object_and_blank_lines() {
    let src = r#"{
  "platforms": {
    "a/x/gcc": { "build": "one\n\n  \ntwo ${cmake}\n" },
    "b/x/gcc": { "build": ["one", "", "two\nthree"] },
    "c/x/gcc": { "build": { "configure": "one", "make": "two" } }
  },
  "configurations": { "c": { "cmake": "-DX" } }
}"#;
    let tasks = expand(src, None);
    assert_eq!(tasks[0].steps, ["one", "two -DX"]);
    assert_eq!(tasks[1].steps, ["one", "two", "three"]);
    assert_eq!(tasks[2].steps, ["one", "two"]);
}

#[test]
fn platform_without_build_is_ignored_with_a_warning() {
    let src = r#"{"platforms": {"a/x/gcc": {"default": true}, "b/x/gcc": {"build": ""}, "c/x/gcc": {"build": "make"}},
      "configurations": {"c": {}}}"#;
    let sf = saifile::parse("t", src.as_bytes()).unwrap();
    assert_eq!(sf.platform_names().collect::<Vec<_>>(), ["c/x/gcc"]);
    assert_eq!(sf.warnings().len(), 2);
    assert!(
        sf.warnings()[0]
            .message
            .contains("platform \"a/x/gcc\" has no \"build\" steps")
    );
}

#[test]
fn default_flag_forms() {
    let cases = [
        ("true", true),
        ("false", false),
        ("1", true),
        ("0", false),
        ("2.5", true),
        ("0.5", false),
        ("\"on\"", true),
        ("\"YES\"", true),
        ("\"True\"", true),
        ("\"3\"", true),
        ("\"off\"", false),
        ("\"no\"", false),
        ("\"\"", false),
    ];
    for (value, selected) in cases {
        let src = format!(
            r#"{{"platforms": {{"a/x/gcc": {{"build": "make", "default": {value}}}}}, "configurations": {{"c": {{}}}}}}"#
        );
        assert_eq!(
            expand(&src, None).len(),
            usize::from(selected),
            "default: {value}"
        );
    }
    let absent = r#"{"platforms": {"a/x/gcc": {"build": "make"}}, "configurations": {"c": {}}}"#;
    assert_eq!(expand(absent, None).len(), 1);
}

const BRANCHY: &str = r#"{
  "platforms": { "a/x/gcc": { "build": "make" } },
  "configurations": {
    "always": {},
    "coverity": { "branches": "coverity" },
    "multi": { "branches": "main, release-1 dev" }
  }
}"#;

#[test]
fn branches_filter_only_when_a_ref_is_given() {
    let names = |r: Option<&str>| -> Vec<String> {
        expand(BRANCHY, r)
            .into_iter()
            .map(|t| t.configuration)
            .collect()
    };
    assert_eq!(names(None), ["always", "coverity", "multi"]);
    assert_eq!(names(Some("refs/heads/coverity")), ["always", "coverity"]);
    assert_eq!(names(Some("refs/heads/main")), ["always", "multi"]);
    assert_eq!(names(Some("refs/heads/dev")), ["always", "multi"]);
    assert_eq!(names(Some("refs/heads/release")), ["always"]);
    assert_eq!(names(Some("refs/tags/coverity")), ["always"]);
    assert_eq!(names(Some("coverity")), ["always"]);
}

#[test]
fn order_is_configuration_then_platform_in_file_order() {
    let src = r#"{
  "platforms": {
    "z/x/gcc": { "build": "make" },
    "a/x/gcc": { "build": "make" },
    "m/x/gcc": { "build": "make", "default": false }
  },
  "configurations": {
    "second": { "platforms": "m" },
    "first": { "platforms": "none, m, a" }
  }
}"#;
    let got = pairs(&expand(src, None));
    let want = [
        ("second", "z/x/gcc"),
        ("second", "a/x/gcc"),
        ("second", "m/x/gcc"),
        ("first", "a/x/gcc"),
        ("first", "m/x/gcc"),
    ];
    assert_eq!(got, want.map(|(c, p)| (c.to_string(), p.to_string())));
}

#[test]
fn artifacts_and_packages_are_split_lists() {
    let src = r#"{"platforms": {"a/x/gcc": {"build": "make"}},
      "configurations": {
        "pkg": {"artifacts": "build/*.rpm, build/*.deb,,", "deps": "libz, openssl"},
        "plain": {}
      }}"#;
    let tasks = expand(src, None);
    assert_eq!(tasks[0].artifacts, ["build/*.rpm", "build/*.deb"]);
    assert_eq!(tasks[0].packages, ["libz", "openssl"]);
    assert!(tasks[1].artifacts.is_empty() && tasks[1].packages.is_empty());
}

#[test]
fn test_reports_are_a_split_list_and_absent_by_default() {
    let src = r#"{"platforms": {"a/x/gcc": {"build": "make"}},
      "configurations": {
        "tested": {"test_reports": "build/Testing/**/*.xml, out/junit.xml,"},
        "plain": {}
      }}"#;
    let sf = saifile::parse("t.sai.json", src.as_bytes()).unwrap();
    assert!(sf.warnings().is_empty(), "{:?}", sf.warnings());
    let tasks = sf.expand(None).unwrap();
    assert_eq!(
        tasks[0].test_reports,
        ["build/Testing/**/*.xml", "out/junit.xml"]
    );
    assert!(tasks[1].test_reports.is_empty());
    let plain = serde_json::to_value(&tasks[1]).unwrap();
    assert!(plain.get("test_reports").is_none(), "{plain}");
    let tested = serde_json::to_value(&tasks[0]).unwrap();
    assert_eq!(tested["test_reports"][1], "out/junit.xml");
}

#[test]
fn task_json_has_exactly_four_keys_unless_there_are_packages() {
    let plain = TaskSpec {
        configuration: "c".into(),
        platform: "a/x/gcc".into(),
        steps: vec!["make".into()],
        artifacts: vec![],
        packages: vec![],
        test_reports: vec![],
    };
    let v = serde_json::to_value(&plain).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["configuration", "platform", "steps", "artifacts"]);
    assert_eq!(serde_json::from_value::<TaskSpec>(v).unwrap(), plain);

    let with = TaskSpec {
        packages: vec!["openssl".into()],
        ..plain
    };
    let v = serde_json::to_value(&with).unwrap();
    assert_eq!(v["packages"], serde_json::json!(["openssl"]));
    assert_eq!(v.as_object().unwrap().len(), 5);
}

#[test]
fn accessors_expose_parsed_values() {
    let src = r#"{"schema": "sai-1",
      "platforms": {"a/x/gcc": {"build": ["x ${cmake}", "y ${cpack}"], "default": false}},
      "configurations": {"c": {"cmake": "C", "platforms": "none, a", "branches": "main", "pool": "p", "idle": 3}}}"#;
    let sf = saifile::parse("name.sai.json", src.as_bytes()).unwrap();
    assert_eq!(sf.source_name(), "name.sai.json");
    assert_eq!(sf.schema(), Some("sai-1"));
    let p = &sf.platforms()[0];
    assert_eq!((p.line, p.column, p.default), (2, 21, false));
    assert_eq!(p.build, "x ${cmake}\ny ${cpack}");
    let macros: Vec<_> = p
        .macros
        .iter()
        .map(|m| (m.name.as_str(), m.line, m.column))
        .collect();
    assert_eq!(macros, [("cmake", 2, 46), ("cpack", 2, 60)]);
    let c = &sf.configurations()[0];
    assert_eq!(c.platforms.as_deref(), Some("none, a"));
    assert_eq!(c.branches, ["main"]);
    assert_eq!((c.idle, c.pool.as_deref()), (Some(3), Some("p")));
    assert!(sf.warnings().is_empty());
}
