# sai-device: boards attached to this host, shared between build steps.
# There is no daemon: `sai-device <type> -- <program>` runs inside a build
# step, waits in a queue under `home` and locks the board's ttys. This
# module writes /etc/sai/devices/conf, creates the queue directory and gives
# the boards' ttys to one group (udev rules), which builders join.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  sai = import ./lib.nix { inherit lib; };
  cfg = config.services.sai.device;

  ttyType = types.submodule {
    options = {
      name = sai.requiredOption types.str "console" "Name of the tty; build steps see it as `SAI_DEVICE_<NAME>`.";
      udevMatch = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          "ATTRS{idVendor}" = "0403";
          "ATTRS{serial}" = "FT4XYZ12";
        };
        description = ''
          udev match keys that single out this tty. When given, udev makes
          the link `/dev/sai/<device>-<tty>` for it and `path` defaults to
          that link.
        '';
      };
      path = mkOption {
        type = types.nullOr (types.strMatching "/dev/.+");
        default = null;
        example = "/dev/serial/by-id/usb-FTDI_Dual_RS232-HS-if01-port0";
        description = "Device node or stable link of the tty; defaults to the link made from `udevMatch`.";
      };
      rate = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 115200;
        description = "Baud rate exported to the tools run under sai-device (default 115200).";
      };
      lock = sai.option types.bool true "Whether the tty is locked while the device is in use.";
      initialMonitor = sai.option types.bool true "Whether the tty's output is logged from the start.";
    };
  };

  deviceType = types.submodule {
    options = {
      type = sai.requiredOption types.str "esp32-wrover" "The board's type; `sai-device <type>` asks for it.";
      compatible = sai.option (types.listOf types.str) [ ] "Further types this board can stand in for.";
      description = sai.option (types.nullOr types.str) null "Free text for humans.";
      ttys = sai.option (types.listOf ttyType) [ ] "The board's ttys, in order: the n-th is `SAI_DEVICE_TTY<n>`.";
    };
  };

  udevLink = device: tty: "sai/${device}-${tty.name}";
  ttyPath = device: tty: if tty.path != null then tty.path else "/dev/${udevLink device tty}";

  # One rule per tty: give it to the group, and link it when matched by
  # attributes. A tty known by its kernel name (/dev/ttyUSB0) is matched by
  # that name; one known by a link (/dev/serial/by-id/...) by the link,
  # which udev's own rules made before ours run.
  udevRule =
    device: tty:
    let
      keys = lib.concatStringsSep ", " (lib.mapAttrsToList (key: value: "${key}==\"${value}\"") tty.udevMatch);
      setGroup = ''GROUP="${cfg.group}", MODE="0660"'';
      node = lib.removePrefix "/dev/" tty.path;
    in
    if tty.udevMatch != { } then
      ''SUBSYSTEM=="tty", ${keys}, ${setGroup}, SYMLINK+="${udevLink device tty}"''
    else if lib.hasInfix "/" node then
      ''SUBSYSTEM=="tty", SYMLINK=="${node}", ${setGroup}''
    else
      ''SUBSYSTEM=="tty", KERNEL=="${node}", ${setGroup}'';

  allTtys = lib.concatLists (
    lib.mapAttrsToList (name: device: map (tty: { inherit name tty; }) device.ttys) cfg.devices
  );

  checkedConfigFile = sai.checkedConfig { inherit pkgs cfg; kind = "device"; name = "sai-device"; };
in
{
  options.services.sai.device =
    sai.daemonOptions pkgs "sai-device, sharing the boards attached to this host between build steps"
    // sai.configOptions {
      inherit pkgs cfg;
      daemon = "sai-device";
      example = { };
    }
    // {
      group = sai.option types.str "sai-devices" "Group owning the boards' ttys and the queue; builders that may use boards join it.";

      home = sai.option (types.strMatching "/run/.+") "/run/sai-device" "Queue of waiting build steps (nothing in it outlives a reboot).";

      devices = mkOption {
        type = types.attrsOf deviceType;
        default = { };
        example = {
          esp32-1 = {
            type = "esp32-wrover";
            compatible = [ "esp32" ];
            ttys = [
              {
                name = "console";
                udevMatch."ATTRS{serial}" = "FT4XYZ12";
                rate = 115200;
              }
            ];
          };
        };
        description = "The boards, by name (tried in name order for each request).";
      };

      deviceAllow = mkOption {
        type = types.listOf types.str;
        default = [
          "char-ttyUSB rw"
          "char-ttyACM rw"
        ];
        description = ''
          `DeviceAllow=` entries added to the units of builders that use the
          boards: the device classes of the ttys. Access to a single tty is
          then decided by its group.
        '';
      };

    };

  config = lib.mkIf cfg.enable {
    assertions = map
      (
        { name, tty }:
        {
          assertion = tty.path != null || tty.udevMatch != { };
          message = "services.sai.device.devices.${name}: tty \"${tty.name}\" needs `udevMatch` (udev attributes that find it) or `path` (e.g. a /dev/serial/by-id link).";
        }
      )
      allTtys;

    services.sai.device.settings = {
      schema = "sai-device";
      home = cfg.home;
      devices = lib.mapAttrsToList
        (
          name: device:
            {
              inherit name;
              inherit (device) type;
              ttys = map
                (
                  tty:
                  {
                    inherit (tty) name lock;
                    tty = ttyPath name tty;
                    initial_monitor = tty.initialMonitor;
                  }
                  // lib.optionalAttrs (tty.rate != null) { inherit (tty) rate; }
                )
                device.ttys;
            }
            // lib.optionalAttrs (device.compatible != [ ]) { inherit (device) compatible; }
            // lib.optionalAttrs (device.description != null) { inherit (device) description; }
        )
        cfg.devices;
    };

    environment.etc."sai/devices/conf".source = checkedConfigFile;
    environment.systemPackages = [ cfg.package ];

    users.groups.${cfg.group} = { };

    services.udev.extraRules = lib.concatMapStringsSep "\n" ({ name, tty }: udevRule name tty) (
      lib.filter ({ tty, ... }: tty.path != null || tty.udevMatch != { }) allTtys
    );

    # The queue is shared by every member of the group: each waiter bumps
    # `seq` and flocks its ticket; stale tickets are removed by the others.
    systemd.tmpfiles.rules = [
      "d ${cfg.home} 2770 root ${cfg.group} -"
      "d ${cfg.home}/queue 2770 root ${cfg.group} -"
      "f ${cfg.home}/seq 0660 root ${cfg.group} -"
    ];
  };
}
