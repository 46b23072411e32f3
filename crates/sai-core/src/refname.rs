//! git's rules for ref names (`git check-ref-format`), so that a push can
//! only name a ref git itself could have: `a:b`, `a~1`, `end.lock`,
//! `a@{1}` or `refs/heads/` are refused with the rule they break.

/// A rule of `git check-ref-format` a name breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefNameError {
    /// Empty name.
    #[error("is empty")]
    Empty,
    /// The single character `@`.
    #[error("is the single character '@'")]
    At,
    /// Starts or ends with `/`, or has `//` (an empty component).
    #[error("has an empty component (a leading, trailing or double '/')")]
    EmptyComponent,
    /// A component starts with `.`.
    #[error("has a component starting with '.'")]
    DotComponent,
    /// A component ends with `.lock`.
    #[error("has a component ending with \".lock\"")]
    Lock,
    /// Contains `..`.
    #[error("contains \"..\"")]
    DotDot,
    /// Contains `@{`.
    #[error("contains \"@{{\"")]
    AtBrace,
    /// Ends with `.`.
    #[error("ends with '.'")]
    TrailingDot,
    /// Contains a control character, space, `~ ^ : ? * [` or `\`.
    #[error("contains {0:?}, which git does not allow in ref names")]
    Forbidden(char),
}

/// Check `name` against git's ref-name rules.
pub fn check(name: &str) -> Result<(), RefNameError> {
    if name.is_empty() {
        return Err(RefNameError::Empty);
    }
    if name == "@" {
        return Err(RefNameError::At);
    }
    if let Some(c) = name.chars().find(|&c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(RefNameError::Forbidden(c));
    }
    if name.contains("..") {
        return Err(RefNameError::DotDot);
    }
    if name.contains("@{") {
        return Err(RefNameError::AtBrace);
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err(RefNameError::EmptyComponent);
        }
        if component.starts_with('.') {
            return Err(RefNameError::DotComponent);
        }
        if component.ends_with(".lock") {
            return Err(RefNameError::Lock);
        }
    }
    if name.ends_with('.') {
        return Err(RefNameError::TrailingDot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_git_accepts() {
        for ok in [
            "refs/heads/main",
            "refs/heads/feature/x-1",
            "refs/tags/v1.2.3",
            "refs/heads/a.b",
            "refs/heads/@",
            "refs/heads/a@b",
            "refs/heads/ünï",
            "refs/heads/x.locked",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn names_git_refuses_name_the_rule() {
        use RefNameError::*;
        for (bad, rule) in [
            ("refs/heads/a:b", Forbidden(':')),
            ("refs/heads/a~1", Forbidden('~')),
            ("refs/heads/a^", Forbidden('^')),
            ("refs/heads/a b", Forbidden(' ')),
            ("refs/heads/a?", Forbidden('?')),
            ("refs/heads/a*", Forbidden('*')),
            ("refs/heads/a[", Forbidden('[')),
            ("refs/heads/a\\b", Forbidden('\\')),
            ("refs/heads/a\u{7f}", Forbidden('\u{7f}')),
            ("refs/heads/a\tb", Forbidden('\t')),
            ("refs/heads/end.lock", Lock),
            ("refs/heads/x.lock/y", Lock),
            ("refs/heads/a@{1}", AtBrace),
            ("refs/heads/", EmptyComponent),
            ("/refs/heads/a", EmptyComponent),
            ("refs//heads/a", EmptyComponent),
            ("refs/heads/.hidden", DotComponent),
            ("refs/heads/a..b", DotDot),
            ("refs/heads/a.", TrailingDot),
            ("@", At),
            ("", Empty),
        ] {
            assert_eq!(check(bad), Err(rule), "{bad:?}");
        }
        assert_eq!(
            check("refs/heads/a:b").unwrap_err().to_string(),
            "contains ':', which git does not allow in ref names"
        );
    }
}
