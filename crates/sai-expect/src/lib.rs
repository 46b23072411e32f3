//! `sai-expect`: watch a device's ttys, log their output, decide the test.
//!
//! Reads `SAI_DEVICE_TTY0` (and `SAI_DEVICE_TTY1` when set), forwards what
//! the board prints to the log-proxy channels 4 and 5 in line-friendly
//! chunks ([`collate`]), runs an optional expect script ([`matcher`]) and
//! exits with a code telling pass, test failure, timeout and infrastructure
//! trouble apart ([`exit`]). A tty that vanishes and comes back within the
//! reopen window (board reset, USB re-enumeration) is reopened ([`tty`]).
#![cfg(unix)]

pub mod collate;
pub mod matcher;
pub mod tty;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sai_device::logproxy::{Channel, Fallback, LogSink};
use tokio::sync::mpsc;

use crate::collate::Collator;
use crate::matcher::{Matcher, Verdict};
use crate::tty::{TtyEvent, TtyTask};

/// Exit codes of `sai-expect`.
pub mod exit {
    /// The test passed.
    pub const PASS: i32 = 0;
    /// The test failed: a fail pattern matched.
    pub const FAIL: i32 = 1;
    /// The overall timeout or a step timeout expired.
    pub const TIMEOUT: i32 = 2;
    /// Infrastructure error: a tty is missing, cannot be opened, or vanished
    /// for longer than the reopen window.
    pub const INFRA: i32 = 3;
    /// Usage or script error.
    pub const USAGE: i32 = 4;
}

/// Text for `--help` describing the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  pass (a pass pattern matched after all steps; default 'Completed: PASS')
  1  test failure (a fail pattern matched; default 'Completed: FAIL')
  2  timeout (overall --timeout / script timeout, or a step's timeout)
  3  infrastructure error (tty missing, cannot be opened, or gone longer than the reopen window)
  4  usage or script error
  128+<s>  stopped by signal <s> (SIGTERM, SIGINT, SIGHUP), after flushing the logs";

/// Default baud rate.
pub const DEFAULT_BAUD: u32 = 115_200;

/// Default reopen window.
pub const DEFAULT_REOPEN_WINDOW: Duration = Duration::from_secs(10);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Pass(String),
    /// Test failure.
    Fail(String),
    /// Timed out.
    Timeout(String),
    /// Infrastructure error.
    Infra(String),
    /// Stopped by a signal (SIGTERM, SIGINT, SIGHUP) after flushing the logs.
    Signalled(i32),
}

impl Outcome {
    /// The exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Pass(_) => exit::PASS,
            Outcome::Fail(_) => exit::FAIL,
            Outcome::Timeout(_) => exit::TIMEOUT,
            Outcome::Infra(_) => exit::INFRA,
            Outcome::Signalled(sig) => 128 + sig,
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Pass(why) => format!("sai-expect: completed: PASS ({why})"),
            Outcome::Fail(why) => format!("sai-expect: completed: FAIL ({why})"),
            Outcome::Timeout(why) => format!("sai-expect: TIMEOUT: {why}"),
            Outcome::Infra(why) => format!("sai-expect: INFRASTRUCTURE ERROR: {why}"),
            Outcome::Signalled(sig) => format!("sai-expect: stopped by signal {sig}"),
        }
    }
}

/// One tty to watch.
#[derive(Debug, Clone)]
pub struct TtySpec {
    /// Its path.
    pub path: PathBuf,
    /// Baud rate.
    pub rate: u32,
}

/// Everything a run needs.
#[derive(Debug)]
pub struct Options {
    /// tty0 and optionally tty1.
    pub ttys: Vec<TtySpec>,
    /// Overall timeout.
    pub timeout: Option<Duration>,
    /// How long a vanished tty may stay away.
    pub reopen_window: Duration,
    /// The compiled script.
    pub matcher: Matcher,
}

enum LogMsg {
    Notice(String),
    Tty(usize, Vec<u8>),
}

/// Log output runs on its own thread so a slow proxy never stalls the tty
/// reads; joining it drains everything.
struct Logger {
    tx: Option<std::sync::mpsc::Sender<LogMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Logger {
    fn start() -> Logger {
        let mut notices = LogSink::from_env(Channel::Notices, Fallback::Stderr);
        let mut ttys = [
            LogSink::from_env(Channel::Tty0, Fallback::Stdout),
            LogSink::from_env(Channel::Tty1, Fallback::Stdout),
        ];
        let (tx, rx) = std::sync::mpsc::channel::<LogMsg>();
        let thread = std::thread::spawn(move || {
            for msg in rx {
                match msg {
                    LogMsg::Notice(s) => notices.line(&s),
                    LogMsg::Tty(i, b) => ttys[i.min(1)].write(&b),
                }
            }
        });
        Logger {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn notice(&self, s: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(LogMsg::Notice(s));
        }
    }

    fn tty(&self, i: usize, b: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(LogMsg::Tty(i, b));
        }
    }

    fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn step_deadline(m: &Matcher, since: Instant) -> Option<(Instant, String)> {
    let (_, step) = m.current_step()?;
    let t = step.timeout?;
    Some((
        since + Duration::from_secs_f64(t),
        format!("{} not seen on tty{} within {t}s", step.label, step.tty),
    ))
}

/// Run to the end; the caller turns the outcome into an exit code.
pub async fn run(mut opts: Options) -> Outcome {
    let log = Logger::start();
    let outcome = run_inner(&mut opts, &log).await;
    log.notice(outcome.describe());
    log.finish();
    outcome
}

async fn run_inner(opts: &mut Options, log: &Logger) -> Outcome {
    let start = Instant::now();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for (i, spec) in opts.ttys.iter().enumerate() {
        let task = TtyTask {
            index: i,
            path: spec.path.clone(),
            rate: spec.rate,
            reopen_window: opts.reopen_window,
        };
        let fd = match task.open() {
            Ok(fd) => fd,
            Err(e) => {
                return Outcome::Infra(format!("cannot open tty{i} {}: {e}", spec.path.display()));
            }
        };
        let (wtx, wrx) = mpsc::unbounded_channel();
        tokio::spawn(task.run(fd, ev_tx.clone(), wrx));
        writers.push(wtx);
        log.notice(format!(
            "sai-expect: watching tty{i} {} at {} baud",
            spec.path.display(),
            spec.rate
        ));
    }
    drop(ev_tx);
    let mut collators: Vec<Collator> = opts.ttys.iter().map(|_| Collator::new()).collect();
    let m = &mut opts.matcher;
    let overall = opts.timeout.map(|t| {
        (
            start + t,
            format!("no verdict within {:.1}s", t.as_secs_f64()),
        )
    });
    let mut step_idx = m.current_step().map(|(i, _)| i);
    let mut step_since = start;

    use tokio::signal::unix::{SignalKind, signal};
    let mut sigs = Vec::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        match signal(kind) {
            Ok(s) => sigs.push(s),
            Err(e) => return Outcome::Infra(format!("cannot handle signals: {e}")),
        }
    }
    let [mut term, mut int, mut hup]: [tokio::signal::unix::Signal; 3] =
        sigs.try_into().expect("three signals");
    let stopped = async move {
        tokio::select! {
            _ = term.recv() => 15,
            _ = int.recv() => 2,
            _ = hup.recv() => 1,
        }
    };
    tokio::pin!(stopped);

    let outcome = loop {
        for (i, bytes) in m.take_sends() {
            if let Some(w) = writers.get(i) {
                let _ = w.send(bytes);
            }
        }
        let now = Instant::now();
        let cur = m.current_step().map(|(i, _)| i);
        if cur != step_idx {
            step_idx = cur;
            step_since = now;
            if let Some((i, s)) = m.current_step() {
                log.notice(format!(
                    "sai-expect: step {}: waiting for {}",
                    i + 1,
                    s.label
                ));
            }
        }
        match m.verdict() {
            Some(Verdict::Pass(why)) => break Outcome::Pass(why.clone()),
            Some(Verdict::Fail(why)) => break Outcome::Fail(why.clone()),
            None => {}
        }
        let step = step_deadline(m, step_since);
        for (deadline, why) in [&overall, &step].into_iter().flatten() {
            if now >= *deadline {
                return flush_then(&mut collators, log, Outcome::Timeout(why.clone()));
            }
        }
        let next = [overall.as_ref().map(|o| o.0), step.as_ref().map(|s| s.0)]
            .into_iter()
            .flatten()
            .chain(collators.iter().filter_map(Collator::deadline))
            .min()
            .unwrap_or(now + Duration::from_secs(3600));

        tokio::select! {
            sig = &mut stopped => break Outcome::Signalled(sig),
            ev = ev_rx.recv() => match ev {
                None => break Outcome::Infra("all ttys closed".into()),
                Some(TtyEvent::Data(i, bytes)) => {
                    for chunk in collators[i].push(&bytes, Instant::now()) {
                        log.tty(i, chunk);
                    }
                    m.feed(i, &bytes);
                }
                Some(TtyEvent::Vanished(i, why)) => {
                    if let Some(rest) = collators[i].flush() {
                        log.tty(i, rest);
                    }
                    log.notice(format!(
                        "sai-expect: tty{i} vanished ({why}); waiting up to {:.1}s for it to come back",
                        opts.reopen_window.as_secs_f64()
                    ));
                }
                Some(TtyEvent::Reopened(i)) => {
                    log.notice(format!("sai-expect: tty{i} is back, reopened"));
                }
                Some(TtyEvent::Gone(i, why)) => break Outcome::Infra(format!("tty{i}: {why}")),
            },
            _ = tokio::time::sleep_until(next.into()) => {
                let now = Instant::now();
                for (i, c) in collators.iter_mut().enumerate() {
                    if let Some(chunk) = c.poll(now) {
                        log.tty(i, chunk);
                    }
                }
            }
        }
    };
    flush_then(&mut collators, log, outcome)
}

fn flush_then(collators: &mut [Collator], log: &Logger, outcome: Outcome) -> Outcome {
    for (i, c) in collators.iter_mut().enumerate() {
        if let Some(chunk) = c.flush() {
            log.tty(i, chunk);
        }
    }
    outcome
}
