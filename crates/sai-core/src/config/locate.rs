//! Where something is in a config text, read from the parse tree of its
//! format: JSON with `#` comments through [`crate::jsonc`] (the one JSON
//! reader that keeps positions), YAML through the real YAML parser
//! (`yaml_walk`). Nothing here searches the text for words.

use super::Format;
use super::problem::{FieldPath, PathSegment};
use super::yaml_walk;
use crate::jsonc::{self, Member, Node, Pos, Value};

/// 1-based line and column of the field at `path` in a config text: the
/// position of its key for object members, of the element for array
/// elements. `None` when the field cannot be found (then the caller points at
/// the start of the file or of the nearest parent).
pub fn locate(text: &str, format: Format, path: &FieldPath) -> Option<(usize, usize)> {
    match format {
        Format::Json => {
            let root = jsonc::parse(text.as_bytes()).ok()?;
            json_position(&root, &path.0).map(line_col)
        }
        Format::Yaml => yaml_walk::position_of(text, &path.0),
    }
}

/// Like [`locate`], but falls back to the nearest parent that can be found,
/// and finally to 1:1.
pub fn locate_nearest(text: &str, format: Format, path: &FieldPath) -> (usize, usize) {
    let mut segments = path.0.clone();
    loop {
        if let Some(pos) = locate(text, format, &FieldPath(segments.clone())) {
            return pos;
        }
        if segments.pop().is_none() {
            return (1, 1);
        }
    }
}

/// Where the first repetition of key `key` inside one object is (serde's
/// "duplicate field" error points at the object, not at the repeated key).
pub fn locate_duplicate_key(text: &str, format: Format, key: &str) -> Option<(usize, usize)> {
    match format {
        Format::Json => {
            let root = jsonc::parse(text.as_bytes()).ok()?;
            let mut found = None;
            for_each_object(&root, &mut |members| {
                if found.is_none() {
                    found = members
                        .iter()
                        .filter(|m| m.key == key)
                        .nth(1)
                        .map(|m| m.key_pos);
                }
            });
            found.map(line_col)
        }
        Format::Yaml => yaml_walk::duplicate_key(text, key),
    }
}

/// The key `key` that an error reported at `near` is about: the last member
/// called `key` that starts at or before `near` (serde_json reports an
/// unknown field just after its key). YAML errors already point at the key.
pub fn locate_key_before(
    text: &str,
    format: Format,
    key: &str,
    near: (usize, usize),
) -> Option<(usize, usize)> {
    if format == Format::Yaml {
        return None;
    }
    let root = jsonc::parse(text.as_bytes()).ok()?;
    let mut best: Option<Pos> = None;
    for_each_object(&root, &mut |members| {
        for m in members.iter().filter(|m| m.key == key) {
            let at = line_col(m.key_pos);
            if at <= near && best.is_none_or(|b| line_col(b) < at) {
                best = Some(m.key_pos);
            }
        }
    });
    best.map(line_col)
}

/// The `schema` member of a config text, read from the part before any
/// syntax error, so that a broken file still says what kind it is.
pub fn schema_marker(text: &str, format: Format) -> Option<String> {
    match format {
        Format::Json => jsonc::top_level_string(text.as_bytes(), "schema"),
        Format::Yaml => yaml_walk::top_level_string(text, "schema"),
    }
}

fn line_col(pos: Pos) -> (usize, usize) {
    (pos.line, pos.column)
}

fn json_position(node: &Node, path: &[PathSegment]) -> Option<Pos> {
    let Some((first, rest)) = path.split_first() else {
        return Some(node.pos);
    };
    match (first, &node.value) {
        (PathSegment::Key(key), Value::Object(members)) => {
            let member = members.iter().find(|m| &m.key == key)?;
            if rest.is_empty() {
                Some(member.key_pos)
            } else {
                json_position(&member.value, rest)
            }
        }
        (PathSegment::Index(i), Value::Array(items)) => json_position(items.get(*i)?, rest),
        _ => None,
    }
}

fn for_each_object(node: &Node, f: &mut impl FnMut(&[Member])) {
    match &node.value {
        Value::Object(members) => {
            f(members);
            for m in members {
                for_each_object(&m.value, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|n| for_each_object(n, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_placed_at_the_repetition() {
        let json = "{\"a\": {\"b\": 1,\n  \"b\": 2}, \"b\": 3}";
        assert_eq!(locate_duplicate_key(json, Format::Json, "b"), Some((2, 3)));
        let yaml = "a:\n  b: 1\n  b: 2\n";
        assert_eq!(locate_duplicate_key(yaml, Format::Yaml, "b"), Some((3, 3)));
    }

    #[test]
    fn the_key_before_an_error_is_the_last_one_of_that_name() {
        let json = "{\"x\": {\"k\": 1},\n \"y\": {\"k\": 2}}";
        assert_eq!(
            locate_key_before(json, Format::Json, "k", (2, 12)),
            Some((2, 8))
        );
        assert_eq!(locate_key_before(json, Format::Json, "k", (1, 2)), None);
    }

    #[test]
    fn a_broken_file_still_names_its_kind() {
        assert_eq!(
            schema_marker("schema: sai-jig\ntargets: [\n", Format::Yaml).as_deref(),
            Some("sai-jig")
        );
        assert_eq!(
            schema_marker("{\"schema\": \"sai-jig\", \"targets\": [", Format::Json).as_deref(),
            Some("sai-jig")
        );
    }
}
