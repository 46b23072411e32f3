//! ANSI SGR to HTML, streaming: bytes go in as they arrive (any chunking,
//! escape sequences and UTF-8 split anywhere), whole lines come out as HTML
//! with CSS classes (never `style` attributes: the CSP forbids them).
//!
//! The parser is `vte`, which keeps its state between [`AnsiLines::feed`]
//! calls, so a colour set in one chunk applies to text in the next.

use vte::{Params, Parser, Perform};

/// Longest line kept, in characters; the rest is dropped with a marker so a
/// log without newlines cannot grow one row without bound.
pub const MAX_LINE_CHARS: usize = 4096;

/// The current graphic rendition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sgr {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    inverse: bool,
}

impl Sgr {
    fn classes(&self) -> String {
        let mut c = Vec::new();
        let (fg, bg) = if self.inverse {
            (self.bg.or(Some(0)), self.fg.or(Some(7)))
        } else {
            (self.fg, self.bg)
        };
        if let Some(f) = fg {
            c.push(format!("f{f}"));
        }
        if let Some(b) = bg {
            c.push(format!("b{b}"));
        }
        if self.bold {
            c.push("sb".into());
        }
        if self.dim {
            c.push("sd".into());
        }
        if self.italic {
            c.push("si".into());
        }
        if self.underline {
            c.push("su".into());
        }
        c.join(" ")
    }

    /// Apply one SGR parameter list (`ESC [ ... m`).
    fn apply(&mut self, params: &Params) {
        let flat: Vec<u16> = params.iter().flat_map(|p| p.iter().copied()).collect();
        if flat.is_empty() {
            *self = Sgr::default();
            return;
        }
        let mut i = 0;
        while i < flat.len() {
            let p = flat[i];
            match p {
                0 => *self = Sgr::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                7 => self.inverse = true,
                22 => {
                    self.bold = false;
                    self.dim = false
                }
                23 => self.italic = false,
                24 => self.underline = false,
                27 => self.inverse = false,
                30..=37 => self.fg = Some((p - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((p - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((p - 90 + 8) as u8),
                100..=107 => self.bg = Some((p - 100 + 8) as u8),
                38 | 48 => {
                    let colour = match flat.get(i + 1) {
                        Some(5) => {
                            let c = flat.get(i + 2).map(|&c| c.min(255) as u8);
                            i += 2;
                            c
                        }
                        Some(2) => {
                            let rgb = (
                                flat.get(i + 2).copied().unwrap_or(0),
                                flat.get(i + 3).copied().unwrap_or(0),
                                flat.get(i + 4).copied().unwrap_or(0),
                            );
                            i += 4;
                            Some(nearest_256(rgb))
                        }
                        _ => None,
                    };
                    if p == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// Nearest colour of the xterm 6x6x6 cube (index 16-231) to a 24-bit colour.
fn nearest_256((r, g, b): (u16, u16, u16)) -> u8 {
    let level = |v: u16| -> u8 {
        let v = v.min(255);
        if v < 48 {
            0
        } else if v < 115 {
            1
        } else {
            ((v - 35) / 40) as u8
        }
    };
    16 + 36 * level(r) + 6 * level(g) + level(b)
}

/// Escape text for HTML element content.
pub fn escape_into(out: &mut String, c: char) {
    match c {
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '&' => out.push_str("&amp;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// Line assembly state driven by the parser.
#[derive(Default)]
struct Builder {
    sgr: Sgr,
    /// SGR of the currently open `<span>`, if one is open.
    open: Option<Sgr>,
    html: String,
    text: String,
    chars: usize,
    truncated: bool,
    done: Vec<Line>,
}

/// One converted line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// HTML of the line (spans with classes; text escaped).
    pub html: String,
    /// The visible text, without escapes (for search).
    pub text: String,
}

impl Builder {
    fn push_char(&mut self, c: char) {
        if self.chars >= MAX_LINE_CHARS {
            self.truncated = true;
            return;
        }
        if self.open != Some(self.sgr) {
            if self.open.is_some() {
                self.html.push_str("</span>");
                self.open = None;
            }
            if self.sgr != Sgr::default() {
                self.html.push_str("<span class=\"");
                self.html.push_str(&self.sgr.classes());
                self.html.push_str("\">");
                self.open = Some(self.sgr);
            }
        }
        escape_into(&mut self.html, c);
        self.text.push(c);
        self.chars += 1;
    }

    fn end_line(&mut self) {
        if self.open.take().is_some() {
            self.html.push_str("</span>");
        }
        if self.truncated {
            self.html
                .push_str("<span class=\"trunc\"> [line truncated]</span>");
        }
        self.done.push(Line {
            html: std::mem::take(&mut self.html),
            text: std::mem::take(&mut self.text),
        });
        self.chars = 0;
        self.truncated = false;
    }
}

impl Perform for Builder {
    fn print(&mut self, c: char) {
        self.push_char(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => self.end_line(),
            b'\t' => self.push_char('\t'),
            // A carriage return before a newline ends nothing; progress
            // bars that redraw with \r keep their last state on the line.
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, _i: &[u8], _ignore: bool, action: char) {
        if action == 'm' {
            self.sgr.apply(params);
        }
    }
}

/// A streaming converter from terminal bytes to HTML lines.
#[derive(Default)]
pub struct AnsiLines {
    parser: Parser,
    state: Builder,
}

impl AnsiLines {
    /// A converter in the default rendition.
    pub fn new() -> AnsiLines {
        AnsiLines::default()
    }

    /// Feed bytes; returns the lines completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Line> {
        self.parser.advance(&mut self.state, bytes);
        std::mem::take(&mut self.state.done)
    }

    /// End of input: the unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Line> {
        if self.state.chars > 0 || self.state.truncated {
            self.state.end_line();
            self.state.done.pop()
        } else {
            None
        }
    }

    /// Whether text is pending on an unterminated line.
    pub fn has_partial(&self) -> bool {
        self.state.chars > 0
    }
}

/// The stylesheet for the classes [`AnsiLines`] emits: `f0`-`f255`,
/// `b0`-`b255` (xterm palette) and the style classes.
pub fn palette_css() -> String {
    let base: [&str; 16] = [
        "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
        "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
    ];
    let mut css = String::new();
    for i in 0..=255u16 {
        let colour = if i < 16 {
            base[i as usize].to_string()
        } else if i < 232 {
            let n = i - 16;
            let v = |x: u16| if x == 0 { 0 } else { 55 + 40 * x };
            format!("#{:02x}{:02x}{:02x}", v(n / 36), v((n / 6) % 6), v(n % 6))
        } else {
            let g = 8 + 10 * (i - 232);
            format!("#{g:02x}{g:02x}{g:02x}")
        };
        css.push_str(&format!(
            ".log .f{i}{{color:{colour}}}.log .b{i}{{background:{colour}}}\n"
        ));
    }
    css.push_str(".log .sb{font-weight:bold}.log .sd{opacity:.7}.log .si{font-style:italic}.log .su{text-decoration:underline}\n");
    css
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(bytes: &[u8]) -> Vec<String> {
        let mut a = AnsiLines::new();
        let mut out: Vec<String> = a.feed(bytes).into_iter().map(|l| l.html).collect();
        out.extend(a.finish().map(|l| l.html));
        out
    }

    #[test]
    fn colours_become_classes_and_text_is_escaped() {
        assert_eq!(
            html(b"\x1b[31mred <b>\x1b[0m plain\n"),
            vec!["<span class=\"f1\">red &lt;b&gt;</span> plain"]
        );
        assert_eq!(
            html(b"\x1b[1;38;5;208mx\x1b[39my\n"),
            vec!["<span class=\"f208 sb\">x</span><span class=\"sb\">y</span>"]
        );
        assert_eq!(
            html(b"\x1b[38;2;255;0;0mt\n"),
            vec!["<span class=\"f196\">t</span>"]
        );
    }

    #[test]
    fn state_survives_any_chunk_boundary() {
        let input = "\x1b[32mgrün\x1b[0m ok\nnext \x1b[4mline\x1b[m\n".as_bytes();
        let whole = html(input);
        for cut in 0..input.len() {
            let mut a = AnsiLines::new();
            let mut lines: Vec<String> =
                a.feed(&input[..cut]).into_iter().map(|l| l.html).collect();
            lines.extend(a.feed(&input[cut..]).into_iter().map(|l| l.html));
            assert_eq!(lines, whole, "split at byte {cut}");
        }
        assert_eq!(
            whole,
            vec![
                "<span class=\"f2\">grün</span> ok",
                "next <span class=\"su\">line</span>"
            ]
        );
    }

    #[test]
    fn colour_carries_over_to_the_next_line() {
        assert_eq!(
            html(b"\x1b[33ma\nb\x1b[0m\nc"),
            vec![
                "<span class=\"f3\">a</span>",
                "<span class=\"f3\">b</span>",
                "c"
            ]
        );
    }

    #[test]
    fn overlong_lines_are_cut_with_a_marker() {
        let long = vec![b'x'; MAX_LINE_CHARS + 10];
        let lines = html(&long);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("[line truncated]</span>"));
        assert_eq!(lines[0].matches('x').count(), MAX_LINE_CHARS);
    }
}
