//! Runs the real `sai` binary on files in a temp dir: valid and invalid
//! configs of each kind, malformed inputs, schema output and saifile expansion.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/saifiles"
);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sai<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args(args)
        .output()
        .expect("run sai");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &TempDir, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

/// Writes `bytes` as `name` in a new temp dir; the dir lives as long as the
/// returned guard.
fn write_new(name: &str, bytes: impl AsRef<[u8]>) -> (PathBuf, TempDir) {
    let dir = TempDir::new().unwrap();
    (write(&dir, name, bytes), dir)
}

fn validate(path: &Path) -> Out {
    sai([Path::new("validate"), path])
}

/// `sai validate` fails with exit 1 and reports `file:line:col: ...problem...`.
fn assert_error_at(out: &Out, path: &Path, line: usize, col: Option<usize>, problem: &str) {
    assert_eq!(out.code, 1, "exit code; stderr:\n{}", out.stderr);
    let prefix = match col {
        Some(col) => format!("{}:{line}:{col}: ", path.display()),
        None => format!("{}:{line}:", path.display()),
    };
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(problem)),
        "no line starting with {prefix:?} and containing {problem:?} in stderr:\n{}",
        out.stderr
    );
    assert!(!out.stdout.contains(": ok ("), "stdout: {}", out.stdout);
}

/// Writes `text` as `name` in a new temp dir and checks that `sai validate`
/// fails on it at `line` (and `col`) naming `problem`; returns the run, the
/// file and its dir for further checks.
fn validate_fails_at(
    name: &str,
    text: impl AsRef<[u8]>,
    line: usize,
    col: Option<usize>,
    problem: &str,
) -> (Out, PathBuf, TempDir) {
    let (out, path, dir) = validate_new(name, text);
    assert_error_at(&out, &path, line, col, problem);
    (out, path, dir)
}

/// Writes `text` as `name` in a new temp dir and runs `sai validate` on it.
fn validate_new(name: &str, text: impl AsRef<[u8]>) -> (Out, PathBuf, TempDir) {
    let (path, dir) = write_new(name, text);
    (validate(&path), path, dir)
}

/// Asserts that `text` (a command's output) contains each of `parts`.
#[track_caller]
fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
}

/// Asserts that a line of `text` starts with `start` and contains each of
/// `parts`.
#[track_caller]
fn assert_line_has(text: &str, start: &str, parts: &[&str]) {
    assert!(
        text.lines()
            .any(|l| l.starts_with(start) && parts.iter().all(|p| l.contains(p))),
        "no line starting {start:?} with {parts:?} in:\n{text}"
    );
}

/// Writes `text` as the saifile `name` and checks that `sai validate` passes
/// it and prints a line starting `<file>:<at>` that contains `parts` (a
/// warning).
#[track_caller]
fn saifile_passes_with_a_line(name: &str, text: String, at: &str, parts: &[&str]) {
    let (out, path, _dir) = validate_new(name, text);
    assert_ok(&out, &path, "saifile");
    assert_line_has(&out.stderr, &format!("{}:{at}", path.display()), parts);
}

fn assert_ok(out: &Out, path: &Path, kind: &str) {
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{}: ok ({kind})", path.display())),
        "stdout:\n{}",
        out.stdout
    );
}

const BUILDER: &str = r#"# builder
{
  "schema": "sai-builder",
  "home": "/home/sai",
  "host": "bigbox",
  "platforms": [
    {
      "name": "linux-debian-12/x86_64-amd/gcc",
      "servers": [{"url": "wss://ci.example.org/builder", "token_file": "/etc/t"}]
    }
  ]
}
"#;

const DEVICE: &str = r#"{
  "schema": "sai-device",
  "devices": [{"name": "esp32-1", "type": "esp32",
               "ttys": [{"name": "console", "tty": "/dev/ttyUSB0", "rate": 115200}]}]
}"#;

const JIG: &str = r#"{
  "schema": "sai-jig",
  "listen": "0.0.0.0:44000",
  "token_file": "/etc/sai/jig/token",
  "targets": [{
    "name": "t1",
    "gpios": [{"name": "nReset", "chip": "gpiochip0", "offset": 17, "wire": "RST", "safe": 1}],
    "sequences": [{"name": "reset", "seq": [
      {"gpio": "nReset", "value": 0}, {"wait_ms": 300}, {"gpio": "nReset", "value": 1}
    ]}]
  }]
}"#;

const EXPECT: &str = "schema: sai-expect\ntimeout: 120\nsteps:\n  - expect: \"login:\"\n    send: \"root\\n\"\n    timeout: 60\npass: [\"Completed: PASS\"]\nfail: [\"Completed: FAIL\"]\n";

const SAIFILE: &str = r#"{
	"schema": "sai-1",
	# a comment
	"platforms": {
		"linux-debian-12/x86_64-amd/gcc": {
			"build": ["mkdir build", "cd build && cmake .. ${cmake}", "make"]
		}
	},
	"configurations": {
		"default": { "cmake": "-DX=1", "artifacts": "build/*.deb" }
	}
}
"#;

#[test]
fn valid_config_of_each_kind() {
    let dir = TempDir::new().unwrap();
    let cases = [
        ("builder.conf", BUILDER, "builder"),
        ("devices.conf", DEVICE, "device"),
        ("jig.conf", JIG, "jig"),
        ("boot.expect.yaml", EXPECT, "expect"),
        ("project/.sai.json", SAIFILE, "saifile"),
    ];
    for (name, text, kind) in cases {
        let path = write(&dir, name, text);
        assert_ok(&validate(&path), &path, kind);
    }
    for (name, kind) in [
        ("server.conf", "server"),
        ("web.conf", "web"),
        ("builder.conf", "builder"),
    ] {
        let path = PathBuf::from(EXAMPLES).join(name);
        assert_ok(&validate(&path), &path, kind);
    }
}

#[test]
fn many_files_at_once_report_each() {
    let dir = TempDir::new().unwrap();
    let good = write(&dir, "builder.conf", BUILDER);
    let bad = write(&dir, "web.conf", "{\n  \"server_url\": 4\n}\n");
    let out = sai([Path::new("validate"), &good, &bad]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains(&format!("{}: ok (builder)", good.display()))
    );
    assert_has(&out.stderr, &[&format!("{}:2:", bad.display())]);
}

#[test]
fn bad_json_syntax() {
    validate_fails_at(
        "builder.conf",
        "{\n  \"home\": \"/h\",\n  \"host\" \"x\"\n}\n",
        3,
        Some(10),
        "expected `:`",
    );
}

#[test]
fn wrong_types() {
    let text = BUILDER.replace(
        "\"host\": \"bigbox\",",
        "\"host\": \"bigbox\",\n  \"parallel\": \"8\",",
    );
    validate_fails_at("builder.conf", text, 6, None, "invalid type: string \"8\"");
    validate_fails_at(
        "web.yaml",
        "server_url: [1, 2]\nsession_key_file: /k\n",
        1,
        None,
        "server_url",
    );
}

#[test]
fn unknown_field_typo() {
    validate_fails_at(
        "server.conf",
        "{\n  \"schema\": \"sai-server\",\n  \"listne\": \"0.0.0.0:4444\"\n}\n",
        3,
        Some(3),
        "listne",
    );
}

#[test]
fn missing_required_field() {
    let (out, ..) = validate_fails_at(
        "web.conf",
        "# web\n{\n  \"session_key_file\": \"/k\"\n}\n",
        2,
        Some(1),
        "\"server_url\" is a required property",
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "reported once:\n{}",
        out.stderr
    );
}

#[test]
fn every_schema_error_is_reported() {
    let text = "{\n  \"home\": 1,\n  \"host\": \"h\",\n  \"platforms\": [],\n  \"listne\": 2,\n  \"parallel\": -1\n}\n";
    let (out, path, _dir) = validate_new("builder.conf", text);
    assert_eq!(out.code, 1);
    for line in [2, 5, 6] {
        assert!(
            out.stderr.contains(&format!("{}:{line}:", path.display())),
            "line {line} not reported:\n{}",
            out.stderr
        );
    }
}

#[test]
fn semantic_problem_points_at_the_key() {
    let text = BUILDER.replace(
        "\"token_file\": \"/etc/t\"",
        "\"token_file\": \"/etc/t\",\n                  \"token\": \"x\"",
    );
    let (path, _dir) = write_new("b.json", text);
    let out = sai([
        Path::new("validate"),
        &path,
        Path::new("--kind"),
        Path::new("builder"),
    ]);
    assert_error_at(
        &out,
        &path,
        10,
        Some(19),
        "give token_file or token, not both",
    );
}

#[test]
fn dotted_platform_name_in_builder_config() {
    let text = BUILDER.replace("linux-debian-12/", "linux-ubuntu-20.04/");
    validate_fails_at("builder.conf", text, 8, Some(7), "dots are not allowed");
}

#[test]
fn unknown_macro_in_saifile() {
    let (_, path, _dir) = validate_fails_at(
        ".sai.json",
        SAIFILE.replace("${cmake}", "${cmak}"),
        6,
        None,
        "${cmak}",
    );
    let out = sai([Path::new("saifile"), Path::new("expand"), &path]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(&format!("{}:6:", path.display())) && out.stderr.contains("${cmak}"),
        "{}",
        out.stderr
    );
}

#[test]
fn duplicate_keys_in_saifile_warn_but_pass() {
    let text = SAIFILE.replace(
        "\t\t\"linux-debian-12/x86_64-amd/gcc\": {",
        "\t\t\"linux-debian-12/x86_64-amd/gcc\": { \"build\": \"true\" },\n\t\t\"linux-debian-12/x86_64-amd/gcc\": {",
    );
    saifile_passes_with_a_line("dup.sai.json", text, "6:3: warning:", &["duplicate"]);
}

#[test]
fn dotted_platform_name_in_saifile_warns() {
    let text = SAIFILE.replace("debian-12", "ubuntu-20.04");
    saifile_passes_with_a_line("x.sai.json", text, "5:", &["warning:", "dots"]);
}

#[test]
fn one_megabyte_of_garbage() {
    let garbage: String = (0..1_000_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(7919) % 26) as u8))
        .collect();
    validate_fails_at("server.conf", garbage, 1, Some(1), "expected value");
}

#[test]
fn invalid_utf8() {
    validate_fails_at(
        "builder.conf",
        b"{\n  \"home\": \"/h\xff\xfe\",\n}\n",
        2,
        Some(14),
        "invalid UTF-8",
    );
}

#[test]
fn empty_file() {
    let (_, _, dir) = validate_fails_at("web.conf", "", 1, Some(1), "EOF while parsing");
    let path = write(&dir, "web.yaml", "");
    let out = validate(&path);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_has(&out.stderr, &[&format!("{}:1:1:", path.display())]);
}

#[test]
fn yaml_syntax_error() {
    validate_fails_at(
        "builder.yaml",
        "home: /h\n  host: h\nplatforms: []\n",
        2,
        Some(7),
        "mapping values are not allowed",
    );
}

#[test]
fn yaml_duplicate_key_is_reported_where_it_repeats() {
    let dir = TempDir::new().unwrap();
    let nested = "schema: sai-builder\nhome: /h\nhost: a\nplatforms:\n  - name: linux/x86_64\n    servers: []\n    name: linux/arm\nhost: b\n";
    let top = "schema: sai-builder\nhome: /h\nhost: a\nplatforms: []\nhost: b\n";
    for (name, text, at, key) in [
        ("a.yaml", nested, (7, 5), "name"),
        ("b.yaml", top, (5, 1), "host"),
    ] {
        let path = write(&dir, name, text);
        let problem = format!("duplicate field `{key}`");
        assert_error_at(&validate(&path), &path, at.0, Some(at.1), &problem);
    }
}

#[test]
fn syntax_error_in_a_file_with_a_schema_member_names_no_unknown_kind() {
    let dir = TempDir::new().unwrap();
    let yaml = "schema: sai-builder\nhome: /h\n  host: h\n";
    let json = "{\"schema\": \"sai-web\",\n \"listen\": }\n";
    for (name, text, at, problem) in [
        (
            "mine.yaml",
            yaml,
            (3, Some(7)),
            "mapping values are not allowed",
        ),
        ("mine.json", json, (2, None), ""),
    ] {
        let path = write(&dir, name, text);
        let out = validate(&path);
        assert_error_at(&out, &path, at.0, at.1, problem);
        assert!(!out.stderr.contains("cannot tell"), "{}", out.stderr);
    }
}

#[test]
fn yaml_semantic_problem_has_its_line() {
    let (out, path, _dir) = validate_fails_at(
        "builder.yaml",
        "home: relative\nhost: h\nplatforms:\n  - name: linux/x86_64\n    servers:\n      - url: wss://s/builder\n",
        1,
        Some(1),
        "must be an absolute path",
    );
    assert_error_at(&out, &path, 6, Some(7), "missing token_file");
}

#[test]
fn unknown_kind_and_missing_file() {
    let (_, _, dir) = validate_fails_at(
        "settings.json",
        "{}",
        1,
        Some(1),
        "cannot tell what kind of file",
    );
    let missing = dir.path().join("nope.conf");
    assert_error_at(
        &validate(&missing),
        &missing,
        1,
        Some(1),
        "cannot read file",
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(sai(["validate"]).code, 2);
    assert_eq!(sai(["validate", "--kind", "nope", "x"]).code, 2);
    assert_eq!(sai(["frobnicate"]).code, 2);
    assert_eq!(sai(["schema"]).code, 2);
    assert_eq!(sai(["schema", "nope"]).code, 2);
    assert_eq!(sai(["up", "--instances", "0"]).code, 2);
    assert_eq!(sai(["up", "--repo", "x", "--no-repo"]).code, 2);
    assert_eq!(sai(["token", "builder", "--name", "x"]).code, 2);
}

#[test]
fn validate_warns_about_a_platforms_token_that_matches_no_platform() {
    let text = SAIFILE.replace(
        "\"artifacts\": \"build/*.deb\"",
        "\"artifacts\": \"build/*.deb\", \"platforms\": \"linux-fedora\"",
    );
    let warning = "platforms token \"linux-fedora\" matches no platform";
    saifile_passes_with_a_line("typo.sai.json", text, "10:", &["warning:", warning]);
}

#[test]
fn token_refuses_a_data_dir_that_does_not_exist() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("typo");
    let token_for_ops = |data: &Path| {
        sai([
            "token".as_ref(),
            "user".as_ref(),
            "--name".as_ref(),
            "ops".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
        ])
    };
    let out = token_for_ops(&missing);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("no such directory"), "{}", out.stderr);
    assert!(!missing.exists(), "no key may be made in a mistyped dir");
    // An existing dir gets its key.
    let out = token_for_ops(dir.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(dir.path().join("token.key").exists());
}

#[test]
fn notify_without_url_says_where_it_looks() {
    let dir = TempDir::new().unwrap();
    let out = Command::new("git")
        .args(["init", "-q"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = sai(["notify".as_ref(), "--repo".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_has(&out.stderr, &["--url", "config sai.url"]);
}

#[test]
fn schema_prints_and_writes() {
    let out = sai(["schema", "web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let schema: Value = serde_json::from_str(&out.stdout).expect("schema is JSON");
    assert_eq!(schema["$id"], "https://sai.invalid/schemas/web.schema.json");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );

    let dir = TempDir::new().unwrap();
    let out = sai([Path::new("schema"), Path::new("--write"), dir.path()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for name in [
        "saifile", "server", "web", "builder", "device", "jig", "expect",
    ] {
        let file = format!("{name}.schema.json");
        let written = std::fs::read_to_string(dir.path().join(&file)).expect("written");
        let committed = std::fs::read_to_string(Path::new(SCHEMAS).join(&file)).unwrap_or_default();
        assert_eq!(
            written, committed,
            "schemas/{file} is stale: cargo run -p sai -- schema --write schemas/"
        );
    }
}

fn corpus_file() -> PathBuf {
    PathBuf::from(CORPUS).join("libwebsockets/20210817-e49a5f3698.sai.json")
}

#[test]
fn saifile_expand_json_has_exactly_four_keys() {
    let out = sai([
        Path::new("saifile"),
        Path::new("expand"),
        &corpus_file(),
        Path::new("--json"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tasks: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON array");
    assert_eq!(
        tasks.len(),
        548,
        "distinct builds of the 2021-08-17 libwebsockets saifile"
    );
    for task in &tasks {
        let obj = task.as_object().expect("object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, ["configuration", "platform", "steps", "artifacts"]);
        assert!(obj["configuration"].is_string() && obj["platform"].is_string());
        for list in ["steps", "artifacts"] {
            assert!(
                obj[list]
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string)),
                "{list} of {task}"
            );
        }
    }
    // The duplicated platform key is reported, with its position.
    assert_has(&out.stderr, &["warning:", "duplicate"]);
}

#[test]
fn saifile_expand_human_output_and_ref() {
    let text = SAIFILE.replace(
        "\"default\": { \"cmake\": \"-DX=1\", \"artifacts\": \"build/*.deb\" }",
        "\"default\": { \"cmake\": \"-DX=1\", \"artifacts\": \"build/*.deb\" },\n\t\t\"release\": { \"branches\": \"release\" }",
    );
    let (path, _dir) = write_new(".sai.json", text);
    let out = sai([Path::new("saifile"), Path::new("expand"), &path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_has(
        &out.stdout,
        &["default  on  linux-debian-12/x86_64-amd/gcc"],
    );
    assert_has(&out.stdout, &["cd build && cmake .. -DX=1"]);
    assert!(out.stdout.contains("2 tasks"), "{}", out.stdout);

    let out = sai([
        Path::new("saifile"),
        Path::new("expand"),
        &path,
        Path::new("--ref"),
        Path::new("refs/heads/main"),
        Path::new("--json"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tasks: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(tasks.len(), 1, "branches filter out release on main");
    assert_eq!(tasks[0]["configuration"], "default");
}

#[test]
fn whole_corpus_validates() {
    let mut files = Vec::new();
    for project in std::fs::read_dir(CORPUS).expect("corpus exists") {
        let project = project.unwrap().path();
        if project.is_dir() {
            for f in std::fs::read_dir(&project).unwrap() {
                files.push(f.unwrap().path());
            }
        }
    }
    assert!(files.len() > 100, "corpus has {} files", files.len());
    let mut args = vec![PathBuf::from("validate")];
    args.extend(files.iter().cloned());
    let out = sai(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.ends_with(": ok (saifile)"))
            .count(),
        files.len()
    );
}
