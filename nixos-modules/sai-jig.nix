# sai-jig: HTTP-controlled GPIO sequences (reset, power-cycle, boot modes)
# for the boards on a test jig. It may open GPIO chips and nothing else.
{ config, lib, pkgs, ... }:
let
  inherit (lib) types;
  sai = import ./lib.nix { inherit lib; };
  cfg = config.services.sai.jig;
  unit = "sai-jig";

  checkedConfigFile = sai.checkedConfig { inherit pkgs cfg; kind = "jig"; name = unit; };
in
{
  options.services.sai.jig =
    sai.daemonOptions pkgs "sai-jig, GPIO sequences for test jigs over HTTP"
    // sai.listenOptions { what = "the HTTP API"; address = "0.0.0.0"; port = 44000; firewallFor = "builders on other hosts"; }
    // sai.configOptions {
      inherit pkgs cfg;
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
    }
    // {
      group = sai.option types.str "sai-jig" "Group given the GPIO chips by udev; the unit joins it.";

      tokenFile = sai.secretOption "File holding the bearer token every request must carry. Without it, anyone who can reach the port drives the jig.";
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

    systemd.services.${unit} = sai.daemonUnit {
      description = "Sai test-jig GPIO sequences";
      config = checkedConfigFile;
      exec = "${cfg.package}/bin/sai-jig";
      network = "network.target";
      credentials.token = cfg.tokenFile;
      serviceConfig = {
        # GPIO chips only: the device class is allowed, the group decides.
        PrivateDevices = lib.mkForce false;
        DevicePolicy = "closed";
        DeviceAllow = [ "char-gpiochip rw" ];
        SupplementaryGroups = [ cfg.group ];
      };
    };
  };
}
