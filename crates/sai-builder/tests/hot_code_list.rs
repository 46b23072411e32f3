//! The hot-code list of the builder (`crates/sai-builder/link/hot.ld`, made
//! by `scripts/bench/hot_code.py`, linked by `build.rs`): the generator
//! turns executed addresses into the patterns of the input sections that
//! hold them, and the checked-in list is one the linker takes. That the
//! list still matches the code is checked where the binary is linked:
//! `scripts/build-static.sh` fails when under 40% of it is placed (CI's
//! cross stage links the aarch64 builder with it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A link map in lld's layout: output section, input sections, symbols.
const MAP: &str = "\
             VMA              LMA     Size Align Out     In      Symbol
          400000           400000     1000    64 .text
          400000           400000      100    16         /t/sai_builder-1.rcgu.o:(.text._ZN11sai_builder4main17h0123456789abcdefE)
          400000           400000      100     1                 sai_builder::main::h0123456789abcdef
          400100           400100      100    16         /t/sai_builder-1.rcgu.o:(.text._ZN4core3fmt5write17h1111111111111111E)
          400200           400200      100    16         /t/sai_builder-1.rcgu.o:(.text._ZN4core3fmt5write17h2222222222222222E)
          400300           400300      100    16         /t/sai_builder-1.rcgu.o:(.text._RNvNtCsjrHSEGnQ3l9_3std3env7__var_os)
          400400           400400      100    16         /usr/lib/x86_64-linux-gnu/libc.a(malloc.o):(.text)
          400500           400500      100    16         /t/libring-0123456789abcdef.rlib(4f701d2e06800872-sha256-x86_64-elf.o):(.text)
          400600           400600      100    16         /t/sai_builder-1.rcgu.o:(.text._ZN11sai_builder4cold17h3333333333333333E)
";

/// Executed addresses as callgrind (`--dump-instr=yes --compress-pos=no`)
/// writes them: one in each section but the last, two in `main`.
const PROFILE: &str = "fn=(1) main\n0x400010 1 5\n0x400020 1 5\n0x400110 1 1\n0x400210 1 1\n\
0x400310 2 2\n0x400410 3 3\n0x400510 1 1\ncalls=1 0x400000\n";

#[test]
fn executed_sections_become_patterns_that_outlive_hashes_but_not_other_functions() {
    let dir = tempfile::tempdir().unwrap();
    let (map, profile) = (dir.path().join("map"), dir.path().join("profile.1"));
    std::fs::write(&map, MAP).unwrap();
    std::fs::write(&profile, PROFILE).unwrap();
    let script = sai_testkit::run_ok(
        "scripts/bench/hot_code.py",
        Command::new("python3")
            .arg(repo().join("scripts/bench/hot_code.py"))
            .args([&map, &profile]),
    );
    let patterns: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('*'))
        .collect();
    assert_eq!(
        patterns,
        [
            // One function of its name: the hash is a wildcard.
            "*(.text._ZN11sai_builder4main17h*E)",
            // Two instances of one generic: each keeps its own name.
            "*(.text._ZN4core3fmt5write17h1111111111111111E)",
            "*(.text._ZN4core3fmt5write17h2222222222222222E)",
            // v0 crate disambiguators change with the compiler.
            "*(.text._RNvNtCs*_3std3env7__var_os)",
            // A C object's one .text is named by its archive member.
            "*libc.a:malloc.o(.text)",
            "*libring-*.rlib:*-sha256-x86_64-elf.o(.text)",
        ],
        "{script}"
    );
    assert!(script.contains("6 input sections, 1536 bytes"), "{script}");
    assert!(
        script.trim_end().ends_with("INSERT BEFORE .text;"),
        "{script}"
    );
}

#[test]
fn the_checked_in_list_says_how_much_code_it_lists_and_places_it_before_text() {
    let script = std::fs::read_to_string(repo().join("crates/sai-builder/link/hot.ld")).unwrap();
    let header = script
        .lines()
        .find(|l| l.contains("input sections,"))
        .expect("a header line with the counts build-static.sh reads");
    let sections: usize = header.split_whitespace().next().unwrap().parse().unwrap();
    let bytes: u64 = header.split_whitespace().nth(3).unwrap().parse().unwrap();
    let patterns = script.lines().filter(|l| l.trim().starts_with('*')).count();
    assert!(
        patterns > 1000 && patterns <= sections,
        "{patterns} patterns, {sections} sections"
    );
    assert!(bytes > 1_000_000, "{bytes} bytes listed");
    assert!(script.contains(".text.hot :"));
    assert!(script.trim_end().ends_with("INSERT BEFORE .text;"));
}
