# sai-web: the browser UI. It reads everything it shows from sai-server's
# operations API; it serves HTTPS itself (`tls`) or sits behind a TLS
# reverse proxy.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  sai = import ./lib.nix { inherit lib; };
  cfg = config.services.sai.web;
  server = config.services.sai.server or { enable = false; };
  unit = "sai-web";
  credential = sai.credentialPath unit;
  stateDir = "/var/lib/${unit}";

  checkedConfigFile = sai.checkedConfig { inherit pkgs cfg; kind = "web"; name = unit; };
in
{
  options.services.sai.web =
    sai.daemonOptions pkgs "sai-web, the browser UI of Sai"
    // sai.listenOptions { what = "the UI"; address = "127.0.0.1"; port = 8081; }
    // sai.configOptions {
      inherit pkgs cfg;
      daemon = "sai-web";
      example = {
        session_lifetime_secs = 86400;
        trusted_proxy.addresses = [ "127.0.0.1" ];
      };
    }
    // {
      serverUrl = mkOption {
        type = types.str;
        default =
          if server.enable then
            let
              # A server listening on every address is reached over loopback.
              host =
                {
                  "0.0.0.0" = "127.0.0.1";
                  "::" = "::1";
                }.${server.address} or server.address;
            in
            "http://${sai.listenAddress host server.port}"
          else
            "";
        defaultText = lib.literalMD "the local sai-server when `services.sai.server` is enabled";
        example = "http://127.0.0.1:4444";
        description = "Base URL of the sai-server operations API the UI shows.";
      };

      publicUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://ci.example.org/sai";
        description = "URL under which browsers reach the UI (links, redirects, cookie path).";
      };

      sessionKeyFile = sai.secretOption ''
        File holding the key that seals session tokens. When null, sai-web
        keeps it in its state directory (`${stateDir}/session.key`).
      '';

      serverTokenFile = sai.secretOption "File holding the service token sai-web presents to sai-server for signed-in users (`sai-server token service --name sai-web`).";

      usersFile = sai.secretOption "File of users who may sign in, one `name:<argon2 PHC hash>` per line.";

      tls = {
        certificateChainFile = sai.secretOption "PEM certificate chain for serving HTTPS itself (`tls.certificate_chain_file`); null serves plain HTTP, e.g. behind a TLS reverse proxy.";
        privateKeyFile = sai.secretOption "PEM private key of that certificate (`tls.private_key_file`).";
      };
    };

  config = lib.mkIf cfg.enable {
    assertions =
      sai.secretsAssertions
        {
          "services.sai.web.sessionKeyFile" = cfg.sessionKeyFile;
          "services.sai.web.usersFile" = cfg.usersFile;
          "services.sai.web.serverTokenFile" = cfg.serverTokenFile;
          "services.sai.web.tls.certificateChainFile" = cfg.tls.certificateChainFile;
          "services.sai.web.tls.privateKeyFile" = cfg.tls.privateKeyFile;
        }
      ++ [
        {
          assertion = (cfg.tls.certificateChainFile == null) == (cfg.tls.privateKeyFile == null);
          message = "services.sai.web.tls: set both certificateChainFile and privateKeyFile, or neither.";
        }
        {
          assertion = cfg.serverUrl != "";
          message = "services.sai.web.serverUrl is not set and services.sai.server is not enabled on this host: say which sai-server the UI shows.";
        }
      ];

    services.sai.web.settings = {
      schema = "sai-web";
      listen = sai.listenAddress cfg.address cfg.port;
      server_url = cfg.serverUrl;
      public_url = lib.mkIf (cfg.publicUrl != null) cfg.publicUrl;
      session_key_file = if cfg.sessionKeyFile != null then credential "session-key" else "${stateDir}/session.key";
      users_file = lib.mkIf (cfg.usersFile != null) (credential "users");
      server_token_file = lib.mkIf (cfg.serverTokenFile != null) (credential "server-token");
      tls = lib.mkIf (cfg.tls.certificateChainFile != null) {
        certificate_chain_file = credential "tls-chain";
        private_key_file = credential "tls-key";
      };
    };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.${unit} = sai.daemonUnit {
      description = "Sai CI web UI";
      config = checkedConfigFile;
      exec = "${cfg.package}/bin/sai-web";
      after = lib.optional server.enable "sai-server.service";
      credentials = {
        session-key = cfg.sessionKeyFile;
        users = cfg.usersFile;
        server-token = cfg.serverTokenFile;
        tls-chain = cfg.tls.certificateChainFile;
        tls-key = cfg.tls.privateKeyFile;
      };
      serviceConfig = {
        StateDirectory = unit;
        StateDirectoryMode = "0700";
        PrivateUsers = true;
      };
    };
  };
}
