// `sai-expect`: decide a board test from its tty output.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sai_core::config::{Format, expect::ExpectScript, load};
use sai_expect::{DEFAULT_BAUD, DEFAULT_REOPEN_WINDOW, EXIT_CODES_HELP, Options, TtySpec, exit};

/// Watch the device ttys handed out by sai-device (SAI_DEVICE_TTY0, optional
/// SAI_DEVICE_TTY1), forward their output to the log proxies (channels 4/5),
/// and decide pass or fail. Without a script it passes on 'Completed: PASS'.
#[derive(Debug, Parser)]
#[command(name = "sai-expect", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Expect script (JSON with # comments, or YAML for .yaml/.yml).
    #[arg(long, short = 's', value_name = "FILE")]
    script: Option<PathBuf>,
    /// Check the script and exit (0 when valid).
    #[arg(long)]
    check: bool,
    /// tty 0 (the main console).
    #[arg(long, env = "SAI_DEVICE_TTY0", value_name = "PATH")]
    tty0: Option<PathBuf>,
    /// tty 1 (optional second port).
    #[arg(long, env = "SAI_DEVICE_TTY1", value_name = "PATH")]
    tty1: Option<PathBuf>,
    /// Baud rate; default: the script's, else SAI_DEVICE_TTY<n>_RATE, else 115200.
    #[arg(long, value_name = "RATE")]
    baud: Option<u32>,
    /// Overall timeout in seconds (overrides the script's).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Seconds a vanished tty may stay away before it is an infrastructure
    /// error (overrides the script's; default 10).
    #[arg(long, value_name = "SECONDS")]
    reopen_window: Option<f64>,
    /// Log level of the original (accepted and ignored).
    #[arg(short = 'd', hide = true)]
    debug: Option<String>,
}

fn fail(code: i32, msg: String) -> ! {
    eprintln!("sai-expect: {msg}");
    std::process::exit(code)
}

fn seconds(what: &str, v: f64) -> Duration {
    if v.is_finite() && v >= 0.0 {
        Duration::from_secs_f64(v)
    } else {
        fail(
            exit::USAGE,
            format!("{what} {v}: must be zero or more seconds"),
        )
    }
}

pub fn main() {
    let cli: Cli = sai_device::parse_args_or_exit(exit::USAGE);
    let script = match &cli.script {
        None => ExpectScript::default(),
        Some(path) => {
            let name = path.display().to_string();
            let bytes = std::fs::read(path)
                .unwrap_or_else(|e| fail(exit::USAGE, format!("cannot read script {name}: {e}")));
            load::<ExpectScript>(&name, &bytes, Format::from_file_name(&name))
                .unwrap_or_else(|e| fail(exit::USAGE, e.to_string()))
        }
    };
    let matcher = sai_expect::matcher::compile(&script).unwrap_or_else(|errs| {
        fail(
            exit::USAGE,
            format!("invalid script:\n  {}", errs.join("\n  ")),
        )
    });
    if cli.check {
        println!("script ok");
        return;
    }
    let rate = |n: usize| -> u32 {
        let r = cli
            .baud
            .or(script.baud)
            .or_else(|| {
                std::env::var(format!("SAI_DEVICE_TTY{n}_RATE"))
                    .ok()
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(DEFAULT_BAUD);
        if sai_expect::tty::baud_rate(r).is_none() {
            fail(exit::USAGE, format!("baud rate {r} is not supported"));
        }
        r
    };
    let mut ttys = Vec::new();
    match &cli.tty0 {
        Some(p) if !p.as_os_str().is_empty() => ttys.push(TtySpec {
            path: p.clone(),
            rate: rate(0),
        }),
        _ => fail(
            exit::INFRA,
            "no tty: SAI_DEVICE_TTY0 is not set (run under sai-device, or give --tty0)".into(),
        ),
    }
    if let Some(p) = cli.tty1.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        ttys.push(TtySpec {
            path: p.clone(),
            rate: rate(1),
        });
    }
    if matcher.ttys_used() >= ttys.len() {
        fail(
            exit::USAGE,
            format!(
                "the script uses tty{} but no SAI_DEVICE_TTY{} / --tty{} is given",
                matcher.ttys_used(),
                matcher.ttys_used(),
                matcher.ttys_used()
            ),
        );
    }
    let opts = Options {
        ttys,
        timeout: cli
            .timeout
            .or(script.timeout)
            .map(|t| seconds("timeout", t)),
        reopen_window: cli
            .reopen_window
            .or(script.reopen_window)
            .map(|t| seconds("reopen window", t))
            .unwrap_or(DEFAULT_REOPEN_WINDOW),
        matcher,
    };
    let _ = cli.debug;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(exit::INFRA, format!("cannot start runtime: {e}")));
    let outcome = rt.block_on(sai_expect::run(opts));
    drop(rt);
    std::process::exit(outcome.exit_code());
}
