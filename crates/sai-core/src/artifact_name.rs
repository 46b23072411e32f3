//! Artifact names: the path of an uploaded file relative to the task's
//! `src/`, `/`-separated (e.g. `out/result.txt`). The builder makes them,
//! the server checks them before storing and serves each artifact under its
//! name, so the one rule lives here.
//!
//! A name is 1..=[`MAX_LEN`] bytes of components separated by single `/`;
//! each component is made of `A-Z a-z 0-9 . _ + -` and is neither `.` nor
//! `..`. So a name is always relative and never climbs out of the tree.

/// Longest artifact name, in bytes.
pub const MAX_LEN: usize = 255;

/// Why a name is not a valid artifact name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactNameError {
    /// The name is empty.
    #[error("the artifact name is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("the artifact name is longer than {MAX_LEN} bytes")]
    TooLong,
    /// Starts with `/`.
    #[error("the artifact name {0:?} is absolute; names are relative to the task's src/")]
    Absolute(String),
    /// Has a `.` or `..` component.
    #[error("the artifact name {0:?} has a '.' or '..' component")]
    Traversal(String),
    /// Has an empty component (`a//b`, a trailing `/`).
    #[error("the artifact name {0:?} has an empty path component")]
    EmptyComponent(String),
    /// Has a character outside `A-Z a-z 0-9 . _ + - /`.
    #[error(
        "the artifact name {0:?} has the character {1:?}; allowed are A-Z a-z 0-9 . _ + - and /"
    )]
    BadChar(String, char),
}

/// Is `c` allowed inside a component?
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
}

/// Check `name` against the rule in the module docs.
pub fn check(name: &str) -> Result<(), ArtifactNameError> {
    if name.is_empty() {
        return Err(ArtifactNameError::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(ArtifactNameError::TooLong);
    }
    if name.starts_with('/') {
        return Err(ArtifactNameError::Absolute(name.to_string()));
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err(ArtifactNameError::EmptyComponent(name.to_string()));
        }
        if component == "." || component == ".." {
            return Err(ArtifactNameError::Traversal(name.to_string()));
        }
        if let Some(c) = component.chars().find(|c| !is_name_char(*c)) {
            return Err(ArtifactNameError::BadChar(name.to_string(), c));
        }
    }
    Ok(())
}

/// The file name part of an artifact name (its last component), e.g. for a
/// `Content-Disposition` header.
pub fn file_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_names() {
        for ok in [
            "result.txt",
            "out/result.txt",
            "a/b/c-1.2+x_y.tar.gz",
            ".hidden/x",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(file_name("out/result.txt"), "result.txt");
        assert_eq!(file_name("x"), "x");
    }

    #[test]
    fn traversal_absolute_and_odd_names_are_refused() {
        use ArtifactNameError::*;
        let long = "x".repeat(256);
        for (name, want) in [
            ("", Empty),
            ("/etc/passwd", Absolute("/etc/passwd".into())),
            ("../x", Traversal("../x".into())),
            ("a/../../x", Traversal("a/../../x".into())),
            ("a/./x", Traversal("a/./x".into())),
            ("a//x", EmptyComponent("a//x".into())),
            ("a/", EmptyComponent("a/".into())),
            ("a\\b", BadChar("a\\b".into(), '\\')),
            ("a b", BadChar("a b".into(), ' ')),
            (long.as_str(), TooLong),
        ] {
            assert_eq!(check(name), Err(want), "{name}");
        }
    }
}
