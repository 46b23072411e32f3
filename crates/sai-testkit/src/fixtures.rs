//! Test data shared by the integration tests of several crates: the hook
//! key of the test servers, platform names, a small saifile, and the real
//! saifiles under `../shared/testdata` (beside the repository).

use std::path::PathBuf;

/// The notification (hook) key the integration tests' servers share with
/// their hook requests.
pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub const LINUX: &str = "linux-debian-12/x86_64-amd/gcc";
pub const ESP32: &str = "freertos-espidf/xl6-esp32/gcc";

/// Two platforms x two configurations = 4 tasks.
pub const SMALL: &[u8] = br#"{
  "schema": "sai-1",
  # a comment, as real saifiles have
  "platforms": {
    "linux-debian-12/x86_64-amd/gcc": { "build": "echo one\necho two" },
    "freertos-espidf/xl6-esp32/gcc": { "build": "idf.py build" }
  },
  "configurations": {
    "default": { "cmake": "" },
    "noopt": { "cmake": "-DX=1" }
  }
}
"#;

/// The shared test data: `$SAI_TESTDATA`, or `../shared/testdata` beside
/// the repository.
pub fn testdata() -> PathBuf {
    match std::env::var_os("SAI_TESTDATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"),
    }
}

/// The libwebsockets saifile of 2021-08-17: 548 tasks.
pub fn lws_saifile() -> Vec<u8> {
    let path = testdata().join("saifiles/libwebsockets/20210817-e49a5f3698.sai.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `lines` log lines of 100 bytes each: `line <n>` (1-based, right-aligned
/// in 9 columns), padded with `x`, and a newline.
pub fn numbered_log(lines: usize) -> Vec<u8> {
    let mut log = Vec::with_capacity(lines * 100);
    for i in 0..lines {
        let head = format!("line {:>9} ", i + 1);
        log.extend_from_slice(head.as_bytes());
        log.extend(std::iter::repeat_n(b'x', 99 - head.len()));
        log.push(b'\n');
    }
    log
}

/// `len` pseudo-random bytes from `seed` (xorshift64), which zstd cannot
/// shrink: logs that take their full size in a log store or a WAL.
pub fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
