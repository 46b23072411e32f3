//! JUnit XML test reports (as written by `ctest --output-junit`, pytest,
//! Maven surefire, Go's go-junit-report...) to [`TestCase`]s.
//!
//! The reports come from builds, so they are untrusted: [`parse`] uses a real
//! XML parser (quick-xml) with bounds on everything that could grow without
//! limit. A report larger than [`Limits::max_bytes`], nested deeper than
//! [`Limits::max_depth`] or holding more than [`Limits::max_cases`] test cases
//! is refused, and so is any `<!DOCTYPE>`: no DTD is read, so no entity can
//! be declared or expanded (the "billion laughs" attack). Only the five
//! predefined entities and character references are resolved. Messages are
//! cut at [`Limits::max_message_bytes`].
//!
//! Which parts make up a test case:
//! * `<testcase name=".." classname=".." time="seconds">`; its suite is the
//!   `classname`, or the enclosing `<testsuite name>` without one;
//! * a `<failure>` child makes it `fail`, `<error>` makes it `error`,
//!   `<skipped>` makes it `skip`; otherwise it passed;
//! * the message of a test that did not pass is the child's `message`
//!   attribute, its text, then the case's `<system-out>`/`<system-err>`
//!   (ctest leaves `message` empty and puts the output there).

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{XmlVersion, escape::resolve_predefined_entity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bounds applied while parsing a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest report accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting accepted (JUnit needs about 4).
    pub max_depth: usize,
    /// Most test cases in one report.
    pub max_cases: usize,
    /// Longest stored message per test case, in bytes (longer ones are cut,
    /// keeping their end, where the assertion usually is).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 20,
            max_depth: 32,
            max_cases: 20_000,
            max_message_bytes: 4096,
        }
    }
}

/// How one test case ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    /// An assertion failed (`<failure>`).
    Fail,
    /// The test could not run to its end (`<error>`).
    Error,
    /// Passed.
    Pass,
    /// Not run (`<skipped>`).
    Skip,
}

impl TestOutcome {
    /// The name used in the databases and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Fail => "fail",
            TestOutcome::Error => "error",
            TestOutcome::Pass => "pass",
            TestOutcome::Skip => "skip",
        }
    }

    /// Failed or errored.
    pub fn is_failure(self) -> bool {
        matches!(self, TestOutcome::Fail | TestOutcome::Error)
    }
}

impl std::str::FromStr for TestOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(TestOutcome::Fail),
            "error" => Ok(TestOutcome::Error),
            "pass" => Ok(TestOutcome::Pass),
            "skip" => Ok(TestOutcome::Skip),
            _ => Err(format!(
                "{s:?} is not a test outcome (fail, error, pass, skip)"
            )),
        }
    }
}

/// One test case of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// Suite: the `classname`, or the enclosing `<testsuite name>`.
    pub suite: String,
    /// Test name.
    pub name: String,
    /// Result.
    pub outcome: TestOutcome,
    /// `time` in milliseconds, when given and valid.
    pub duration_ms: Option<i64>,
    /// Why it did not pass (or was skipped); `None` for passes.
    pub message: Option<String>,
}

/// Why a report was refused. Every variant names what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Larger than [`Limits::max_bytes`].
    #[error("the report is {size} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// It has a `<!DOCTYPE>`.
    #[error(
        "the report has a <!DOCTYPE> at byte {at}: DTDs are refused, as their entity declarations could expand without bound"
    )]
    Dtd {
        /// Byte offset.
        at: u64,
    },
    /// An entity other than the five predefined ones.
    #[error(
        "undeclared entity &{name}; at byte {at} (only &lt; &gt; &amp; &apos; &quot; and character references are accepted)"
    )]
    Entity {
        /// Entity name.
        name: String,
        /// Byte offset.
        at: u64,
    },
    /// Nested deeper than [`Limits::max_depth`].
    #[error("elements are nested deeper than {max} levels at byte {at}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Byte offset.
        at: u64,
    },
    /// More than [`Limits::max_cases`] test cases.
    #[error("the report has more than {max} test cases")]
    TooManyCases {
        /// The limit.
        max: usize,
    },
    /// Not well-formed XML.
    #[error("not well-formed XML at byte {at}: {message}")]
    Malformed {
        /// Byte offset.
        at: u64,
        /// The parser's message.
        message: String,
    },
    /// Well-formed, but its root is not `<testsuites>` or `<testsuite>`.
    #[error(
        "the root element is <{root}>, not <testsuites> or <testsuite>: not a JUnit XML report"
    )]
    NotJunit {
        /// The root element's name (empty if there is none).
        root: String,
    },
}

/// The case being read.
struct Open {
    suite: String,
    name: String,
    outcome: TestOutcome,
    duration_ms: Option<i64>,
    detail: String,
    output: String,
}

/// Where text goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    None,
    Detail,
    Output,
}

struct Parser {
    limits: Limits,
    suites: Vec<String>,
    case: Option<Open>,
    sink: Sink,
    cases: Vec<TestCase>,
}

fn attr(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        if a.key.local_name().into_inner() == key {
            let v = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn seconds_to_ms(s: &str) -> Option<i64> {
    let secs: f64 = s.trim().parse().ok()?;
    (0.0..1e9)
        .contains(&secs)
        .then(|| (secs * 1000.0).round() as i64)
}

/// Append at most up to `cap` bytes in total (whole characters).
fn push_capped(to: &mut String, text: &str, cap: usize) {
    if to.len() >= cap {
        return;
    }
    let room = cap - to.len();
    if text.len() <= room {
        to.push_str(text);
    } else {
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        to.push_str(&text[..end]);
    }
}

/// The last `max` bytes of `s` (whole characters), marked when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

impl Parser {
    fn element(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<(), String> {
        let name = e.local_name();
        match name.into_inner() {
            "testsuite" if !empty => {
                let n = attr(e, "name")?.unwrap_or_default();
                self.suites.push(n);
            }
            "testcase" => {
                let classname = attr(e, "classname")?.filter(|c| !c.is_empty());
                let suite = classname
                    .or_else(|| self.suites.last().cloned())
                    .unwrap_or_default();
                self.case = Some(Open {
                    suite,
                    name: attr(e, "name")?.unwrap_or_default(),
                    outcome: TestOutcome::Pass,
                    duration_ms: attr(e, "time")?.as_deref().and_then(seconds_to_ms),
                    detail: String::new(),
                    output: String::new(),
                });
                if empty {
                    self.finish_case();
                }
            }
            kind @ ("failure" | "error" | "skipped") => {
                let cap = self.limits.max_message_bytes * 2;
                let message = attr(e, "message")?.unwrap_or_default();
                if let Some(c) = self.case.as_mut() {
                    let outcome = match kind {
                        "failure" => TestOutcome::Fail,
                        "error" => TestOutcome::Error,
                        _ => TestOutcome::Skip,
                    };
                    // A failure outranks a skip if a report gives both.
                    c.outcome = if c.outcome == TestOutcome::Pass {
                        outcome
                    } else {
                        c.outcome.min(outcome)
                    };
                    if !message.is_empty() {
                        push_capped(&mut c.detail, &message, cap);
                        push_capped(&mut c.detail, "\n", cap);
                    }
                    if !empty {
                        self.sink = Sink::Detail;
                    }
                }
            }
            "system-out" | "system-err" if !empty && self.case.is_some() => {
                self.sink = Sink::Output;
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, name: &str) {
        match name {
            "testcase" => self.finish_case(),
            "testsuite" => {
                self.suites.pop();
            }
            "failure" | "error" | "skipped" | "system-out" | "system-err" => self.sink = Sink::None,
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        // Output can be long; keep its end (the last lines tell most).
        let cap = self.limits.max_message_bytes * 2;
        let Some(c) = self.case.as_mut() else {
            return;
        };
        let to = match self.sink {
            Sink::None => return,
            Sink::Detail => &mut c.detail,
            Sink::Output => &mut c.output,
        };
        to.push_str(text);
        if to.len() > cap * 2 {
            *to = tail(to, cap).trim_start_matches('…').to_string();
        }
    }

    fn finish_case(&mut self) {
        self.sink = Sink::None;
        let Some(c) = self.case.take() else {
            return;
        };
        let message = if c.outcome == TestOutcome::Pass {
            None
        } else {
            let mut parts = vec![c.detail.trim().to_string()];
            if c.outcome != TestOutcome::Skip {
                parts.push(c.output.trim().to_string());
            }
            let joined = parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            (!joined.is_empty()).then(|| tail(&joined, self.limits.max_message_bytes))
        };
        self.cases.push(TestCase {
            suite: c.suite,
            name: c.name,
            outcome: c.outcome,
            duration_ms: c.duration_ms,
            message,
        });
    }
}

/// Parse a JUnit XML report; see the module doc for the rules and bounds.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Vec<TestCase>, ReportError> {
    if bytes.len() > limits.max_bytes {
        return Err(ReportError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut p = Parser {
        limits: *limits,
        suites: Vec::new(),
        case: None,
        sink: Sink::None,
        cases: Vec::new(),
    };
    let mut depth = 0usize;
    let mut root_seen = false;
    loop {
        let at = reader.buffer_position();
        let malformed = |message: String| ReportError::Malformed { at, message };
        let event = reader.read_event().map_err(|e| ReportError::Malformed {
            at: reader.error_position(),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if !root_seen {
                    root_seen = true;
                    let root = e.local_name().into_inner();
                    if root != "testsuites" && root != "testsuite" {
                        return Err(ReportError::NotJunit {
                            root: root.to_string(),
                        });
                    }
                }
                if !empty {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(ReportError::TooDeep {
                            max: limits.max_depth,
                            at,
                        });
                    }
                }
                p.element(e, empty).map_err(malformed)?;
                if p.cases.len() > limits.max_cases {
                    return Err(ReportError::TooManyCases {
                        max: limits.max_cases,
                    });
                }
            }
            Event::End(ref e) => {
                depth = depth.saturating_sub(1);
                p.end(e.local_name().into_inner());
            }
            Event::Text(ref t) => p.text(&t.xml10_content()),
            Event::CData(ref t) => p.text(t),
            Event::GeneralRef(ref r) => {
                let resolved: Cow<'_, str> = match r.resolve_char_ref() {
                    Ok(Some(ch)) => Cow::Owned(ch.to_string()),
                    Ok(None) => match resolve_predefined_entity(r) {
                        Some(s) => Cow::Borrowed(s),
                        None => {
                            return Err(ReportError::Entity {
                                name: r.to_string(),
                                at,
                            });
                        }
                    },
                    Err(e) => return Err(malformed(e.to_string())),
                };
                p.text(&resolved);
            }
            Event::DocType(_) => return Err(ReportError::Dtd { at }),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !root_seen {
        return Err(ReportError::NotJunit {
            root: String::new(),
        });
    }
    Ok(p.cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(xml: &str) -> Vec<TestCase> {
        parse(xml.as_bytes(), &Limits::default()).unwrap()
    }

    /// A report of one `<testsuite>` holding `body`.
    fn suite_of(body: &str) -> String {
        format!("<testsuite>{body}</testsuite>")
    }

    /// What `ctest --output-junit` (CMake 3.25) writes for one passing and
    /// one failing test.
    const CTEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="(empty)" tests="2" failures="1" disabled="0" skipped="0" hostname="" time="0" timestamp="2026-12-01T12:41:16">
	<testcase name="adds_up" classname="adds_up" time="0.0137773" status="run">
		<system-out>fine
</system-out>
	</testcase>
	<testcase name="divides_by_zero" classname="divides_by_zero" time="0.0091808" status="fail">
		<failure message=""/>
		<system-out>expected 4 but got 5
</system-out>
	</testcase>
</testsuite>"#;

    #[test]
    fn ctest_report_gives_cases_with_the_failure_output() {
        let cases = parse_ok(CTEST);
        assert_eq!(cases.len(), 2);
        assert_eq!(
            cases[0],
            TestCase {
                suite: "adds_up".into(),
                name: "adds_up".into(),
                outcome: TestOutcome::Pass,
                duration_ms: Some(14),
                message: None,
            }
        );
        assert_eq!(cases[1].outcome, TestOutcome::Fail);
        assert_eq!(cases[1].message.as_deref(), Some("expected 4 but got 5"));
        assert_eq!(cases[1].duration_ms, Some(9));
    }

    #[test]
    fn nested_suites_errors_skips_entities_and_cdata() {
        let cases = parse_ok(
            r#"<testsuites><testsuite name="outer"><testsuite name="inner">
            <testcase name="a&amp;b"><error message="boom &lt;1&gt;">trace &#x41;</error></testcase>
            <testcase name="s" time="nope"><skipped message="not today"/></testcase>
            <testcase name="c" classname="pkg.C"><failure><![CDATA[x < y]]></failure></testcase>
            </testsuite><testcase name="top"/></testsuite></testsuites>"#,
        );
        let got: Vec<_> = cases
            .iter()
            .map(|c| {
                (
                    c.suite.as_str(),
                    c.name.as_str(),
                    c.outcome,
                    c.message.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "inner",
                    "a&b",
                    TestOutcome::Error,
                    Some("boom <1>\ntrace A")
                ),
                ("inner", "s", TestOutcome::Skip, Some("not today")),
                ("pkg.C", "c", TestOutcome::Fail, Some("x < y")),
                ("outer", "top", TestOutcome::Pass, None),
            ]
        );
        assert_eq!(cases[1].duration_ms, None);
    }

    #[test]
    fn billion_laughs_is_refused_for_its_dtd() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<testsuite><testcase name="x"><failure>&lol3;</failure></testcase></testsuite>"#;
        let e = parse(xml.as_bytes(), &Limits::default()).unwrap_err();
        assert!(matches!(e, ReportError::Dtd { at: 22 }), "{e:?}");
        assert!(e.to_string().contains("DOCTYPE"), "{e}");
    }

    #[test]
    fn undeclared_entities_are_refused_not_ignored() {
        let xml =
            r#"<testsuite><testcase name="x"><failure>&xxe;</failure></testcase></testsuite>"#;
        let e = parse(xml.as_bytes(), &Limits::default()).unwrap_err();
        assert!(
            matches!(&e, ReportError::Entity { name, .. } if name == "xxe"),
            "{e:?}"
        );
        let attr = r#"<testsuite><testcase name="&xxe;"/></testsuite>"#;
        assert!(parse(attr.as_bytes(), &Limits::default()).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let xml = suite_of(&("<a>".repeat(100) + &"</a>".repeat(100)));
        let e = parse(xml.as_bytes(), &Limits::default()).unwrap_err();
        assert!(matches!(e, ReportError::TooDeep { max: 32, .. }), "{e:?}");
    }

    #[test]
    fn size_and_case_count_are_bounded() {
        let big = suite_of(&" ".repeat(200));
        let many = suite_of(&"<testcase name=\"t\"/>".repeat(4));
        let by_size = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        let by_count = Limits {
            max_cases: 3,
            ..Limits::default()
        };
        let too_large = ReportError::TooLarge {
            size: big.len(),
            max: 100,
        };
        for (report, limits, refusal) in [
            (&big, by_size, too_large),
            (&many, by_count, ReportError::TooManyCases { max: 3 }),
        ] {
            assert_eq!(parse(report.as_bytes(), &limits).unwrap_err(), refusal);
        }
    }

    #[test]
    fn long_messages_keep_their_end() {
        let limits = Limits {
            max_message_bytes: 16,
            ..Limits::default()
        };
        let xml = suite_of(&format!(
            "<testcase name=\"t\"><failure>{}assert é==1</failure></testcase>",
            "x".repeat(5000)
        ));
        let cases = parse(xml.as_bytes(), &limits).unwrap();
        let m = cases[0].message.as_deref().unwrap();
        assert!(m.starts_with('…') && m.ends_with("assert é==1"), "{m}");
        assert!(m.len() <= 16 + '…'.len_utf8(), "{m}");
    }

    #[test]
    fn malformed_and_foreign_documents_are_refused_with_a_position() {
        let e = parse(
            b"<testsuite><testcase name=\"x\"></testsuite>",
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ReportError::Malformed { .. }), "{e:?}");
        assert!(e.to_string().contains("at byte"), "{e}");
        let e = parse(b"<html><body/></html>", &Limits::default()).unwrap_err();
        assert_eq!(
            e,
            ReportError::NotJunit {
                root: "html".into()
            }
        );
        let e = parse(b"  ", &Limits::default()).unwrap_err();
        assert_eq!(e, ReportError::NotJunit { root: "".into() });
        assert!(parse(b"<testsuite>\xff\xfe</testsuite>", &Limits::default()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes, &Limits::default());
        }
    }
}
