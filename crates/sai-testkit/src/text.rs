//! Line arithmetic on a log's bytes, the reference that the log store's
//! line index is checked against.

/// The 0-based line that byte `offset` of `all` is on: the newlines before it.
pub fn line_of(all: &[u8], offset: usize) -> usize {
    all[..offset].iter().filter(|&&b| b == b'\n').count()
}

/// Where 0-based line `line` of `all` starts; `all.len()` past the last one.
pub fn start_of_line(all: &[u8], line: usize) -> usize {
    if line == 0 {
        return 0;
    }
    all.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(line - 1)
        .map_or(all.len(), |(i, _)| i + 1)
}
