//! JSON with `#` line comments, as accepted by Sai's config files and `.sai.json`.

/// Replace every `#` comment (outside strings) with spaces, keeping newlines,
/// so that line and column numbers reported by a JSON parser on the result
/// still point into the original text.
pub fn blank_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut in_comment = false;
    for ch in text.chars() {
        if in_comment {
            if ch == '\n' {
                in_comment = false;
                out.push('\n');
            } else {
                // One space per UTF-8 byte keeps byte offsets stable too.
                for _ in 0..ch.len_utf8() {
                    out.push(' ');
                }
            }
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
            out.push(ch);
            continue;
        }
        match ch {
            '"' => {
                in_string = true;
                out.push(ch);
            }
            '#' => {
                in_comment = true;
                out.push(' ');
            }
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::blank_comments;

    #[test]
    fn comments_become_spaces_and_strings_are_untouched() {
        let src = "{ # c\n \"a#b\": 1 # x\n}";
        let out = blank_comments(src);
        assert_eq!(out.len(), src.len());
        assert_eq!(out, "{    \n \"a#b\": 1    \n}");
    }
}
