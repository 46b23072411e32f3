//! What `sai up` prints on stdout. Every message is a `sai up: ...` line.
//! On a terminal, the running events also get a live block of progress
//! lines (one per event) under the messages, redrawn in place; when stdout
//! is not a terminal there are no ANSI codes at all and progress comes as
//! plain lines (see [`crate::up::watch`]).

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

struct Output {
    tty: bool,
    /// The progress lines currently drawn (terminal only).
    block: Mutex<Vec<String>>,
}

fn output() -> &'static Output {
    static OUT: OnceLock<Output> = OnceLock::new();
    OUT.get_or_init(|| Output {
        tty: std::io::stdout().is_terminal(),
        block: Mutex::new(Vec::new()),
    })
}

/// Whether stdout is a terminal (live progress block) or not (plain lines).
pub fn is_terminal() -> bool {
    output().tty
}

/// Print one message line, above the progress block.
pub fn say(line: &str) {
    let o = output();
    let block = o.block.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = std::io::stdout().lock();
    if o.tty {
        clear(&mut out, block.len());
    }
    let _ = writeln!(out, "sai up: {line}");
    if o.tty {
        draw(&mut out, &block);
    }
    let _ = out.flush();
}

/// Replace the progress block (terminal only; a no-op otherwise).
pub fn progress(lines: Vec<String>) {
    let o = output();
    if !o.tty {
        return;
    }
    let mut block = o.block.lock().unwrap_or_else(|e| e.into_inner());
    if *block == lines {
        return;
    }
    let mut out = std::io::stdout().lock();
    clear(&mut out, block.len());
    draw(&mut out, &lines);
    let _ = out.flush();
    *block = lines;
}

/// Move up over `n` drawn lines, erasing them.
fn clear(out: &mut impl Write, n: usize) {
    for _ in 0..n {
        let _ = write!(out, "\x1b[1A\x1b[2K");
    }
    let _ = write!(out, "\r");
}

fn draw(out: &mut impl Write, lines: &[String]) {
    for l in lines {
        let _ = writeln!(out, "  {l}");
    }
}
