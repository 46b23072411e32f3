// `sai-device`: run a program with exclusive use of a compatible device.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sai_core::config::{Format, device::DeviceConfig, load};
use sai_device::{EXIT_CODES_HELP, Error, Request, exit};

/// Wait for exclusive use of a device compatible with <TYPE>, export its tty
/// paths (SAI_DEVICE_TTY<n>, SAI_DEVICE_<TTYNAME>, optional ENVNAME aliases)
/// and run the program.
#[derive(Debug, Parser)]
#[command(
    name = "sai-device",
    version,
    after_help = EXIT_CODES_HELP,
    override_usage = "sai-device [OPTIONS] <TYPE> [ENVNAME=<ttyidx>]... -- <PROGRAM> [ARGS]..."
)]
struct Cli {
    /// Device config file.
    #[arg(
        long,
        short = 'c',
        env = "SAI_DEVICE_CONFIG",
        default_value = "/etc/sai/devices/conf"
    )]
    config: PathBuf,
    /// Give up (exit 124) after waiting this many seconds for a device.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Directory for the waiters' queue; default: the config's "home", else /run/sai-device.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Check the config and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
    /// Requested device type.
    #[arg(value_name = "TYPE", required_unless_present = "check_config")]
    devtype: Option<String>,
    /// ENVNAME=<ttyidx> aliases, then the program and its arguments.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<String>,
}

pub fn main() {
    if let Ok(parent) = std::env::var(sai_device::SHIM_ENV) {
        let argv: Vec<_> = std::env::args_os().skip(1).collect();
        std::process::exit(sai_device::shim_main(&parent, &argv));
    }
    let cli: Cli = sai_device::parse_args_or_exit(exit::CONFIG);
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("sai-device: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<DeviceConfig, Error> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read config {name}: {e} (use --config to choose another)"
        ))
    })?;
    load::<DeviceConfig>(&name, &bytes, Format::from_file_name(&name))
        .map_err(|e| Error::Config(e.to_string()))
}

fn real_main(cli: Cli) -> Result<i32, Error> {
    let config = load_config(&cli.config)?;
    if cli.check_config {
        println!("{}: ok", cli.config.display());
        return Ok(0);
    }
    let timeout = match cli.timeout {
        Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(Error::Config(format!(
                "--timeout {t}: must be zero or more seconds"
            )));
        }
        None => None,
    };
    let (aliases, command) = sai_device::split_command(&cli.rest)?;
    let req = Request {
        devtype: cli.devtype.unwrap_or_default(),
        aliases,
        command,
        timeout,
        state_dir: cli.state_dir,
    };
    sai_device::run(&config, &req)
}
