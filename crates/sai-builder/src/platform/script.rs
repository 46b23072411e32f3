//! The script a step's text becomes on each platform.
//!
//! Unix runs the text as it is with `<shell> -e -c <text>` ([`unix_args`]).
//! Windows, as the reference did, writes a batch file next to `src/`
//! (`sai-build-script.bat`) and runs it with `cmd /D /C`: the environment as
//! `set "NAME=value"` lines, a `cd /d` into the working directory, then the
//! step's lines, each followed by an exit-code check so the script stops at
//! the first failing line the way `sh -e` does ([`windows_batch`]). This
//! module is plain string work so that it is tested on every platform.

use std::collections::BTreeMap;
use std::path::Path;

/// A step that cannot be written as a batch script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// Batch `set` lines cannot carry line breaks.
    #[error(
        "environment variable {name} contains a line break, which a Windows batch script cannot set"
    )]
    LineBreakInValue {
        /// The variable.
        name: String,
    },
    /// The name is empty or has `=`, a quote or a line break in it.
    #[error("{name:?} is not a valid Windows environment variable name")]
    BadName {
        /// The variable.
        name: String,
    },
    /// The working directory has a quote or line break in it.
    #[error("the working directory {0} cannot be named in a batch script")]
    BadDirectory(String),
}

/// File name of the batch script on Windows (as the reference named it).
pub const WINDOWS_SCRIPT_NAME: &str = "sai-build-script.bat";

/// Arguments after the shell on Unix: stop at the first failing command.
pub fn unix_args(script: &str) -> [&str; 3] {
    ["-e", "-c", script]
}

/// `%` starts a variable reference in a batch file; `%%` is a literal one.
fn escape_percent(s: &str) -> String {
    s.replace('%', "%%")
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// Whether a check line may follow `line`: not inside a parenthesised
/// block, not after a continuation (`^`), a label or a comment.
fn checkable(line: &str, depth: &mut i32) -> bool {
    let t = line.trim();
    let mut quoted = false;
    for c in t.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => *depth += 1,
            ')' if !quoted => *depth -= 1,
            _ => {}
        }
    }
    let lower = t.to_ascii_lowercase();
    !(t.is_empty()
        || *depth > 0
        || t.ends_with('^')
        || t.starts_with(':')
        || lower == "rem"
        || lower.starts_with("rem ")
        || lower.starts_with("@rem"))
}

/// The batch script for a step's `text`, run in `cwd` with `env`.
pub fn windows_batch(
    text: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<String, ScriptError> {
    let mut out = String::from("@echo off\r\n");
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '"']) || has_line_break(name) {
            return Err(ScriptError::BadName { name: name.clone() });
        }
        if has_line_break(value) {
            return Err(ScriptError::LineBreakInValue { name: name.clone() });
        }
        // Inside `set "..."` the quotes protect & | < > ^; the last quote
        // ends the value, so quotes inside it survive.
        out.push_str(&format!(
            "set \"{}={}\"\r\n",
            escape_percent(name),
            escape_percent(value)
        ));
    }
    let dir = cwd.display().to_string();
    if dir.contains('"') || has_line_break(&dir) {
        return Err(ScriptError::BadDirectory(dir));
    }
    out.push_str(&format!(
        "cd /d \"{}\"\r\nif %ERRORLEVEL% NEQ 0 exit /b %ERRORLEVEL%\r\n",
        escape_percent(&dir)
    ));
    let mut depth = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\r\n");
        if checkable(line, &mut depth) {
            out.push_str("if %ERRORLEVEL% NEQ 0 exit /b %ERRORLEVEL%\r\n");
        }
    }
    out.push_str("exit /b 0\r\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &str = "if %ERRORLEVEL% NEQ 0 exit /b %ERRORLEVEL%";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_windows_step_script_sets_the_environment_quotes_and_stops_at_the_first_failure() {
        let e = env(&[
            ("HOME", r"C:\sai\home"),
            ("SAI_PROJECT", "a&b|c<d>e^f"),
            ("PCT", "100%"),
            ("QUOTED", r#"say "hi""#),
        ]);
        let text = "cmake -B build\r\n\r\nif exist build (\n  echo yes\n)\nrem done\nctest ^\n  -j4\nexit 3";
        let got = windows_batch(text, Path::new(r"C:\sai\jobs\ABCD\src"), &e).unwrap();
        let lines: Vec<&str> = got.split("\r\n").collect();
        assert_eq!(
            lines,
            vec![
                "@echo off",
                r#"set "HOME=C:\sai\home""#,
                r#"set "PCT=100%%""#,
                r#"set "QUOTED=say "hi"""#,
                r#"set "SAI_PROJECT=a&b|c<d>e^f""#,
                r#"cd /d "C:\sai\jobs\ABCD\src""#,
                CHECK,
                "cmake -B build",
                CHECK,
                "",
                "if exist build (",
                "  echo yes",
                ")",
                CHECK,
                "rem done",
                "ctest ^",
                "  -j4",
                CHECK,
                "exit 3",
                CHECK,
                "exit /b 0",
                "",
            ]
        );
        // Every line ends CRLF, as cmd expects.
        assert!(!got.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn values_a_batch_script_cannot_carry_are_refused_by_name() {
        let cwd = Path::new(r"C:\w");
        assert_eq!(
            windows_batch("echo", cwd, &env(&[("MULTI", "a\nb")])),
            Err(ScriptError::LineBreakInValue {
                name: "MULTI".into()
            })
        );
        assert_eq!(
            windows_batch("echo", cwd, &env(&[("A=B", "x")])),
            Err(ScriptError::BadName { name: "A=B".into() })
        );
        assert!(matches!(
            windows_batch("echo", Path::new("C:\\a\"b"), &env(&[])),
            Err(ScriptError::BadDirectory(_))
        ));
        let err = windows_batch("echo", cwd, &env(&[("MULTI", "a\r\nb")])).unwrap_err();
        assert!(err.to_string().contains("MULTI"), "{err}");
    }

    #[test]
    fn unix_steps_stop_at_the_first_failing_command() {
        assert_eq!(unix_args("make"), ["-e", "-c", "make"]);
    }
}
