//! JSON with `#` line comments, as accepted by Sai's config files and `.sai.json`.
//!
//! [`blank_comments`] turns such text into plain JSON for serde. [`parse`] and
//! [`parse_prefix`] are a small positioned reader: every value and key keeps
//! its line and column, and objects keep duplicate keys in file order, which
//! serde_json's `Value` cannot do. The reader never panics, caps nesting at
//! [`MAX_DEPTH`] and works on bytes (invalid UTF-8 is an error with position).

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

/// Deepest nesting of arrays and objects the reader accepts; deeper input is
/// an error (never a stack overflow).
pub const MAX_DEPTH: usize = 64;

/// A place in the source text.
///
/// `line` and `column` are 1-based; `column` counts Unicode characters (a tab
/// is one column). `offset` is the 0-based byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// 0-based byte offset.
    pub offset: usize,
}

/// A JSON value with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts (for a string: its opening quote).
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// One `"key": value` member of an object, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The decoded key.
    pub key: String,
    /// Where the key's opening quote is.
    pub key_pos: Pos,
    /// The member's value.
    pub value: Node,
}

/// A JSON value. Objects keep every member in file order, duplicates included:
/// deciding what a duplicate means is the caller's job.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, kept as its source text (e.g. `-1.5e3`).
    Number(String),
    /// A decoded string.
    String(String),
    /// An array.
    Array(Vec<Node>),
    /// An object: members in file order, duplicates kept.
    Object(Vec<Member>),
}

impl Value {
    /// A short name of the value's type for messages: "a string", "an array"...
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Why the text is not JSON (with `#` comments), and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct JsonError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// 0-based byte offset.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

/// Parse `bytes` as one JSON value with `#` line comments. Whitespace and
/// comments may follow the value; anything else is an error.
pub fn parse(bytes: &[u8]) -> Result<Node, JsonError> {
    let mut r = Reader::new(bytes);
    let node = r.document_value()?;
    r.skip_ws()?;
    if r.i < bytes.len() {
        return Err(r.error_here("trailing characters after the top-level value".into()));
    }
    Ok(node)
}

/// Parse one JSON value (with `#` comments) from the start of `bytes` and
/// return it with the number of bytes it consumed: the offset just past the
/// value's last byte (leading whitespace and comments included, trailing
/// ones not). Whatever follows is not looked at, so a server can tolerate
/// e.g. a trailing newline or other trailing bytes.
pub fn parse_prefix(bytes: &[u8]) -> Result<(Node, usize), JsonError> {
    let mut r = Reader::new(bytes);
    let node = r.document_value()?;
    Ok((node, r.i))
}

/// The string value of the top-level member `key`, read from the part of the
/// text before any syntax error (so a broken file can still say what it is).
pub fn top_level_string(bytes: &[u8], key: &str) -> Option<String> {
    let mut r = Reader::new(bytes);
    r.skip_ws().ok()?;
    if r.peek() != Some(b'{') {
        return None;
    }
    r.bump();
    loop {
        r.skip_ws().ok()?;
        if r.peek() != Some(b'"') {
            return None;
        }
        let name = r.string().ok()?;
        r.skip_ws().ok()?;
        if r.peek() != Some(b':') {
            return None;
        }
        r.bump();
        r.skip_ws().ok()?;
        let node = r.value(1).ok()?;
        if name == key {
            return match node.value {
                Value::String(s) => Some(s),
                _ => None,
            };
        }
        r.skip_ws().ok()?;
        if r.peek() != Some(b',') {
            return None;
        }
        r.bump();
    }
}

/// Position of the decoded character `char_index` of the string literal
/// starting (at its opening quote) at `start` in `src`.
///
/// Used to point at something inside a string value, e.g. a `${macro}`,
/// even when escapes precede it. Falls back to `start` if `src` does not
/// hold a string literal there.
pub fn position_in_string(src: &[u8], start: Pos, char_index: usize) -> Pos {
    let mut r = Reader::new(src);
    r.i = start.offset;
    r.line = start.line;
    r.col = start.column;
    if r.peek() != Some(b'"') {
        return start;
    }
    r.bump();
    let mut decoded = 0usize;
    while decoded < char_index {
        match r.peek() {
            None | Some(b'"') => break,
            Some(b'\\') => {
                r.bump();
                if r.peek() == Some(b'u') {
                    let high = src
                        .get(r.i + 1..r.i + 5)
                        .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
                        .map(hex4)
                        .unwrap_or(0);
                    for _ in 0..5 {
                        r.bump_if_any();
                    }
                    // A surrogate pair decodes to one character from 12 bytes.
                    if (0xD800..0xDC00).contains(&high)
                        && src.get(r.i) == Some(&b'\\')
                        && src.get(r.i + 1) == Some(&b'u')
                    {
                        for _ in 0..6 {
                            r.bump_if_any();
                        }
                    }
                } else {
                    r.bump_if_any();
                }
            }
            Some(b) => {
                let len = utf8_len(b);
                for _ in 0..len {
                    r.bump_if_any();
                }
            }
        }
        decoded += 1;
    }
    r.pos()
}

fn hex4(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, &c| {
        acc * 16 + (c as char).to_digit(16).unwrap_or(0)
    })
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

struct Reader<'a> {
    src: &'a [u8],
    i: usize,
    line: usize,
    col: usize,
}

impl<'a> Reader<'a> {
    fn new(src: &'a [u8]) -> Self {
        Reader {
            src,
            i: 0,
            line: 1,
            col: 1,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.col,
            offset: self.i,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.i).copied()
    }

    /// Consume one byte, keeping line and (character) column up to date.
    fn bump(&mut self) {
        let b = self.src[self.i];
        self.i += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if b & 0xC0 != 0x80 {
            self.col += 1;
        }
    }

    fn bump_if_any(&mut self) {
        if self.i < self.src.len() {
            self.bump();
        }
    }

    fn error_at(&self, pos: Pos, message: String) -> JsonError {
        JsonError {
            line: pos.line,
            column: pos.column,
            offset: pos.offset,
            message,
        }
    }

    fn error_here(&self, message: String) -> JsonError {
        self.error_at(self.pos(), message)
    }

    fn describe_here(&self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b' ') => "a space".into(),
            Some(b) if b < 0x80 => format!("byte 0x{b:02x}"),
            Some(_) => match self.utf8_char() {
                Ok(c) => format!("'{c}'"),
                Err(_) => "invalid UTF-8".into(),
            },
        }
    }

    /// Decode the (non-ASCII) UTF-8 character at the cursor without consuming it.
    fn utf8_char(&self) -> Result<char, JsonError> {
        let lead = self.src[self.i];
        let len = utf8_len(lead);
        let end = (self.i + len).min(self.src.len());
        let ch = std::str::from_utf8(&self.src[self.i..end])
            .ok()
            .filter(|s| s.len() == len)
            .and_then(|s| s.chars().next());
        ch.ok_or_else(|| self.error_here("invalid UTF-8".into()))
    }

    /// Skip whitespace and `#` comments (to end of line).
    fn skip_ws(&mut self) -> Result<(), JsonError> {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.bump(),
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        if c >= 0x80 {
                            let len = self.utf8_char()?.len_utf8();
                            for _ in 0..len {
                                self.bump();
                            }
                        } else {
                            self.bump();
                        }
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn document_value(&mut self) -> Result<Node, JsonError> {
        self.skip_ws()?;
        if self.peek().is_none() {
            return Err(self.error_here("empty input: expected a JSON value".into()));
        }
        self.value(0)
    }

    fn value(&mut self, depth: usize) -> Result<Node, JsonError> {
        let pos = self.pos();
        let value = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(b't') => self.literal("true", Value::Bool(true))?,
            Some(b'f') => self.literal("false", Value::Bool(false))?,
            Some(b'n') => self.literal("null", Value::Null)?,
            _ => {
                return Err(self.error_here(format!(
                    "expected a JSON value, found {}",
                    self.describe_here()
                )));
            }
        };
        Ok(Node { pos, value })
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, JsonError> {
        let start = self.pos();
        if self.src[self.i..].starts_with(word.as_bytes()) {
            for _ in 0..word.len() {
                self.bump();
            }
            Ok(value)
        } else {
            Err(self.error_at(start, format!("invalid literal: expected `{word}`")))
        }
    }

    fn enter(&self, depth: usize) -> Result<usize, JsonError> {
        if depth >= MAX_DEPTH {
            Err(self.error_here(format!("nesting deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(depth + 1)
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        let members = self.items(depth, b'}', "object member", Self::member)?;
        Ok(Value::Object(members))
    }

    fn member(&mut self, depth: usize) -> Result<Member, JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.error_here(format!(
                "expected a string object key, found {}",
                self.describe_here()
            )));
        }
        let key_pos = self.pos();
        let key = self.string()?;
        self.skip_ws()?;
        if self.peek() != Some(b':') {
            return Err(self.error_here(format!(
                "expected ':' after object key \"{key}\", found {}",
                self.describe_here()
            )));
        }
        self.bump();
        self.skip_ws()?;
        let value = self.value(depth)?;
        Ok(Member {
            key,
            key_pos,
            value,
        })
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        let items = self.items(depth, b']', "array element", Self::value)?;
        Ok(Value::Array(items))
    }

    /// At the opening bracket of an object or array: read its items with
    /// `item` (called at the first byte of each, with the depth inside the
    /// container) up to and including the `close` bracket.
    fn items<T>(
        &mut self,
        depth: usize,
        close: u8,
        what: &str,
        mut item: impl FnMut(&mut Self, usize) -> Result<T, JsonError>,
    ) -> Result<Vec<T>, JsonError> {
        let depth = self.enter(depth)?;
        self.bump();
        self.skip_ws()?;
        let mut items = Vec::new();
        if self.peek() == Some(close) {
            self.bump();
            return Ok(items);
        }
        loop {
            self.skip_ws()?;
            items.push(item(self, depth)?);
            if self.end_of_item(close, what)? {
                return Ok(items);
            }
        }
    }

    /// After an object member or array element: consume the `,` before the
    /// next one (`false`) or the `close` bracket ending the container (`true`).
    fn end_of_item(&mut self, close: u8, item: &str) -> Result<bool, JsonError> {
        self.skip_ws()?;
        match self.peek() {
            Some(b',') => {
                self.bump();
                Ok(false)
            }
            Some(c) if c == close => {
                self.bump();
                Ok(true)
            }
            _ => Err(self.error_here(format!(
                "expected ',' or '{}' after {item}, found {}",
                close as char,
                self.describe_here()
            ))),
        }
    }

    fn number(&mut self) -> Result<String, JsonError> {
        let start = self.i;
        let start_pos = self.pos();
        let bad = |r: &Self| r.error_at(start_pos, "invalid number".into());
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.bump();
                }
            }
            _ => return Err(bad(self)),
        }
        if self.peek() == Some(b'.') {
            self.bump();
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(bad(self));
            }
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(bad(self));
            }
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.bump();
            }
        }
        // Digits and signs are ASCII, so this slice is valid UTF-8.
        Ok(String::from_utf8_lossy(&self.src[start..self.i]).into_owned())
    }

    fn hex_escape(&mut self) -> Result<u32, JsonError> {
        let pos = self.pos();
        let digits = self.src.get(self.i..self.i + 4);
        match digits {
            Some(d) if d.iter().all(u8::is_ascii_hexdigit) => {
                for _ in 0..4 {
                    self.bump();
                }
                Ok(hex4(d))
            }
            _ => Err(self.error_at(pos, "invalid \\u escape: expected 4 hex digits".into())),
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        let open = self.pos();
        self.bump(); // "
        let mut out = String::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error_at(open, "unterminated string".into()));
            };
            match b {
                b'"' => {
                    self.bump();
                    return Ok(out);
                }
                b'\\' => {
                    let esc_pos = self.pos();
                    self.bump();
                    let Some(e) = self.peek() else {
                        return Err(self.error_at(open, "unterminated string".into()));
                    };
                    self.bump();
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex_escape()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.src.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.error_at(
                                        esc_pos,
                                        "unpaired surrogate in \\u escape".into(),
                                    ));
                                }
                                self.bump();
                                self.bump();
                                let lo = self.hex_escape()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.error_at(
                                        esc_pos,
                                        "unpaired surrogate in \\u escape".into(),
                                    ));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            match char::from_u32(cp) {
                                Some(c) => out.push(c),
                                None => {
                                    return Err(self.error_at(
                                        esc_pos,
                                        "unpaired surrogate in \\u escape".into(),
                                    ));
                                }
                            }
                        }
                        _ => return Err(self.error_at(esc_pos, "invalid escape in string".into())),
                    }
                }
                0x00..=0x1F => {
                    let what = if b == b'\n' {
                        "unterminated string (newline inside a string)".to_string()
                    } else {
                        format!("control character 0x{b:02x} inside a string (escape it)")
                    };
                    let at = if b == b'\n' { open } else { self.pos() };
                    return Err(self.error_at(at, what));
                }
                0x20..=0x7F => {
                    // Copy a run of plain ASCII at once.
                    let start = self.i;
                    while self
                        .peek()
                        .is_some_and(|c| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\')
                    {
                        self.i += 1;
                        self.col += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.src[start..self.i]).unwrap_or_default());
                }
                _ => {
                    let c = self.utf8_char()?;
                    for _ in 0..c.len_utf8() {
                        self.bump();
                    }
                    out.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_become_spaces_and_strings_are_untouched() {
        let src = "{ # c\n \"a#b\": 1 # x\n}";
        let out = blank_comments(src);
        assert_eq!(out.len(), src.len());
        assert_eq!(out, "{    \n \"a#b\": 1    \n}");
    }

    #[test]
    fn positions_comments_and_duplicates() {
        let src = "# head\n{ \"a\": [1, \"x#y\"], # c\n  \"a\": {\"b\": null}\t}";
        let root = parse(src.as_bytes()).unwrap();
        assert_eq!((root.pos.line, root.pos.column, root.pos.offset), (2, 1, 7));
        let Value::Object(members) = &root.value else {
            panic!()
        };
        assert_eq!(members.len(), 2, "duplicates are kept");
        assert_eq!((members[0].key_pos.line, members[0].key_pos.column), (2, 3));
        assert_eq!((members[1].key_pos.line, members[1].key_pos.column), (3, 3));
        let Value::Array(items) = &members[0].value.value else {
            panic!()
        };
        assert_eq!(items[0].value, Value::Number("1".into()));
        assert_eq!(items[1].value, Value::String("x#y".into()));
        assert_eq!(items[1].pos.column, 12);
        assert_eq!(members[1].value.pos.column, 8);
    }

    #[test]
    fn prefix_reports_the_consumed_length() {
        let (node, used) = parse_prefix(b"  {\"a\": 1}\n\xff junk").unwrap();
        assert_eq!(used, 10);
        assert!(matches!(node.value, Value::Object(_)));
        assert!(parse(b"{} x").is_err());
        assert!(parse(b"{} # ok\n").is_ok());
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = parse(deep.as_bytes()).unwrap_err();
        assert_eq!((e.line, e.column), (1, MAX_DEPTH + 1));
    }

    #[test]
    fn a_top_level_string_is_read_before_a_syntax_error() {
        let text = b"# c\n{\"a\": [1, {}], \"schema\": \"sai-web\", \"x\": }";
        assert_eq!(top_level_string(text, "schema").as_deref(), Some("sai-web"));
        assert_eq!(
            top_level_string(b"{\"a\": ] \"schema\": \"x\"}", "schema"),
            None
        );
        assert_eq!(top_level_string(b"{\"schema\": 1}", "schema"), None);
    }

    #[test]
    fn string_decoding_and_inner_positions() {
        let src = r#""a\"\u00e9\ud83d\ude00\n\u20ac€ ${x}""#;
        let root = parse(src.as_bytes()).unwrap();
        let Value::String(s) = &root.value else {
            panic!()
        };
        assert_eq!(s, "a\"é😀\n€€ ${x}");
        let idx = s.chars().position(|c| c == '$').unwrap();
        let at = position_in_string(src.as_bytes(), root.pos, idx);
        assert_eq!(at.column, src.chars().position(|c| c == '$').unwrap() + 1);
        assert_eq!(at.offset, src.find('$').unwrap());
    }
}
