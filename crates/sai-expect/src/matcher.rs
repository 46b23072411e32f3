//! The expect state machine: fed with tty bytes, it tells what to send and
//! when the run is decided. No I/O and no clocks: the caller keeps time.
//!
//! Matching is per line: each received line (and the partial line received
//! so far, so prompts without a newline match) is checked against
//! * every `fail` pattern, at any time: a match fails the run;
//! * the current step's `expect` pattern, on the step's tty, searching only
//!   after the previous step's match in that line; a match completes the
//!   step, queues its `send` text and moves to the next step;
//! * once every step is done, the `pass` patterns (after the last step's
//!   match): a match passes the run. With an empty `pass` list the run
//!   passes as soon as the last step matched.

use regex::Regex;
use sai_core::config::expect::ExpectScript;

/// Longest line kept; longer runs without a newline are cut into lines.
pub const MAX_LINE: usize = 4096;

/// One compiled step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Human label for messages.
    pub label: String,
    /// Pattern to wait for.
    pub expect: Option<Regex>,
    /// Bytes to send afterwards.
    pub send: Option<Vec<u8>>,
    /// Tty index (0 or 1).
    pub tty: usize,
    /// Per-step timeout in seconds.
    pub timeout: Option<f64>,
}

/// How a run ended, as decided by the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A pass pattern matched (or the last step did, with no pass patterns).
    Pass(String),
    /// A fail pattern matched.
    Fail(String),
}

#[derive(Debug, Default, Clone)]
struct LineBuf {
    bytes: Vec<u8>,
    /// Offset in the lossy text of `bytes` already consumed by step matches.
    consumed: usize,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Matcher {
    steps: Vec<Step>,
    current: usize,
    pass: Vec<Regex>,
    fail: Vec<Regex>,
    lines: [LineBuf; 2],
    sends: Vec<(usize, Vec<u8>)>,
    verdict: Option<Verdict>,
}

/// Compile the script's patterns; errors name the place.
pub fn compile(script: &ExpectScript) -> Result<Matcher, Vec<String>> {
    let mut errors = Vec::new();
    let mut re = |what: &str, p: &str| match Regex::new(p) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(format!("{what}: invalid regular expression: {e}"));
            None
        }
    };
    let mut steps = Vec::new();
    for (i, s) in script.steps.iter().enumerate() {
        let expect = s
            .expect
            .as_deref()
            .and_then(|p| re(&format!("steps[{i}].expect"), p));
        let label = match (&s.description, &s.expect) {
            (Some(d), _) => format!("step {} ({d})", i + 1),
            (None, Some(e)) => format!("step {} (expect '{e}')", i + 1),
            (None, None) => format!("step {}", i + 1),
        };
        steps.push(Step {
            label,
            expect,
            send: s.send.as_ref().map(|t| t.as_bytes().to_vec()),
            tty: s.tty.unwrap_or(0) as usize,
            timeout: s.timeout,
        });
    }
    let mut patterns = |field: &str, list: Vec<String>| -> Vec<Regex> {
        list.iter()
            .enumerate()
            .filter_map(|(i, p)| re(&format!("{field}[{i}]"), p))
            .collect()
    };
    let pass = patterns("pass", script.pass_patterns());
    let fail = patterns("fail", script.fail_patterns());
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut m = Matcher {
        steps,
        current: 0,
        pass,
        fail,
        lines: Default::default(),
        sends: Vec::new(),
        verdict: None,
    };
    m.run_send_only_steps();
    Ok(m)
}

impl Matcher {
    /// The step being waited for, with its index.
    pub fn current_step(&self) -> Option<(usize, &Step)> {
        self.steps.get(self.current).map(|s| (self.current, s))
    }

    /// Whether every step is done.
    pub fn steps_done(&self) -> bool {
        self.current >= self.steps.len()
    }

    /// The highest tty index any step uses.
    pub fn ttys_used(&self) -> usize {
        self.steps.iter().map(|s| s.tty).max().unwrap_or(0)
    }

    /// The decision, once made.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// Text to send, in order, since the last call: `(tty, bytes)`.
    pub fn take_sends(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.sends)
    }

    fn run_send_only_steps(&mut self) {
        while let Some(step) = self.steps.get(self.current) {
            if step.expect.is_some() {
                break;
            }
            if let Some(s) = &step.send {
                self.sends.push((step.tty, s.clone()));
            }
            self.current += 1;
        }
        if self.steps_done() && self.pass.is_empty() && self.verdict.is_none() {
            self.verdict = Some(Verdict::Pass("all steps done".into()));
        }
    }

    /// Feed bytes received on tty `tty` (0 or 1).
    pub fn feed(&mut self, tty: usize, bytes: &[u8]) {
        if tty > 1 {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() && self.verdict.is_none() {
            let room = MAX_LINE - self.lines[tty].bytes.len();
            let take = rest.len().min(room);
            let nl = rest[..take].iter().position(|&b| b == b'\n');
            let (part, complete) = match nl {
                Some(i) => (&rest[..i], true),
                None => (&rest[..take], take == room),
            };
            self.lines[tty].bytes.extend_from_slice(part);
            rest = &rest[part.len() + usize::from(nl.is_some())..];
            self.scan(tty);
            if complete {
                self.lines[tty] = LineBuf::default();
            }
        }
        // A step advanced on one tty may make the other tty's partial line
        // relevant.
        if self.verdict.is_none() {
            self.scan(1 - tty);
        }
    }

    fn scan(&mut self, tty: usize) {
        if self.verdict.is_some() {
            return;
        }
        let text = String::from_utf8_lossy(&self.lines[tty].bytes).into_owned();
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if let Some(f) = self.fail.iter().find(|f| f.is_match(text)) {
            self.verdict = Some(Verdict::Fail(format!(
                "fail pattern '{}' matched on tty{tty}: {}",
                f.as_str(),
                text.trim_end()
            )));
            return;
        }
        while let Some(step) = self.steps.get(self.current) {
            if step.tty != tty {
                break;
            }
            let Some(re) = &step.expect else { break };
            let consumed = self.lines[tty].consumed;
            let Some(m) = text.get(consumed..).and_then(|t| re.find(t)) else {
                break;
            };
            self.lines[tty].consumed = consumed + m.end();
            if let Some(s) = &step.send {
                self.sends.push((step.tty, s.clone()));
            }
            self.current += 1;
            self.run_send_only_steps();
            if self.verdict.is_some() {
                return;
            }
        }
        if self.steps_done() {
            let after = text.get(self.lines[tty].consumed..).unwrap_or("");
            if let Some(p) = self.pass.iter().find(|p| p.is_match(after)) {
                self.verdict = Some(Verdict::Pass(format!(
                    "pass pattern '{}' matched on tty{tty}",
                    p.as_str()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sai_core::config::schema::ConfigType;
    use sai_core::config::{Format, parse};

    fn script(yaml: &str) -> Matcher {
        let s: ExpectScript = parse("s.yaml", yaml.as_bytes(), Format::Yaml).unwrap();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        compile(&s).unwrap()
    }

    #[test]
    fn default_passes_on_completed_pass_even_split() {
        let mut m = compile(&ExpectScript::default()).unwrap();
        m.feed(0, b"booting\nrunning tests\nComple");
        assert_eq!(m.verdict(), None);
        m.feed(0, b"ted: PA");
        assert_eq!(m.verdict(), None);
        m.feed(0, b"SS\r\n");
        assert!(matches!(m.verdict(), Some(Verdict::Pass(_))));
    }

    #[test]
    fn default_fails_on_completed_fail() {
        let mut m = compile(&ExpectScript::default()).unwrap();
        m.feed(0, b"Completed: FAIL\n");
        assert!(matches!(m.verdict(), Some(Verdict::Fail(_))));
    }

    #[test]
    fn steps_in_order_with_sends() {
        let mut m = script(
            "steps:\n  - send: \"\\n\"\n  - expect: 'login: $'\n    send: \"root\\n\"\n  - expect: '# '\n    send: \"run\\n\"\npass: ['ALL OK']\nfail: ['panic']\n",
        );
        assert_eq!(m.take_sends(), vec![(0, b"\n".to_vec())]);
        // pass before the steps are done does not count
        m.feed(0, b"ALL OK\nlogin: ");
        assert_eq!(m.verdict(), None);
        assert_eq!(m.take_sends(), vec![(0, b"root\n".to_vec())]);
        // the prompt and the next step's text on the same line
        m.feed(0, b"\nlast login\n# ");
        assert_eq!(m.take_sends(), vec![(0, b"run\n".to_vec())]);
        assert!(m.steps_done());
        m.feed(0, b"run\nALL OK\n");
        assert!(matches!(m.verdict(), Some(Verdict::Pass(_))));
    }

    #[test]
    fn text_before_a_match_is_not_searched_again() {
        let mut m = script("steps:\n  - expect: 'A'\n  - expect: 'A'\npass: []\n");
        m.feed(0, b"xAy");
        assert_eq!(m.current_step().unwrap().0, 1);
        m.feed(0, b"z");
        assert_eq!(m.current_step().unwrap().0, 1);
        m.feed(0, b"A\n");
        assert!(matches!(m.verdict(), Some(Verdict::Pass(_))));
    }

    #[test]
    fn fail_wins_any_time_and_second_tty() {
        let mut m =
            script("steps:\n  - expect: 'ready'\n    tty: 1\n    send: go\nfail: ['Oops']\n");
        m.feed(0, b"ready\n");
        assert!(!m.steps_done());
        m.feed(1, b"ready\n");
        assert_eq!(m.take_sends(), vec![(1, b"go".to_vec())]);
        m.feed(0, b"an Oops happened\n");
        assert!(matches!(m.verdict(), Some(Verdict::Fail(r)) if r.contains("Oops")));
    }

    #[test]
    fn long_lines_are_cut() {
        let mut m = compile(&ExpectScript::default()).unwrap();
        m.feed(0, &vec![b'x'; MAX_LINE * 3]);
        m.feed(0, b"Completed: PASS");
        assert!(matches!(m.verdict(), Some(Verdict::Pass(_))));
    }

    #[test]
    fn bad_regex_is_reported() {
        let s = ExpectScript {
            fail: Some(vec!["(".into()]),
            ..Default::default()
        };
        let e = compile(&s).unwrap_err();
        assert!(
            e[0].starts_with("fail[0]: invalid regular expression"),
            "{e:?}"
        );
    }
}
