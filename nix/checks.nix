# `nix flake check` with real nixpkgs: the package, the dev shell, the
# example rack's NixOS machines evaluated by NixOS itself (their unit files
# built, their assertions forced) and the VM tests in nix/tests/, one
# scenario per file.
{ self
, pkgs
, nixpkgs
,
}:
let
  inherit (pkgs) lib;
  inherit (pkgs.stdenv.hostPlatform) system;

  # Enough of a machine for NixOS to evaluate; it is never booted.
  bareMachine = {
    boot.loader.grub.enable = false;
    fileSystems."/" = {
      device = "none";
      fsType = "tmpfs";
    };
    system.stateVersion = "25.05";
  };

  rackMachines = lib.mapAttrs
    (
      _: module:
        nixpkgs.lib.nixosSystem {
          inherit system;
          modules = [
            module
            bareMachine
          ];
        }
    )
    (self.lib.rackHostModules ../examples/rack.json);

  # Every sai-* unit file of a machine, plus its system's derivation path
  # (instantiating it checks every assertion without building the system).
  machineUnits =
    name: machine:
    let
      units = lib.filterAttrs (unit: _: lib.hasPrefix "sai-" unit) machine.config.systemd.units;
    in
    pkgs.runCommand "sai-rack-${name}-units" { } ''
      mkdir -p $out
      ${lib.concatStrings (
        lib.mapAttrsToList (unit: u: ''
          cp ${u.unit}/${unit} $out/${unit}
        '') units
      )}
      echo ${builtins.unsafeDiscardStringContext machine.config.system.build.toplevel.drvPath} > $out/toplevel.drv
      test -n "$(ls $out/*.service)"
    '';

  vmTests = lib.mapAttrs'
    (
      file: _:
        lib.nameValuePair "vm-${lib.removeSuffix ".nix" file}" (import ./tests/${file} { inherit self pkgs; })
    )
    (lib.filterAttrs (file: kind: kind == "regular" && lib.hasSuffix ".nix" file) (builtins.readDir ./tests));
in
{
  sai = self.packages.${system}.sai;
  devShell = self.devShells.${system}.default;
}
// lib.mapAttrs' (name: machine: lib.nameValuePair "rack-${name}" (machineUnits name machine)) rackMachines
  // vmTests
