# Helpers shared by Sai's NixOS modules: the settings type, secrets as
# credentials, the build-time check of a rendered config, and the hardening
# every unit starts from.
{ lib }:
let
  inherit (lib) types;
  prettyJSON = import ../nix/lib/pretty-json.nix;
in
rec {
  # Any JSON value; the freeform `settings` of every module hold these.
  jsonValue =
    types.nullOr
      (
        types.oneOf [
          types.bool
          types.int
          types.float
          types.str
          (types.attrsOf jsonValue)
          (types.listOf jsonValue)
        ]
      )
    // {
      description = "JSON value";
    };

  # An option of `type`, defaulting to `default`, described by `description`.
  option =
    type: default: description:
    lib.mkOption { inherit type default description; };

  # An option without a default (it must be set), of `type`, shown with
  # `example`, described by `description`.
  requiredOption =
    type: example: description:
    lib.mkOption { inherit type example description; };

  # `enable` and `package`: what every daemon's options start with.
  daemonOptions = pkgs: what: {
    enable = lib.mkEnableOption what;
    package = lib.mkPackageOption pkgs "sai" { };
  };

  # `address`, `port` and `openFirewall` of a daemon that listens.
  listenOptions =
    { what
    , address
    , port
    , addressExample ? null
    , firewallFor ? null
    ,
    }:
    {
      address = lib.mkOption (
        {
          type = types.str;
          default = address;
          description = "Address ${what} listens on.";
        }
        // lib.optionalAttrs (addressExample != null) { example = addressExample; }
      );
      port = lib.mkOption {
        type = types.port;
        default = port;
        description = "Port ${what} listens on.";
      };
      openFirewall = lib.mkOption {
        type = types.bool;
        default = false;
        description = "Open `port` in the firewall${lib.optionalString (firewallFor != null) " (for ${firewallFor})"}.";
      };
    };

  # `settings` and the `configFile` rendered from `cfg.settings` (as
  # `name`.json).
  configOptions =
    { pkgs
    , cfg
    , daemon
    , name ? daemon
    , example
    ,
    }:
    {
      settings = settingsOption { inherit daemon example; };
      configFile = configFileOption {
        inherit daemon;
        generated = renderSettings pkgs name cfg.settings;
      };
    };

  # A `settings` option: free JSON members (checked by `sai validate` at
  # build time, so a typo fails the build) plus the few the module declares.
  settingsOption =
    { daemon, example }:
    lib.mkOption {
      type = types.submodule { freeformType = types.attrsOf jsonValue; };
      default = { };
      inherit example;
      description = ''
        Configuration of ${daemon}, rendered to JSON. Every member is the
        config file's own key (see `schemas/` and `examples/` in Sai's
        sources); the result is checked with `sai validate` when the system
        is built, so an unknown key or a bad value fails the build with
        Sai's `file:line:col` message.
      '';
    };

  # `configFile`: the generated file by default; a hand-written one is still
  # checked at build time.
  configFileOption =
    { daemon, generated }:
    lib.mkOption {
      type = types.path;
      default = generated;
      defaultText = lib.literalMD "generated from `settings`";
      description = ''
        Config file of ${daemon}. Defaults to the one generated from
        `settings`; a file given here replaces it (the typed options then
        only configure the unit) and is checked with `sai validate` too.
      '';
    };

  # A secret: a path outside the Nix store, read by systemd and handed to
  # the daemon as a credential.
  secretOption =
    description:
    lib.mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/keys/sai-secret";
      description = ''
        ${description}

        Give the absolute path of a file outside the Nix store, as a
        string: systemd reads it when the unit starts and hands it to the
        daemon with `LoadCredential`, so only the unit can read it. Nix
        path literals and store paths are refused, because the store is
        readable by every user.
      '';
    };

  # `secretAssertions` of every secret option, given as full option name ->
  # value.
  secretsAssertions = secrets: lib.concatLists (lib.mapAttrsToList secretAssertions secrets);

  # Assertions refusing a secret that is (or would be copied to) the store.
  secretAssertions =
    optionName: value:
    lib.optional (value != null) {
      assertion = !(builtins.isPath value) && !(lib.hasPrefix "${builtins.storeDir}/" (toString value));
      message = ''
        ${optionName} is ${
          if builtins.isPath value then "a Nix path literal (${toString value}), which is copied" else "\"${toString value}\", a file"
        } into the Nix store, which every user can read. Give the path of a
        file outside the store as a string, e.g. "/run/keys/sai-secret".
      '';
    };

  # Where systemd puts the credential `id` of `unit` (a fixed path, so it can
  # be written into the config file).
  credentialPath = unit: id: "/run/credentials/${unit}.service/${id}";

  # `host:port` as Sai's `listen` settings want it (IPv6 in brackets).
  listenAddress = address: port: if lib.hasInfix ":" address then "[${address}]:${toString port}" else "${address}:${toString port}";

  # The settings written as a JSON file, one member per line.
  renderSettings = pkgs: name: settings: pkgs.writeText "${name}.json" (prettyJSON settings);

  # The `configFile` of `cfg` after its `package`'s `sai validate --kind
  # <kind>` accepted it. A bad setting fails here, when the system is built,
  # with Sai's own file:line:col message.
  checkedConfig =
    { pkgs
    , cfg
    , kind
    , name
    ,
    }:
    pkgs.runCommand "${name}-checked.json" { } ''
      ${cfg.package}/bin/sai validate --kind ${kind} ${cfg.configFile}
      cp ${cfg.configFile} "$out"
    '';

  # The unit of a daemon started at boot once the network is up, restarted
  # when it fails and when its checked config changes, sandboxed by
  # `hardening`; `credentials` (id -> secret file, null: not given) are
  # handed over with `LoadCredential`. `serviceConfig` holds what the
  # daemon loosens or adds.
  daemonUnit =
    { description
    , config
    , exec
    , subcommand ? null
    , network ? "network-online.target"
    , after ? [ ]
    , credentials ? { }
    , serviceConfig
    ,
    }:
    {
      inherit description;
      wantedBy = [ "multi-user.target" ];
      wants = lib.optional (network == "network-online.target") network;
      after = [ network ] ++ after;
      environment.RUST_LOG = lib.mkDefault "info";
      restartTriggers = [ config ];
      serviceConfig = lib.mkMerge (
        [
          hardening
          {
            ExecStart = "${exec} --config ${config}${lib.optionalString (subcommand != null) " ${subcommand}"}";
            LoadCredential = lib.mapAttrsToList (id: file: "${id}:${toString file}") (
              lib.filterAttrs (_: file: file != null) credentials
            );
            Restart = lib.mkDefault "on-failure";
            RestartSec = lib.mkDefault 5;
          }
        ]
        ++ lib.toList serviceConfig
      );
    };

  # The systemd sandbox every Sai unit starts from; each module loosens
  # only what its daemon needs, with a comment saying why.
  hardening = {
    DynamicUser = true;
    UMask = "0077";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    RemoveIPC = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    CapabilityBoundingSet = [ "" ];
    AmbientCapabilities = [ "" ];
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "~@resources"
    ];
  };
}
