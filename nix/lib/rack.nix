# The rack declaration (a "sai-rack" JSON file, see examples/rack.json and
# schemas/rack.schema.json) as NixOS modules: one per machine that an entry
# runs on with `"runs": "nixos"`, named after it. The server and web entries
# become services.sai.{server,web}; a builder entry becomes
# services.sai.builder.instances.<name>, plus services.sai.device for its
# boards and services.sai.jig for its jig.
#
# Settings are passed on as they are written in the rack; only what the
# modules type themselves is split out (`listen` into address and port,
# secret files into credentials). Inline secrets are refused: on NixOS they
# would land in the world-readable store.
{ lib
, # The Sai modules by name: sai-server, sai-web, sai-builder, sai-device, sai-jig.
  modules
,
}:
let
  fail = where: message: throw "rack: ${where}: ${message}";

  # "host:port" or "[v6]:port" into { address; port; }.
  splitListen =
    where: listen:
    let
      m = builtins.match "[[]([^][]*)[]]:([0-9]+)|([^:]*):([0-9]+)" listen;
    in
    if m == null then
      fail where "listen \"${listen}\" is not address:port"
    else if builtins.elemAt m 0 != null then
      {
        address = builtins.elemAt m 0;
        port = lib.toInt (builtins.elemAt m 1);
      }
    else
      {
        address = builtins.elemAt m 2;
        port = lib.toInt (builtins.elemAt m 3);
      };

  refuseInline =
    where: attrs: names:
    let
      inline = lib.filter (name: attrs ? ${name}) names;
    in
    if inline == [ ] then
      attrs
    else
      fail where "${lib.concatStringsSep ", " inline} is given inline; a NixOS machine takes secrets only as files (${lib.concatMapStringsSep ", " (n: "${n}_file") inline}), which never enter the Nix store";

  optionalSetting = attrs: name: lib.optionalAttrs (attrs ? ${name}) { ${name} = attrs.${name}; };

  serverModule =
    entry:
    let
      where = "server \"${entry.name}\"";
      config = refuseInline "${where} config" entry.config [ "notification_key" ];
      listen = splitListen "${where} config" (config.listen or "127.0.0.1:4444");
      dataDir = config.data_dir or "/var/lib/sai-server";
      # A token key inside the data directory is the server's own file.
      ownTokenKey = lib.hasPrefix "${dataDir}/" (config.token_key_file or "${dataDir}/token.key");
    in
    {
      imports = [ modules.sai-server ];
      services.sai.server = {
        enable = true;
        inherit (listen) address port;
        inherit dataDir;
        notificationKeyFile = config.notification_key_file or null;
        tokenKeyFile = if ownTokenKey then null else config.token_key_file;
        projects = builtins.listToAttrs (
          lib.imap0
            (
              i: project:
                lib.nameValuePair project.name {
                  notificationKeyFile =
                    (refuseInline "${where} config.projects[${toString i}]" project [ "notification_key" ]).notification_key_file or null;
                }
            )
            (config.projects or [ ])
        );
        settings =
          removeAttrs config [
            "schema"
            "listen"
            "data_dir"
            "notification_key_file"
            "token_key_file"
            "projects"
          ]
          // lib.optionalAttrs (ownTokenKey && config ? token_key_file) { inherit (config) token_key_file; };
      };
    };

  webModule =
    entry:
    let
      where = "web \"${entry.name}\"";
      inherit (entry) config;
      listen = splitListen "${where} config" (config.listen or "127.0.0.1:8081");
      ownSessionKey = config.session_key_file == "/var/lib/sai-web/session.key";
    in
    {
      imports = [ modules.sai-web ];
      services.sai.web = {
        enable = true;
        inherit (listen) address port;
        serverUrl = config.server_url;
        publicUrl = config.public_url or null;
        sessionKeyFile = if ownSessionKey then null else config.session_key_file;
        usersFile = config.users_file or null;
        settings = removeAttrs config [
          "schema"
          "listen"
          "server_url"
          "public_url"
          "session_key_file"
          "users_file"
        ];
      };
    };

  builderModule =
    entry:
    let
      where = "builder \"${entry.name}\"";
      servers = lib.concatMap (platform: platform.servers) entry.platforms;
      urls = lib.unique (map (server: server.url) servers);
      serverName = url: "server${toString (lib.lists.findFirstIndex (u: u == url) null urls)}";
      tokenFileOf =
        url:
        let
          withUrl = lib.filter (server: server.url == url) servers;
        in
        (refuseInline "${where}, server ${url}" (builtins.head withUrl) [ "token" ]).token_file;
      devices = entry.devices or [ ];
    in
    { pkgs, ... }:
    {
      imports = [
        modules.sai-builder
        modules.sai-device
        modules.sai-jig
      ];
      networking.hostName = lib.mkDefault entry.name;
      warnings =
        lib.optional (entry ? home) "rack: ${where}: home is not used on NixOS; the builder's home is its state directory."
        ++ map (url: "rack: ${where}: the token_file of ${url} (${tokenFileOf url}) is a systemd credentials path; give the file on the machine: the module hands it to the unit as a credential.") (
          lib.filter (url: lib.hasPrefix "/run/credentials/" (tokenFileOf url)) urls
        );
      services.sai.builder.instances.${entry.name} = {
        host = entry.name;
        servers = builtins.listToAttrs (
          map
            (
              url:
              lib.nameValuePair (serverName url) {
                inherit url;
                tokenFile = tokenFileOf url;
              }
            )
            urls
        );
        platforms = builtins.listToAttrs (
          map
            (
              platform:
              lib.nameValuePair platform.name {
                instances = platform.instances or 1;
                env = platform.env or { };
                limits = platform.limits or { };
                servers = map (server: serverName server.url) platform.servers;
              }
            )
            entry.platforms
        );
        # Steps of a NixOS builder may run Nix (e.g. `nix flake check`):
        # added to the default tools rather than replacing them.
        path = lib.mkOptionDefault [ pkgs.nix ];
        settings = lib.foldl' (acc: name: acc // optionalSetting entry name) { } [
          "step_timeout_secs"
          "log_limit_bytes"
          "parallel"
          "job_retention_secs"
          "min_free_disk_bytes"
        ];
      };
      services.sai.device = lib.mkIf (devices != [ ]) {
        enable = true;
        devices = builtins.listToAttrs (
          map
            (
              device:
              lib.nameValuePair device.name {
                inherit (device) type;
                compatible = device.compatible or [ ];
                description = device.description or null;
                ttys = map
                  (tty: {
                    inherit (tty) name;
                    path = tty.tty;
                    rate = tty.rate or null;
                    lock = tty.lock or true;
                    initialMonitor = tty.initial_monitor or true;
                  })
                  device.ttys;
              }
            )
            devices
        );
      };
      services.sai.jig = lib.mkIf (entry ? jig) (
        let
          jig = refuseInline "${where} jig" entry.jig [ "token" ];
          listen = splitListen "${where} jig" (jig.listen or "0.0.0.0:44000");
        in
        {
          enable = true;
          inherit (listen) address port;
          tokenFile = jig.token_file or null;
          settings = removeAttrs jig [
            "schema"
            "listen"
            "token_file"
          ];
        }
      );
    };

  machinesOf =
    rack:
    lib.optional (rack.server or null != null && rack.server.runs == "nixos")
      {
        inherit (rack.server) name;
        module = serverModule rack.server;
      }
    ++ lib.optional (rack.web or null != null && rack.web.runs == "nixos") {
      inherit (rack.web) name;
      module = webModule rack.web;
    }
    ++ map
      (entry: {
        inherit (entry) name;
        module = builderModule entry;
      })
      (lib.filter (entry: entry.runs == "nixos") rack.builders);
in
{
  # `rack` is the parsed file or its path. Returns { <machine> = module; };
  # entries sharing a name share the machine.
  hostModules =
    rackOrFile:
    let
      rack = if builtins.isAttrs rackOrFile then rackOrFile else lib.importJSON rackOrFile;
    in
    if (rack.schema or null) != "sai-rack" then
      fail "schema" "expected \"sai-rack\", found ${builtins.toJSON (rack.schema or null)}"
    else
      lib.mapAttrs (_: entries: { imports = map (entry: entry.module) entries; }) (
        builtins.groupBy (machine: machine.name) (machinesOf rack)
      );
}
