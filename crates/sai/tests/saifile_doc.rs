//! docs/saifile.md cannot drift from the code: every JSON example in it is a
//! `.sai.json` that the real `sai` binary parses and expands without
//! warnings, and every `$ sai saifile expand ...` block after an example is
//! exactly what the binary prints for it.

use std::path::Path;
use std::process::Command;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/saifile.md");

/// A fenced block of the page: its info string and its lines.
struct Block {
    info: String,
    body: String,
    line: usize,
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    body: String::new(),
                    line: n + 1,
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in {DOC}");
    blocks
}

fn expand(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args(["saifile", "expand", ".sai.json"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run sai");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn trimmed_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).collect()
}

#[test]
fn every_example_expands_as_the_page_shows() {
    let text = std::fs::read_to_string(DOC).expect("read docs/saifile.md");
    let dir = tempfile::tempdir().unwrap();
    let mut examples = 0;
    let mut outputs = 0;
    let mut have_example = false;
    for block in fenced_blocks(&text) {
        let at = format!("docs/saifile.md:{}", block.line);
        if block.info == "json" {
            std::fs::write(dir.path().join(".sai.json"), &block.body).unwrap();
            let (ok, _, stderr) = expand(dir.path(), &[]);
            assert!(ok, "{at}: the example does not expand:\n{stderr}");
            assert!(
                stderr.is_empty(),
                "{at}: the example has warnings:\n{stderr}"
            );
            examples += 1;
            have_example = true;
            continue;
        }
        let Some(command) = block.body.lines().next() else {
            continue;
        };
        let Some(args) = command.strip_prefix("$ sai saifile expand .sai.json") else {
            continue;
        };
        assert!(have_example, "{at}: an expansion with no example before it");
        let args: Vec<&str> = args.split_whitespace().collect();
        let (ok, stdout, stderr) = expand(dir.path(), &args);
        assert!(ok, "{at}: {stderr}");
        let shown: String = block.body.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(
            trimmed_lines(&shown),
            trimmed_lines(&stdout),
            "{at}: the page shows another expansion than `sai saifile expand {}` prints",
            args.join(" ")
        );
        outputs += 1;
    }
    assert!(examples >= 4, "only {examples} JSON examples in the page");
    assert!(outputs >= examples, "an example without its expansion");
}
