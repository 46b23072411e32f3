//! A strict parser of the OpenMetrics / Prometheus text exposition, for
//! tests of `/metrics` endpoints. Every line must be a `# HELP`, `# TYPE`,
//! `# UNIT` or `# EOF` line or a sample; every sample must belong to a
//! family declared by `# TYPE` with a suffix that fits its type (`_total`
//! for counters; `_bucket` with `le`, `_sum`, `_count` for histograms);
//! label names and values must be well formed, values must be numbers, and
//! `# EOF` must end the text. Anything else is an error naming the line.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full sample name, e.g. `sai_server_hooks_total`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name to type (`counter`, `gauge`, `histogram`...).
    pub types: BTreeMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

/// A sample's name, some of its labels, and the value it should have
/// (`None`: no such sample).
pub type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<f64>);

impl Exposition {
    /// The samples `name` whose labels include `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the sample `name` whose labels include `labels`;
    /// `None` when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).next().map(|s| s.value)
    }

    /// Sum of the values of the samples `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Check several samples at once: each `(name, labels, value)` as
    /// [`Exposition::value`] reads it. Panics naming the first that differs.
    #[track_caller]
    pub fn assert_values(&self, want: &[Expected]) {
        for (name, labels, value) in want {
            assert_eq!(self.value(name, labels), *value, "{name} {labels:?}");
        }
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

fn parse_labels(text: &str, line: usize) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once("=\"") else {
            bail!("line {line}: label without =\"value\" in {{{text}}}");
        };
        if !valid_name(name) || name.contains(':') {
            bail!("line {line}: bad label name {name:?}");
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => bail!("line {line}: bad escape in label {name}"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("line {line}: unterminated value of label {name}"),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            bail!("line {line}: label {name} given twice");
        }
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => bail!("line {line}: expected , between labels"),
        };
    }
    Ok(out)
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<(&'a str, &'a str)> {
    if types.contains_key(name) {
        return Some((name, ""));
    }
    for suffix in ["_total", "_created", "_bucket", "_sum", "_count", "_info"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.contains_key(base)
        {
            return Some((base, suffix));
        }
    }
    None
}

/// Parse `text` strictly; see the module doc.
pub fn parse(text: &str) -> Result<Exposition> {
    let mut x = Exposition::default();
    let mut eof = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if eof {
            bail!("line {line}: text after # EOF");
        }
        if raw == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = raw.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let arg = parts.next();
            if !valid_name(name) {
                bail!("line {line}: bad metric name {name:?}");
            }
            match (kind, arg) {
                ("HELP", _) | ("UNIT", Some(_)) => {}
                ("TYPE", Some(t)) => {
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "gaugehistogram",
                        "unknown",
                        "untyped",
                    ];
                    if !known.contains(&t) {
                        bail!("line {line}: unknown type {t:?}");
                    }
                    if x.types.insert(name.to_string(), t.to_string()).is_some() {
                        bail!("line {line}: {name} typed twice");
                    }
                }
                _ => bail!("line {line}: unknown comment {raw:?}"),
            }
            continue;
        }
        if raw.is_empty() {
            bail!("line {line}: empty line");
        }
        let (head, value) = match raw.find('{') {
            Some(_) => {
                let Some(close) = raw.rfind('}') else {
                    bail!("line {line}: unclosed labels");
                };
                (&raw[..close + 1], raw[close + 1..].trim_start())
            }
            None => match raw.split_once(' ') {
                Some((h, v)) => (h, v),
                None => bail!("line {line}: sample without a value"),
            },
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, parse_labels(&l[..l.len() - 1], line)?),
            None => (head, BTreeMap::new()),
        };
        if !valid_name(name) {
            bail!("line {line}: bad sample name {name:?}");
        }
        let value_text = value.split(' ').next().unwrap_or("");
        let Some(value) = parse_value(value_text) else {
            bail!("line {line}: {value_text:?} is not a number");
        };
        let Some((family, suffix)) = family_of(name, &x.types) else {
            bail!("line {line}: sample {name} has no # TYPE");
        };
        let ty = x.types[family].as_str();
        let fits = match ty {
            "counter" => matches!(suffix, "_total" | "_created"),
            "gauge" | "unknown" | "untyped" => suffix.is_empty(),
            "histogram" => match suffix {
                "_bucket" => labels.contains_key("le"),
                "_sum" | "_count" | "_created" => true,
                _ => false,
            },
            _ => true,
        };
        if !fits {
            bail!("line {line}: sample {name} does not fit {family}'s type {ty}");
        }
        x.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    if !eof {
        bail!("the exposition does not end with # EOF");
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_well_formed_exposition() {
        let t = "# HELP a_hooks Hooks.\n# TYPE a_hooks counter\na_hooks_total{result=\"ok\"} 3\n\
                 # TYPE a_g gauge\na_g 1.5\n# TYPE a_h histogram\na_h_sum 2.0\na_h_count 1\n\
                 a_h_bucket{le=\"1.0\"} 0\na_h_bucket{le=\"+Inf\"} 1\n# EOF\n";
        let x = parse(t).unwrap();
        assert_eq!(x.value("a_hooks_total", &[("result", "ok")]), Some(3.0));
        assert_eq!(x.value("a_g", &[]), Some(1.5));
        assert_eq!(x.sum("a_h_bucket", &[]), 1.0);
    }

    #[test]
    fn refuses_what_is_not_exposition() {
        for bad in [
            "a 1\n# EOF\n",                                  // no TYPE
            "# TYPE a counter\na 1\n# EOF\n",                // counter without _total
            "# TYPE a gauge\na{x=1} 1\n# EOF\n",             // unquoted label
            "# TYPE a gauge\na one\n# EOF\n",                // not a number
            "# TYPE a gauge\na 1\n",                         // no EOF
            "# TYPE a gauge\na 1\n# EOF\nb 2\n",             // after EOF
            "# TYPE a histogram\na_bucket 1\n# EOF\n",       // bucket without le
            "# TYPE a gauge\n\na 1\n# EOF\n",                // empty line
            "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n# EOF\n", // label twice
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
