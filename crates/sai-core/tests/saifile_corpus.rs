//! The real-world corpus: every `.sai.json` revision of the warmcat projects
//! parses and expands, and the libwebsockets file of 2021-08-17 gives the
//! published figures.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sai_core::saifile;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/saifiles"
);

/// The warnings of `sf` whose message contains `text`.
fn warnings_about<'a>(sf: &'a saifile::Saifile, text: &str) -> Vec<&'a saifile::Warning> {
    sf.warnings()
        .iter()
        .filter(|w| w.message.contains(text))
        .collect()
}

fn corpus_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading corpus dir {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.to_string_lossy().ends_with(".sai.json") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(CORPUS), &mut out);
    out
}

#[test]
fn all_corpus_files_parse_and_expand() {
    let files = corpus_files();
    assert_eq!(files.len(), 135, "corpus file count");
    let mut total_tasks = 0;
    for path in &files {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).unwrap();
        let sf = saifile::parse(&name, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(sf.platform_names().count() > 0, "{name}: no platforms");
        assert!(!sf.configurations().is_empty(), "{name}: no configurations");
        let tasks = sf.expand(None).unwrap_or_else(|e| panic!("{e}"));
        assert!(!tasks.is_empty(), "{name}: no tasks");
        for t in &tasks {
            assert!(
                !t.steps.is_empty(),
                "{name}: {} on {} has no steps",
                t.configuration,
                t.platform
            );
            assert!(
                !t.steps.iter().any(|s| s.contains("${cmake}")
                    || s.contains("${cpack}")
                    || s.contains("${prep}")),
                "{name}: unsubstituted macro"
            );
        }
        // The server tolerates trailing bytes: the prefix parser agrees on the content.
        let mut with_trailer = bytes.clone();
        with_trailer.extend_from_slice(b"\ngarbage");
        let (again, used) = saifile::parse_prefix(&name, &with_trailer).unwrap();
        assert_eq!(again, sf);
        assert!(used <= bytes.len() && bytes[used..].iter().all(|b| b.is_ascii_whitespace()));
        total_tasks += tasks.len();
    }
    assert!(
        total_tasks > 10_000,
        "suspiciously few tasks in the corpus: {total_tasks}"
    );
}

#[test]
fn libwebsockets_20210817_gives_548_distinct_tasks() {
    let path = format!("{CORPUS}/libwebsockets/20210817-e49a5f3698.sai.json");
    let bytes = std::fs::read(&path).unwrap();
    let sf = saifile::parse("libwebsockets.sai.json", &bytes).unwrap();
    assert_eq!(sf.platform_names().count(), 30);
    assert_eq!(sf.configurations().len(), 47);

    // The duplicated platform key: a warning naming both lines; the later one
    // wins and takes the later position.
    let dup = warnings_about(&sf, "duplicate key");
    assert_eq!(dup.len(), 1, "{:?}", sf.warnings());
    assert_eq!((dup[0].line, dup[0].column), (23, 3));
    assert_eq!(
        dup[0].to_string(),
        "23:3: duplicate key \"linux-debian-sid/x86_64-amd/gcc\" (first defined at line 14); the later definition wins"
    );
    let names: Vec<_> = sf.platform_names().collect();
    let at = names
        .iter()
        .position(|n| *n == "linux-debian-sid/x86_64-amd/gcc")
        .unwrap();
    assert_eq!(names[at - 1], "linux-debian-sid/x86-amd/gcc");
    assert_eq!(sf.platforms()[at].line, 23);

    let tasks = sf.expand(None).unwrap();
    assert_eq!(tasks.len(), 548);
    let distinct: HashSet<_> = tasks
        .iter()
        .map(|t| (&t.configuration, &t.platform))
        .collect();
    assert_eq!(distinct.len(), 548);

    // Spot checks: an explicit-only configuration and a `none, X` one.
    let on = |conf: &str| -> Vec<&str> {
        tasks
            .iter()
            .filter(|t| t.configuration == conf)
            .map(|t| t.platform.as_str())
            .collect()
    };
    // No `none`: the 15 default platforms plus the explicitly named one.
    let fi = on("fault-injection");
    assert_eq!(fi.len(), 16, "{fi:?}");
    assert!(fi.contains(&"w10/x86_64-amd/msvc") && fi.contains(&"linux-gentoo/x86_64-amd/gcc"));
    assert!(!fi.contains(&"solaris/x86_64-amd/gcc"));
    assert_eq!(on("esp32-heltec"), ["freertos-espidf/xl6-esp32/gcc"]);
    let heltec = tasks
        .iter()
        .find(|t| t.configuration == "esp32-heltec")
        .unwrap();
    assert!(
        heltec.steps[0].contains("idf.py -DLWS_IPV6=0 build"),
        "{:?}",
        heltec.steps
    );
    assert!(heltec.steps[0].contains("esp32/esp-heltec-wb32 ."));
}

#[test]
fn dotted_platform_names_in_the_corpus_are_warnings() {
    let path = format!("{CORPUS}/libwebsockets/20200605-e3df1eaa74.sai.json");
    let sf = saifile::parse("lws", &std::fs::read(path).unwrap()).unwrap();
    let dots = warnings_about(&sf, "dots are not allowed");
    assert_eq!(dots.len(), 3, "{:?}", sf.warnings());
    assert!(
        sf.platform_names()
            .any(|n| n == "linux-ubuntu-20.04/x86_64-amd/gcc")
    );
}

#[test]
fn newer_keys_idle_and_pool_are_read() {
    let path = format!("{CORPUS}/npro/03f17e6981.sai.json");
    let sf = saifile::parse("npro", &std::fs::read(path).unwrap()).unwrap();
    let fuzz = sf
        .configurations()
        .iter()
        .find(|c| c.name == "fuzz")
        .unwrap();
    assert_eq!(fuzz.idle, Some(2));
    assert_eq!(fuzz.pool.as_deref(), Some("fuzz"));
    assert!(sf.warnings().is_empty(), "{:?}", sf.warnings());
}
