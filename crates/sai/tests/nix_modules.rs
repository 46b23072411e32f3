//! The NixOS modules in nixos-modules/, evaluated by nixpkgs' real module
//! system (`lib.evalModules` from ../shared/nixpkgs-lib) with stand-ins for
//! the NixOS options they set and for `pkgs` (nix/testing/). The rendered
//! configs are built in a real (throwaway) Nix store, which runs the real
//! `sai validate` on them, exactly as `nixos-rebuild` would.

mod nix_harness;

use nix_harness::Nix;
use serde_json::Value;

/// Every daemon enabled, with the secrets and options a deployment sets.
const FULL_HOST: &str = r#"{
  services.sai.server = {
    enable = true;
    address = "0.0.0.0";
    openFirewall = true;
    notificationKeyFile = "/run/keys/sai-hook-key";
    projects.libwebsockets = { };
    projects.sai.notificationKeyFile = "/run/keys/sai-project-key";
    settings.retention.max_age_days = 90;
  };
  services.sai.web = {
    enable = true;
    publicUrl = "https://ci.example.org/sai";
    usersFile = "/run/keys/sai-web-users";
  };
  services.sai.device = {
    enable = true;
    devices.esp32-1 = {
      type = "esp32-wrover";
      compatible = [ "esp32" ];
      ttys = [ { name = "console"; udevMatch."ATTRS{serial}" = "FT4XYZ12"; rate = 115200; } ];
    };
    devices.rpi4-1 = {
      type = "rpi4";
      ttys = [
        { name = "console"; path = "/dev/serial/by-id/usb-FTDI-if00-port0"; }
        { name = "debug"; path = "/dev/ttyUSB3"; lock = false; }
      ];
    };
  };
  services.sai.jig = {
    enable = true;
    tokenFile = "/run/keys/sai-jig-token";
    settings.targets = [ {
      name = "rpi4-1";
      gpios = [ { name = "nReset"; chip = "gpiochip0"; offset = 17; safe = 1; } ];
      sequences = [ { name = "reset"; seq = [ { gpio = "nReset"; value = 0; } { wait_ms = 300; } { gpio = "nReset"; value = 1; } ]; } ];
    } ];
  };
  services.sai.builder.instances = {
    gcc = {
      servers.ci = { url = "wss://ci.example.org/sai/builder"; tokenFile = "/run/keys/gcc-ci.token"; };
      servers.local = { url = "ws://127.0.0.1:4444/builder"; tokenFile = "/run/keys/gcc-local.token"; };
      platforms."linux-nixos/x86_64-amd/gcc" = { instances = 2; env.CCACHE_DIR = "/var/cache/ccache"; };
      platforms."linux-nixos/x86_64-amd/llvm" = { servers = [ "local" ]; limits.parallel = 4; };
      settings.step_timeout_secs = 3600;
    };
    plain = {
      useDevices = false;
      servers.local = { url = "ws://127.0.0.1:4444/builder"; tokenFile = "/run/keys/plain.token"; };
      platforms."linux-nixos/x86_64-amd/gcc" = { };
    };
  };
}"#;

fn service(config: &Value, unit: &str) -> Value {
    config["systemd"]["services"][unit].clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The sandbox every unit keeps, whatever it loosens.
fn assert_hardened(unit: &str, sc: &Value) {
    for (key, want) in [
        ("DynamicUser", Value::Bool(true)),
        ("NoNewPrivileges", Value::Bool(true)),
        ("ProtectSystem", Value::from("strict")),
        ("ProtectHome", Value::Bool(true)),
        ("PrivateTmp", Value::Bool(true)),
        ("RestrictSUIDSGID", Value::Bool(true)),
        ("ProtectKernelModules", Value::Bool(true)),
        ("SystemCallArchitectures", Value::from("native")),
    ] {
        assert_eq!(sc[key], want, "{unit}: {key} in {sc}");
    }
    assert_eq!(strings(&sc["CapabilityBoundingSet"]), [""], "{unit}");
    assert_eq!(
        strings(&sc["SystemCallFilter"])[0],
        "@system-service",
        "{unit}"
    );
}

#[test]
fn server_unit_is_hardened_and_gets_its_secrets_as_credentials() {
    let nix = Nix::new();
    let config = nix.system_value(
        "server unit",
        FULL_HOST,
        "{ inherit (config) systemd networking; etc = config.environment.etc; }",
    );
    let unit = service(&config, "sai-server");
    let sc = &unit["serviceConfig"];
    assert_hardened("sai-server", sc);
    let exec = sc["ExecStart"].as_str().unwrap();
    assert!(
        exec.starts_with(&format!(
            "{}/bin/sai-server --config /nix/store/",
            nix.sai_package().display()
        )) && exec.ends_with("-sai-server-checked.json run"),
        "{exec}"
    );
    assert_eq!(
        strings(&sc["LoadCredential"]),
        [
            "notification-key:/run/keys/sai-hook-key",
            "project-sai-notification-key:/run/keys/sai-project-key",
        ]
    );
    assert_eq!(sc["StateDirectory"], "sai-server");
    assert_eq!(sc["PrivateDevices"], true);
    assert_eq!(sc["MemoryDenyWriteExecute"], true);
    assert_eq!(strings(&unit["wantedBy"]), ["multi-user.target"]);
    assert_eq!(
        config["networking"]["firewall"]["allowedTCPPorts"],
        serde_json::json!([4444])
    );
    // Admins mint tokens with the same checked file.
    assert_eq!(
        config["etc"]["sai/server/conf"]["source"].as_str(),
        exec.split(' ').nth(2)
    );
}

#[test]
fn rendered_configs_pass_the_real_sai_validate_and_carry_the_typed_options() {
    let nix = Nix::new();
    let built = nix
        .build_unit_configs("build every checked config", FULL_HOST)
        .unwrap_or_else(|e| panic!("{}", e.stderr));
    let names: Vec<&str> = built.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "sai-builder-gcc",
            "sai-builder-plain",
            "sai-jig",
            "sai-server",
            "sai-web"
        ]
    );
    let read = |unit: &str| -> Value {
        let path = &built.iter().find(|(n, _)| n == unit).unwrap().1;
        let text = std::fs::read_to_string(path).unwrap();
        // The file the daemon reads is the checked one, one member per line.
        assert!(text.lines().count() > 5, "{unit}: {text}");
        sai_testkit::run_ok(
            unit,
            std::process::Command::new(env!("CARGO_BIN_EXE_sai"))
                .arg("validate")
                .arg(path),
        );
        serde_json::from_str(&text).unwrap()
    };

    let server = read("sai-server");
    assert_eq!(server["listen"], "0.0.0.0:4444");
    assert_eq!(server["data_dir"], "/var/lib/sai-server");
    assert_eq!(
        server["notification_key_file"],
        "/run/credentials/sai-server.service/notification-key"
    );
    assert_eq!(
        server["projects"],
        serde_json::json!([
            {"name": "libwebsockets"},
            {"name": "sai", "notification_key_file": "/run/credentials/sai-server.service/project-sai-notification-key"}
        ])
    );
    assert_eq!(server["retention"]["max_age_days"], 90);

    let web = read("sai-web");
    assert_eq!(web["server_url"], "http://127.0.0.1:4444");
    assert_eq!(web["users_file"], "/run/credentials/sai-web.service/users");
    assert_eq!(web["session_key_file"], "/var/lib/sai-web/session.key");

    let gcc = read("sai-builder-gcc");
    assert_eq!(gcc["host"], "gcc");
    assert_eq!(gcc["home"], "/var/lib/sai-builder-gcc");
    assert_eq!(gcc["step_timeout_secs"], 3600);
    let platforms = gcc["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(platforms[0]["name"], "linux-nixos/x86_64-amd/gcc");
    assert_eq!(platforms[0]["instances"], 2);
    assert_eq!(platforms[0]["servers"].as_array().unwrap().len(), 2);
    assert_eq!(platforms[0]["env"]["CCACHE_DIR"], "/var/cache/ccache");
    assert!(
        platforms[0]["env"]["PATH"]
            .as_str()
            .unwrap()
            .contains("/bin")
    );
    assert_eq!(
        platforms[1]["servers"],
        serde_json::json!([{
            "url": "ws://127.0.0.1:4444/builder",
            "token_file": "/run/credentials/sai-builder-gcc.service/local-token"
        }])
    );
    assert_eq!(platforms[1]["limits"]["parallel"], 4);

    let jig = read("sai-jig");
    assert_eq!(jig["listen"], "0.0.0.0:44000");
    assert_eq!(jig["token_file"], "/run/credentials/sai-jig.service/token");

    // sai-device has no unit: its checked config is /etc/sai/devices/conf.
    let etc = nix
        .build(
            "build the sai-device config",
            &format!(
                "let config = {}; in config.environment.etc.\"sai/devices/conf\".source",
                nix.system(FULL_HOST)
            ),
        )
        .unwrap_or_else(|e| panic!("{}", e.stderr));
    let device: Value = serde_json::from_str(&std::fs::read_to_string(&etc[0]).unwrap()).unwrap();
    assert_eq!(device["home"], "/run/sai-device");
    assert_eq!(device["devices"][0]["name"], "esp32-1");
    assert_eq!(
        device["devices"][0]["ttys"][0]["tty"],
        "/dev/sai/esp32-1-console"
    );
    assert_eq!(device["devices"][1]["ttys"][1]["tty"], "/dev/ttyUSB3");
    assert_eq!(device["devices"][1]["ttys"][1]["lock"], false);
}

#[test]
fn a_bad_setting_fails_the_build_with_sais_file_line_col() {
    let nix = Nix::new();
    let err = nix
        .build_unit_configs(
            "build a config with a typo",
            r#"{ services.sai.server = { enable = true; settings.retention.max_age_dayz = 90; }; }"#,
        )
        .expect_err("a typo in settings must fail the build");
    // `<store path>-sai-server.json:<line>:<col>: unknown field ...`
    let line = err
        .stderr
        .lines()
        .find(|l| l.contains("unknown field `max_age_dayz`"))
        .unwrap_or_else(|| panic!("no sai validate message:\n{}", err.stderr));
    let (file, rest) = line.split_once(".json:").unwrap();
    let file = format!("{}.json", file.trim());
    assert!(
        file.starts_with("/nix/store/") && file.ends_with("-sai-server.json"),
        "{line}"
    );
    let line_no: usize = rest.split(':').next().unwrap().parse().unwrap();
    let text = std::fs::read_to_string(nix.real_path(&file)).unwrap();
    assert!(
        text.lines()
            .nth(line_no - 1)
            .unwrap()
            .contains("max_age_dayz"),
        "line {line_no} of {file} is not the bad setting:\n{text}"
    );
    assert!(
        rest.contains("expected `keep_events_per_project` or `max_age_days`"),
        "{line}"
    );

    // A value the schema refuses, in a builder instance.
    let err = nix
        .build_unit_configs(
            "build a builder config with a bad value",
            r#"{ services.sai.builder.instances.x = {
                   servers.s = { url = "ws://127.0.0.1:4444/builder"; tokenFile = "/run/keys/t"; };
                   platforms."linux-nixos/x86_64/gcc" = { };
                   settings.log_limit_bytes = 10;
                 }; }"#,
        )
        .expect_err("a bad value must fail the build");
    assert!(
        err.stderr.contains("-sai-builder-x.json:") && err.stderr.contains("log_limit_bytes"),
        "{}",
        err.stderr
    );
}

#[test]
fn a_bad_typed_option_fails_evaluation_naming_the_option() {
    let nix = Nix::new();
    for (module, expected) in [
        (
            r#"{ services.sai.server = { enable = true; listne = "0.0.0.0:1"; }; }"#,
            "The option `services.sai.server.listne' does not exist",
        ),
        (
            r#"{ services.sai.server = { enable = true; port = 70000; }; }"#,
            "services.sai.server.port",
        ),
        (
            r#"{ services.sai.server = { enable = true; dataDir = "/srv/sai"; }; }"#,
            "services.sai.server.dataDir",
        ),
        (
            r#"{ services.sai.builder.instances.x.platforms.p.instances = 0; }"#,
            "services.sai.builder.instances.x.platforms.p.instances",
        ),
        (
            r#"{ services.sai.server = { enable = true; settings.listen = "0.0.0.0:1"; }; }"#,
            "services.sai.server.settings.listen' has conflicting definition values",
        ),
        (
            r#"{ services.sai.builder.instances.x = {
                   servers.a = { url = "ws://127.0.0.1:1/builder"; tokenFile = "/run/keys/t"; };
                   platforms.p.servers = [ "b" ]; }; }"#,
            "names \"b\", which is not in services.sai.builder.instances.x.servers (a)",
        ),
        (
            r#"{ services.sai.server = { enable = true; projects.lws = { }; }; }"#,
            "services.sai.server.projects: lws has no notificationKeyFile",
        ),
        (
            r#"{ services.sai.device = { enable = true; devices.b = { type = "t"; ttys = [ { name = "c"; } ]; }; }; }"#,
            "tty \"c\" needs `udevMatch`",
        ),
        (
            r#"{ services.sai.web.enable = true; }"#,
            "services.sai.web.serverUrl is not set",
        ),
    ] {
        let err = nix
            .eval_system(
                "evaluate a bad option",
                module,
                "map (s: s.serviceConfig.ExecStart) (builtins.attrValues config.systemd.services)",
            )
            .expect_err(module);
        assert!(
            err.stderr.contains(expected),
            "{module}\nexpected {expected:?} in:\n{}",
            err.stderr
        );
    }
}

#[test]
fn a_secret_in_the_nix_store_is_refused() {
    let nix = Nix::new();
    for (module, option) in [
        (
            r#"{ services.sai.server = { enable = true; notificationKeyFile = "/nix/store/00000000000000000000000000000000-key"; }; }"#,
            "services.sai.server.notificationKeyFile",
        ),
        (
            r#"{ services.sai.server = { enable = true; notificationKeyFile = "/run/k"; projects.p.notificationKeyFile = "/nix/store/00000000000000000000000000000000-keys/p"; }; }"#,
            "services.sai.server.projects.p.notificationKeyFile",
        ),
        (
            r#"{ services.sai.web = { enable = true; serverUrl = "http://127.0.0.1:1"; sessionKeyFile = /etc/hostname; }; }"#,
            "services.sai.web.sessionKeyFile",
        ),
        (
            r#"{ services.sai.builder.instances.x = {
                   servers.s = { url = "ws://127.0.0.1:1/builder"; tokenFile = "/nix/store/00000000000000000000000000000000-token"; };
                   platforms."linux-nixos/x86_64/gcc" = { }; }; }"#,
            "services.sai.builder.instances.x.servers.s.tokenFile",
        ),
        (
            r#"{ services.sai.jig = { enable = true; tokenFile = "/nix/store/00000000000000000000000000000000-t"; }; }"#,
            "services.sai.jig.tokenFile",
        ),
    ] {
        let err = nix
            .eval_system(
                "evaluate a store secret",
                module,
                "map (s: s.serviceConfig.LoadCredential) (builtins.attrValues config.systemd.services)",
            )
            .expect_err(module);
        assert!(
            err.stderr.contains("Failed assertions")
                && err.stderr.contains(&format!("{option} is"))
                && err.stderr.contains("every user can read"),
            "{module}\n{}",
            err.stderr
        );
    }
}

#[test]
fn each_builder_instance_gets_its_own_unit_with_only_what_steps_need() {
    let config =
        Nix::new().system_value("builder units", FULL_HOST, "{ inherit (config) systemd; }");
    for name in ["gcc", "plain"] {
        let unit = service(&config, &format!("sai-builder-{name}"));
        let sc = &unit["serviceConfig"];
        assert_hardened(name, sc);
        assert_eq!(sc["StateDirectory"], format!("sai-builder-{name}"));
        assert!(
            sc["ExecStart"]
                .as_str()
                .unwrap()
                .contains("/bin/sai-builder --config /nix/store/"),
            "{sc}"
        );
        // JITs and sanitizers in build steps; still no privileged syscalls.
        assert_eq!(sc["MemoryDenyWriteExecute"], false);
        assert!(
            strings(&sc["SystemCallFilter"])[1].contains("@mount"),
            "{sc}"
        );
        assert_eq!(sc["KillMode"], "mixed");
        assert_eq!(strings(&unit["path"]).len(), 1, "git for local fetches");
    }
    let gcc = &service(&config, "sai-builder-gcc")["serviceConfig"];
    assert_eq!(
        strings(&gcc["LoadCredential"]),
        [
            "ci-token:/run/keys/gcc-ci.token",
            "local-token:/run/keys/gcc-local.token"
        ]
    );
    // Boards: their group, their tty classes, the shared queue; nothing else.
    assert_eq!(strings(&gcc["SupplementaryGroups"]), ["sai-devices"]);
    assert_eq!(gcc["PrivateDevices"], false);
    assert_eq!(gcc["DevicePolicy"], "closed");
    assert_eq!(
        strings(&gcc["DeviceAllow"]),
        ["char-ttyUSB rw", "char-ttyACM rw"]
    );
    assert_eq!(strings(&gcc["ReadWritePaths"]), ["/run/sai-device"]);

    let plain = &service(&config, "sai-builder-plain")["serviceConfig"];
    assert_eq!(
        strings(&plain["LoadCredential"]),
        ["local-token:/run/keys/plain.token"]
    );
    assert_eq!(plain["PrivateDevices"], true);
    assert!(plain.get("SupplementaryGroups").is_none(), "{plain}");
    assert!(plain.get("DeviceAllow").is_none(), "{plain}");
    assert!(plain.get("ReadWritePaths").is_none(), "{plain}");
}

#[test]
fn boards_get_udev_rules_a_group_and_a_shared_queue() {
    let config = Nix::new().system_value(
        "device rules",
        FULL_HOST,
        "{ inherit (config) users systemd; udev = config.services.udev.extraRules; }",
    );
    let udev = config["udev"].as_str().unwrap();
    for rule in [
        r#"SUBSYSTEM=="tty", ATTRS{serial}=="FT4XYZ12", GROUP="sai-devices", MODE="0660", SYMLINK+="sai/esp32-1-console""#,
        r#"SUBSYSTEM=="tty", SYMLINK=="serial/by-id/usb-FTDI-if00-port0", GROUP="sai-devices", MODE="0660""#,
        r#"SUBSYSTEM=="tty", KERNEL=="ttyUSB3", GROUP="sai-devices", MODE="0660""#,
        r#"SUBSYSTEM=="gpio", KERNEL=="gpiochip[0-9]*", GROUP="sai-jig", MODE="0660""#,
    ] {
        assert!(
            udev.lines().any(|l| l == rule),
            "missing {rule} in:\n{udev}"
        );
    }
    assert!(config["users"]["groups"].get("sai-devices").is_some());
    assert!(config["users"]["groups"].get("sai-jig").is_some());
    assert_eq!(
        strings(&config["systemd"]["tmpfiles"]["rules"]),
        [
            "d /run/sai-device 2770 root sai-devices -",
            "d /run/sai-device/queue 2770 root sai-devices -",
            "f /run/sai-device/seq 0660 root sai-devices -",
        ]
    );
    let jig = &service(&config, "sai-jig")["serviceConfig"];
    assert_hardened("sai-jig", jig);
    assert_eq!(strings(&jig["DeviceAllow"]), ["char-gpiochip rw"]);
    assert_eq!(strings(&jig["SupplementaryGroups"]), ["sai-jig"]);
    assert_eq!(
        strings(&jig["LoadCredential"]),
        ["token:/run/keys/sai-jig-token"]
    );
}

#[test]
fn web_shows_the_local_server_unless_told_otherwise() {
    let nix = Nix::new();
    let url = |module: &str| {
        nix.system_value("web serverUrl", module, "config.services.sai.web.serverUrl")
    };
    assert_eq!(
        url(
            r#"{ services.sai.server = { enable = true; address = "::"; port = 5000; }; services.sai.web.enable = true; }"#
        ),
        "http://[::1]:5000"
    );
    assert_eq!(
        url(
            r#"{ services.sai.server = { enable = true; address = "192.0.2.7"; }; services.sai.web.enable = true; }"#
        ),
        "http://192.0.2.7:4444"
    );
    let config = nix.system_value(
        "web unit",
        r#"{ services.sai.web = { enable = true; serverUrl = "https://ci.example.org/sai"; sessionKeyFile = "/run/keys/session"; }; }"#,
        "config.systemd.services.sai-web",
    );
    let sc = &config["serviceConfig"];
    assert_hardened("sai-web", sc);
    assert_eq!(
        strings(&sc["LoadCredential"]),
        ["session-key:/run/keys/session"]
    );
    assert_eq!(sc["StateDirectory"], "sai-web");
    assert!(
        strings(&config["after"])
            .iter()
            .all(|u| u != "sai-server.service")
    );
}

/// Settings for TLS and service tokens (read by sai-server, sai-builder and
/// sai-web once those features are in): secrets still go through
/// credentials, public files and flags are passed as written.
#[test]
fn tls_files_and_service_tokens_are_credentials_too() {
    let nix = Nix::new();
    let config = nix.system_value(
            "tls and service token options",
            r#"{
              services.sai.server = {
                enable = true;
                notificationKeyFile = "/run/keys/hook";
                tls.certificateChainFile = "/var/lib/acme/ci/fullchain.pem";
                tls.privateKeyFile = "/var/lib/acme/ci/key.pem";
              };
              services.sai.web = {
                enable = true;
                serverTokenFile = "/run/keys/web-service.token";
                tls.certificateChainFile = "/var/lib/acme/web/fullchain.pem";
                tls.privateKeyFile = "/var/lib/acme/web/key.pem";
              };
              services.sai.builder.instances.x = {
                servers.lan = { url = "ws://192.0.2.1:4444/builder"; tokenFile = "/run/keys/t"; insecure = true; };
                servers.wan = { url = "wss://ci.example.org/builder"; tokenFile = "/run/keys/u"; caFile = "/etc/ssl/lab-ca.pem"; };
                platforms."linux-nixos/x86_64/gcc" = { };
              };
            }"#,
            "{ inherit (config.services.sai.server) settings; web = config.services.sai.web.settings; builder = config.services.sai.builder.instances.x.settings; units = config.systemd.services; }",
        );
    assert_eq!(
        config["settings"]["tls"],
        serde_json::json!({
            "certificate_chain_file": "/run/credentials/sai-server.service/tls-chain",
            "private_key_file": "/run/credentials/sai-server.service/tls-key",
        })
    );
    assert_eq!(
        strings(&config["units"]["sai-server"]["serviceConfig"]["LoadCredential"]),
        [
            "notification-key:/run/keys/hook",
            "tls-chain:/var/lib/acme/ci/fullchain.pem",
            "tls-key:/var/lib/acme/ci/key.pem",
        ]
    );
    assert_eq!(
        config["web"]["server_token_file"],
        "/run/credentials/sai-web.service/server-token"
    );
    let web_credentials = strings(&config["units"]["sai-web"]["serviceConfig"]["LoadCredential"]);
    for c in [
        "server-token:/run/keys/web-service.token",
        "tls-chain:/var/lib/acme/web/fullchain.pem",
        "tls-key:/var/lib/acme/web/key.pem",
    ] {
        assert!(
            web_credentials.contains(&c.to_string()),
            "{web_credentials:?}"
        );
    }
    assert_eq!(
        config["web"]["tls"],
        serde_json::json!({
            "certificate_chain_file": "/run/credentials/sai-web.service/tls-chain",
            "private_key_file": "/run/credentials/sai-web.service/tls-key",
        })
    );
    let servers = &config["builder"]["platforms"][0]["servers"];
    assert_eq!(servers[0]["insecure"], true);
    assert!(servers[0].get("ca_file").is_none(), "{servers}");
    assert_eq!(servers[1]["ca_file"], "/etc/ssl/lab-ca.pem");
    assert!(servers[1].get("insecure").is_none(), "{servers}");

    let err = nix
        .eval_system(
            "half a TLS setup",
            r#"{ services.sai.server = { enable = true; tls.privateKeyFile = "/run/keys/k"; }; }"#,
            "config.systemd.services.sai-server.serviceConfig.ExecStart",
        )
        .expect_err("a key without a certificate must be refused");
    assert!(
        err.stderr
            .contains("services.sai.server.tls: set both certificateChainFile and privateKeyFile"),
        "{}",
        err.stderr
    );
    let err = nix
        .eval_system(
            "a TLS key in the store",
            r#"{ services.sai.server = { enable = true; tls.certificateChainFile = "/etc/c"; tls.privateKeyFile = "/nix/store/00000000000000000000000000000000-key.pem"; }; }"#,
            "config.systemd.services.sai-server.serviceConfig.ExecStart",
        )
        .expect_err("a key in the store must be refused");
    assert!(
        err.stderr
            .contains("services.sai.server.tls.privateKeyFile is \"/nix/store/"),
        "{}",
        err.stderr
    );
}

#[test]
fn a_hand_written_config_file_is_checked_too() {
    let nix = Nix::new();
    let example = nix_harness::repo_root().join("examples/server.conf");
    let module = format!(
        r#"{{ services.sai.server = {{ enable = true; configFile = {}; }}; }}"#,
        example.display()
    );
    let built = nix
        .build_unit_configs("build a hand-written server.conf", &module)
        .unwrap_or_else(|e| panic!("{}", e.stderr));
    assert_eq!(built.len(), 1);
    assert_eq!(
        std::fs::read(&built[0].1).unwrap(),
        std::fs::read(&example).unwrap(),
        "the unit must read the file as written"
    );

    let err = nix
        .build_unit_configs(
            "build a hand-written config with a typo",
            r#"{ services.sai.server = { enable = true; configFile = builtins.toFile "server.conf" "{\n  \"listne\": \"0.0.0.0:1\"\n}\n"; }; }"#,
        )
        .expect_err("a typo in a hand-written file must fail the build");
    assert!(
        err.stderr
            .contains("-server.conf:2:3: unknown field `listne`"),
        "{}",
        err.stderr
    );
}
