//! Opening device ttys and keeping them open across board resets.
//!
//! Why not tokio-serial: serialport (which tokio-serial opens ports with)
//! takes its own non-blocking `flock` on the port, exclusive or shared. While
//! `sai-device` holds the device, that lock can never be had, so tokio-serial
//! cannot open a tty handed out by `sai-device` (the test
//! `tokio_serial_cannot_open_a_tty_locked_by_sai_device` shows it). The tty
//! is therefore opened here directly, set to raw 8N1 at the wanted rate with
//! termios, and driven through tokio's non-blocking pipe types (which take
//! any pollable owned descriptor, so no `unsafe` registration is needed).
//!
//! A tty *vanishes* when a read gives EOF or an error (EIO once a pty master
//! or USB adapter goes away), or when its path no longer leads to the inode
//! that was opened (udev removed or re-pointed the link). It is then reopened
//! as soon as the path works again, if that happens within the reopen
//! window; otherwise it is gone for good (an infrastructure error).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// How often the path is checked while the tty is open.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// How often a vanished tty is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// What a tty task reports.
#[derive(Debug)]
pub enum TtyEvent {
    /// Bytes received on tty `.0`.
    Data(usize, Vec<u8>),
    /// The tty vanished; it will be retried.
    Vanished(usize, String),
    /// The tty is back.
    Reopened(usize),
    /// The tty stayed away longer than the window, or cannot be used.
    Gone(usize, String),
}

/// Map a numeric rate to a termios speed. Rates above 230400 have
/// constants only on Linux.
pub fn baud_rate(rate: u32) -> Option<nix::sys::termios::BaudRate> {
    use nix::sys::termios::BaudRate::*;
    Some(match rate {
        1200 => B1200,
        2400 => B2400,
        4800 => B4800,
        9600 => B9600,
        19200 => B19200,
        38400 => B38400,
        57600 => B57600,
        115200 => B115200,
        230400 => B230400,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        460800 => B460800,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        500000 => B500000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        576000 => B576000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        921600 => B921600,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        1000000 => B1000000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        1152000 => B1152000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        1500000 => B1500000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        2000000 => B2000000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        2500000 => B2500000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        3000000 => B3000000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        3500000 => B3500000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        4000000 => B4000000,
        _ => return None,
    })
}

/// Open `path` as a raw 8N1 tty at `rate`. Something that is not a tty
/// (a FIFO in a test rig, say) is used as it is.
pub fn open_tty(path: &std::path::Path, rate: u32) -> std::io::Result<File> {
    use nix::sys::termios::{self, ControlFlags, SetArg};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)?;
    match termios::tcgetattr(&file) {
        Ok(mut t) => {
            termios::cfmakeraw(&mut t);
            t.control_flags |= ControlFlags::CREAD | ControlFlags::CLOCAL;
            t.control_flags &= !(ControlFlags::CSTOPB | ControlFlags::PARENB);
            if let Some(speed) = baud_rate(rate) {
                termios::cfsetspeed(&mut t, speed).map_err(std::io::Error::from)?;
            }
            termios::tcsetattr(&file, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
        }
        Err(nix::errno::Errno::ENOTTY) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(file)
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, u64) {
    (meta.dev(), meta.ino(), meta.rdev())
}

/// An open tty, registered with the runtime.
pub struct Port {
    rx: pipe::Receiver,
    tx: pipe::Sender,
    identity: (u64, u64, u64),
}

/// One tty: its path, rate and (while open) its descriptor.
pub struct TtyTask {
    /// Tty index (0 or 1).
    pub index: usize,
    /// Path to (re)open.
    pub path: PathBuf,
    /// Baud rate.
    pub rate: u32,
    /// How long a vanished tty may stay away.
    pub reopen_window: Duration,
}

enum Stop {
    Vanished(String),
    Closed,
}

impl TtyTask {
    /// Open the tty now; failure is an infrastructure error for the caller.
    pub fn open(&self) -> std::io::Result<Port> {
        let f = open_tty(&self.path, self.rate)?;
        let identity = identity(&f.metadata()?);
        let tx = pipe::Sender::from_file_unchecked(f.try_clone()?)?;
        let rx = pipe::Receiver::from_file_unchecked(f)?;
        Ok(Port { rx, tx, identity })
    }

    /// Run until the event receiver is dropped: report data, accept text to
    /// send on `writes`, survive vanishing within the window.
    pub async fn run(
        self,
        first: Port,
        events: mpsc::UnboundedSender<TtyEvent>,
        mut writes: mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let mut pending: VecDeque<u8> = VecDeque::new();
        let mut fd = first;
        loop {
            match self.pump(&mut fd, &events, &mut writes, &mut pending).await {
                Stop::Closed => return,
                Stop::Vanished(why) => {
                    drop(fd);
                    if events.send(TtyEvent::Vanished(self.index, why)).is_err() {
                        return;
                    }
                }
            }
            let since = Instant::now();
            fd = loop {
                tokio::time::sleep(RETRY_INTERVAL).await;
                if events.is_closed() {
                    return;
                }
                // Keep accepting sends meanwhile; they go out once reopened.
                while let Ok(w) = writes.try_recv() {
                    pending.extend(w);
                }
                match self.open() {
                    Ok(fd) => break fd,
                    Err(e) if since.elapsed() >= self.reopen_window => {
                        let _ = events.send(TtyEvent::Gone(
                            self.index,
                            format!(
                                "{} did not come back within {:.1}s: {e}",
                                self.path.display(),
                                self.reopen_window.as_secs_f64()
                            ),
                        ));
                        return;
                    }
                    Err(_) => {}
                }
            };
            if events.send(TtyEvent::Reopened(self.index)).is_err() {
                return;
            }
        }
    }

    async fn pump(
        &self,
        port: &mut Port,
        events: &mpsc::UnboundedSender<TtyEvent>,
        writes: &mut mpsc::UnboundedReceiver<Vec<u8>>,
        pending: &mut VecDeque<u8>,
    ) -> Stop {
        let mut buf = vec![0u8; 4096];
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        let mut writes_open = true;
        loop {
            let chunk: Vec<u8> = pending.iter().take(4096).copied().collect();
            tokio::select! {
                r = port.rx.read(&mut buf) => match r {
                    Ok(0) => return Stop::Vanished("end of file".into()),
                    Ok(n) => {
                        if events.send(TtyEvent::Data(self.index, buf[..n].to_vec())).is_err() {
                            return Stop::Closed;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Stop::Vanished(format!("read: {e}")),
                },
                r = port.tx.write(&chunk), if !chunk.is_empty() => match r {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Stop::Vanished(format!("write: {e}")),
                },
                w = writes.recv(), if writes_open => match w {
                    Some(w) => pending.extend(w),
                    None => writes_open = false,
                },
                _ = check.tick() => {
                    if events.is_closed() {
                        return Stop::Closed;
                    }
                    match std::fs::metadata(&self.path) {
                        Ok(m) if identity(&m) == port.identity => {}
                        Ok(_) => {
                            return Stop::Vanished(format!(
                                "{} now leads to another device",
                                self.path.display()
                            ));
                        }
                        Err(e) => return Stop::Vanished(format!("{}: {e}", self.path.display())),
                    }
                }
            }
        }
    }
}
