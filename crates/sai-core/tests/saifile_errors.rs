//! Malformed `.sai.json` inputs: each gives a precise `file:line:col` error
//! (or a positioned warning where the input is accepted), and none panics.

use sai_core::saifile::{self, SaifileError};

fn err(src: &[u8]) -> SaifileError {
    match saifile::parse("t.sai.json", src) {
        Ok(sf) => panic!("expected an error, got {sf:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_err(src: &[u8], line: usize, column: usize, needle: &str) {
    let e = err(src);
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(
        e.message.contains(needle),
        "{e:?} should mention {needle:?}"
    );
    assert_eq!(e.source_name, "t.sai.json");
    assert!(
        e.to_string()
            .starts_with(&format!("t.sai.json:{line}:{column}: ")),
        "{e}"
    );
}

#[test]
fn missing_comma() {
    let src = b"{\n\t\"schema\": \"sai-1\"\n\t\"platforms\": {}\n}";
    assert_err(src, 3, 2, "expected ',' or '}' after object member");
}

#[test]
fn missing_colon_and_bad_literal() {
    assert_err(br#"{"schema" "sai-1"}"#, 1, 11, "expected ':'");
    assert_err(br#"{"platforms": tru}"#, 1, 15, "invalid literal");
    assert_err(
        br#"{"platforms": {},}"#,
        1,
        18,
        "expected a string object key",
    );
}

#[test]
fn platforms_of_the_wrong_type() {
    assert_err(
        br#"{"platforms": []}"#,
        1,
        15,
        r#""platforms" must be an object, found an array"#,
    );
    assert_err(
        br#"{"platforms": {"linux/x86_64/gcc": "make"}}"#,
        1,
        36,
        r#"platform "linux/x86_64/gcc" must be an object, found a string"#,
    );
    assert_err(
        br#"{"configurations": {"c": {"cmake": 1}}}"#,
        1,
        36,
        r#"configuration "c": "cmake" must be a string, found a number"#,
    );
    assert_err(br#"{"schema": 1}"#, 1, 12, r#""schema" must be a string"#);
    assert_err(b"[]", 1, 1, "must be an object, found an array");
}

#[test]
fn build_as_a_number() {
    let src = b"{\n  \"platforms\": {\n    \"linux/x86_64/gcc\": { \"build\": 42 }\n  }\n}\n";
    assert_err(
        src,
        3,
        36,
        r#""build" must be a string, an array of strings or an object of strings, found a number"#,
    );
}

#[test]
fn build_array_with_a_non_string() {
    let src = br#"{"platforms": {"l/x/g": {"build": ["make", ["x"]]}}}"#;
    assert_err(
        src,
        1,
        44,
        r#""build" elements must be strings, found an array"#,
    );
}

#[test]
fn default_of_the_wrong_type_and_bad_idle() {
    let src = br#"{"platforms": {"l/x/g": {"build": "make", "default": null}}}"#;
    assert_err(
        src,
        1,
        54,
        r#""default" must be a boolean, number or string"#,
    );
    let src = br#"{"configurations": {"c": {"idle": -1}}}"#;
    assert_err(src, 1, 35, r#""idle" must be a non-negative integer"#);
}

#[test]
fn invalid_platform_name() {
    let src = b"{\"platforms\": {\n  \"linux x86\": {\"build\": \"make\"}}}";
    assert_err(src, 2, 3, r#"invalid platform name "linux x86""#);
    let src = br#"{"platforms": {"a/b/c/d": {"build": "make"}}}"#;
    assert_err(src, 1, 16, "at most 3 are allowed");
}

#[test]
fn dotted_platform_name_is_a_warning_because_the_corpus_has_them() {
    let src = b"{\"platforms\": {\n\t\"linux-ubuntu-20.04/x86_64/gcc\": {\"build\": \"make\"}}}";
    let sf = saifile::parse("t", src).unwrap();
    let w = &sf.warnings()[0];
    assert_eq!((w.line, w.column), (2, 2));
    assert!(w.message.contains("dots are not allowed"), "{w}");
    assert_eq!(
        sf.platform_names().collect::<Vec<_>>(),
        ["linux-ubuntu-20.04/x86_64/gcc"]
    );
}

#[test]
fn unknown_macro_names_configuration_platform_macro_and_position() {
    let src = br#"{
	"platforms": {
		"linux/x86_64/gcc": {
			"build": ["cmake .. ${cmake}", "make \t ${foo} $HOME ${A:-x}"]
		}
	},
	"configurations": { "default": { "cmake": "-DX=1" } }
}"#;
    let sf = saifile::parse("t.sai.json", src).unwrap();
    let e = sf.expand(None).unwrap_err();
    // `\t` in the JSON source is two characters before the macro.
    assert_eq!((e.line, e.column), (4, 44), "{e}");
    for needle in [
        r#"configuration "default""#,
        r#"platform "linux/x86_64/gcc""#,
        "${foo}",
    ] {
        assert!(e.message.contains(needle), "{e} lacks {needle}");
    }
    assert!(e.to_string().starts_with("t.sai.json:4:44: "));
}

#[test]
fn unknown_macro_on_an_unselected_platform_is_harmless() {
    let src = br#"{"platforms": {"a/b/c": {"build": "${foo}", "default": false},
                   "d/e/f": {"build": "make ${cmake}"}},
     "configurations": {"c": {"cmake": "-DX"}}}"#;
    let tasks = saifile::parse("t", src).unwrap().expand(None).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].steps, ["make -DX"]);
}

#[test]
fn duplicate_keys_are_warnings_and_the_later_wins() {
    let src = br#"{
  "platforms": {
    "a/b/c": {"build": "one"},
    "d/e/f": {"build": "two"},
    "a/b/c": {"build": "three", "build": "four"}
  },
  "configurations": {"x": {}}
}"#;
    let sf = saifile::parse("t", src).unwrap();
    let w: Vec<String> = sf.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            r#"5:5: duplicate key "a/b/c" (first defined at line 3); the later definition wins"#,
            r#"5:33: duplicate key "build" (first defined at line 5); the later definition wins"#,
        ]
    );
    // Later definition, later position.
    assert_eq!(sf.platform_names().collect::<Vec<_>>(), ["d/e/f", "a/b/c"]);
    let tasks = sf.expand(None).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[1].steps, ["four"]);
}

/// The warnings of parsing `src`: line, column, message.
fn positioned_warnings(src: &[u8]) -> Vec<(usize, usize, String)> {
    saifile::parse("t", src)
        .unwrap()
        .warnings()
        .iter()
        .map(|w| (w.line, w.column, w.message.clone()))
        .collect()
}

#[test]
fn unknown_keys_are_positioned_warnings() {
    let src = b"{\"schema\": \"sai-1\", \"extra\": 1,\n \"platforms\": {\"a/b/c\": {\"build\": \"x\", \"colour\": \"red\"}}}";
    let w = positioned_warnings(src);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[0].0, w[0].1), (1, 21));
    assert!(w[0].2.contains(r#"unknown key "extra""#));
    assert_eq!((w[1].0, w[1].1), (2, 40));
    assert!(
        w[1].2
            .contains(r#"unknown key "colour" in platform "a/b/c""#)
    );
}

/// "Fast" is shown by where the parser stops, not by a clock (which is
/// meaningless under emulation and on a loaded machine; parse speed is
/// measured by the benchmarks): garbage is rejected at its first byte, and
/// the two valid-looking megabytes are each reported at the exact place of
/// their one fault after a single pass.
#[test]
fn platforms_tokens_that_match_no_platform_are_positioned_warnings() {
    let src = b"{\"platforms\": {\"linux-debian-12/x86_64-amd/gcc\": {\"build\": \"x\"},\n \"w11/x86_64-amd/msvc\": {\"build\": \"y\", \"default\": false}},\n \"configurations\": {\"a\": {\"platforms\": \"none, w11, not linux-debain-12\"}}}";
    let w = positioned_warnings(src);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].0, w[0].1), (3, 56), "{w:?}");
    assert!(
        w[0].2.contains(
            r#"configuration "a": platforms token "linux-debain-12" matches no platform"#
        ),
        "{w:?}"
    );
}

#[test]
fn a_megabyte_of_garbage_fails_fast() {
    // Deterministic pseudo-random bytes.
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let e = saifile::parse("g", &garbage).unwrap_err();
    let before = garbage
        .iter()
        .take_while(|b| b" \t\r\n".contains(b))
        .count();
    assert!(before < 4, "the garbage starts with {before} blanks");
    // Stopped at the first byte that cannot start a document.
    assert_eq!(
        e.line,
        1 + garbage[..before].iter().filter(|&&b| b == b'\n').count(),
        "{e}"
    );
    assert!(e.column <= before + 1, "{e}");

    // A huge unterminated string is one linear scan, reported at its start.
    let mut big = br#"{"schema": ""#.to_vec();
    big.resize(1 << 20, b'x');
    assert_err(&big, 1, 12, "unterminated string");

    // A megabyte on one line of many small values stays linear too.
    let mut many = br#"{"platforms": {"a/b/c": {"build": ["#.to_vec();
    while many.len() < 1 << 20 {
        many.extend_from_slice(br#""x","#);
    }
    many.extend_from_slice(b"1]}}}");
    let e = err(&many);
    assert!(
        e.message
            .contains(r#""build" elements must be strings, found a number"#),
        "{e}"
    );
    assert_eq!(e.line, 1);
    assert_eq!(e.column, many.len() - 4, "{e}");
}

#[test]
fn invalid_utf8() {
    assert_err(b"{\"schema\": \"sai\xff\"}", 1, 16, "invalid UTF-8");
    assert_err(b"{\n# comment \xc3\n}", 2, 11, "invalid UTF-8");
    assert_err(
        b"{\n  \xe2\x82\xac}",
        2,
        3,
        "expected a string object key, found '\u{20ac}'",
    );
    // Valid non-ASCII counts as one column.
    assert_err(
        "{\"schema\": \"\u{e9}\u{e9}\" x".as_bytes(),
        1,
        17,
        "expected ',' or '}'",
    );
}

#[test]
fn unterminated_string_and_input() {
    assert_err(br#"{"schema": "sai-1}"#, 1, 12, "unterminated string");
    assert_err(b"{\"schema\": \"sai-1\n\"}", 1, 12, "unterminated string");
    assert_err(br#"{"schema": "sai-1""#, 1, 19, "found end of input");
    assert_err(b"", 1, 1, "empty input");
    assert_err(b"  # only a comment\n", 2, 1, "empty input");
}

#[test]
fn bad_escapes_and_numbers() {
    assert_err(b"{\"schema\": \"a\\qb\"}", 1, 14, "invalid escape");
    assert_err(b"{\"schema\": \"\\ud800x\"}", 1, 13, "unpaired surrogate");
    assert_err(b"{\"schema\": \"\\u12\"}", 1, 15, "4 hex digits");
    assert_err(
        br#"{"configurations": {"c": {"idle": 01}}}"#,
        1,
        36,
        "expected ',' or '}'",
    );
    assert_err(
        br#"{"configurations": {"c": {"idle": -}}}"#,
        1,
        35,
        "invalid number",
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut src = br#"{"platforms": "#.to_vec();
    src.extend(std::iter::repeat_n(b'[', 100_000));
    // The object is level 1; the 64th '[' (column 15 + 63) would be level 65.
    assert_err(&src, 1, 78, "nesting deeper than 64 levels");
    let mut src = Vec::new();
    src.extend(std::iter::repeat_n(b'{', 100_000));
    assert_err(&src, 1, 2, "expected a string object key");
    let mut src = br#"{"a":"#.repeat(70);
    src.extend(b"1");
    assert_err(&src, 1, 5 * 64 + 1, "nesting deeper than 64 levels");
}

#[test]
fn trailing_garbage_is_an_error_but_parse_prefix_reports_the_end() {
    let src = b"{\"schema\": \"sai-1\"}\n# fine\n}";
    assert_err(src, 3, 1, "trailing characters after the top-level value");
    let (sf, used) = saifile::parse_prefix("t", src).unwrap();
    assert_eq!(used, 19);
    assert_eq!(sf.schema(), Some("sai-1"));
    // Whitespace and comments after the object are fine for the strict parser.
    assert!(saifile::parse("t", b"{}\n  # end\n\n").is_ok());
}

#[test]
fn configurations_before_platforms_are_accepted() {
    let src = br#"{
	"configurations": { "c1": { "cmake": "-DA=1" }, "c2": { "platforms": "none, b" } },
	"platforms": { "a/x/gcc": { "build": "cmake ${cmake}" }, "b/x/gcc": { "build": "make", "default": false } }
}"#;
    let tasks = saifile::parse("t", src).unwrap().expand(None).unwrap();
    let got: Vec<_> = tasks
        .iter()
        .map(|t| (t.configuration.as_str(), t.platform.as_str()))
        .collect();
    assert_eq!(got, [("c1", "a/x/gcc"), ("c2", "b/x/gcc")]);
    assert_eq!(tasks[0].steps, ["cmake -DA=1"]);
}
