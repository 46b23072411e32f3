# A stand-in for the few NixOS options Sai's modules set, with NixOS's names
# and types, so the modules can be evaluated by the real `lib.evalModules`
# without nixpkgs. Anything a module sets that is not declared here fails
# the evaluation ("The option `...' does not exist"), as it would on NixOS.
{ lib, ... }:
let
  inherit (lib) mkOption types;

  # An option of `type` that defaults to `default`.
  opt = type: default: mkOption { inherit type default; };

  # NixOS merges unit settings: lists concatenate, other values must agree.
  unitOption = types.mkOptionType {
    name = "systemd option";
    check = _: true;
    merge =
      loc: defs:
      if lib.any (def: builtins.isList def.value) defs then
        lib.concatMap (def: lib.toList def.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  unitNames = opt (types.listOf types.str) [ ];

  serviceType = types.submodule {
    options = {
      enable = opt types.bool true;
      description = opt types.str "";
      wantedBy = unitNames;
      requiredBy = unitNames;
      wants = unitNames;
      requires = unitNames;
      after = unitNames;
      before = unitNames;
      bindsTo = unitNames;
      partOf = unitNames;
      conflicts = unitNames;
      path = opt (types.listOf (types.either types.package types.str)) [ ];
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      restartTriggers = opt (types.listOf types.unspecified) [ ];
      serviceConfig = opt (types.attrsOf unitOption) { };
      unitConfig = opt (types.attrsOf unitOption) { };
      script = opt types.lines "";
      preStart = opt types.lines "";
    };
  };
in
{
  options = {
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = opt (types.listOf types.str) [ ];

    systemd.services = opt (types.attrsOf serviceType) { };
    systemd.tmpfiles.rules = opt (types.listOf types.str) [ ];

    users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            isSystemUser = opt types.bool false;
            group = opt types.str "";
            extraGroups = opt (types.listOf types.str) [ ];
            home = opt types.str "/var/empty";
            createHome = opt types.bool false;
            description = opt types.str "";
          };
        }
      );
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            gid = opt (types.nullOr types.int) null;
            members = opt (types.listOf types.str) [ ];
          };
        }
      );
      default = { };
    };

    networking.hostName = opt (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];
    networking.firewall.allowedUDPPorts = opt (types.listOf types.port) [ ];

    environment.etc = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            source = mkOption { type = types.path; };
            mode = opt types.str "symlink";
            user = opt types.str "+0";
            group = opt types.str "+0";
          };
        }
      );
      default = { };
    };
    environment.systemPackages = opt (types.listOf types.package) [ ];

    services.udev.extraRules = opt types.lines "";
  };
}
