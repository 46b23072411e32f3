//! Log chunks: bytes on one log channel of the current task.
//!
//! Channels (docs/architecture.md): 1 stdout, 2 stderr, 3 Sai notices,
//! 4 device tty0, 5 device tty1.

use bytes::Bytes;

/// Channel of a step's stdout.
pub const CH_STDOUT: u8 = 1;
/// Channel of a step's stderr.
pub const CH_STDERR: u8 = 2;
/// Channel of Sai notices (`>saib>` lines and `SAI_LOGPROXY`).
pub const CH_NOTICE: u8 = 3;
/// Channel of device tty0 (`SAI_LOGPROXY_TTY0`).
pub const CH_TTY0: u8 = 4;
/// Channel of device tty1 (`SAI_LOGPROXY_TTY1`).
pub const CH_TTY1: u8 = 5;

/// Bytes that belong on one log channel, in order of arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Log channel (1..=5).
    pub channel: u8,
    /// Raw bytes, not necessarily whole lines or valid UTF-8.
    pub bytes: Bytes,
}

impl LogChunk {
    /// A builder notice on channel 3: `>saib> <text>\n`.
    pub fn notice(text: impl AsRef<str>) -> Self {
        Self {
            channel: CH_NOTICE,
            bytes: Bytes::from(format!(">saib> {}\n", text.as_ref())),
        }
    }
}

/// The sending half used by producers of log chunks (bounded: back-pressure).
pub type LogSender = tokio::sync::mpsc::Sender<LogChunk>;
