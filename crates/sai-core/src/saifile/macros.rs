//! `${name}` macros in platform build scripts.
//!
//! Only `${identifier}` (identifier = ASCII letter or `_`, then letters,
//! digits, `_`) is a macro. Anything else with a `$` (`$VAR`, `${A:-x}`,
//! `${#x}`, `$(cmd)`) is left alone for the shell.

/// The macros a configuration defines.
pub(crate) const KNOWN: [&str; 3] = ["prep", "cmake", "cpack"];

/// One `${name}` occurrence in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    /// The name between the braces.
    pub name: &'a str,
    /// Byte range of the whole `${name}`.
    pub start: usize,
    pub end: usize,
    /// Index in characters of the `$`.
    pub char_index: usize,
}

/// Every `${identifier}` in `text`, in order.
pub(crate) fn find(text: &str) -> Vec<Found<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(rel) = text[i..].find("${") {
        let start = i + rel;
        let name_start = start + 2;
        let mut j = name_start;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        let is_ident = j > name_start && !bytes[name_start].is_ascii_digit();
        if is_ident && bytes.get(j) == Some(&b'}') {
            out.push(Found {
                name: &text[name_start..j],
                start,
                end: j + 1,
                char_index: text[..start].chars().count(),
            });
            i = j + 1;
        } else {
            i = name_start;
        }
    }
    out
}

/// Replace every known macro in `text` using `value`; unknown ones are kept
/// verbatim (callers reject them before substituting).
pub(crate) fn substitute(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in find(text) {
        if let Some(v) = value(m.name) {
            out.push_str(&text[last..m.start]);
            out.push_str(&v);
            last = m.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identifiers_are_macros() {
        let names: Vec<_> = find("a ${cmake} $X ${A:-b} ${} ${1x} ${ok_1}${é} ${x")
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["cmake", "ok_1"]);
        let f = &find("é ${cpack}")[0];
        assert_eq!((f.start, f.char_index), (3, 2));
    }

    #[test]
    fn substitution_is_not_recursive() {
        let out = substitute("x ${cmake} ${cpack} ${other}", |n| match n {
            "cmake" => Some("${cpack}".into()),
            "cpack" => Some(String::new()),
            _ => None,
        });
        assert_eq!(out, "x ${cpack}  ${other}");
    }
}
