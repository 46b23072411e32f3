//! `sai user add NAME` / `sai user remove NAME`: maintain sai-web's users
//! file (`name:<argon2id PHC hash>` per line, `#` comments kept). The
//! password is read from the terminal without echo (asked twice), or as one
//! line from stdin when stdin is not a terminal. The file is replaced
//! atomically (temp file, fsync, rename) with mode 0600; sai-web re-reads
//! it on SIGHUP.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use argon2::password_hash::PasswordHasher;

/// `sai user ...`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    /// The users file (sai-web's `users_file`).
    #[arg(
        long,
        global = true,
        env = "SAI_WEB_USERS",
        default_value = "/etc/sai/web/users"
    )]
    file: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum UserCommand {
    /// Add a user, or set the password of an existing one.
    Add {
        /// Login name: letters, digits, '.', '_', '-', '@'.
        name: String,
    },
    /// Remove a user; their sessions end at their next request.
    Remove {
        /// Login name.
        name: String,
    },
}

/// Run `sai user`.
pub fn run(args: UserArgs) -> Result<ExitCode> {
    match args.command {
        UserCommand::Add { name } => {
            check_name(&name)?;
            let password = read_password(&name)?;
            let hash = hash_password(&password)?;
            let existed = edit(&args.file, &name, Some(&hash))?;
            println!(
                "{} user {name} in {}",
                if existed { "updated" } else { "added" },
                args.file.display()
            );
        }
        UserCommand::Remove { name } => {
            check_name(&name)?;
            if !edit(&args.file, &name, None)? {
                bail!("{}: no user {name:?}", args.file.display());
            }
            println!("removed user {name} from {}", args.file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> Result<()> {
    if sai_core::config::web::check_user_name(name).is_err() {
        bail!("user name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@'");
    }
    Ok(())
}

/// An argon2id PHC string for `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

fn read_password(name: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt_hidden(&format!("password for {name}: "))?;
        let second = prompt_hidden("again: ")?;
        if first != second {
            bail!("the two passwords differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.len() < 8 {
        bail!("the password is shorter than 8 characters; nothing changed");
    }
    Ok(password)
}

/// Read a line from the terminal with echo off (restored even on error).
fn prompt_hidden(prompt: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let saved = tcgetattr(&stdin).context("reading terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(&stdin, SetArg::TCSANOW, &saved).context("restoring the terminal")?;
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Set (`Some(hash)`) or remove (`None`) `name` in the users file; returns
/// whether the user was there before.
fn edit(file: &Path, name: &str, hash: Option<&str>) -> Result<bool> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let prefix = format!("{name}:");
    let mut existed = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with(&prefix) {
            existed = true;
            if let Some(h) = hash {
                out.push_str(&format!("{name}:{h}\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !existed && let Some(h) = hash {
        out.push_str(&format!("{name}:{h}\n"));
    }
    if !existed && hash.is_none() {
        return Ok(false);
    }
    write_atomically(file, out.as_bytes())?;
    Ok(existed)
}

fn write_atomically(file: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("users"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", file.display()))
}
