//! flake.nix and every .nix file of the repository, checked offline with
//! Debian's Nix: they parse, pass nixpkgs-fmt and deadnix, the flake's
//! outputs that need no package set evaluate (`nix flake check --no-build`
//! with nixpkgs' lib-only flake as `nixpkgs`), and the NixOS machines of
//! the example rack evaluate to their units.
//!
//! A flake inside a git repository sees only tracked files: `git add` new
//! .nix files before running these tests.

mod nix_harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use nix_harness::{Nix, nixpkgs_lib, repo_root, require};
use sai_testkit::run_ok;
use serde_json::Value;

/// Every .nix file of the repository (not under target/ or .git/).
fn nix_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                    walk(&path, out);
                }
            } else if name.ends_with(".nix") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root(), &mut out);
    out.sort();
    out
}

const INSTALL_LINTERS: &str =
    "scripts/ci/stages/30-nix.sh installs it (cargo install --locked nixpkgs-fmt deadnix)";

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    for expected in [
        "flake.nix",
        "nixos-modules/sai-builder.nix",
        "nix/testing/eval.nix",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "{expected} not found in {files:?}"
        );
    }
    let nix_instantiate = require("nix-instantiate", "install nix-bin");
    for file in &files {
        run_ok(
            file.display(),
            Command::new(&nix_instantiate).arg("--parse").arg(file),
        );
    }
}

#[test]
fn nix_files_are_formatted_and_have_no_dead_code() {
    let files = nix_files();
    run_ok(
        "nixpkgs-fmt wants to reformat (run `nixpkgs-fmt .`)",
        Command::new(require("nixpkgs-fmt", INSTALL_LINTERS))
            .arg("--check")
            .args(&files),
    );
    run_ok(
        "deadnix found unused code",
        Command::new(require("deadnix", INSTALL_LINTERS))
            .arg("--fail")
            .args(&files),
    );
}

/// Flags that make `nix` use the lib-only nixpkgs and never the network.
fn offline_flake_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--offline",
            "--no-write-lock-file",
            "--override-input",
            "nixpkgs",
        ]
        .map(String::from),
    );
    args.push(format!("path:{}", nixpkgs_lib().display()));
    args
}

/// The repository as a git flake: only tracked files, never target/.
fn this_flake(attr: &str) -> String {
    format!("git+file://{}{attr}", repo_root().display())
}

fn flake(nix: &Nix, what: &str, args: &[&str]) -> String {
    let args = offline_flake_args(args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nix.nix(what, &repo_root(), &args)
        .unwrap_or_else(|e| panic!("{what}:\n{}", e.stderr))
}

#[test]
fn flake_outputs_that_need_no_packages_evaluate_offline() {
    let nix = Nix::new();
    flake(
        &nix,
        "nix flake check --no-build",
        &["flake", "check", "--no-build", &this_flake("")],
    );
    let modules: Value = serde_json::from_str(&flake(
        &nix,
        "nix eval nixosModules",
        &[
            "eval",
            "--json",
            &this_flake("#nixosModules"),
            "--apply",
            "builtins.attrNames",
        ],
    ))
    .unwrap();
    assert_eq!(
        modules,
        serde_json::json!([
            "default",
            "sai-builder",
            "sai-device",
            "sai-jig",
            "sai-server",
            "sai-web"
        ])
    );
    let overlay = flake(
        &nix,
        "nix eval overlays.default",
        &[
            "eval",
            &this_flake("#overlays.default"),
            "--apply",
            "builtins.isFunction",
        ],
    );
    assert_eq!(overlay.trim(), "true");
    // Without a package set the per-system outputs are empty, not broken.
    for output in ["packages", "checks", "devShells", "formatter"] {
        let value = flake(
            &nix,
            &format!("nix eval {output}"),
            &["eval", "--json", &this_flake(&format!("#{output}"))],
        );
        assert_eq!(value.trim(), "{}", "{output}");
    }
    // Each module declares its options when imported by the real module
    // system, with the flake's package default in place.
    let options = flake(
        &nix,
        "nix eval the flake's modules with evalModules",
        &[
            "eval",
            "--json",
            &this_flake("#nixosModules"),
            "--apply",
            &format!(
                "modules: let lib = import {}/lib; in builtins.attrNames (lib.evalModules {{ modules = [ modules.default {{ _module.check = false; }} ]; }}).options.services.sai",
                nixpkgs_lib().display()
            ),
            "--impure",
        ],
    );
    let options: Value = serde_json::from_str(&options).unwrap();
    assert_eq!(
        options,
        serde_json::json!(["builder", "device", "jig", "server", "web"])
    );
}

/// The example rack's entries that run on NixOS, by machine name.
fn nixos_entries(rack: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for key in ["server", "web"] {
        if rack[key]["runs"] == "nixos" {
            out.push((
                rack[key]["name"].as_str().unwrap().to_string(),
                rack[key].clone(),
            ));
        }
    }
    for builder in rack["builders"].as_array().unwrap() {
        if builder["runs"] == "nixos" {
            out.push((
                builder["name"].as_str().unwrap().to_string(),
                builder.clone(),
            ));
        }
    }
    out
}

fn rack_hosts_expr(rack_file: &Path) -> String {
    let root = repo_root();
    let root = root.display();
    format!(
        "(import {root}/nix/lib/rack.nix {{
           lib = import {lib}/lib;
           modules = {{
             sai-server = {root}/nixos-modules/sai-server.nix;
             sai-web = {root}/nixos-modules/sai-web.nix;
             sai-builder = {root}/nixos-modules/sai-builder.nix;
             sai-device = {root}/nixos-modules/sai-device.nix;
             sai-jig = {root}/nixos-modules/sai-jig.nix;
           }};
         }}).hostModules {rack}",
        lib = nixpkgs_lib().display(),
        rack = rack_file.display()
    )
}

#[test]
fn example_rack_nixos_machines_evaluate_to_their_units() {
    let rack_file = repo_root().join("examples/rack.json");
    let bytes = std::fs::read(&rack_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the example rack is defined with the sai-rack config kind)",
            rack_file.display()
        )
    });
    let rack: Value = serde_json::from_slice(&bytes).unwrap();
    let entries = nixos_entries(&rack);
    assert!(!entries.is_empty(), "the example rack has no NixOS machine");
    let nix = Nix::new();

    // The flake's function and the plain one name the same machines.
    let mut names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let from_flake: Value = serde_json::from_str(&flake(
        &nix,
        "nix eval lib.rackHostModules",
        &[
            "eval",
            "--json",
            &this_flake("#lib.rackHostModules"),
            "--apply",
            &format!("f: builtins.attrNames (f {})", rack_file.display()),
            "--impure",
        ],
    ))
    .unwrap();
    assert_eq!(from_flake, serde_json::json!(names));

    for (machine, entry) in &entries {
        let module = format!("({}).{machine}", rack_hosts_expr(&rack_file));
        let config = nix
            .eval_system(
                &format!("rack machine {machine}"),
                &module,
                "{ inherit (config) systemd warnings; inherit (config.services) sai; }",
            )
            .unwrap_or_else(|e| panic!("{machine}:\n{}", e.stderr));
        let units = config["systemd"]["services"].as_object().unwrap();
        if entry.get("platforms").is_some() {
            let unit = format!("sai-builder-{machine}");
            let sc = &units
                .get(&unit)
                .unwrap_or_else(|| panic!("{machine}: no {unit} in {units:?}"))["serviceConfig"];
            assert_eq!(sc["DynamicUser"], true);
            // The rendered builder config says what the rack entry says.
            let settings = &config["sai"]["builder"]["instances"][machine]["settings"];
            assert_eq!(settings["host"], entry["name"], "{machine}");
            for key in [
                "step_timeout_secs",
                "log_limit_bytes",
                "parallel",
                "job_retention_secs",
                "min_free_disk_bytes",
            ] {
                if let Some(want) = entry.get(key) {
                    assert_eq!(&settings[key], want, "{machine}: {key}");
                }
            }
            let got = settings["platforms"].as_array().unwrap();
            let want = entry["platforms"].as_array().unwrap();
            let names = |ps: &[Value]| ps.iter().map(|p| p["name"].clone()).collect::<Vec<_>>();
            assert_eq!(names(got), names(want), "{machine}");
            for (got, want) in got.iter().zip(want) {
                let at = format!("{machine}: {}", want["name"]);
                assert_eq!(
                    got["instances"],
                    *want.get("instances").unwrap_or(&Value::from(1)),
                    "{at}"
                );
                let urls = |p: &Value| {
                    p["servers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["url"].clone())
                        .collect::<Vec<_>>()
                };
                assert_eq!(urls(got), urls(want), "{at}");
                if let Some(limits) = want.get("limits") {
                    assert_eq!(&got["limits"], limits, "{at}");
                }
                if let Some(env) = want.get("env").and_then(Value::as_object) {
                    for (k, v) in env {
                        assert_eq!(&got["env"][k], v, "{at}: env {k}");
                    }
                }
            }
            // Each server's token is delivered from the file the rack names.
            let credentials = sc["LoadCredential"].as_array().unwrap();
            for platform in entry["platforms"].as_array().unwrap() {
                for server in platform["servers"].as_array().unwrap() {
                    let file = server["token_file"].as_str().unwrap();
                    assert!(
                        credentials
                            .iter()
                            .any(|c| c.as_str().unwrap().ends_with(&format!(":{file}"))),
                        "{machine}: {file} not in {credentials:?}"
                    );
                    // A credentials path is not a file on the machine.
                    if file.starts_with("/run/credentials/") {
                        let warnings = config["warnings"].as_array().unwrap();
                        assert!(
                            warnings.iter().any(|w| w.as_str().unwrap().contains(file)),
                            "{machine}: no warning about {file}: {warnings:?}"
                        );
                    }
                }
            }
        } else {
            let unit = if entry
                .get("config")
                .and_then(|c| c.get("server_url"))
                .is_some()
            {
                "sai-web"
            } else {
                "sai-server"
            };
            assert!(
                units.contains_key(unit),
                "{machine}: no {unit} in {units:?}"
            );
        }
        // The configs rendered from the rack pass the real `sai validate`.
        let built = nix
            .build_unit_configs(&format!("rack machine {machine}: checked configs"), &module)
            .unwrap_or_else(|e| panic!("{machine}:\n{}", e.stderr));
        assert!(!built.is_empty());
    }
}

#[test]
fn a_rack_with_an_inline_secret_for_a_nixos_machine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rack_file = dir.path().join("rack.json");
    std::fs::write(
        &rack_file,
        serde_json::to_vec(&serde_json::json!({
            "schema": "sai-rack",
            "name": "lab",
            "server": {
                "name": "ci",
                "runs": "nixos",
                "config": { "listen": "0.0.0.0:4444", "notification_key": "hunter2" }
            },
            "builders": []
        }))
        .unwrap(),
    )
    .unwrap();
    let nix = Nix::new();
    let err = nix
        .eval_system(
            "rack with an inline secret",
            &format!("({}).ci", rack_hosts_expr(&rack_file)),
            "config.systemd.services.sai-server.serviceConfig.ExecStart",
        )
        .expect_err("an inline secret must be refused");
    assert!(
        err.stderr
            .contains("rack: server \"ci\" config: notification_key is given inline"),
        "{}",
        err.stderr
    );

    std::fs::write(
        &rack_file,
        br#"{"schema": "sai-rak", "name": "x", "builders": []}"#,
    )
    .unwrap();
    let err = nix
        .eval_json(
            "rack with a wrong marker",
            &format!("builtins.attrNames ({})", rack_hosts_expr(&rack_file)),
        )
        .expect_err("a wrong schema marker must be refused");
    assert!(
        err.stderr
            .contains("rack: schema: expected \"sai-rack\", found \"sai-rak\""),
        "{}",
        err.stderr
    );
}

/// The VM tests need real nixpkgs to run; here each one is evaluated with
/// `testers.nixosTest` standing in as the identity, and its test script
/// (with the Nix values interpolated) must be Python that parses and names
/// only machines the test declares.
#[test]
fn vm_test_files_evaluate_and_their_scripts_are_python() {
    let tests_dir = repo_root().join("nix/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nix"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no VM tests in {}", tests_dir.display());
    let python = require(
        "python3",
        "install python3-minimal (scripts/ci/packages/nix.list)",
    );
    let nix = Nix::new();
    for file in files {
        let expr = format!(
            "let
               test = import {file} {{
                 self.nixosModules.default = {{ }};
                 pkgs = {{
                   testers.nixosTest = t: t;
                   writeText = name: text: builtins.toFile name text;
                 }};
               }};
             in {{ inherit (test) name testScript; nodes = builtins.attrNames test.nodes; }}",
            file = file.display()
        );
        let test = nix
            .eval_json(&format!("VM test {}", file.display()), &expr)
            .unwrap_or_else(|e| panic!("{}:\n{}", file.display(), e.stderr));
        let script = test["testScript"].as_str().unwrap();
        let check = "import ast, sys\n\
                     tree = ast.parse(sys.stdin.read())\n\
                     names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}\n\
                     print(' '.join(sorted(names)))";
        let out = sai_testkit::output_with_stdin(
            Command::new(&python).args(["-c", check]),
            script.as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}: the test script is not Python:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let names = String::from_utf8_lossy(&out.stdout);
        let nodes: Vec<&str> = test["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for node in &nodes {
            assert!(
                names.split_whitespace().any(|n| n == *node),
                "{}: machine {node} is declared but never used",
                file.display()
            );
        }
        assert!(script.contains("start_all()"), "{}", file.display());
    }
}

/// Server, web UI and a builder with boards and a jig, all on one NixOS
/// machine of a rack: every daemon's unit, secrets split out of the rack's
/// settings into credentials, and configs that pass the real `sai validate`.
#[test]
fn a_rack_machine_running_every_daemon_evaluates_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let rack_file = dir.path().join("rack.json");
    let rack = serde_json::json!({
        "schema": "sai-rack",
        "name": "lab",
        "server": {
            "name": "ci", "runs": "nixos",
            "config": {
                "listen": "[::]:4444",
                "data_dir": "/var/lib/sai-server",
                "notification_key_file": "/etc/sai/server/notification-key",
                "projects": [{"name": "sai"}, {"name": "lws", "notification_key_file": "/etc/sai/lws.key"}],
                "token_key_file": "/var/lib/sai-server/token.key",
                "dispatch_grace_ms": 2000
            }
        },
        "web": {
            "name": "ci", "runs": "nixos",
            "config": {
                "listen": "127.0.0.1:8081",
                "server_url": "http://127.0.0.1:4444",
                "users_file": "/etc/sai/web/users",
                "session_key_file": "/var/lib/sai-web/session.key",
                "session_lifetime_secs": 3600
            }
        },
        "builders": [{
            "name": "ci", "runs": "nixos", "arch": "x86_64",
            "parallel": 4,
            "platforms": [{
                "name": "linux-nixos/x86_64-amd/gcc",
                "instances": 2,
                "servers": [{"url": "ws://127.0.0.1:4444/builder", "token_file": "/etc/sai/builder/token"}]
            }],
            "devices": [{
                "name": "esp32-1", "type": "esp32",
                "ttys": [{"name": "console", "tty": "/dev/ttyUSB0", "rate": 115200}]
            }],
            "jig": {
                "listen": "0.0.0.0:44000",
                "token_file": "/etc/sai/jig/token",
                "targets": [{
                    "name": "esp32-1",
                    "gpios": [{"name": "nReset", "chip": "gpiochip0", "offset": 17, "safe": 1}],
                    "sequences": [{"name": "reset", "seq": [{"gpio": "nReset", "value": 0}, {"wait_ms": 100}, {"gpio": "nReset", "value": 1}]}]
                }]
            }
        }]
    });
    std::fs::write(&rack_file, serde_json::to_vec_pretty(&rack).unwrap()).unwrap();
    let nix = Nix::new();
    let module = format!("({}).ci", rack_hosts_expr(&rack_file));
    let config = nix.system_value(
        "rack machine with every daemon",
        &module,
        "{ inherit (config) systemd; inherit (config.services) sai udev; etc = builtins.attrNames config.environment.etc; }",
    );
    let units: Vec<&String> = config["systemd"]["services"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        units,
        ["sai-builder-ci", "sai-jig", "sai-server", "sai-web"]
    );
    let credentials = |unit: &str| -> Vec<String> {
        config["systemd"]["services"][unit]["serviceConfig"]["LoadCredential"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        credentials("sai-server"),
        [
            "notification-key:/etc/sai/server/notification-key",
            "project-lws-notification-key:/etc/sai/lws.key",
        ]
    );
    assert_eq!(credentials("sai-web"), ["users:/etc/sai/web/users"]);
    assert_eq!(
        credentials("sai-builder-ci"),
        ["server0-token:/etc/sai/builder/token"]
    );
    assert_eq!(credentials("sai-jig"), ["token:/etc/sai/jig/token"]);
    let server = &config["sai"]["server"];
    assert_eq!(server["address"], "::");
    assert_eq!(server["port"], 4444);
    assert_eq!(server["settings"]["dispatch_grace_ms"], 2000);
    assert_eq!(
        server["settings"]["token_key_file"],
        "/var/lib/sai-server/token.key"
    );
    assert_eq!(
        config["sai"]["web"]["settings"]["session_lifetime_secs"],
        3600
    );
    assert_eq!(
        config["sai"]["builder"]["instances"]["ci"]["settings"]["parallel"],
        4
    );
    assert!(
        config["udev"]["extraRules"]
            .as_str()
            .unwrap()
            .contains(r#"SUBSYSTEM=="tty", KERNEL=="ttyUSB0", GROUP="sai-devices", MODE="0660""#),
        "{}",
        config["udev"]
    );
    // The builder may use the board declared beside it.
    assert_eq!(
        config["systemd"]["services"]["sai-builder-ci"]["serviceConfig"]["SupplementaryGroups"],
        serde_json::json!(["sai-devices"])
    );
    assert!(
        config["etc"]
            .as_array()
            .unwrap()
            .contains(&Value::from("sai/devices/conf"))
    );

    let built = nix
        .build_unit_configs("rack machine with every daemon: checked configs", &module)
        .unwrap_or_else(|e| panic!("{}", e.stderr));
    assert_eq!(built.len(), 4);
    nix.build(
        "rack machine: checked sai-device config",
        &format!(
            "let config = {}; in config.environment.etc.\"sai/devices/conf\".source",
            nix.system(&module)
        ),
    )
    .unwrap_or_else(|e| panic!("{}", e.stderr));
}
