//! Positions in a YAML text, answered by the real YAML parser.
//!
//! serde_norway keeps the position of every node it reads but shows it only
//! on errors. Each question here is a small serde walk over the parser's
//! events that stops with a marker error on the node asked for; that error's
//! location is the node's position. So flow style, quoting, anchors and
//! comments are handled exactly as the daemons' own parser handles them, and
//! a document with a syntax error still answers for the part before it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::problem::PathSegment;

/// The `visit_*` methods of every YAML scalar (and null), each handing the
/// scalar as text (`None` for null) to `self.$method`.
macro_rules! visit_scalars_with {
    ($method:ident) => {
        visit_scalars_with!(@each $method, visit_str: &str, visit_bool: bool, visit_i64: i64,
            visit_u64: u64, visit_i128: i128, visit_u128: u128, visit_f64: f64);
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.$method(None)
        }
    };
    (@each $method:ident, $($visit:ident: $scalar:ty),*) => {
        $(fn $visit<E: de::Error>(self, v: $scalar) -> Result<Self::Value, E> {
            self.$method(Some(v.to_string()))
        })*
    };
}

/// A walk step that is its own visitor: it reads any node.
macro_rules! seed_visits_any {
    ($seed:ty) => {
        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = ();

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// Text of the error that ends a walk at the node it was looking for.
const STOP: &str = "sai: the walk stops here";

/// 1-based line and column of the node at `path`: the key for an object
/// member, the item (its `-`) for an array element. `None` when there is no
/// such node.
pub fn position_of(text: &str, path: &[PathSegment]) -> Option<(usize, usize)> {
    let at = stop_position(text, PathSeed { rest: path })?;
    Some(match path.last() {
        Some(PathSegment::Index(_)) => back_to_dash(text, at),
        _ => at,
    })
}

/// Position of the first key called `key` that repeats a key of the same
/// mapping, in document order (where serde stops with "duplicate field").
pub fn duplicate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    stop_position(text, DuplicateSeed { key })
}

/// The string value of the top-level member `key`, read from the part of the
/// document before any syntax error.
pub fn top_level_string(text: &str, key: &str) -> Option<String> {
    let found = RefCell::new(None);
    let _ =
        TopLevelSeed { key, found: &found }.deserialize(serde_norway::Deserializer::from_str(text));
    found.into_inner()
}

fn stop_position<S>(text: &str, seed: S) -> Option<(usize, usize)>
where
    S: for<'de> DeserializeSeed<'de, Value = ()>,
{
    let error = seed
        .deserialize(serde_norway::Deserializer::from_str(text))
        .err()?;
    if !error.to_string().contains(STOP) {
        return None;
    }
    error.location().map(|l| (l.line(), l.column()))
}

fn stop<E: de::Error>() -> E {
    E::custom(STOP)
}

/// libyaml places a block sequence item at its content (`name` in
/// `- name: a`); people look for the item at its dash.
fn back_to_dash(text: &str, (line, column): (usize, usize)) -> (usize, usize) {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1)) else {
        return (line, column);
    };
    let before: Vec<char> = line_text.chars().take(column.saturating_sub(1)).collect();
    let content = before.len();
    let mut i = content;
    while i > 0 && before[i - 1] == ' ' {
        i -= 1;
    }
    if i > 0 && i < content && before[i - 1] == '-' {
        (line, i)
    } else {
        (line, column)
    }
}

/// Walks down `rest`; stops on the node it names.
struct PathSeed<'p> {
    rest: &'p [PathSegment],
}

seed_visits_any!(PathSeed<'_>);

impl<'de> Visitor<'de> for PathSeed<'_> {
    type Value = ();

    /// At the end of the path every node fails: serde's default for each
    /// `visit_*` is an error quoting this, which is then the marker.
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.rest.is_empty() {
            STOP
        } else {
            "a mapping or a sequence"
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((PathSegment::Key(want), more)) = self.rest.split_first() else {
            return Err(self.end_or("not a sequence"));
        };
        let seed = KeySeed {
            want,
            stop_on_match: more.is_empty(),
        };
        while let Some(hit) = map.next_key_seed(seed)? {
            if hit {
                return map.next_value_seed(PathSeed { rest: more });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((PathSegment::Index(want), more)) = self.rest.split_first() else {
            return Err(self.end_or("not a mapping"));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(PathSeed { rest: more })?;
        Ok(())
    }
}

impl PathSeed<'_> {
    /// The error for a mapping or sequence that is not followed: the marker
    /// at the end of the path, a mismatch before it.
    fn end_or<E: de::Error>(&self, mismatch: &str) -> E {
        if self.rest.is_empty() {
            stop()
        } else {
            E::custom(mismatch)
        }
    }
}

/// Reads a mapping key; `true` when it is `want`. With `stop_on_match` a
/// match ends the walk on the key itself.
#[derive(Clone, Copy)]
struct KeySeed<'a> {
    want: &'a str,
    stop_on_match: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let stop_on_match = self.stop_on_match;
        let key = d.deserialize_any(KeyText(|k: &str| stop_on_match && k == self.want))?;
        Ok(key.as_deref() == Some(self.want))
    }
}

/// A scalar key as text (`None` for a mapping or sequence used as a key).
/// The walk stops on the key when the function says so: inside the visitor,
/// so that the error carries the key's position.
struct KeyText<F>(F);

impl<F: FnOnce(&str) -> bool> KeyText<F> {
    fn scalar<E: de::Error>(self, text: Option<String>) -> Result<Option<String>, E> {
        match text {
            Some(text) if (self.0)(&text) => Err(stop()),
            text => Ok(text),
        }
    }
}

impl<'de, F: FnOnce(&str) -> bool> Visitor<'de> for KeyText<F> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    visit_scalars_with!(scalar);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Walks the whole document; stops on the first repeated key `key`.
#[derive(Clone, Copy)]
struct DuplicateSeed<'a> {
    key: &'a str,
}

seed_visits_any!(DuplicateSeed<'_>);

impl<'de> Visitor<'de> for DuplicateSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let seen = RefCell::new(HashSet::new());
        while map
            .next_key_seed(RepeatSeed {
                key: self.key,
                seen: &seen,
            })?
            .is_some()
        {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    visit_scalars_with!(scalar);
}

impl DuplicateSeed<'_> {
    fn scalar<E>(self, _: Option<String>) -> Result<(), E> {
        Ok(())
    }
}

/// A key of one mapping; stops when it is `key` and was seen before.
struct RepeatSeed<'a, 's> {
    key: &'a str,
    seen: &'s RefCell<HashSet<String>>,
}

impl<'de> DeserializeSeed<'de> for RepeatSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(KeyText(|k: &str| {
            !self.seen.borrow_mut().insert(k.to_string()) && k == self.key
        }))?;
        Ok(())
    }
}

/// Reads the top-level mapping up to member `key`; a string value is kept.
struct TopLevelSeed<'a, 'f> {
    key: &'a str,
    found: &'f RefCell<Option<String>>,
}

seed_visits_any!(TopLevelSeed<'_, '_>);

impl<'de> Visitor<'de> for TopLevelSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let seed = KeySeed {
            want: self.key,
            stop_on_match: false,
        };
        while let Some(hit) = map.next_key_seed(seed)? {
            if hit {
                if let Ok(value) = map.next_value::<String>() {
                    *self.found.borrow_mut() = Some(value);
                }
                // Nothing after this member is needed.
                return Err(stop());
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> PathSegment {
        PathSegment::Key(k.into())
    }

    #[test]
    fn positions_follow_block_and_flow_style() {
        let text = "# c\na: 1\nlist:\n  - x: 1\n  - {y: 2, 'z': [3, 4]}\n";
        assert_eq!(position_of(text, &[key("a")]), Some((2, 1)));
        assert_eq!(
            position_of(text, &[key("list"), PathSegment::Index(1)]),
            Some((5, 3))
        );
        assert_eq!(
            position_of(text, &[key("list"), PathSegment::Index(1), key("z")]),
            Some((5, 12))
        );
        assert_eq!(
            position_of(
                text,
                &[
                    key("list"),
                    PathSegment::Index(1),
                    key("z"),
                    PathSegment::Index(1)
                ]
            ),
            Some((5, 21))
        );
        assert_eq!(
            position_of(text, &[key("list"), PathSegment::Index(2)]),
            None
        );
        assert_eq!(position_of(text, &[key("a"), key("b")]), None);
    }

    #[test]
    fn duplicates_are_found_where_they_repeat() {
        let text = "a: 1\nb:\n  a: 1\n  c: 2\n  a: 3\na: 4\n";
        assert_eq!(duplicate_key(text, "a"), Some((5, 3)));
        assert_eq!(duplicate_key(text, "c"), None);
    }

    #[test]
    fn the_top_level_member_is_read_before_a_syntax_error() {
        let text = "schema: sai-builder\nhome: [\n";
        assert_eq!(
            top_level_string(text, "schema").as_deref(),
            Some("sai-builder")
        );
        assert_eq!(top_level_string("home: [\nschema: x\n", "schema"), None);
        assert_eq!(top_level_string("schema: [1]\n", "schema"), None);
    }
}
