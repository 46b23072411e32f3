//! sai-jig over real HTTP on loopback, with the simulated chip.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sai_core::config::jig::JigConfig;
use sai_core::config::schema::ConfigType;
use sai_jig::{GpioBackend, GpioError, Jig, LineId, SimChip};

fn config(token: Option<&str>) -> JigConfig {
    let mut v = serde_json::json!({
        "schema": "sai-jig",
        "listen": "127.0.0.1:0",
        "targets": [
            {"name": "t1",
             "gpios": [
                {"name": "nReset", "chip": "gpiochip0", "offset": 17, "wire": "RST", "safe": 1},
                {"name": "power", "chip": "gpiochip0", "offset": 3, "safe": 0},
                {"name": "boot0", "chip": "gpiochip1", "offset": 0, "safe": 0}
             ],
             "sequences": [
                {"name": "reset", "seq": [
                    {"gpio": "nReset", "value": 0}, {"wait_ms": 200},
                    {"gpio": "nReset", "value": 1}, {"wait_ms": 100},
                    {"gpio": "power", "value": 1}, {"gpio": "boot0", "value": 1}
                ]},
                {"name": "slow", "seq": [{"gpio": "power", "value": 1}, {"wait_ms": 2000}]}
             ]},
            {"name": "t2",
             "gpios": [{"name": "pwr", "chip": "gpiochip0", "offset": 4, "safe": 1}],
             "sequences": [{"name": "off", "seq": [{"gpio": "pwr", "value": 0}]}]}
        ]
    });
    if let Some(t) = token {
        v["token"] = t.into();
    }
    let c: JigConfig = serde_json::from_value(v).unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    c
}

/// The library serving on 127.0.0.1:0 on its own runtime thread.
struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(config: &JigConfig, backend: Arc<dyn GpioBackend>, token: Option<&str>) -> Server {
        let jig = Arc::new(Jig::new(config, backend, token.map(String::from)).unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                sai_jig::serve(jig, listener, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv().unwrap();
        Server {
            base: format!("http://{addr}"),
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get(url: &str) -> u16 {
    client().get(url).send().unwrap().status().as_u16()
}

/// (offset, value) of each change since index `from`, with times relative to the first.
fn changes(sim: &SimChip, from: usize) -> Vec<(String, u32, bool, Instant)> {
    sim.changes()[from..]
        .iter()
        .map(|c| (c.chip.clone(), c.offset, c.value, c.at))
        .collect()
}

#[test]
fn sequence_runs_in_order_with_minimum_delays_and_restores_safe_values() {
    let sim = Arc::new(SimChip::new());
    let mut server = Server::start(&config(None), sim.clone(), None);
    // Start: every line driven to safe.
    let start: Vec<_> = changes(&sim, 0)
        .into_iter()
        .map(|(c, o, v, _)| (c, o, v))
        .collect();
    assert_eq!(
        start,
        [
            ("gpiochip0".into(), 17, true),
            ("gpiochip0".into(), 3, false),
            ("gpiochip1".into(), 0, false),
            ("gpiochip0".into(), 4, true)
        ]
    );
    let n0 = sim.changes().len();
    let asked = Instant::now();
    let resp = client()
        .get(format!("{}/t1/reset", server.base))
        .send()
        .unwrap();
    let answered = Instant::now();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let ch = changes(&sim, n0);
    let seq: Vec<_> = ch.iter().map(|(c, o, v, _)| (c.as_str(), *o, *v)).collect();
    assert_eq!(
        seq,
        [
            ("gpiochip0", 17, false),
            ("gpiochip0", 17, true),
            ("gpiochip0", 3, true),
            ("gpiochip1", 0, true),
            // safe values restored after the sequence
            ("gpiochip0", 17, true),
            ("gpiochip0", 3, false),
            ("gpiochip1", 0, false),
        ]
    );
    assert!(
        ch[1].3 - ch[0].3 >= Duration::from_millis(200),
        "first wait too short"
    );
    assert!(
        ch[2].3 - ch[1].3 >= Duration::from_millis(100),
        "second wait too short"
    );
    // 200 only once the sequence (and the safe restore) finished
    assert!(answered >= ch[6].3);
    assert!(answered - asked >= Duration::from_millis(300));

    // Shutdown drives every line to safe once more.
    let n1 = sim.changes().len();
    server.stop();
    let end: Vec<_> = changes(&sim, n1)
        .into_iter()
        .map(|(c, o, v, _)| (c, o, v))
        .collect();
    assert_eq!(end, start);
}

#[test]
fn unknown_target_404_unknown_sequence_400_busy_409() {
    let sim = Arc::new(SimChip::new());
    let server = Server::start(&config(None), sim, None);
    let b = server.base.clone();
    assert_eq!(get(&format!("{b}/nosuch/reset")), 404);
    assert_eq!(get(&format!("{b}/nosuch")), 404);
    assert_eq!(get(&format!("{b}/t1/nosuch")), 400);
    assert_eq!(get(&format!("{b}/t1")), 400);
    assert_eq!(get(&format!("{b}/")), 404);
    assert_eq!(
        client()
            .delete(format!("{b}/t1/reset"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        405
    );

    let slow_url = format!("{b}/t1/slow");
    let slow = std::thread::spawn(move || get(&slow_url));
    // wait until t1 shows busy
    let start = Instant::now();
    loop {
        let s = status(&b);
        if s["targets"][0]["busy"] == true {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get(&format!("{b}/t1/reset")), 409);
    assert_eq!(get(&format!("{b}/t1/slow")), 409);
    // another target is not affected
    assert_eq!(get(&format!("{b}/t2/off")), 200);
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(get(&format!("{b}/t1/reset")), 200);
}

#[test]
fn post_and_status() {
    let sim = Arc::new(SimChip::new());
    let server = Server::start(&config(None), sim, None);
    let b = &server.base;
    let r = client().post(format!("{b}/t2/off")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["target"], "t2");
    assert_eq!(body["sequence"], "off");
    let s = status(b);
    let t2 = &s["targets"][1];
    assert_eq!(t2["name"], "t2");
    assert_eq!(t2["busy"], false);
    assert_eq!(t2["sequences"], serde_json::json!(["off"]));
    assert_eq!(t2["last_run"]["sequence"], "off");
    assert_eq!(t2["last_run"]["ok"], true);
    assert_eq!(t2["gpios"][0]["value"], 1, "back at safe");
    assert!(s["targets"][0]["last_run"].is_null());
}

#[test]
fn bearer_token_is_enforced() {
    let sim = Arc::new(SimChip::new());
    let server = Server::start(&config(None), sim.clone(), Some("s3cret"));
    let b = &server.base;
    let n0 = sim.changes().len();
    let status = |req: reqwest::blocking::RequestBuilder| req.send().unwrap().status().as_u16();
    let without_the_token = [
        client().get(format!("{b}/t2/off")),
        client().get(format!("{b}/api/status")),
        client().get(format!("{b}/t2/off")).bearer_auth("wrong"),
        client().get(format!("{b}/t2/off")).bearer_auth("s3cre"),
        client()
            .get(format!("{b}/t2/off"))
            .header("authorization", "Basic czNjcmV0"),
        // unknown targets are not revealed without the token either
        client().get(format!("{b}/nosuch/x")),
    ];
    for req in without_the_token {
        let what = format!("{req:?}");
        assert_eq!(status(req), 401, "{what}");
    }
    assert_eq!(sim.changes().len(), n0, "no line moved without the token");
    let with_the_token = [
        client().get(format!("{b}/t2/off")),
        client().post(format!("{b}/t2/off")),
        client().get(format!("{b}/api/status")),
    ];
    for req in with_the_token {
        let req = req.bearer_auth("s3cret");
        let what = format!("{req:?}");
        assert_eq!(status(req), 200, "{what}");
    }
}

/// A backend whose line 3 is broken.
struct Broken(SimChip);

impl GpioBackend for Broken {
    fn set(&self, line: &LineId, value: bool) -> Result<(), GpioError> {
        if line.offset == 3 && value {
            return Err(GpioError::Set {
                chip: line.chip.clone(),
                offset: 3,
                message: "simulated failure".into(),
            });
        }
        self.0.set(line, value)
    }
}

#[test]
fn gpio_failure_gives_500_and_still_restores_safe_values() {
    let broken = Arc::new(Broken(SimChip::new()));
    let server = Server::start(&config(None), broken.clone(), None);
    let n0 = broken.0.changes().len();
    let r = client()
        .get(format!("{}/t1/reset", server.base))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert!(r.text().unwrap().contains("simulated failure"));
    let seq: Vec<_> = broken.0.changes()[n0..]
        .iter()
        .map(|c| (c.offset, c.value))
        .collect();
    assert_eq!(
        seq,
        [(17, false), (17, true), (17, true), (3, false), (0, false)]
    );
}

#[test]
fn client_going_away_does_not_abort_a_sequence() {
    let sim = Arc::new(SimChip::new());
    let server = Server::start(&config(None), sim.clone(), None);
    let n0 = sim.changes().len();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .get(format!("{}/t1/slow", server.base))
        .send();
    assert!(r.is_err(), "client should have timed out");
    let start = Instant::now();
    loop {
        let s: serde_json::Value = client()
            .get(format!("{}/api/status", server.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if !s["targets"][0]["last_run"].is_null() {
            assert_eq!(s["targets"][0]["last_run"]["ok"], true);
            assert!(s["targets"][0]["last_run"]["duration_ms"].as_u64().unwrap() >= 2000);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sequence never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let seq: Vec<_> = sim.changes()[n0..]
        .iter()
        .map(|c| (c.offset, c.value))
        .collect();
    assert_eq!(seq, [(3, true), (17, true), (3, false), (0, false)]);
}

#[test]
fn real_backend_reports_a_missing_chip_clearly() {
    let mut c = config(None);
    c.targets[0].gpios[0].chip = "/dev/gpiochip-sai-test-missing".into();
    let err = match sai_jig::CdevBackend::open(&c) {
        Ok(_) => panic!("opened a nonexistent chip"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("/dev/gpiochip-sai-test-missing"),
        "error should name the chip: {err}"
    );
    assert!(
        err.contains("[17]"),
        "error should name the line offsets: {err}"
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_sai-jig");

#[test]
fn binary_without_gpio_hardware_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(None);
    for t in &mut c.targets {
        for g in &mut t.gpios {
            g.chip = "/dev/gpiochip-sai-test-missing".into();
            g.offset += 100;
        }
    }
    let path = dir.path().join("jig.conf");
    std::fs::write(&path, serde_json::to_string(&c).unwrap()).unwrap();
    let stderr = binary_fails(&path, &[]);
    assert!(stderr.contains("gpiochip-sai-test-missing"), "{stderr}");
}

#[test]
fn binary_rejects_unknown_gpio_in_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jig.yaml");
    std::fs::write(
        &path,
        "targets:\n  - name: t\n    gpios: [{name: a, chip: gpiochip0, offset: 1, safe: 0}]\n    sequences:\n      - name: s\n        seq: [{gpio: nRest, value: 0}]\n",
    )
    .unwrap();
    let stderr = binary_fails(&path, &["--check-config"]);
    assert!(stderr.contains("unknown gpio 'nRest'"), "{stderr}");
}

#[test]
fn binary_with_simulated_chip_serves_and_restores_safe_values_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("jig.conf");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let mut c = config(None);
    c.token_file = Some(token_file.to_str().unwrap().into());
    std::fs::write(&conf, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    let record = dir.path().join("record.jsonl");
    let mut child = Command::new(BIN)
        .args(["--config", conf.to_str().unwrap(), "--simulate"])
        .arg(&record)
        .env_remove("SAI_JIG_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("sai-jig: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let url = format!("http://{addr}/t1/reset");
    assert_eq!(get(&url), 401);
    let r = client().get(&url).bearer_auth("tok-123").send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());

    let recs: Vec<serde_json::Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let vals: Vec<(u64, u64)> = recs
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r["value"].as_u64().unwrap()))
        .collect();
    let safe = [(17, 1), (3, 0), (0, 0), (4, 1)];
    assert_eq!(vals[..4], safe, "start: safe values");
    assert_eq!(vals[4..8], [(17, 0), (17, 1), (3, 1), (0, 1)], "sequence");
    assert_eq!(vals[8..11], [(17, 1), (3, 0), (0, 0)], "after the sequence");
    assert_eq!(vals[11..], safe, "shutdown: safe values");
    let t = |i: usize| recs[i]["t_us"].as_u64().unwrap();
    assert!(t(5) - t(4) >= 200_000);
    assert!(t(6) - t(5) >= 100_000);
}

/// Runs the binary with `--config <path>` and `extra` arguments; it must
/// fail. Returns its stderr.
fn binary_fails(path: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `GET /api/status` of the jig at `base`.
fn status(base: &str) -> serde_json::Value {
    client()
        .get(format!("{base}/api/status"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}
