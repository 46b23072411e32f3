# sai-builder: runs build steps for the servers it dials. Several builders
# may run on one host, one unit each (`sai-builder-<name>.service`), each
# with its own dynamic user, home and tokens.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  sai = import ./lib.nix { inherit lib; };
  cfg = config.services.sai.builder;
  device = config.services.sai.device or { enable = false; };
  unitOf = name: "sai-builder-${name}";
  homeOf = name: "/var/lib/${unitOf name}";
  tokenId = server: "${server}-token";

  serverType = types.submodule {
    options = {
      url = sai.requiredOption types.str "wss://ci.example.org/sai/builder" "Websocket URL of the server's builder endpoint.";
      tokenFile = sai.secretOption "File holding the token this builder presents to the server (`sai-server token builder ...`).";
      caFile = sai.option (types.nullOr types.path) null "PEM file of the CA that signed a `wss://` server's certificate (a private CA); null trusts the system roots.";
      insecure = sai.option types.bool false "Allow a plain `ws://` URL to a host that is not loopback (token and logs cross the network unencrypted).";
    };
  };

  platformType =
    instance:
    types.submodule {
      options = {
        servers = mkOption {
          type = types.listOf types.str;
          default = lib.attrNames instance.servers;
          defaultText = lib.literalMD "every server of this builder";
          description = "Names (in `servers`) of the servers this platform takes work from.";
        };
        instances = sai.option types.ints.positive 1 "How many tasks of this platform run at once.";
        env = sai.option (types.attrsOf types.str) { } "Extra environment of this platform's build steps (`PATH` defaults to the builder's `path`).";
        limits = mkOption {
          type = types.attrsOf sai.jsonValue;
          default = { };
          example = {
            step_timeout_secs = 3600;
            parallel = 4;
          };
          description = "Limits of this platform that override the builder-wide ones (`limits` in the builder config).";
        };
      };
    };

  instanceType = types.submodule (
    { name, config, ... }:
    {
      options = {
        enable = sai.option types.bool true "Whether to run this builder.";
        package = mkOption {
          type = types.package;
          default = cfg.package;
          defaultText = lib.literalExpression "config.services.sai.builder.package";
          description = "Sai package of this builder.";
        };
        host = sai.option types.str name "Name of this builder as servers know it (tokens are minted for it).";
        servers = sai.option (types.attrsOf serverType) { } "The servers this builder dials, by a name of your choosing.";
        platforms = mkOption {
          type = types.attrsOf (platformType config);
          default = { };
          example = {
            "linux-nixos/x86_64-amd/gcc".instances = 2;
          };
          description = "The platforms this builder offers, by platform tuple.";
        };
        path = mkOption {
          type = types.listOf types.package;
          default = with pkgs; [
            bash
            coreutils
            findutils
            gnugrep
            gnused
            gnutar
            gzip
            git
          ];
          defaultText = lib.literalMD "bash, coreutils, findutils, grep, sed, tar, gzip and git";
          description = "Packages on the `PATH` of build steps.";
        };
        useDevices = mkOption {
          type = types.bool;
          default = device.enable;
          defaultText = lib.literalMD "`services.sai.device.enable`";
          description = "Whether build steps may use the boards of `services.sai.device` (joins its group, may open its ttys).";
        };
      }
      // sai.configOptions {
        inherit pkgs;
        cfg = config;
        daemon = "this sai-builder";
        name = unitOf name;
        example = {
          step_timeout_secs = 3600;
          parallel = 8;
        };
      };

      config.settings = {
        schema = "sai-builder";
        home = homeOf name;
        inherit (config) host;
        platforms = lib.mapAttrsToList
          (
            platformName: platform:
              {
                name = platformName;
                inherit (platform) instances;
                servers = map
                  (server:
                    let
                      s = config.servers.${server};
                    in
                    {
                      inherit (s) url;
                      token_file = sai.credentialPath (unitOf name) (tokenId server);
                    }
                    // lib.optionalAttrs (s.caFile != null) { ca_file = toString s.caFile; }
                    // lib.optionalAttrs s.insecure { insecure = true; })
                  platform.servers;
                env = {
                  PATH = lib.makeBinPath config.path;
                }
                // platform.env;
              }
              // lib.optionalAttrs (platform.limits != { }) { inherit (platform) limits; }
          )
          config.platforms;
      };
    }
  );

  enabled = lib.filterAttrs (_: instance: instance.enable) cfg.instances;

  unitFor =
    name: instance:
    sai.daemonUnit
      {
        description = "Sai CI builder ${instance.host}";
        config = sai.checkedConfig {
          inherit pkgs;
          cfg = instance;
          kind = "builder";
          name = unitOf name;
        };
        exec = "${instance.package}/bin/sai-builder";
        credentials = lib.mapAttrs' (server: s: lib.nameValuePair (tokenId server) s.tokenFile) instance.servers;
        serviceConfig = [
          {
            # Home: git mirrors and job directories, the one writable place.
            StateDirectory = unitOf name;
            StateDirectoryMode = "0700";
            # Build steps are other people's programs: allow what compilers,
            # test suites and sanitizers legitimately use.
            # JITs (node, java, luajit, ...) need writable+executable memory.
            MemoryDenyWriteExecute = lib.mkForce false;
            # nproc, make -j and test suites read /proc/cpuinfo, meminfo, stat.
            ProcSubset = lib.mkForce "all";
            # Tests open netlink sockets (getaddrinfo, ip, libuv).
            RestrictAddressFamilies = lib.mkForce [
              "AF_INET"
              "AF_INET6"
              "AF_UNIX"
              "AF_NETLINK"
            ];
            # Sanitizers stop the world with ptrace (@debug), tar and cp -p
            # chown to the own uid (@chown), test suites set rlimits
            # (@resources): allowed. The rest of @privileged can do nothing
            # without capabilities and with NoNewPrivileges; what a build
            # never needs is refused outright.
            SystemCallFilter = lib.mkForce [
              "@system-service"
              "~@clock @cpu-emulation @module @mount @obsolete @raw-io @reboot @swap"
            ];
            # Group-readable files let other builders' sai-device see tickets.
            UMask = lib.mkForce "0027";
            # SIGTERM goes to the daemon only: it kills its steps' process
            # groups, hands the tasks back and closes its links.
            KillMode = "mixed";
            TimeoutStopSec = 60;
            Restart = "always";
            RestartSec = 10;
            LimitNOFILE = 65536;
          }
          (lib.mkIf instance.useDevices {
            # The boards' ttys: device classes allowed, the group decides.
            PrivateDevices = lib.mkForce false;
            DevicePolicy = "closed";
            DeviceAllow = device.deviceAllow;
            SupplementaryGroups = [ device.group ];
            ReadWritePaths = [ device.home ];
          })
        ];
      }
    // {
      # gix runs git-upload-pack for local fetches.
      path = [ pkgs.git ];
    };
in
{
  options.services.sai.builder = {
    package = lib.mkPackageOption pkgs "sai" { };

    instances = mkOption {
      type = types.attrsOf instanceType;
      default = { };
      example = {
        main = {
          servers.ci = {
            url = "wss://ci.example.org/sai/builder";
            tokenFile = "/run/keys/sai-builder-main.token";
          };
          platforms."linux-nixos/x86_64-amd/gcc".instances = 2;
        };
      };
      description = "Builders on this host, one unit each (`sai-builder-<name>.service`).";
    };
  };

  config = lib.mkIf (enabled != { }) {
    assertions = lib.concatLists (
      lib.mapAttrsToList
        (
          name: instance:
            lib.concatLists
              (
                lib.mapAttrsToList
                  (
                    server: s:
                      sai.secretAssertions "services.sai.builder.instances.${name}.servers.${server}.tokenFile" s.tokenFile
                      ++ [
                        {
                          assertion = s.tokenFile != null;
                          message = "services.sai.builder.instances.${name}.servers.${server}.tokenFile is not set: the builder needs a token for ${s.url}.";
                        }
                      ]
                  )
                  instance.servers
              )
            ++ lib.concatLists (
              lib.mapAttrsToList
                (
                  platformName: platform:
                    map
                      (server: {
                        assertion = instance.servers ? ${server};
                        message = "services.sai.builder.instances.${name}.platforms.\"${platformName}\".servers names \"${server}\", which is not in services.sai.builder.instances.${name}.servers (${lib.concatStringsSep ", " (lib.attrNames instance.servers)}).";
                      })
                      platform.servers
                )
                instance.platforms
            )
            ++ [
              {
                assertion = !instance.useDevices || device.enable;
                message = "services.sai.builder.instances.${name}.useDevices needs services.sai.device.enable.";
              }
            ]
        )
        enabled
    );

    systemd.services = lib.mapAttrs' (name: instance: lib.nameValuePair (unitOf name) (unitFor name instance)) enabled;
  };
}
