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

  # `file` after `sai validate --kind <kind>` accepted it. A bad setting fails
  # here, when the system is built, with Sai's own file:line:col message.
  checkedConfig =
    { pkgs
    , package
    , kind
    , name
    , file
    ,
    }:
    pkgs.runCommand "${name}-checked.json" { } ''
      ${package}/bin/sai validate --kind ${kind} ${file}
      cp ${file} "$out"
    '';

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
