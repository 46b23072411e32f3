# sai-jig: HTTP-controlled GPIO sequences (reset, power-cycle, boot modes)
# for the boards on a test jig. It may open GPIO chips and nothing else.
{ config
, lib
, pkgs
, ...
}:
let
  inherit (lib) mkOption types;
  sai = import ./lib.nix { inherit lib; };
  cfg = config.services.sai.jig;
  unit = "sai-jig";

  checkedConfigFile = sai.checkedConfig {
    inherit pkgs;
    inherit (cfg) package;
    kind = "jig";
    name = unit;
    file = cfg.configFile;
  };
in
{
  options.services.sai.jig = {
    enable = lib.mkEnableOption "sai-jig, GPIO sequences for test jigs over HTTP";

    package = lib.mkPackageOption pkgs "sai" { };

    address = mkOption {
      type = types.str;
      default = "0.0.0.0";
      description = "Address the HTTP API listens on.";
    };

    port = mkOption {
      type = types.port;
      default = 44000;
      description = "Port the HTTP API listens on.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `port` in the firewall (for builders on other hosts).";
    };

    group = mkOption {
      type = types.str;
      default = "sai-jig";
      description = "Group given the GPIO chips by udev; the unit joins it.";
    };

    tokenFile = sai.secretOption "File holding the bearer token every request must carry. Without it, anyone who can reach the port drives the jig.";

    settings = sai.settingsOption {
      daemon = "sai-jig";
      example = {
        targets = [
          {
            name = "rpi4-1";
            gpios = [
              {
                name = "nReset";
                chip = "gpiochip0";
                offset = 17;
                safe = 1;
              }
            ];
            sequences = [
              {
                name = "reset";
                seq = [
                  {
                    gpio = "nReset";
                    value = 0;
                  }
                  { wait_ms = 300; }
                  {
                    gpio = "nReset";
                    value = 1;
                  }
                ];
              }
            ];
          }
        ];
      };
    };

    configFile = sai.configFileOption {
      daemon = "sai-jig";
      generated = sai.renderSettings pkgs unit cfg.settings;
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = sai.secretAssertions "services.sai.jig.tokenFile" cfg.tokenFile;

    warnings = lib.optional (cfg.tokenFile == null && !(cfg.settings ? token)) "services.sai.jig.tokenFile is not set: anyone who can reach ${sai.listenAddress cfg.address cfg.port} can drive the jig.";

    services.sai.jig.settings = {
      schema = "sai-jig";
      listen = sai.listenAddress cfg.address cfg.port;
      token_file = lib.mkIf (cfg.tokenFile != null) (sai.credentialPath unit "token");
    };

    users.groups.${cfg.group} = { };
    services.udev.extraRules = ''
      SUBSYSTEM=="gpio", KERNEL=="gpiochip[0-9]*", GROUP="${cfg.group}", MODE="0660"
    '';

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.${unit} = {
      description = "Sai test-jig GPIO sequences";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      environment.RUST_LOG = lib.mkDefault "info";
      restartTriggers = [ checkedConfigFile ];
      serviceConfig = lib.mkMerge [
        sai.hardening
        {
          ExecStart = "${cfg.package}/bin/sai-jig --config ${checkedConfigFile}";
          LoadCredential = lib.optional (cfg.tokenFile != null) "token:${toString cfg.tokenFile}";
          # GPIO chips only: the device class is allowed, the group decides.
          PrivateDevices = lib.mkForce false;
          DevicePolicy = "closed";
          DeviceAllow = [ "char-gpiochip rw" ];
          SupplementaryGroups = [ cfg.group ];
          Restart = "on-failure";
          RestartSec = 5;
        }
      ];
    };
  };
}
