# sai-server: git hook intake, scheduler, builder websocket and operations
# API. One unit, `sai-server.service`, DynamicUser with its state under
# /var/lib; secrets reach it only as systemd credentials.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  sai = import ./lib.nix { inherit lib; };
  cfg = config.services.sai.server;
  unit = "sai-server";
  credential = sai.credentialPath unit;
  projectKeyId = name: "project-${name}-notification-key";

  # Secrets as credential id -> source file.
  credentials =
    {
      notification-key = cfg.notificationKeyFile;
      tls-chain = cfg.tls.certificateChainFile;
      tls-key = cfg.tls.privateKeyFile;
      token-key = cfg.tokenKeyFile;
    }
    // lib.mapAttrs' (name: project: lib.nameValuePair (projectKeyId name) project.notificationKeyFile) cfg.projects;

  checkedConfigFile = sai.checkedConfig { inherit pkgs cfg; kind = "server"; name = unit; };

  hasGlobalKey = cfg.notificationKeyFile != null || cfg.settings ? notification_key;
  projectsWithoutKey = lib.attrNames (lib.filterAttrs (_: p: p.notificationKeyFile == null) cfg.projects);
in
{
  options.services.sai.server =
    sai.daemonOptions pkgs "sai-server, the Sai CI server (git hooks, scheduler, builder websocket, operations API)"
    // sai.listenOptions { what = "the server (hooks, builders and the operations API)"; address = "127.0.0.1"; addressExample = "0.0.0.0"; port = 4444; firewallFor = "builders and git servers on other hosts"; }
    // sai.configOptions {
      inherit pkgs cfg;
      daemon = "sai-server";
      example = {
        dispatch_grace_ms = 2000;
        retention = {
          keep_events_per_project = 200;
          max_age_days = 90;
        };
      };
    }
    // {
      dataDir = mkOption {
        type = types.strMatching "/var/lib/[^/].*";
        default = "/var/lib/sai-server";
        description = ''
          Databases, per-event folders and the token signing key. It is the
          unit's StateDirectory, owned by its dynamic user, so it must be
          under /var/lib.
        '';
      };

      notificationKeyFile = sai.secretOption "File holding the HMAC secret shared with the git hooks (`notification_key_file`).";

      tokenKeyFile = sai.secretOption ''
        File holding the PASETO v4 secret key (64 raw bytes) that signs builder
        and user tokens. When null, the server creates `<dataDir>/token.key`
        on first start.
      '';

      tls = {
        certificateChainFile = sai.secretOption "PEM certificate chain for serving HTTPS and `wss://` itself (`tls.certificate_chain_file`); null serves plain HTTP, e.g. behind a TLS reverse proxy.";
        privateKeyFile = sai.secretOption "PEM private key of that certificate (`tls.private_key_file`).";
      };

      projects = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.notificationKeyFile = sai.secretOption "File holding this project's own hook secret; null uses the global `notificationKeyFile`.";
          }
        );
        default = { };
        example = {
          libwebsockets = { };
          sai.notificationKeyFile = "/run/keys/sai-hook-key";
        };
        description = "Repositories whose hooks the server accepts; when empty, any repository name is accepted with the global key.";
      };
    };

  config = lib.mkIf cfg.enable {
    assertions =
      sai.secretsAssertions
        (
          {
            "services.sai.server.notificationKeyFile" = cfg.notificationKeyFile;
            "services.sai.server.tokenKeyFile" = cfg.tokenKeyFile;
            "services.sai.server.tls.certificateChainFile" = cfg.tls.certificateChainFile;
            "services.sai.server.tls.privateKeyFile" = cfg.tls.privateKeyFile;
          }
          // lib.mapAttrs' (name: project: lib.nameValuePair "services.sai.server.projects.${name}.notificationKeyFile" project.notificationKeyFile) cfg.projects
        )
      ++ [
        {
          assertion = (cfg.tls.certificateChainFile == null) == (cfg.tls.privateKeyFile == null);
          message = "services.sai.server.tls: set both certificateChainFile and privateKeyFile, or neither.";
        }
        {
          assertion = hasGlobalKey || projectsWithoutKey == [ ];
          message = ''
            services.sai.server.projects: ${lib.concatStringsSep ", " projectsWithoutKey} ha${
              if lib.length projectsWithoutKey == 1 then "s" else "ve"
            } no notificationKeyFile and there is no global
            services.sai.server.notificationKeyFile: the server would refuse to
            start. Set one of them.
          '';
        }
      ];

    services.sai.server.settings = {
      schema = "sai-server";
      listen = sai.listenAddress cfg.address cfg.port;
      data_dir = cfg.dataDir;
      notification_key_file = lib.mkIf (cfg.notificationKeyFile != null) (credential "notification-key");
      token_key_file = lib.mkIf (cfg.tokenKeyFile != null) (credential "token-key");
      tls = lib.mkIf (cfg.tls.certificateChainFile != null) {
        certificate_chain_file = credential "tls-chain";
        private_key_file = credential "tls-key";
      };
      projects = lib.mkIf (cfg.projects != { }) (
        lib.mapAttrsToList
          (
            name: project:
              {
                inherit name;
              }
              // lib.optionalAttrs (project.notificationKeyFile != null) {
                notification_key_file = credential (projectKeyId name);
              }
          )
          cfg.projects
      );
    };

    # For admins: `sai-server -c /etc/sai/server/conf token builder ...` mints
    # builder tokens with the key in dataDir.
    environment.etc."sai/server/conf".source = checkedConfigFile;
    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.${unit} = sai.daemonUnit {
      description = "Sai CI server";
      config = checkedConfigFile;
      exec = "${cfg.package}/bin/sai-server";
      subcommand = "run";
      inherit credentials;
      serviceConfig = {
        StateDirectory = lib.removePrefix "/var/lib/" cfg.dataDir;
        StateDirectoryMode = "0700";
        # The server needs no other user's files or ids.
        PrivateUsers = true;
        # SIGTERM: stop accepting, close builder links, flush logs, exit 0.
        TimeoutStopSec = 30;
        LimitNOFILE = 65536;
      };
    };
  };
}
