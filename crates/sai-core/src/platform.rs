//! Tuple platform names and their matching rule.
//!
//! A platform is named `os[-distro[-ver]]/arch[-vendor...][/toolchain]`, for
//! example `linux-fedora-32/x86_64-amd/gcc` or `freertos-espidf/xl6-esp32/gcc`:
//! one to three `/`-separated elements, each made of ASCII letters, digits,
//! `-` and `_`. Dots are not allowed (write `ubuntu-2004`, not `ubuntu-20.04`).
//!
//! A *request* (what a project asks for, e.g. a token of a configuration's
//! `platforms` list, or later a task) matches an *offer* (a concrete platform,
//! e.g. a saifile platform key or a builder) per element, by left prefix:
//! see [`tuple_matches`].

use std::fmt;

/// Longest platform name accepted, in bytes (the original's column size).
pub const MAX_PLATFORM_LEN: usize = 95;

/// Most `/`-separated elements a platform name has (os, arch, toolchain).
pub const MAX_ELEMENTS: usize = 3;

/// Regex (JSON Schema `pattern`) a valid platform name matches.
pub const PLATFORM_PATTERN: &str = "^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+){0,2}$";

/// A validated platform tuple name, e.g. `linux-ubuntu-2004/x86_64-amd/gcc`.
///
/// Serialises as its string; deserialising validates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform(String);

/// Why a string is not a valid platform name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// The name is empty.
    #[error("empty platform name")]
    Empty,
    /// The name is longer than [`MAX_PLATFORM_LEN`].
    #[error("platform name is {0} bytes long, the limit is {MAX_PLATFORM_LEN}")]
    TooLong(usize),
    /// The name has more than [`MAX_ELEMENTS`] `/`-separated elements.
    #[error(
        "platform name has {0} '/'-separated elements, at most {MAX_ELEMENTS} are allowed (os/arch/toolchain)"
    )]
    TooManyElements(usize),
    /// An element between slashes is empty (`linux//gcc` is a request form, not a platform).
    #[error("platform name has an empty element (element {0})")]
    EmptyElement(usize),
    /// The name contains a dot, e.g. `linux-ubuntu-20.04`.
    #[error(
        "platform name contains '.' at byte {0}: dots are not allowed in platform names (write e.g. ubuntu-2004, not ubuntu-20.04)"
    )]
    Dot(usize),
    /// The name contains a character other than ASCII letters, digits, `-`, `_` and `/`.
    #[error(
        "platform name contains {ch:?} at byte {at}: only ASCII letters, digits, '-', '_' and '/' are allowed"
    )]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
}

impl Platform {
    /// Validate `name` as a platform tuple.
    pub fn parse(name: &str) -> Result<Platform, PlatformError> {
        if name.is_empty() {
            return Err(PlatformError::Empty);
        }
        // Report a dot before other problems: it is the common mistake.
        if let Some(at) = name.find('.') {
            return Err(PlatformError::Dot(at));
        }
        if let Some((at, ch)) = name
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/'))
        {
            return Err(PlatformError::BadChar { ch, at });
        }
        if name.len() > MAX_PLATFORM_LEN {
            return Err(PlatformError::TooLong(name.len()));
        }
        let count = name.split('/').count();
        if count > MAX_ELEMENTS {
            return Err(PlatformError::TooManyElements(count));
        }
        if let Some(idx) = name.split('/').position(str::is_empty) {
            return Err(PlatformError::EmptyElement(idx + 1));
        }
        Ok(Platform(name.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated elements: os, then arch, then toolchain if present.
    pub fn elements(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True when `self`, taken as a **request**, is satisfied by the concrete
    /// platform `offer`: per-element left-prefix matching as in
    /// [`tuple_matches`]`(self, offer)`. Not symmetric:
    /// `linux` matches `linux-ubuntu-2004/x86_64/gcc`, not the reverse.
    pub fn matches(&self, offer: &Platform) -> bool {
        tuple_matches(&self.0, &offer.0)
    }

    /// Same as [`Platform::matches`], read the other way round:
    /// `request.is_matched_by(offer)`.
    pub fn is_matched_by(&self, offer: &Platform) -> bool {
        self.matches(offer)
    }
}

/// Does the platform `request` select the platform `offer`?
///
/// Mirrors the original `sai_tuple_compare`: both are split on `/`; the
/// request may have fewer elements than the offer but not more; each
/// non-empty request element must be a plain string prefix of the offer's
/// element at the same index (`linux` ~ `linux-ubuntu-2004`, `linux-f` ~
/// `linux-fedora`, `x86` ~ `x86_64`); an empty request element matches
/// anything (`linux//gcc`). A single trailing `/` on the request is ignored
/// (`linux/` = `linux`), as in the original. Works on raw strings so that
/// unvalidated names (e.g. a dotted legacy name) still match.
pub fn tuple_matches(request: &str, offer: &str) -> bool {
    let request = request.strip_suffix('/').unwrap_or(request);
    let offered: Vec<&str> = offer.split('/').collect();
    let requested: Vec<&str> = request.split('/').collect();
    if requested.len() > offered.len() {
        return false;
    }
    requested
        .iter()
        .zip(&offered)
        .all(|(req, off)| req.is_empty() || off.starts_with(req))
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl AsRef<str> for Platform {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Platform::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Platform {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Platform".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Platform tuple `os[-distro[-ver]]/arch[-vendor...][/toolchain]`, e.g. `linux-fedora-32/x86_64-amd/gcc`: one to three '/'-separated elements of ASCII letters, digits, '-' and '_'; no dots.",
            "pattern": PLATFORM_PATTERN,
            "maxLength": MAX_PLATFORM_LEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_tuples_and_rejects_bad_names() {
        assert!(Platform::parse("linux-fedora-32/x86_64-amd/gcc").is_ok());
        assert!(Platform::parse("windows-10").is_ok());
        assert_eq!(
            Platform::parse("linux-ubuntu-20.04/x86_64/gcc"),
            Err(PlatformError::Dot(15))
        );
        assert_eq!(Platform::parse(""), Err(PlatformError::Empty));
        assert_eq!(
            Platform::parse("a/b/c/d"),
            Err(PlatformError::TooManyElements(4))
        );
        assert_eq!(
            Platform::parse("linux//gcc"),
            Err(PlatformError::EmptyElement(2))
        );
        assert!(matches!(
            Platform::parse("linux x"),
            Err(PlatformError::BadChar { ch: ' ', at: 5 })
        ));
        assert_eq!(
            Platform::parse(&"a".repeat(96)),
            Err(PlatformError::TooLong(96))
        );
    }

    #[test]
    fn matching_is_per_element_prefix() {
        let req = Platform::parse("linux/x86").unwrap();
        let offer = Platform::parse("linux-ubuntu-2004/x86_64-amd/gcc").unwrap();
        assert!(req.matches(&offer));
        assert!(req.is_matched_by(&offer));
        assert!(!offer.matches(&req));
        assert!(tuple_matches("linux/", "linux"));
        assert!(!tuple_matches("linux//", "linux"));
        assert!(tuple_matches("", "linux"));
    }

    #[test]
    fn serde_round_trip_validates() {
        let p: Platform = serde_json::from_str("\"linux/x86_64/gcc\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"linux/x86_64/gcc\"");
        assert!(serde_json::from_str::<Platform>("\"linux.x\"").is_err());
        assert_eq!(p.to_string(), "linux/x86_64/gcc");
    }
}
