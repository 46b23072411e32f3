//! Config of `sai-jig`: test-jig targets, their GPIO lines and the named
//! sequences the HTTP API runs on them.
//!
//! Default path `/etc/sai/jig/conf`. Example:
//!
//! ```json
//! {
//!   "schema": "sai-jig",
//!   "listen": "0.0.0.0:44000",
//!   "token_file": "/etc/sai/jig/token",
//!   "targets": [{
//!     "name": "t1",
//!     "gpios": [{"name": "nReset", "chip": "gpiochip0", "offset": 17, "wire": "RST", "safe": 1}],
//!     "sequences": [{"name": "reset", "seq": [
//!       {"gpio": "nReset", "value": 0}, {"wait_ms": 300}, {"gpio": "nReset", "value": 1}
//!     ]}]
//!   }]
//! }
//! ```

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problem::{ConfigProblem, ConfigType, FieldPath, check_marker, check_socket_addr};

/// Value of the optional `schema` marker of a jig config.
pub const SCHEMA_MARKER: &str = "sai-jig";

/// Default listen address (the original's port 44000 on every interface).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:44000";

/// Target names that would shadow API paths.
pub const RESERVED_TARGETS: &[&str] = &["api"];

/// Configuration of `sai-jig`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JigConfig {
    /// Optional marker naming this config kind: `"sai-jig"`.
    pub schema: Option<String>,
    /// Address and port the HTTP API listens on; default `0.0.0.0:44000`.
    pub listen: Option<String>,
    /// File holding the bearer token every request must carry
    /// (`Authorization: Bearer <token>`); surrounding whitespace is trimmed.
    /// Preferred over `token`.
    pub token_file: Option<String>,
    /// Bearer token given inline (prefer `token_file`). Without either (and
    /// without `SAI_JIG_TOKEN` in the environment) the API is open to anyone
    /// who can reach it, as in the original.
    pub token: Option<String>,
    /// The jig targets (boards) this daemon controls.
    pub targets: Vec<JigTarget>,
}

/// One target board wired to the jig.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JigTarget {
    /// Name used in the URL: `/<target>/<sequence>`.
    pub name: String,
    /// Free text for humans.
    pub description: Option<String>,
    /// The GPIO lines of this target.
    pub gpios: Vec<JigGpio>,
    /// Named sequences of line changes and waits.
    pub sequences: Vec<JigSequence>,
}

/// One GPIO line driven as an output.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JigGpio {
    /// Name that sequence items refer to.
    pub name: String,
    /// GPIO chip: a name such as `gpiochip0` (looked up under `/dev`) or a path.
    pub chip: String,
    /// Line offset on the chip.
    pub offset: u32,
    /// Free text naming what the line is wired to (e.g. `RST`).
    pub wire: Option<String>,
    /// Value (0 or 1) the line is driven to at start, after every sequence
    /// and on shutdown.
    pub safe: u8,
}

/// A named sequence of steps.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JigSequence {
    /// Name used in the URL: `/<target>/<sequence>`.
    pub name: String,
    /// Free text for humans.
    pub description: Option<String>,
    /// The steps, run in order.
    pub seq: Vec<JigStep>,
}

/// One step: either set a line (`gpio` + `value`) or wait (`wait_ms`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JigStep {
    /// Name of the GPIO of this target to set; needs `value`.
    pub gpio: Option<String>,
    /// Value (0 or 1) to drive the line to.
    pub value: Option<u32>,
    /// Milliseconds to wait (a step of its own, without `gpio`/`value`).
    pub wait_ms: Option<u64>,
}

/// A step checked by `JigConfig`'s [`ConfigType::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction<'a> {
    /// Drive GPIO `name` to `value`.
    Set {
        /// GPIO name.
        gpio: &'a str,
        /// 0 or 1.
        value: bool,
    },
    /// Wait this many milliseconds.
    Wait(u64),
}

impl JigStep {
    /// What the step does, or why it is malformed.
    pub fn action(&self) -> Result<StepAction<'_>, String> {
        match (&self.gpio, self.value, self.wait_ms) {
            (Some(g), Some(v), None) if v <= 1 => Ok(StepAction::Set {
                gpio: g,
                value: v == 1,
            }),
            (Some(_), Some(v), None) => Err(format!("value must be 0 or 1, found {v}")),
            (None, None, Some(ms)) => Ok(StepAction::Wait(ms)),
            (Some(_), None, None) => Err("\"gpio\" needs a \"value\"".into()),
            (None, Some(_), None) => {
                Err("\"value\" without \"gpio\"; a wait is written {\"wait_ms\": <ms>}".into())
            }
            (None, None, None) => {
                Err("empty step: give \"gpio\" and \"value\", or \"wait_ms\"".into())
            }
            (_, _, Some(_)) => {
                Err("a step either sets a gpio or waits, not both; split it in two".into())
            }
        }
    }
}

impl JigTarget {
    /// The GPIO called `name`.
    pub fn gpio(&self, name: &str) -> Option<&JigGpio> {
        self.gpios.iter().find(|g| g.name == name)
    }

    /// The sequence called `name`.
    pub fn sequence(&self, name: &str) -> Option<&JigSequence> {
        self.sequences.iter().find(|s| s.name == name)
    }
}

impl JigConfig {
    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&JigTarget> {
        self.targets.iter().find(|t| t.name == name)
    }
}

impl ConfigType for JigConfig {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Check what the schema cannot express; returns every problem found,
    /// each with the path of the field it concerns (empty means valid). An
    /// unknown gpio name in a sequence is an error here, never a silent
    /// delay as in the original.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = check_marker(self.schema.as_deref(), SCHEMA_MARKER);
        let root = FieldPath::root();
        let mut push = |at: FieldPath, message: String| p.push(ConfigProblem::new(at, message));
        if self.token.is_some() && self.token_file.is_some() {
            push(
                root.key("token"),
                "give either token_file or token, not both".into(),
            );
        }
        for (key, value) in [("token", &self.token), ("token_file", &self.token_file)] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                push(root.key(key), "must not be empty".into());
            }
        }
        if let Some(l) = &self.listen
            && let Err(why) = check_socket_addr(l, DEFAULT_LISTEN)
        {
            push(root.key("listen"), why);
        }
        let url_safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        };
        const NAME_RULE: &str =
            "must be non-empty and use only letters, digits, '-', '_', '.', '~'";
        let mut targets: HashMap<&str, usize> = HashMap::new();
        let mut lines: HashMap<(&str, u32), FieldPath> = HashMap::new();
        for (ti, t) in self.targets.iter().enumerate() {
            let at = root.key("targets").index(ti);
            if !url_safe(&t.name) {
                push(at.key("name"), format!("'{}' {NAME_RULE}", t.name));
            } else if RESERVED_TARGETS.contains(&t.name.as_str()) {
                push(
                    at.key("name"),
                    format!("'{}' is reserved for the API; rename the target", t.name),
                );
            } else if let Some(first) = targets.insert(t.name.as_str(), ti) {
                push(
                    at.key("name"),
                    format!("duplicate target name '{}' (also targets[{first}])", t.name),
                );
            }
            let mut gpios: HashMap<&str, usize> = HashMap::new();
            for (gi, g) in t.gpios.iter().enumerate() {
                let gat = at.key("gpios").index(gi);
                if g.name.is_empty() {
                    push(gat.key("name"), "must not be empty".into());
                } else if let Some(first) = gpios.insert(g.name.as_str(), gi) {
                    push(
                        gat.key("name"),
                        format!(
                            "duplicate gpio name '{}' in target '{}' (also {})",
                            g.name,
                            t.name,
                            at.key("gpios").index(first)
                        ),
                    );
                }
                if g.chip.trim().is_empty() {
                    push(gat.key("chip"), "must not be empty".into());
                }
                if g.safe > 1 {
                    push(gat.key("safe"), format!("must be 0 or 1, found {}", g.safe));
                }
                if let Some(other) = lines.insert((g.chip.as_str(), g.offset), gat.clone()) {
                    push(
                        gat.key("offset"),
                        format!("line {}:{} is also used by {other}", g.chip, g.offset),
                    );
                }
            }
            let mut seqs: HashMap<&str, usize> = HashMap::new();
            for (si, s) in t.sequences.iter().enumerate() {
                let sat = at.key("sequences").index(si);
                if !url_safe(&s.name) {
                    push(sat.key("name"), format!("'{}' {NAME_RULE}", s.name));
                } else if let Some(first) = seqs.insert(s.name.as_str(), si) {
                    push(
                        sat.key("name"),
                        format!(
                            "duplicate sequence name '{}' in target '{}' (also {})",
                            s.name,
                            t.name,
                            at.key("sequences").index(first)
                        ),
                    );
                }
                for (i, step) in s.seq.iter().enumerate() {
                    let stat = sat.key("seq").index(i);
                    match step.action() {
                        Err(e) => push(stat, e),
                        Ok(StepAction::Set { gpio, .. }) if t.gpio(gpio).is_none() => push(
                            stat.key("gpio"),
                            format!(
                                "unknown gpio '{gpio}' in sequence '{}' (target '{}' has: {})",
                                s.name,
                                t.name,
                                t.gpios
                                    .iter()
                                    .map(|g| g.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                        Ok(_) => {}
                    }
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::problem::assert_mentions;
    use crate::config::{Format, parse};

    #[test]
    fn example_parses_and_validates() {
        let text = r#"{"schema":"sai-jig","listen":"127.0.0.1:44000","targets":[{"name":"t1",
          "gpios":[{"name":"nReset","chip":"gpiochip0","offset":17,"wire":"RST","safe":1}],
          "sequences":[{"name":"reset","seq":[{"gpio":"nReset","value":0},
            {"wait_ms":300},{"gpio":"nReset","value":1}]}]}]}"#;
        let c: JigConfig = parse("conf", text.as_bytes(), Format::Json).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let seq = c.target("t1").unwrap().sequence("reset").unwrap();
        assert_eq!(seq.seq[1].action(), Ok(StepAction::Wait(300)));
        assert_eq!(
            seq.seq[0].action(),
            Ok(StepAction::Set {
                gpio: "nReset",
                value: false
            })
        );
    }

    #[test]
    fn unknown_gpio_and_other_mistakes_are_reported() {
        let text = r#"
targets:
  - name: t1
    gpios:
      - {name: a, chip: gpiochip0, offset: 1, safe: 0}
      - {name: a, chip: gpiochip0, offset: 1, safe: 2}
    sequences:
      - name: s
        seq:
          - {gpio: b, value: 1}
          - {value: 300}
          - {gpio: a, value: 1, wait_ms: 3}
          - {gpio: a, value: 5}
      - name: s
        seq: []
  - name: api
    gpios: []
    sequences: []
token: x
token_file: /y
listen: nonsense
"#;
        let c: JigConfig = parse("conf.yaml", text.as_bytes(), Format::Yaml).unwrap();
        assert_mentions(
            &c.validate(),
            &[
                "unknown gpio 'b'",
                "\"value\" without \"gpio\"",
                "not both",
                "value must be 0 or 1",
                "duplicate gpio name",
                "targets[0].gpios[1].safe: must be 0 or 1",
                "targets[0].sequences[0].seq[0].gpio: unknown gpio",
                "also used by",
                "duplicate sequence name",
                "reserved",
                "either token_file or token",
                "listen:",
            ],
        );
    }
}
