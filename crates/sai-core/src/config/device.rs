//! Config of `sai-device`: the boards attached to a builder host and their ttys.
//!
//! Default path `/etc/sai/devices/conf`. Example:
//!
//! ```json
//! {
//!   "schema": "sai-device",
//!   "home": "/run/sai-device",
//!   "devices": [{
//!     "name": "esp32-1", "type": "esp32", "compatible": ["esp32", "esp32-wrover"],
//!     "description": "ESP32 WROVER kit on USB hub port 3",
//!     "ttys": [{"name": "console", "tty": "/dev/serial/by-id/usb-FTDI-if00", "rate": 115200}]
//!   }]
//! }
//! ```

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problem::{ConfigProblem, ConfigType, FieldPath, check_marker};

/// Most ttys one device may have (as in the original).
pub const MAX_TTYS: usize = 8;

/// Value of the optional `schema` marker of a device config.
pub const SCHEMA_MARKER: &str = "sai-device";

/// Configuration of `sai-device`: the devices (boards) it hands out.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Optional marker naming this config kind: `"sai-device"`.
    pub schema: Option<String>,
    /// State directory holding the waiters' queue (ticket files); default
    /// `/run/sai-device`. Every user of `sai-device` must be able to create
    /// files in it.
    pub home: Option<String>,
    /// The devices, tried in this order for each request.
    pub devices: Vec<Device>,
}

/// One device (board) and the ttys that belong to it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Unique name of this device, shown in logs ("acquired device 'dev0'" for a device named dev0).
    pub name: String,
    /// The device's own type; a request for this type matches it.
    #[serde(rename = "type")]
    pub device_type: String,
    /// Further types this device can stand in for; a request matches when
    /// its type equals `type` or any of these tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compatible: Vec<String>,
    /// Free text for humans.
    pub description: Option<String>,
    /// The device's ttys; index n is exported as `SAI_DEVICE_TTY<n>`.
    pub ttys: Vec<Tty>,
}

/// One tty (serial port) of a device.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tty {
    /// Name of the tty; exported as `SAI_DEVICE_<NAME>` (upper-cased, other
    /// characters than letters and digits become `_`).
    pub name: String,
    /// Path of the tty device, preferably a stable udev link such as
    /// `/dev/serial/by-id/...`.
    pub tty: String,
    /// Baud rate for tools talking to this tty (exported as
    /// `SAI_DEVICE_TTY<n>_RATE`; `sai-expect` uses it); default 115200.
    pub rate: Option<u32>,
    /// Whether the tty is `flock`ed while the device is in use; default true.
    #[serde(default = "default_true")]
    pub lock: bool,
    /// Whether the tty's output should be logged from the start (exported as
    /// `SAI_DEVICE_TTY<n>_MONITOR` = `1`/`0` for the tools run under
    /// `sai-device`); default true.
    #[serde(default = "default_true")]
    pub initial_monitor: bool,
}

fn default_true() -> bool {
    true
}

/// Turn a tty name into the suffix of its environment variable:
/// upper case, anything but ASCII letters and digits becomes `_`.
pub fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `s` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Suffixes of `SAI_DEVICE_*` variables that `sai-device` sets itself, which a
/// tty name must not take.
fn reserved_suffix(suffix: &str) -> bool {
    if suffix == "NAME" || suffix == "TYPE" {
        return true;
    }
    // TTY<n>, TTY<n>_RATE, TTY<n>_MONITOR
    if let Some(rest) = suffix.strip_prefix("TTY") {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() {
            let tail = &rest[digits.len()..];
            return tail.is_empty() || tail == "_RATE" || tail == "_MONITOR";
        }
    }
    false
}

impl Device {
    /// Whether a request for `devtype` may use this device.
    pub fn is_compatible(&self, devtype: &str) -> bool {
        self.device_type == devtype || self.compatible.iter().any(|c| c == devtype)
    }
}

impl DeviceConfig {
    /// The devices a request for `devtype` may use, in config order.
    pub fn compatible_devices(&self, devtype: &str) -> Vec<&Device> {
        self.devices
            .iter()
            .filter(|d| d.is_compatible(devtype))
            .collect()
    }
}

impl ConfigType for DeviceConfig {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Check what the schema cannot express. Returns every problem found,
    /// each with the path of the field it concerns; empty means valid.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = check_marker(self.schema.as_deref(), SCHEMA_MARKER);
        let root = FieldPath::root();
        let mut push = |at: FieldPath, message: String| {
            problems.push(ConfigProblem::new(at, message));
        };
        if let Some(home) = &self.home
            && home.trim().is_empty()
        {
            push(root.key("home"), "must not be empty".to_string());
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut paths: HashMap<&str, (usize, &str)> = HashMap::new();
        for (i, dev) in self.devices.iter().enumerate() {
            let at = root.key("devices").index(i);
            if dev.name.trim().is_empty() {
                push(at.key("name"), "must not be empty".to_string());
            } else if let Some(first) = names.insert(dev.name.as_str(), i) {
                let name = &dev.name;
                push(
                    at.key("name"),
                    format!("duplicate device name '{name}' (also devices[{first}])"),
                );
            }
            if dev.device_type.trim().is_empty() {
                push(at.key("type"), "must not be empty".to_string());
            }
            for (j, c) in dev.compatible.iter().enumerate() {
                if c.trim().is_empty() || c.contains(',') {
                    push(
                        at.key("compatible").index(j),
                        format!(
                            "compatible token \"{c}\" must be non-empty and hold no comma (use one list entry per token)"
                        ),
                    );
                }
            }
            if dev.ttys.is_empty() {
                push(
                    at.key("ttys"),
                    format!("device '{}' needs at least one tty", dev.name),
                );
            }
            if dev.ttys.len() > MAX_TTYS {
                push(
                    at.key("ttys"),
                    format!(
                        "device '{}' has {} ttys, at most {MAX_TTYS} are supported",
                        dev.name,
                        dev.ttys.len()
                    ),
                );
            }
            let mut suffixes = std::collections::HashSet::new();
            for (n, tty) in dev.ttys.iter().enumerate() {
                let tat = at.key("ttys").index(n);
                let suffix = env_suffix(&tty.name);
                if tty.name.is_empty() {
                    push(tat.key("name"), "must not be empty".to_string());
                } else if !suffixes.insert(suffix.clone()) {
                    push(
                        tat.key("name"),
                        format!(
                            "'{}' clashes with another tty of this device (both export SAI_DEVICE_{suffix})",
                            tty.name
                        ),
                    );
                } else if reserved_suffix(&suffix) && suffix != format!("TTY{n}") {
                    let why = "which sai-device sets itself; rename the tty";
                    let name = &tty.name;
                    push(
                        tat.key("name"),
                        format!("'{name}' would export SAI_DEVICE_{suffix}, {why}"),
                    );
                }
                if tty.tty.trim().is_empty() {
                    push(tat.key("tty"), "tty path must not be empty".to_string());
                } else if !tty.tty.starts_with('/') {
                    push(
                        tat.key("tty"),
                        format!("tty path \"{}\" must be absolute", tty.tty),
                    );
                } else if let Some((other_i, other)) =
                    paths.insert(tty.tty.as_str(), (i, dev.name.as_str()))
                    && other_i != i
                    && tty.lock
                {
                    // Devices may share a tty only when it is not locked.
                    push(
                        tat.key("tty"),
                        format!(
                            "tty path \"{}\" is also used by device '{other}' (devices[{other_i}])",
                            tty.tty
                        ),
                    );
                }
                if tty.rate == Some(0) {
                    push(tat.key("rate"), "must be positive".to_string());
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::problem::assert_mentions;
    use crate::config::{Format, parse};

    const EXAMPLE: &str = r#"
    # two boards
    {"schema": "sai-device", "home": "/run/sai-device", "devices": [
      {"name": "a", "type": "t1", "compatible": ["t2", "t3"],
       "ttys": [{"name": "console", "tty": "/dev/ttyUSB0", "rate": 115200},
                {"name": "aux", "tty": "/dev/ttyUSB1", "lock": false}]},
      {"name": "b", "type": "t2", "ttys": [{"name": "console", "tty": "/dev/ttyUSB2"}]}
    ]}"#;

    #[test]
    fn parses_and_validates() {
        let c: DeviceConfig = parse("conf", EXAMPLE.as_bytes(), Format::Json).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert!(c.devices[0].ttys[0].lock);
        assert!(!c.devices[0].ttys[1].lock);
        assert!(c.devices[0].ttys[1].initial_monitor);
        let names = |t: &str| {
            c.compatible_devices(t)
                .iter()
                .map(|d| d.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("t1"), ["a"]);
        assert_eq!(names("t2"), ["a", "b"]);
        assert_eq!(names("t3"), ["a"]);
        assert!(names("t4").is_empty());
    }

    #[test]
    fn unknown_field_is_an_error_with_position() {
        let e = parse::<DeviceConfig>(
            "conf",
            br#"{"devices": [{"name": "a", "type": "t", "ttys": [], "colour": 1}]}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn reports_every_problem() {
        let c = DeviceConfig {
            schema: Some("sai-jig".into()),
            home: None,
            devices: vec![
                Device {
                    name: "a".into(),
                    device_type: "t".into(),
                    compatible: vec!["x,y".into()],
                    description: None,
                    ttys: vec![
                        Tty {
                            name: "con".into(),
                            tty: "/dev/a".into(),
                            rate: Some(0),
                            lock: true,
                            initial_monitor: true,
                        },
                        Tty {
                            name: "CON".into(),
                            tty: "dev/b".into(),
                            rate: None,
                            lock: true,
                            initial_monitor: true,
                        },
                        Tty {
                            name: "tty0".into(),
                            tty: "/dev/c".into(),
                            rate: None,
                            lock: true,
                            initial_monitor: true,
                        },
                    ],
                },
                Device {
                    name: "a".into(),
                    device_type: "".into(),
                    compatible: vec![],
                    description: None,
                    ttys: vec![Tty {
                        name: "x".into(),
                        tty: "/dev/a".into(),
                        rate: None,
                        lock: true,
                        initial_monitor: true,
                    }],
                },
            ],
        };
        let p = assert_mentions(
            &c.validate(),
            &[
                "schema: expected",
                "compatible token",
                "ttys[0].rate: must be positive",
                "clashes",
                "must be absolute",
                "SAI_DEVICE_TTY0",
                "duplicate device name",
                "devices[1].type: must not be empty",
                "also used by device",
            ],
        );
        assert_eq!(p.len(), 9, "{p:?}");
    }

    #[test]
    fn env_helpers() {
        assert_eq!(env_suffix("uart-0.a"), "UART_0_A");
        assert!(is_env_name("MY_TTY"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(reserved_suffix("TTY3"));
        assert!(reserved_suffix("TTY3_RATE"));
        assert!(!reserved_suffix("TTYS"));
    }
}
