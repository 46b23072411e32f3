//! `sai validate` on racks, `sai rack render` (deterministic, every config
//! valid) and the generated Quadlet unit against the `podman run` that
//! `sai rack up` uses. Runs the real `sai` binary.

mod rack_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rack_support::{bin, render_rack, repo_root, sai, sai_ok};
use serde_json::{Value, json};

fn example() -> PathBuf {
    repo_root().join("examples/rack.json")
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn validate_accepts_the_example_rack_and_refuses_broken_ones_with_positions() {
    let out = sai(&["validate", example().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (rack)"));

    let tmp = tempfile::tempdir().unwrap();
    let mut rack: Value =
        serde_json::from_str(&std::fs::read_to_string(example()).unwrap()).unwrap();
    rack["builders"][1]["name"] = json!("deb12-oci");
    rack["builders"][2]["arch"] = json!("xtensa");
    rack["builders"][1]["devices"] = rack["builders"][0]["devices"].clone();
    let text = serde_json::to_string_pretty(&rack).unwrap();
    let bad = tmp.path().join("broken-rack.json");
    std::fs::write(&bad, &text).unwrap();
    let out = sai(&["validate", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line_of = |needle: &str, nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth)
            .unwrap()
            .0
            + 1
    };
    let name = bad.display().to_string();
    // Each problem at the line of the `nth` (0-based) line holding `needle`:
    // the duplicate name is the second "name": "deb12-oci" of a builder.
    for (needle, nth, says) in [
        ("\"name\": \"deb12-oci\"", 1, "builders[1].name"),
        ("\"arch\": \"xtensa\"", 0, "qemu cannot emulate"),
        ("\"tty\": \"/dev/ttyUSB0\"", 1, "already given"),
    ] {
        let at = format!("{name}:{}:", line_of(needle, nth));
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&at) && l.contains(says)),
            "{says} at {at}\n{stderr}"
        );
    }

    // A JSON syntax error and an unknown field are positioned too.
    let typo = tmp.path().join("typo-rack.json");
    std::fs::write(&typo, text.replacen("\"runs\"", "\"run\"", 1)).unwrap();
    let out = sai(&["validate", "--kind", "rack", typo.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", typo.display())) && stderr.contains("run"),
        "{stderr}"
    );
}

#[test]
fn render_is_deterministic_and_every_builder_conf_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        render_rack(&example(), out);
    }
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(ta, tb, "two renders differ");
    // Rendering again over the same folder changes nothing.
    render_rack(&example(), &a);
    assert_eq!(tree(&a), tb);

    let configs: Vec<String> = ta
        .keys()
        .filter(|k| k.ends_with(".conf"))
        .map(|k| a.join(k).display().to_string())
        .collect();
    for needed in [
        "deb12-oci/builder.conf",
        "deb12-oci/devices.conf",
        "deb12-nspawn/builder.conf",
        "deb12-vm/builder.conf",
        "nixos-x86/builder.conf",
        "sai-server/server.conf",
        "sai-web/web.conf",
    ] {
        assert!(
            ta.contains_key(needed),
            "{needed} not rendered: {:?}",
            ta.keys()
        );
    }
    for needed in [
        "deb12-oci/Containerfile",
        "deb12-oci/lab-deb12-oci.container",
        "deb12-oci/lab-deb12-oci-home.volume",
        "deb12-nspawn/deb12-nspawn.nspawn",
        "deb12-vm/run-vm.sh",
        "deb12-vm/init",
        "sai-server/Containerfile",
    ] {
        assert!(
            ta.contains_key(needed),
            "{needed} not rendered: {:?}",
            ta.keys()
        );
    }
    let mut args = vec!["validate"];
    args.extend(configs.iter().map(String::as_str));
    let out = sai_ok(&args);
    assert_eq!(
        out.lines().filter(|l| l.contains(": ok (")).count(),
        configs.len(),
        "{out}"
    );
    assert!(
        out.contains("builder.conf: ok (builder)") && out.contains("devices.conf: ok (device)"),
        "{out}"
    );

    // The VM runner is valid sh.
    let status = std::process::Command::new("sh")
        .args(["-n", a.join("deb12-vm/run-vm.sh").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(bin("sai").exists());
}

/// Parse a systemd-style unit: section -> key -> values in order.
fn parse_unit(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            out.entry(section.clone()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        out.get_mut(&section)
            .unwrap()
            .push((k.to_string(), v.to_string()));
    }
    out
}

fn values<'a>(
    unit: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    unit[section]
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn quadlet_units_name_what_podman_run_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("render");
    let rack = example();
    render_rack(&rack, &out);
    let printed = sai_ok(&[
        "rack",
        "up",
        rack.to_str().unwrap(),
        "deb12-oci",
        "--print",
        "--out",
        out.to_str().unwrap(),
    ]);
    let args: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(&args[..2], ["podman", "run"], "{printed}");
    let mut volumes = Vec::new();
    let mut devices = Vec::new();
    let mut env = Vec::new();
    let mut name = "";
    let mut network = "";
    let mut i = 2;
    while args[i].starts_with("--") {
        match args[i] {
            "--rm" | "--detach" => i += 1,
            flag => {
                let v = args[i + 1];
                match flag {
                    "--volume" => volumes.push(v),
                    "--device" => devices.push(v),
                    "--env" => env.push(v),
                    "--name" => name = v,
                    "--network" => network = v,
                    other => panic!("unexpected flag {other}"),
                }
                i += 2;
            }
        }
    }
    let image = args[i];
    let command = args[i + 1..].join(" ");

    let unit_text = std::fs::read_to_string(out.join("deb12-oci/lab-deb12-oci.container")).unwrap();
    let unit = parse_unit(&unit_text);
    assert_eq!(values(&unit, "Container", "Image"), [image]);
    assert_eq!(values(&unit, "Container", "ContainerName"), [name]);
    assert_eq!(values(&unit, "Container", "Network"), [network]);
    assert_eq!(network, "host");
    assert_eq!(values(&unit, "Container", "AddDevice"), devices);
    assert_eq!(devices, ["/dev/ttyUSB0:/dev/sai-esp32-1-console"]);
    assert_eq!(values(&unit, "Container", "Environment"), env);
    assert_eq!(values(&unit, "Container", "Exec"), [command.as_str()]);
    assert!(unit.contains_key("Install") && unit.contains_key("Service"));

    // Volumes: the named volume through its .volume unit, the config folder
    // at the deployment path in the unit and the render folder for `up`.
    let unit_volumes = values(&unit, "Container", "Volume");
    assert_eq!(
        unit_volumes.len(),
        volumes.len(),
        "{unit_volumes:?} vs {volumes:?}"
    );
    for (u, r) in unit_volumes.iter().zip(&volumes) {
        let (u_src, u_dst) = u.split_once(':').unwrap();
        let (r_src, r_dst) = r.split_once(':').unwrap();
        assert_eq!(u_dst, r_dst);
        if let Some(vol_unit) = u_src.strip_suffix(".volume") {
            let v =
                parse_unit(&std::fs::read_to_string(out.join("deb12-oci").join(u_src)).unwrap());
            assert_eq!(values(&v, "Volume", "VolumeName"), [r_src]);
            assert_eq!(vol_unit, r_src);
        } else {
            // Same file of the config folder: deployment root vs render folder.
            let u_rel = u_src.strip_prefix("/etc/sai/rack/deb12-oci").unwrap();
            let r_rel = r_src
                .strip_prefix(&out.join("deb12-oci").display().to_string())
                .unwrap();
            assert_eq!(u_rel, r_rel);
        }
    }

    // The image's Containerfile starts sai-builder the same way.
    let containerfile = std::fs::read_to_string(out.join("deb12-oci/Containerfile")).unwrap();
    assert!(
        containerfile.contains(
            "\"/usr/local/bin/sai-builder\", \"--config\", \"/etc/sai/builder/builder.conf\""
        ),
        "{containerfile}"
    );
    assert!(
        command.starts_with("/usr/local/bin/sai-builder --config /etc/sai/builder/builder.conf")
    );
}

#[test]
fn plan_names_every_member() {
    let out = sai_ok(&["rack", "plan", example().to_str().unwrap()]);
    for needed in [
        "deb12-oci (oci)",
        "deb12-nspawn (nspawn)",
        "deb12-vm (qemu)",
        "nixos-x86 (nixos)",
        "server sai-server",
        "web sai-web",
    ] {
        assert!(out.contains(needed), "{needed} missing from plan:\n{out}");
    }
}

/// Sai's own `.sai.json` runs on builders of the example rack: every task it
/// expands to has a platform some rack builder offers.
#[test]
fn repository_saifile_runs_on_the_example_rack() {
    let expanded = sai_ok(&[
        "saifile",
        "expand",
        repo_root().join(".sai.json").to_str().unwrap(),
        "--ref",
        "refs/heads/main",
        "--json",
    ]);
    let tasks: Vec<Value> = serde_json::from_str(&expanded).unwrap();
    assert!(tasks.len() >= 3, "{expanded}");
    let rack: Value = serde_json::from_str(&std::fs::read_to_string(example()).unwrap()).unwrap();
    let offered: Vec<(String, String)> = rack["builders"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["platforms"].as_array().unwrap().iter().map(move |p| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    p["name"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for task in &tasks {
        let platform = task["platform"].as_str().unwrap();
        let builder = offered
            .iter()
            .find(|(_, p)| sai_core::platform::tuple_matches(platform, p))
            .unwrap_or_else(|| {
                panic!("no builder of the example rack offers {platform}: {offered:?}")
            });
        used.insert(builder.0.clone());
    }
    assert!(used.contains("deb12-oci"), "{used:?}");
}
