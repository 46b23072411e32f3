//! Property tests: parsing and expanding never panic, whatever the input.

use proptest::prelude::*;
use sai_core::saifile;

fn parse_and_expand(bytes: &[u8]) {
    if let Ok(sf) = saifile::parse("p", bytes) {
        let _ = sf.expand(None);
        let _ = sf.expand(Some("refs/heads/main"));
    }
    if let Ok((_, used)) = saifile::parse_prefix("p", bytes) {
        assert!(used <= bytes.len());
    }
}

/// A platform name, sometimes odd (dots, spaces, empty elements).
fn platform_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,6}(-[a-z0-9]{1,4}){0,2}(/[a-z0-9_]{1,6}(-[a-z]{1,3})?){0,2}",
        1 => "[a-z./ ,-]{0,12}",
    ]
}

/// A `platforms` list: keywords, platform-ish tokens, separators.
fn platform_list() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(&["none", "no", "not", "n"][..]).prop_map(String::from);
    let token = prop_oneof![
        4 => keyword,
        1 => "[a-z]{1,4}(/[a-z0-9_]{0,4}){0,3}",
    ];
    prop::collection::vec(
        (
            token,
            prop_oneof![Just(", "), Just(" "), Just(","), Just(",\t")],
        ),
        0..6,
    )
    .prop_map(|v| v.into_iter().map(|(t, s)| t + s).collect())
}

/// Build text with macros, known and unknown, and shell variables.
fn build_text() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(
        &[
            "${cmake}",
            "${cpack}",
            "${prep}",
            "${foo}",
            "$HOME ${A:-b} ${",
            "\n",
        ][..],
    )
    .prop_map(String::from);
    let piece = prop_oneof![
        6 => fixed,
        1 => "[a-z .;&-]{0,10}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn build_value() -> impl Strategy<Value = String> {
    prop_oneof![
        build_text().prop_map(|s| json_str(&s)),
        prop::collection::vec(build_text(), 0..4).prop_map(|v| format!(
            "[{}]",
            v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(", ")
        )),
        prop::collection::vec(("[a-z]{1,3}", build_text()), 0..3).prop_map(|v| format!(
            "{{{}}}",
            v.iter()
                .map(|(k, s)| format!("{}: {}", json_str(k), json_str(s)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Just("42".to_string()),
    ]
}

fn default_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("0".to_string()),
        Just("\"yes\"".to_string()),
        Just("null".to_string()),
    ]
}

fn saifile_text() -> impl Strategy<Value = String> {
    let platform = (
        platform_name(),
        build_value(),
        prop::option::of(default_value()),
    )
        .prop_map(|(n, b, d)| {
            let d = d.map(|d| format!(", \"default\": {d}")).unwrap_or_default();
            format!("{}: {{\"build\": {b}{d}}}", json_str(&n))
        });
    let configuration = (
        "[a-z]{1,6}",
        prop::option::of(platform_list()),
        prop::option::of("[a-z =-]{0,8}"),
        prop::option::of(prop_oneof![
            Just("main".to_string()),
            Just("dev, main".to_string())
        ]),
    )
        .prop_map(|(n, pl, cmake, br)| {
            let mut fields = Vec::new();
            if let Some(pl) = pl {
                fields.push(format!("\"platforms\": {}", json_str(&pl)));
            }
            if let Some(c) = cmake {
                fields.push(format!("\"cmake\": {}", json_str(&c)));
            }
            if let Some(b) = br {
                fields.push(format!("\"branches\": {}", json_str(&b)));
            }
            format!("{}: {{{}}} # c", json_str(&n), fields.join(",\n"))
        });
    (
        prop::collection::vec(platform, 0..5),
        prop::collection::vec(configuration, 0..5),
        any::<bool>(),
    )
        .prop_map(|(p, c, configs_first)| {
            let p = format!("\"platforms\": {{{}}}", p.join(",\n  "));
            let c = format!("\"configurations\": {{\n{}\n}}", c.join(",\n  "));
            let (a, b) = if configs_first { (c, p) } else { (p, c) };
            format!("# generated\n{{\"schema\": \"sai-1\", {a},\n {b}}}\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_and_expand(&bytes);
    }

    #[test]
    fn json_ish_bytes_never_panic(s in "[\\[\\]{}\",:#0-9a-z\\\\ \n\u{e9}-]{0,200}") {
        parse_and_expand(s.as_bytes());
    }

    #[test]
    fn structured_saifiles_never_panic_and_expand_consistently(text in saifile_text()) {
        parse_and_expand(text.as_bytes());
        if let Ok(sf) = saifile::parse("p", text.as_bytes()) {
            let names: Vec<&str> = sf.platform_names().collect();
            if let Ok(tasks) = sf.expand(None) {
                prop_assert!(tasks.len() <= names.len() * sf.configurations().len());
                for t in &tasks {
                    prop_assert!(names.contains(&t.platform.as_str()));
                    let clean = t.steps.iter().all(|s| !s.contains("${cmake}") && !s.trim().is_empty());
                    prop_assert!(clean, "unsubstituted macro or blank step: {:?}", t.steps);
                }
                // A ref can only remove tasks.
                let on_ref = sf.expand(Some("refs/heads/other")).unwrap();
                prop_assert!(on_ref.len() <= tasks.len());
            }
            // Every error or warning carries a real position.
            for w in sf.warnings() {
                prop_assert!(w.line >= 1 && w.column >= 1);
            }
        } else if let Err(e) = saifile::parse("p", text.as_bytes()) {
            prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
        }
    }

    #[test]
    fn truncated_saifiles_never_panic(text in saifile_text(), cut in any::<prop::sample::Index>()) {
        let bytes = text.as_bytes();
        let end = cut.index(bytes.len() + 1);
        parse_and_expand(&bytes[..end]);
    }
}
