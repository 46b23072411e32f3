//! From the positioned JSON tree to a [`Saifile`]: key checks, types,
//! duplicates and warnings.

use std::collections::HashMap;

use super::{Configuration, MacroUse, PlatformDef, Saifile, SaifileError, Warning, macros};
use crate::jsonc::{Member, Node, Pos, Value, position_in_string};
use crate::platform::{Platform, PlatformError};

struct Ctx<'a> {
    source_name: &'a str,
    src: &'a [u8],
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn error(&self, pos: Pos, message: String) -> SaifileError {
        SaifileError {
            source_name: self.source_name.to_string(),
            line: pos.line,
            column: pos.column,
            message,
        }
    }

    fn warn(&mut self, pos: Pos, message: String) {
        self.warnings.push(Warning {
            line: pos.line,
            column: pos.column,
            message,
        });
    }

    /// The members of an object with duplicate keys resolved: the later
    /// definition wins and takes the later position; each repeat is warned.
    fn dedupe<'n>(&mut self, members: &'n [Member]) -> Vec<&'n Member> {
        let mut last: HashMap<&str, usize> = HashMap::new();
        let mut first: HashMap<&str, Pos> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            if let Some(first_pos) = first.get(m.key.as_str()) {
                let message = format!(
                    "duplicate key \"{}\" (first defined at line {}); the later definition wins",
                    m.key, first_pos.line
                );
                self.warn(m.key_pos, message);
            } else {
                first.insert(&m.key, m.key_pos);
            }
            last.insert(&m.key, i);
        }
        members
            .iter()
            .enumerate()
            .filter(|(i, m)| last.get(m.key.as_str()) == Some(i))
            .map(|(_, m)| m)
            .collect()
    }

    fn unknown_key(&mut self, m: &Member, within: &str, known: &[&str]) {
        let message = format!(
            "unknown key \"{}\" in {within} (ignored; known keys: {})",
            m.key,
            known.join(", ")
        );
        self.warn(m.key_pos, message);
    }
}

fn object<'n>(ctx: &Ctx, node: &'n Node, what: &str) -> Result<&'n [Member], SaifileError> {
    match &node.value {
        Value::Object(members) => Ok(members),
        other => Err(ctx.error(
            node.pos,
            format!("{what} must be an object, found {}", other.type_name()),
        )),
    }
}

fn string<'n>(ctx: &Ctx, node: &'n Node, what: &str) -> Result<&'n str, SaifileError> {
    match &node.value {
        Value::String(s) => Ok(s),
        other => Err(ctx.error(
            node.pos,
            format!("{what} must be a string, found {}", other.type_name()),
        )),
    }
}

/// Build a [`Saifile`] from the parsed tree of `src`.
pub(crate) fn build(source_name: &str, src: &[u8], root: &Node) -> Result<Saifile, SaifileError> {
    let mut ctx = Ctx {
        source_name,
        src,
        warnings: Vec::new(),
    };
    let top = object(&ctx, root, "a .sai.json file")?;
    let mut schema = None;
    let mut platforms = Vec::new();
    let mut configurations = Vec::new();
    let mut lists = Vec::new();
    for m in ctx.dedupe(top) {
        match m.key.as_str() {
            "schema" => schema = Some(string(&ctx, &m.value, "\"schema\"")?.to_string()),
            "platforms" => platforms = parse_platforms(&mut ctx, &m.value)?,
            "configurations" => {
                (configurations, lists) = parse_configurations(&mut ctx, &m.value)?;
            }
            _ => ctx.unknown_key(
                m,
                "the top-level object",
                &["schema", "platforms", "configurations"],
            ),
        }
    }
    for list in &lists {
        warn_unmatched_tokens(&mut ctx, list, &platforms);
    }
    let mut warnings = ctx.warnings;
    warnings.sort_by_key(|w| (w.line, w.column));
    Ok(Saifile {
        source_name: source_name.to_string(),
        schema,
        platforms,
        configurations,
        warnings,
    })
}

const PLATFORM_KEYS: [&str; 2] = ["build", "default"];

fn parse_platforms(ctx: &mut Ctx, node: &Node) -> Result<Vec<PlatformDef>, SaifileError> {
    let members = object(ctx, node, "\"platforms\"")?;
    let mut out = Vec::new();
    for m in ctx.dedupe(members) {
        match Platform::parse(&m.key) {
            Ok(_) => {}
            Err(e @ PlatformError::Dot(_)) => {
                // The real corpus has dotted names (libwebsockets 2020-06-05), so
                // they are accepted with a warning rather than refused.
                ctx.warn(m.key_pos, format!("platform \"{}\": {e}", m.key));
            }
            Err(e) => {
                return Err(ctx.error(
                    m.key_pos,
                    format!("invalid platform name \"{}\": {e}", m.key),
                ));
            }
        }
        let what = format!("platform \"{}\"", m.key);
        let body = object(ctx, &m.value, &what)?;
        let mut pieces: Vec<(&str, Pos)> = Vec::new();
        let mut default = true;
        for k in ctx.dedupe(body) {
            match k.key.as_str() {
                "build" => pieces = build_pieces(ctx, &k.value, &m.key)?,
                "default" => default = default_flag(ctx, &k.value, &m.key)?,
                _ => ctx.unknown_key(k, &what, &PLATFORM_KEYS),
            }
        }
        let build = pieces
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join("\n");
        if build.trim().is_empty() {
            // The original server only registered platforms with a build.
            ctx.warn(
                m.key_pos,
                format!("{what} has no \"build\" steps; it is ignored"),
            );
            continue;
        }
        let mut macro_uses = Vec::new();
        for (text, pos) in &pieces {
            for f in macros::find(text) {
                let at = position_in_string(ctx.src, *pos, f.char_index);
                macro_uses.push(MacroUse {
                    name: f.name.to_string(),
                    line: at.line,
                    column: at.column,
                });
            }
        }
        out.push(PlatformDef {
            name: m.key.clone(),
            line: m.key_pos.line,
            column: m.key_pos.column,
            build,
            default,
            macros: macro_uses,
        });
    }
    Ok(out)
}

/// The strings making up a `build`: a string, an array of strings or an
/// object of strings (values in file order).
fn build_pieces<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
    platform: &str,
) -> Result<Vec<(&'n str, Pos)>, SaifileError> {
    let expected = "a string, an array of strings or an object of strings";
    let element = |ctx: &Ctx, n: &'n Node| match &n.value {
        Value::String(s) => Ok((s.as_str(), n.pos)),
        other => Err(ctx.error(
            n.pos,
            format!(
                "platform \"{platform}\": \"build\" elements must be strings, found {}",
                other.type_name()
            ),
        )),
    };
    match &node.value {
        Value::String(s) => Ok(vec![(s.as_str(), node.pos)]),
        Value::Array(items) => items.iter().map(|n| element(ctx, n)).collect(),
        Value::Object(members) => {
            let members = ctx.dedupe(members);
            members
                .into_iter()
                .map(|m| element(ctx, &m.value))
                .collect()
        }
        other => Err(ctx.error(
            node.pos,
            format!(
                "platform \"{platform}\": \"build\" must be {expected}, found {}",
                other.type_name()
            ),
        )),
    }
}

/// `default`: true for `true`, a non-zero number (C `atoi` rules on the
/// text), or a string that `atoi`s non-zero or is `on`/`yes`/`true`
/// (case-insensitive); false otherwise. Null, arrays and objects are errors.
fn default_flag(ctx: &Ctx, node: &Node, platform: &str) -> Result<bool, SaifileError> {
    match &node.value {
        Value::Bool(b) => Ok(*b),
        Value::Number(raw) => Ok(atoi_nonzero(raw)),
        Value::String(s) => Ok(atoi_nonzero(s) || ["on", "yes", "true"].iter().any(|w| s.eq_ignore_ascii_case(w))),
        other => Err(ctx.error(
            node.pos,
            format!(
                "platform \"{platform}\": \"default\" must be a boolean, number or string, found {}",
                other.type_name()
            ),
        )),
    }
}

/// Would C's `atoi(s)` be non-zero? (Leading whitespace, optional sign, digits.)
pub(crate) fn atoi_nonzero(s: &str) -> bool {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    s.bytes().take_while(u8::is_ascii_digit).any(|b| b != b'0')
}

const CONFIGURATION_KEYS: [&str; 10] = [
    "prep",
    "cmake",
    "cpack",
    "deps",
    "platforms",
    "artifacts",
    "branches",
    "idle",
    "pool",
    "test_reports",
];

/// A configuration's `platforms` list and where its string starts.
struct PlatformList<'n> {
    configuration: String,
    text: &'n str,
    pos: Pos,
}

/// Warn about each token of a `platforms` list that matches none of the
/// file's platforms (a typo there silently selects nothing).
fn warn_unmatched_tokens(ctx: &mut Ctx, list: &PlatformList, platforms: &[PlatformDef]) {
    for token in super::platform_list::tokens(list.text) {
        // Tokens are slices of the text: where this one starts in it.
        let byte = token.as_ptr() as usize - list.text.as_ptr() as usize;
        if "none".starts_with(token) || "not".starts_with(token) {
            continue;
        }
        if platforms
            .iter()
            .any(|p| crate::platform::tuple_matches(token, &p.name))
        {
            continue;
        }
        let chars = list.text[..byte].chars().count();
        let pos = position_in_string(ctx.src, list.pos, chars);
        let message = format!(
            "configuration \"{}\": platforms token \"{token}\" matches no platform of this file, \
             so it selects nothing (a typo?)",
            list.configuration
        );
        ctx.warn(pos, message);
    }
}

fn parse_configurations<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
) -> Result<(Vec<Configuration>, Vec<PlatformList<'n>>), SaifileError> {
    let members = object(ctx, node, "\"configurations\"")?;
    let mut out = Vec::new();
    let mut lists = Vec::new();
    for m in ctx.dedupe(members) {
        let what = format!("configuration \"{}\"", m.key);
        if m.key.is_empty() {
            ctx.warn(
                m.key_pos,
                "a configuration with an empty name is ignored".into(),
            );
            continue;
        }
        let body = object(ctx, &m.value, &what)?;
        let mut c = Configuration {
            name: m.key.clone(),
            line: m.key_pos.line,
            column: m.key_pos.column,
            ..Configuration::default()
        };
        for k in ctx.dedupe(body) {
            let key = k.key.as_str();
            if key == "idle" {
                c.idle = Some(unsigned(ctx, &k.value, &what)?);
                continue;
            }
            if !CONFIGURATION_KEYS.contains(&key) {
                ctx.unknown_key(k, &what, &CONFIGURATION_KEYS);
                continue;
            }
            let v = string(ctx, &k.value, &format!("{what}: \"{key}\""))?;
            match key {
                "prep" => c.prep = v.to_string(),
                "cmake" => c.cmake = v.to_string(),
                "cpack" => c.cpack = v.to_string(),
                "deps" => c.deps = comma_list(v),
                "platforms" => {
                    c.platforms = Some(v.to_string());
                    lists.push(PlatformList {
                        configuration: c.name.clone(),
                        text: v,
                        pos: k.value.pos,
                    });
                }
                "artifacts" => c.artifacts = comma_list(v),
                "test_reports" => c.test_reports = comma_list(v),
                "branches" => {
                    c.branches = v
                        .split(|ch: char| ch == ',' || ch.is_whitespace())
                        .filter(|b| !b.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => c.pool = Some(v.to_string()),
            }
        }
        out.push(c);
    }
    Ok((out, lists))
}

fn unsigned(ctx: &Ctx, node: &Node, what: &str) -> Result<u64, SaifileError> {
    match &node.value {
        Value::Number(raw) => raw.parse::<u64>().map_err(|_| {
            ctx.error(
                node.pos,
                format!("{what}: \"idle\" must be a non-negative integer, found {raw}"),
            )
        }),
        other => Err(ctx.error(
            node.pos,
            format!(
                "{what}: \"idle\" must be a non-negative integer, found {}",
                other.type_name()
            ),
        )),
    }
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::atoi_nonzero;

    #[test]
    fn atoi_rules() {
        assert!(atoi_nonzero("1"));
        assert!(atoi_nonzero(" -2x"));
        assert!(atoi_nonzero("1e3"));
        assert!(!atoi_nonzero("0.5"));
        assert!(!atoi_nonzero("0"));
        assert!(!atoi_nonzero("yes"));
        assert!(!atoi_nonzero(""));
    }
}
