//! Windows: batch scripts run by `cmd`, job objects, no user switching.

use std::path::Path;
use std::process::Stdio;

use process_wrap::tokio::{ChildWrapper, CommandWrap, JobObject, KillOnDrop};
use tokio::io::AsyncRead;

use super::StepError;
use super::{ExitKind, StepCommand, script};

/// Windows variables `cmd` and most tools need; copied from the builder's
/// own environment unless the step's environment sets them.
const SYSTEM_VARS: &[&str] = &[
    "SystemRoot",
    "SystemDrive",
    "windir",
    "ComSpec",
    "PATHEXT",
    "TEMP",
    "TMP",
];

/// A step user; switching users is only supported on Unix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name.
    pub name: String,
}

impl RunAs {
    /// Refused: the Windows builder runs steps as its own account.
    pub fn lookup(name: &str) -> Result<Self, StepError> {
        Err(StepError::RunAsUnsupported(name.to_string()))
    }

    /// Refused, as [`RunAs::lookup`].
    pub fn owner_of(path: &Path) -> Result<Self, StepError> {
        Err(StepError::RunAsUnsupported(path.display().to_string()))
    }

    /// Refused, as [`RunAs::lookup`].
    pub fn check_switchable(&self) -> Result<(), StepError> {
        Err(StepError::RunAsUnsupported(self.name.clone()))
    }
}

/// Whether the builder runs with administrator rights (never assumed).
pub fn is_privileged() -> bool {
    false
}

/// No owners to change on Windows (steps run as the builder's account).
pub fn chown_to(_path: &Path, _user: &RunAs) -> std::io::Result<()> {
    Ok(())
}

/// Not needed on Windows, whose log proxies are TCP listeners, not files.
pub fn file_identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// The default ACLs of the builder's home apply on Windows.
pub fn make_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Bytes available to the builder on the volume holding `path`.
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    fs4::available_space(path)
}

/// A running step: its batch script under `cmd`, in a job object.
#[derive(Debug)]
pub struct StepProcess {
    child: Box<dyn ChildWrapper>,
    pid: i32,
}

/// The step's output pipes.
pub type OutputPipe = Box<dyn AsyncRead + Unpin + Send>;

impl StepProcess {
    /// Write the step's batch script next to its working directory and run
    /// it with `cmd /D /C`, inside a job object so the whole tree can be
    /// ended at once.
    pub fn spawn(cmd: &StepCommand) -> Result<(Self, OutputPipe, OutputPipe), StepError> {
        if let Some(user) = &cmd.run_as {
            return Err(StepError::RunAsUnsupported(user.name.clone()));
        }
        let text = script::windows_batch(&cmd.script, &cmd.cwd, &cmd.env)?;
        let dir = cmd.cwd.parent().unwrap_or(&cmd.cwd);
        let path = dir.join(script::WINDOWS_SCRIPT_NAME);
        let spawn_err = |source| StepError::Spawn {
            shell: "cmd".into(),
            cwd: cmd.cwd.clone(),
            source,
        };
        std::fs::write(&path, text).map_err(spawn_err)?;
        let mut wrap = CommandWrap::with_new("cmd", |c| {
            c.arg("/D")
                .arg("/C")
                .arg(&path)
                .current_dir(&cmd.cwd)
                .env_clear()
                .envs(&cmd.env)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for var in SYSTEM_VARS {
                if !cmd.env.contains_key(*var)
                    && let Some(v) = std::env::var_os(var)
                {
                    c.env(var, v);
                }
            }
        });
        wrap.wrap(JobObject).wrap(KillOnDrop);
        let mut child = wrap.spawn().map_err(spawn_err)?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let out: OutputPipe = Box::new(child.stdout().take().expect("piped stdout"));
        let err: OutputPipe = Box::new(child.stderr().take().expect("piped stderr"));
        Ok((Self { child, pid }, out, err))
    }

    /// The step's process id.
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Wait for the script to end; the job object's other processes are
    /// ended with it.
    pub async fn wait(&mut self) -> std::io::Result<(ExitKind, bool)> {
        let status = self.child.wait().await?;
        Ok((status.into(), false))
    }

    /// End the whole job now: Windows has no SIGTERM for console processes
    /// without a console of their own, so the grace does not apply.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Kill the job without waiting.
    pub fn kill_now(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A log proxy listener: loopback TCP (Windows has no unix sockets that
/// every tool can use).
#[derive(Debug)]
pub struct LogListener(pub(super) tokio::net::TcpListener);

/// One connection to a log proxy.
pub type LogStream = tokio::net::TcpStream;

impl LogListener {
    /// Listen on an ephemeral 127.0.0.1 port. `path` only names the
    /// proxy; steps are told `127.0.0.1:<port>`.
    pub fn bind(
        _path: &Path,
        _owner: Option<&RunAs>,
    ) -> std::io::Result<(Self, std::path::PathBuf)> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        Ok((Self(listener), addr.to_string().into()))
    }

    /// Nothing to remove for a TCP listener.
    pub fn remove(_endpoint: &Path) {}

    /// A std listener on a duplicate of the (non-blocking) socket.
    pub(super) fn try_clone_std(&self) -> std::io::Result<std::net::TcpListener> {
        use std::os::windows::io::AsSocket;
        Ok(self.0.as_socket().try_clone_to_owned()?.into())
    }
}
