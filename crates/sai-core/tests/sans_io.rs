//! `sai-core` stays sans-I/O: its normal dependency tree holds no async
//! runtime, web server, database or websocket crate (docs/architecture.md).

use std::process::Command;

const FORBIDDEN: &[&str] = &["tokio", "warp", "rusqlite", "mio", "tokio-tungstenite"];

#[test]
fn sai_core_has_no_io_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args([
            "tree", "-p", "sai-core", "-e", "normal", "--prefix", "none", "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        tree.lines().any(|l| l.starts_with("sai-core ")),
        "unexpected cargo tree output:\n{tree}"
    );
    let offenders: Vec<&str> = tree
        .lines()
        .filter(|line| {
            let name = line.split_whitespace().next().unwrap_or("");
            FORBIDDEN.contains(&name)
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "sai-core must stay sans-I/O, but depends on: {offenders:?}\n\
         move the code that needs them into a daemon crate"
    );
}

/// Names in sai-core's sources that mean file, process or socket I/O.
/// (Parsing a `std::net::SocketAddr` is pure and allowed.)
const FORBIDDEN_APIS: &[&str] = &[
    "std::fs",
    "std::process",
    "std::os::unix::net",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "std::io::stdin",
    "std::env::var",
];

#[test]
fn sai_core_sources_do_no_io() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for api in FORBIDDEN_APIS {
                        if code.contains(api) {
                            offenders.push(format!("{}:{}: {api}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "sai-core must stay sans-I/O (callers hand in bytes):\n{}",
        offenders.join("\n")
    );
}
