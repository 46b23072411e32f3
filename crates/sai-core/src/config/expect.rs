//! Script of `sai-expect`: what to wait for on the device ttys, what to send,
//! and what decides pass or fail.
//!
//! Without a script `sai-expect` behaves like the original: it passes when
//! `Completed: PASS` appears (and additionally fails on `Completed: FAIL`).
//! Example (YAML):
//!
//! ```yaml
//! schema: sai-expect
//! timeout: 120
//! steps:
//!   - expect: "login:"
//!     send: "root\n"
//!     timeout: 60
//!   - expect: "# "
//!     send: "run-tests\n"
//! pass: ["Completed: PASS"]
//! fail: ["Completed: FAIL", "Kernel panic"]
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problem::{ConfigProblem, ConfigType, FieldPath, check_marker};

/// Value of the optional `schema` marker of an expect script.
pub const SCHEMA_MARKER: &str = "sai-expect";

/// Pass pattern used when a script gives no `pass` (the original's string).
pub const DEFAULT_PASS: &str = "Completed: PASS";

/// Fail pattern used when a script gives no `fail`.
pub const DEFAULT_FAIL: &str = "Completed: FAIL";

/// An expect script: ordered steps plus pass and fail patterns.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectScript {
    /// Optional marker naming this file kind: `"sai-expect"`.
    pub schema: Option<String>,
    /// Free text for humans.
    pub description: Option<String>,
    /// Overall timeout in seconds, counted from start; none means no limit
    /// (the `--timeout` flag overrides it).
    pub timeout: Option<f64>,
    /// Seconds a vanished tty (board reset, USB re-enumeration) may stay
    /// away before it counts as an infrastructure error; default 10.
    pub reopen_window: Option<f64>,
    /// Baud rate for the ttys (the `--baud` flag overrides it); default the
    /// device's configured rate, else 115200.
    pub baud: Option<u32>,
    /// Expectations, matched in order. Each step waits for its `expect`
    /// pattern (if any), then sends its `send` text (if any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ExpectStep>,
    /// Regular expressions that end the run with a pass once every step is
    /// done; default `["Completed: PASS"]`. An empty list means the run
    /// passes as soon as the last step matched.
    pub pass: Option<Vec<String>>,
    /// Regular expressions that end the run with a test failure whenever they
    /// appear, even before the steps are done; default `["Completed: FAIL"]`.
    pub fail: Option<Vec<String>>,
}

/// One expectation.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    /// Free text for humans, used in log messages.
    pub description: Option<String>,
    /// Regular expression to wait for in the output of `tty`. Matching is
    /// per line (the line received so far counts, so prompts without a
    /// newline match too); output before the previous step's match is not
    /// searched again.
    pub expect: Option<String>,
    /// Text sent to `tty` after `expect` matched (or at once without
    /// `expect`); write `\n` or `\r` yourself.
    pub send: Option<String>,
    /// Which device tty the step watches and sends to: 0 (default) or 1.
    pub tty: Option<u8>,
    /// Seconds this step may wait for its `expect`; none means only the
    /// overall timeout applies.
    pub timeout: Option<f64>,
}

impl ExpectScript {
    /// The pass patterns in effect.
    pub fn pass_patterns(&self) -> Vec<String> {
        self.pass
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_PASS.to_string()])
    }

    /// The fail patterns in effect.
    pub fn fail_patterns(&self) -> Vec<String> {
        self.fail
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_FAIL.to_string()])
    }
}

impl ConfigType for ExpectScript {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Check what the schema cannot express; returns every problem found,
    /// each with the path of the field it concerns (empty means valid).
    /// Regular expressions are compiled by `sai-expect` itself.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = check_marker(self.schema.as_deref(), SCHEMA_MARKER);
        let root = FieldPath::root();
        let positive = |at: FieldPath, v: Option<f64>, p: &mut Vec<ConfigProblem>| {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                p.push(ConfigProblem::new(
                    at,
                    "must be a positive number of seconds",
                ));
            }
        };
        positive(root.key("timeout"), self.timeout, &mut p);
        if let Some(v) = self.reopen_window
            && !(v.is_finite() && v >= 0.0)
        {
            p.push(ConfigProblem::new(
                root.key("reopen_window"),
                "must be zero or a positive number of seconds",
            ));
        }
        if self.baud == Some(0) {
            p.push(ConfigProblem::new(root.key("baud"), "must be positive"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            let at = root.key("steps").index(i);
            if s.expect.is_none() && s.send.is_none() {
                p.push(ConfigProblem::new(
                    at.clone(),
                    "needs \"expect\", \"send\" or both",
                ));
            }
            if s.expect.as_deref() == Some("") {
                p.push(ConfigProblem::new(at.key("expect"), "must not be empty"));
            }
            if let Some(t) = s.tty
                && t > 1
            {
                p.push(ConfigProblem::new(
                    at.key("tty"),
                    format!("must be 0 or 1, found {t}"),
                ));
            }
            positive(at.key("timeout"), s.timeout, &mut p);
            if s.timeout.is_some() && s.expect.is_none() {
                p.push(ConfigProblem::new(
                    at.key("timeout"),
                    "given but nothing to expect",
                ));
            }
        }
        for (what, list) in [("pass", &self.pass), ("fail", &self.fail)] {
            for (i, pat) in list.iter().flatten().enumerate() {
                if pat.is_empty() {
                    p.push(ConfigProblem::new(
                        root.key(what).index(i),
                        "pattern must not be empty",
                    ));
                }
            }
        }
        if self.steps.is_empty() && self.pass.as_ref().is_some_and(|v| v.is_empty()) {
            p.push(ConfigProblem::new(
                root.key("pass"),
                "an empty pass list needs steps, or the run could never pass",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Format, parse};

    #[test]
    fn yaml_script_parses() {
        let text = "schema: sai-expect\ntimeout: 120\nsteps:\n  - expect: 'login:'\n    send: \"root\\n\"\n    timeout: 60\n  - send: \"x\\n\"\n    tty: 1\nfail: ['panic']\n";
        let s: ExpectScript = parse("s.yaml", text.as_bytes(), Format::Yaml).unwrap();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        assert_eq!(s.steps[0].send.as_deref(), Some("root\n"));
        assert_eq!(s.pass_patterns(), [DEFAULT_PASS]);
        assert_eq!(s.fail_patterns(), ["panic"]);
    }

    #[test]
    fn default_script_is_the_original() {
        let s = ExpectScript::default();
        assert!(s.validate().is_empty());
        assert_eq!(s.pass_patterns(), ["Completed: PASS"]);
    }

    #[test]
    fn problems_are_reported() {
        let text = r#"{"schema":"x","timeout":-1,"reopen_window":-2,"baud":0,
          "steps":[{}, {"expect":"", "tty":2, "timeout":0}, {"send":"a","timeout":3}],
          "pass":[""], "fail":[""]}"#;
        let s: ExpectScript = parse("s.json", text.as_bytes(), Format::Json).unwrap();
        let p = s.validate();
        assert_eq!(p.len(), 11, "{p:?}");
        let e = parse::<ExpectScript>("s.json", br#"{"stepz": []}"#, Format::Json).unwrap_err();
        assert!(e.message.contains("stepz"));
        let s: ExpectScript = parse("s.json", br#"{"pass": []}"#, Format::Json).unwrap();
        assert_eq!(s.validate().len(), 1);
    }
}
