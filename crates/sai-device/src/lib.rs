//! `sai-device`: hand one compatible device (board) to a program, exclusively.
//!
//! `sai-device <type> [ENVNAME=<ttyidx>]... [--timeout S] -- <program> [args...]`
//! waits until it holds a `flock` on every lockable tty of one device whose
//! `type` or `compatible` list matches `<type>`, exports the tty paths, runs
//! the program and exits with its exit code. Locks are held by the kernel on
//! sai-device's own open file descriptors, so however sai-device ends (even
//! SIGKILL) the device is free at once; the program is started with a
//! parent-death signal (SIGTERM) so it does not outlive a killed sai-device.
//! Waiters are served in arrival order (see [`queue`]).
//!
//! Exit codes: see [`exit`].
#![cfg(unix)]

pub mod logproxy;
pub mod queue;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sai_core::config::device::{Device, DeviceConfig, env_suffix, is_env_name};

use logproxy::{Channel, Fallback, LogSink};

/// Exit codes of `sai-device` (besides the program's own).
pub mod exit {
    /// No device could be acquired within `--timeout`.
    pub const TIMEOUT: i32 = 124;
    /// Usage, config or setup error of sai-device itself.
    pub const CONFIG: i32 = 125;
    /// The program exists but cannot be executed.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The program was not found.
    pub const NOT_FOUND: i32 = 127;
    /// Added to the signal number when the program was killed by a signal.
    pub const SIGNALLED_BASE: i32 = 128;
}

/// Text for `--help` describing the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  <n>      the program's own exit code
  124      timed out waiting for a device (--timeout)
  125      usage, config or setup error of sai-device
  126      program found but not executable
  127      program not found
  128+<s>  program killed by signal <s>";

/// Default state directory (the queue) when neither the config's `home` nor
/// `--state-dir` give one.
pub const DEFAULT_STATE_DIR: &str = "/run/sai-device";

/// How often waiters retry.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Environment variable marking the internal exec shim (see [`shim_main`]).
pub const SHIM_ENV: &str = "SAI_DEVICE_SHIM_PARENT";

/// What went wrong; every variant maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage, bad config or setup failure.
    #[error("{0}")]
    Config(String),
    /// Waited longer than allowed.
    #[error("timed out after {waited:.1}s waiting for a device compatible with '{devtype}'")]
    Timeout {
        /// Requested type.
        devtype: String,
        /// Seconds waited.
        waited: f64,
    },
    /// The program is not executable.
    #[error("{0}: not executable")]
    NotExecutable(String),
    /// The program does not exist.
    #[error("{0}: program not found")]
    NotFound(String),
}

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Timeout { .. } => exit::TIMEOUT,
            Error::NotExecutable(_) => exit::NOT_EXECUTABLE,
            Error::NotFound(_) => exit::NOT_FOUND,
        }
    }
}

/// One request: which device type, which aliases, which program.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Requested device type.
    pub devtype: String,
    /// `ENVNAME=<ttyidx>` aliases.
    pub aliases: Vec<Alias>,
    /// Program and its arguments.
    pub command: Vec<String>,
    /// Give up waiting after this long; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Directory holding the queue; `None` uses the config's `home`, else
    /// [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
}

/// An `ENVNAME=<ttyidx>` alias: variable name and tty index.
pub type Alias = (String, usize);

/// Parse the command line as `C` (the CLIs of `sai-device` and `sai-expect`).
/// `--help` and `--version` print and exit 0; a usage error is printed and
/// exits `usage_exit`, the tool's own code, instead of clap's 2, which could
/// pass for the status of the program or test it runs.
pub fn parse_args_or_exit<C: clap::Parser>(usage_exit: i32) -> C {
    C::try_parse().unwrap_or_else(|e| {
        let code = if e.use_stderr() { usage_exit } else { 0 };
        let _ = e.print();
        std::process::exit(code);
    })
}

/// Split the words after the device type into aliases and the command:
/// leading `NAME=<digits>` words are aliases, an optional `--` ends them.
pub fn split_command(words: &[String]) -> Result<(Vec<Alias>, Vec<String>), Error> {
    let mut aliases = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w == "--" {
            i += 1;
            break;
        }
        match w.split_once('=') {
            Some((name, idx)) if is_env_name(name) && idx.chars().all(|c| c.is_ascii_digit()) => {
                let idx = idx.parse::<usize>().map_err(|_| {
                    Error::Config(format!("alias {w}: tty index must be a small number"))
                })?;
                aliases.push((name.to_string(), idx));
                i += 1;
            }
            _ => break,
        }
    }
    let command = words[i..].to_vec();
    if command.is_empty() {
        return Err(Error::Config(
            "no program given: sai-device <type> [ENVNAME=<ttyidx>]... -- <program> [args...]"
                .into(),
        ));
    }
    Ok((aliases, command))
}

/// Find `program` the way `execvp` would, without running it.
pub fn resolve_program(program: &str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let check = |p: &Path| -> Option<Result<PathBuf, Error>> {
        let meta = std::fs::metadata(p).ok()?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            Some(Ok(p.to_path_buf()))
        } else {
            Some(Err(Error::NotExecutable(p.display().to_string())))
        }
    };
    if program.contains('/') {
        return check(Path::new(program))
            .unwrap_or_else(|| Err(Error::NotFound(program.to_string())));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut first_err = None;
    for dir in std::env::split_paths(&path) {
        match check(&dir.join(program)) {
            Some(Ok(p)) => return Ok(p),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    Err(first_err.unwrap_or_else(|| Error::NotFound(program.to_string())))
}

/// A device whose lockable ttys we hold.
#[derive(Debug)]
pub struct Held<'a> {
    /// The device.
    pub device: &'a Device,
    _locks: Vec<File>,
}

/// Why a device could not be taken just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Someone else holds one of its ttys.
    Busy,
    /// A tty cannot be opened or locked (missing, no permission...).
    Problem(String),
}

/// Try to take every lockable tty of `device` at once, without blocking.
/// Either all are locked or none is.
pub fn try_acquire(device: &Device) -> Option<Held<'_>> {
    try_acquire_why(device).ok()
}

/// [`try_acquire`], telling why it failed.
pub fn try_acquire_why(device: &Device) -> Result<Held<'_>, Unavailable> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut locks = Vec::new();
    for tty in device.ttys.iter().filter(|t| t.lock) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&tty.tty)
            .map_err(|e| Unavailable::Problem(format!("cannot open {}: {e}", tty.tty)))?;
        match file.try_lock() {
            Ok(()) => locks.push(file),
            Err(std::fs::TryLockError::WouldBlock) => return Err(Unavailable::Busy),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Unavailable::Problem(format!(
                    "cannot lock {}: {e}",
                    tty.tty
                )));
            }
        }
    }
    Ok(Held {
        device,
        _locks: locks,
    })
}

/// The environment exported to the program for `device`.
pub fn device_env(device: &Device, aliases: &[Alias]) -> Vec<(String, String)> {
    let mut env = vec![
        ("SAI_DEVICE_NAME".to_string(), device.name.clone()),
        ("SAI_DEVICE_TYPE".to_string(), device.device_type.clone()),
    ];
    for tty in &device.ttys {
        env.push((
            format!("SAI_DEVICE_{}", env_suffix(&tty.name)),
            tty.tty.clone(),
        ));
    }
    for (n, tty) in device.ttys.iter().enumerate() {
        env.push((format!("SAI_DEVICE_TTY{n}"), tty.tty.clone()));
        if let Some(rate) = tty.rate {
            env.push((format!("SAI_DEVICE_TTY{n}_RATE"), rate.to_string()));
        }
        env.push((
            format!("SAI_DEVICE_TTY{n}_MONITOR"),
            if tty.initial_monitor { "1" } else { "0" }.to_string(),
        ));
    }
    for (name, idx) in aliases {
        if let Some(tty) = device.ttys.get(*idx) {
            env.push((name.clone(), tty.tty.clone()));
        }
    }
    env
}

/// Wait (fairly) for a device compatible with `req.devtype`.
pub fn acquire<'a>(
    config: &'a DeviceConfig,
    req: &Request,
    notices: &mut LogSink,
) -> Result<Held<'a>, Error> {
    let candidates = config.compatible_devices(&req.devtype);
    if candidates.is_empty() {
        let mut known: Vec<&str> = config
            .devices
            .iter()
            .flat_map(|d| {
                std::iter::once(d.device_type.as_str())
                    .chain(d.compatible.iter().map(String::as_str))
            })
            .collect();
        known.sort();
        known.dedup();
        return Err(Error::Config(format!(
            "no device in the config is compatible with '{}' (known types: {})",
            req.devtype,
            known.join(", ")
        )));
    }
    for (name, idx) in &req.aliases {
        if let Some(d) = candidates.iter().find(|d| d.ttys.len() <= *idx) {
            return Err(Error::Config(format!(
                "alias {name}={idx}: device '{}' has only {} tty(s)",
                d.name,
                d.ttys.len()
            )));
        }
    }
    let state_dir = req
        .state_dir
        .clone()
        .or_else(|| config.home.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));

    let start = Instant::now();
    let deadline = req.timeout.map(|t| start + t);
    let ticket = queue::Ticket::take(&state_dir, &req.devtype).map_err(|e| {
        Error::Config(format!(
            "cannot join the device queue in {}: {e} (set \"home\" in the config or --state-dir)",
            state_dir.display()
        ))
    })?;
    let mut reported = std::collections::HashSet::new();
    notices.line(&format!(
        "sai-device: queueing for device compatible with '{}'",
        req.devtype
    ));
    loop {
        let ahead = ticket
            .waiters_ahead()
            .map_err(|e| Error::Config(format!("cannot read the device queue: {e}")))?;
        for dev in &candidates {
            if ahead.iter().any(|w| dev.is_compatible(&w.devtype)) {
                continue; // an earlier waiter could use it: its turn first
            }
            let got = match try_acquire_why(dev) {
                Ok(held) => Some(held),
                Err(Unavailable::Busy) => None,
                Err(Unavailable::Problem(why)) => {
                    // Say it once: a missing tty or a permission problem is
                    // an infrastructure issue worth seeing in the log.
                    if reported.insert(why.clone()) {
                        notices.line(&format!(
                            "sai-device: device '{}' is unavailable: {why}",
                            dev.name
                        ));
                    }
                    None
                }
            };
            if let Some(held) = got {
                drop(ticket);
                notices.line(&format!(
                    "sai-device: acquired device '{}' ({}) after {:.1}s",
                    dev.name,
                    dev.device_type,
                    start.elapsed().as_secs_f64()
                ));
                return Ok(held);
            }
        }
        let now = Instant::now();
        if let Some(d) = deadline
            && now >= d
        {
            return Err(Error::Timeout {
                devtype: req.devtype.clone(),
                waited: start.elapsed().as_secs_f64(),
            });
        }
        let nap = deadline.map_or(POLL_INTERVAL, |d| POLL_INTERVAL.min(d - now));
        std::thread::sleep(nap);
    }
}

/// Signals forwarded from sai-device to the program.
fn forwarded_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

/// Run `held`'s program: spawn it through the exec shim (which sets the
/// parent-death signal), forward signals, and return its exit code.
pub fn run_program(held: &Held<'_>, req: &Request, notices: &mut LogSink) -> Result<i32, Error> {
    use nix::sys::signal::{SigSet, Signal, kill};
    use nix::unistd::Pid;

    // The signals (and SIGCHLD) stay blocked and are taken with sigwait(2),
    // which every Unix has (Linux's signalfd would do the same).
    let mut mask = forwarded_signals();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| Error::Config(format!("cannot block signals: {e}")))?;

    // On Linux /proc/self/exe still works when the binary was replaced or
    // deleted (an upgrade during a long job).
    #[cfg(target_os = "linux")]
    let exe = PathBuf::from("/proc/self/exe");
    #[cfg(not(target_os = "linux"))]
    let exe = std::env::current_exe()
        .map_err(|e| Error::Config(format!("cannot find sai-device's own binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&req.command)
        .env(SHIM_ENV, std::process::id().to_string())
        .envs(device_env(held.device, &req.aliases));
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start {}: {e}", req.command[0])))?;
    let pid = Pid::from_raw(child.id() as i32);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::Config(format!("cannot wait for the program: {e}")))?
        {
            break status;
        }
        match mask.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = kill(pid, sig);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Config(format!("sigwait: {e}"))),
        }
    };
    let _ = SigSet::empty().thread_set_mask();
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => exit::SIGNALLED_BASE + s,
        _ => 1,
    };
    notices.line(&format!(
        "sai-device: released device '{}' (program exited with {code})",
        held.device.name
    ));
    Ok(code)
}

/// The whole of `sai-device` after argument parsing: wait for a device, run
/// the program, return the exit code to use.
pub fn run(config: &DeviceConfig, req: &Request) -> Result<i32, Error> {
    resolve_program(&req.command[0])?;
    let mut notices = LogSink::from_env(Channel::Notices, Fallback::Stderr);
    let held = acquire(config, req, &mut notices)?;
    run_program(&held, req, &mut notices)
}

/// The exec shim: run in the child (marked by [`SHIM_ENV`]), arranges to get
/// SIGTERM when sai-device dies, restores the signal mask, and execs the
/// program. Returns only on failure, with the exit code to use.
pub fn shim_main(parent: &str, argv: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(match argv.first() {
        Some(p) => p,
        None => return exit::CONFIG,
    });
    // Remove our marker so the program does not see it.
    cmd.args(&argv[1..]).env_remove(SHIM_ENV);
    // Elsewhere the program outlives a killed sai-device (FreeBSD's
    // procctl(PROC_PDEATHSIG_CTL) could do the same; not wired up).
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if nix::unistd::getppid().as_raw().to_string() != parent {
        // sai-device died before the parent-death signal was armed.
        return 1;
    }
    let mut all = forwarded_signals();
    all.add(nix::sys::signal::Signal::SIGCHLD);
    let _ = all.thread_unblock();
    let err = cmd.exec();
    let name = argv[0].to_string_lossy();
    eprintln!("sai-device: cannot run {name}: {err}");
    match err.kind() {
        std::io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::NOT_EXECUTABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_aliases_from_command() {
        let (a, c) = split_command(&w(&["CONSOLE=0", "AUX=1", "--", "prog", "X=1"])).unwrap();
        assert_eq!(a, [("CONSOLE".to_string(), 0), ("AUX".to_string(), 1)]);
        assert_eq!(c, w(&["prog", "X=1"]));
        let (a, c) = split_command(&w(&["prog", "-x"])).unwrap();
        assert!(a.is_empty());
        assert_eq!(c, w(&["prog", "-x"]));
        assert!(split_command(&w(&["A=0", "--"])).is_err());
        assert!(split_command(&w(&[])).is_err());
    }

    #[test]
    fn resolves_programs() {
        assert!(resolve_program("sh").is_ok());
        assert!(matches!(
            resolve_program("no-such-program-xyz"),
            Err(Error::NotFound(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notexec");
        std::fs::write(&f, "x").unwrap();
        assert!(matches!(
            resolve_program(f.to_str().unwrap()),
            Err(Error::NotExecutable(_))
        ));
    }

    #[test]
    fn env_for_a_device() {
        let text = br#"{"devices":[{"name":"b1","type":"t","ttys":[
            {"name":"console","tty":"/dev/a","rate":9600},
            {"name":"aux-port","tty":"/dev/b","initial_monitor":false}]}]}"#;
        let c: DeviceConfig =
            sai_core::config::parse("c", text, sai_core::config::Format::Json).unwrap();
        let env = device_env(&c.devices[0], &[("MY".into(), 1)]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SAI_DEVICE_TTY0"), Some("/dev/a"));
        assert_eq!(get("SAI_DEVICE_TTY1"), Some("/dev/b"));
        assert_eq!(get("SAI_DEVICE_CONSOLE"), Some("/dev/a"));
        assert_eq!(get("SAI_DEVICE_AUX_PORT"), Some("/dev/b"));
        assert_eq!(get("SAI_DEVICE_TTY0_RATE"), Some("9600"));
        assert_eq!(get("SAI_DEVICE_TTY1_MONITOR"), Some("0"));
        assert_eq!(get("MY"), Some("/dev/b"));
        assert_eq!(get("SAI_DEVICE_NAME"), Some("b1"));
    }
}
