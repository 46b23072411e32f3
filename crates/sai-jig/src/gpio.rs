//! GPIO backends: the real one (Linux GPIO character device through
//! gpiocdev) and a simulated chip that records every line change.

#[cfg(target_os = "linux")]
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use sai_core::config::jig::JigConfig;

/// One GPIO line: chip (as written in the config) and offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LineId {
    /// Chip name or path, as configured.
    pub chip: String,
    /// Line offset on the chip.
    pub offset: u32,
}

/// A GPIO operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The chip could not be opened or its lines requested.
    #[error("cannot request lines {offsets:?} of GPIO chip {path}: {message}")]
    Request {
        /// Chip path.
        path: String,
        /// Offsets asked for.
        offsets: Vec<u32>,
        /// Why.
        message: String,
    },
    /// This platform has no GPIO character devices (Linux only).
    #[error("GPIO character devices exist only on Linux; use --simulate elsewhere")]
    Unsupported,
    /// A line is not one this backend manages.
    #[error("line {chip}:{offset} was not requested at start")]
    UnknownLine {
        /// Chip.
        chip: String,
        /// Offset.
        offset: u32,
    },
    /// Setting a value failed.
    #[error("cannot set line {chip}:{offset}: {message}")]
    Set {
        /// Chip.
        chip: String,
        /// Offset.
        offset: u32,
        /// Why.
        message: String,
    },
}

/// Something that can drive output lines.
pub trait GpioBackend: Send + Sync + 'static {
    /// Drive `line` to `value` (true = 1).
    fn set(&self, line: &LineId, value: bool) -> Result<(), GpioError>;
}

/// Path of a configured chip: a bare name like `gpiochip0` lives in `/dev`.
pub fn chip_path(chip: &str) -> PathBuf {
    if chip.contains('/') {
        PathBuf::from(chip)
    } else {
        Path::new("/dev").join(chip)
    }
}

/// The lines of the config grouped by chip, with their safe values.
pub fn lines_by_chip(config: &JigConfig) -> Vec<(String, Vec<(u32, bool)>)> {
    let mut chips: Vec<(String, Vec<(u32, bool)>)> = Vec::new();
    for g in config.targets.iter().flat_map(|t| &t.gpios) {
        let entry = match chips.iter_mut().position(|(c, _)| *c == g.chip) {
            Some(i) => &mut chips[i].1,
            None => {
                chips.push((g.chip.clone(), Vec::new()));
                &mut chips.last_mut().expect("just pushed").1
            }
        };
        entry.push((g.offset, g.safe == 1));
    }
    chips
}

/// The real backend: every configured line is requested as an output (at
/// its safe value) when the backend is opened and held until it is dropped.
/// The GPIO character device is Linux's; elsewhere [`CdevBackend::open`]
/// fails with [`GpioError::Unsupported`].
#[cfg(target_os = "linux")]
pub struct CdevBackend {
    requests: HashMap<String, gpiocdev::Request>,
}

/// The real backend (Linux only; see the Linux definition).
#[cfg(not(target_os = "linux"))]
pub struct CdevBackend {
    _private: (),
}

#[cfg(not(target_os = "linux"))]
impl CdevBackend {
    /// Always fails: GPIO character devices exist only on Linux.
    pub fn open(_config: &JigConfig) -> Result<CdevBackend, GpioError> {
        Err(GpioError::Unsupported)
    }
}

#[cfg(not(target_os = "linux"))]
impl GpioBackend for CdevBackend {
    fn set(&self, _line: &LineId, _v: bool) -> Result<(), GpioError> {
        Err(GpioError::Unsupported)
    }
}

#[cfg(target_os = "linux")]
impl CdevBackend {
    /// Request every line of `config` as an output at its safe value.
    pub fn open(config: &JigConfig) -> Result<CdevBackend, GpioError> {
        let mut requests = HashMap::new();
        for (chip, lines) in lines_by_chip(config) {
            let path = chip_path(&chip);
            let mut builder = gpiocdev::Request::builder();
            builder.on_chip(&path).with_consumer("sai-jig");
            for (offset, safe) in &lines {
                builder.with_line(*offset).as_output(value(*safe));
            }
            let req = builder.request().map_err(|e| GpioError::Request {
                path: path.display().to_string(),
                offsets: lines.iter().map(|l| l.0).collect(),
                message: e.to_string(),
            })?;
            requests.insert(chip, req);
        }
        Ok(CdevBackend { requests })
    }
}

#[cfg(target_os = "linux")]
fn value(v: bool) -> gpiocdev::line::Value {
    if v {
        gpiocdev::line::Value::Active
    } else {
        gpiocdev::line::Value::Inactive
    }
}

#[cfg(target_os = "linux")]
impl GpioBackend for CdevBackend {
    fn set(&self, line: &LineId, v: bool) -> Result<(), GpioError> {
        let req = self
            .requests
            .get(&line.chip)
            .ok_or_else(|| GpioError::UnknownLine {
                chip: line.chip.clone(),
                offset: line.offset,
            })?;
        req.set_value(line.offset, value(v))
            .map_err(|e| GpioError::Set {
                chip: line.chip.clone(),
                offset: line.offset,
                message: e.to_string(),
            })
    }
}

/// One recorded line change of the simulated chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// When it happened.
    pub at: Instant,
    /// Chip as configured.
    pub chip: String,
    /// Line offset.
    pub offset: u32,
    /// New value.
    pub value: bool,
}

/// A simulated chip: accepts every line and records each change with its
/// time, optionally appending it as a JSON line
/// (`{"t_us":..,"chip":..,"offset":..,"value":0|1}`, `t_us` counted from the
/// chip's creation) to a file.
pub struct SimChip {
    start: Instant,
    changes: Mutex<Vec<Change>>,
    file: Option<Mutex<std::fs::File>>,
}

impl Default for SimChip {
    fn default() -> Self {
        SimChip::new()
    }
}

impl SimChip {
    /// A chip recording in memory only.
    pub fn new() -> SimChip {
        SimChip {
            start: Instant::now(),
            changes: Mutex::new(Vec::new()),
            file: None,
        }
    }

    /// A chip also appending every change to `path`.
    pub fn with_record_file(path: &Path) -> std::io::Result<SimChip> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(SimChip {
            file: Some(Mutex::new(f)),
            ..SimChip::new()
        })
    }

    /// Every change so far, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().expect("sim chip lock").clone()
    }

    /// When the chip was created.
    pub fn start(&self) -> Instant {
        self.start
    }
}

impl GpioBackend for SimChip {
    fn set(&self, line: &LineId, value: bool) -> Result<(), GpioError> {
        let at = Instant::now();
        self.changes.lock().expect("sim chip lock").push(Change {
            at,
            chip: line.chip.clone(),
            offset: line.offset,
            value,
        });
        if let Some(f) = &self.file {
            let rec = serde_json::json!({
                "t_us": at.duration_since(self.start).as_micros() as u64,
                "chip": line.chip,
                "offset": line.offset,
                "value": u8::from(value),
            });
            let mut f = f.lock().expect("sim chip file lock");
            let _ = writeln!(f, "{rec}");
            let _ = f.flush();
        }
        Ok(())
    }
}
