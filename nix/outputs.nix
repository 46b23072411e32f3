# The flake's outputs. Per-system outputs need nixpkgs' package sets; with
# nixpkgs' lib-only flake as input (offline CI: --override-input nixpkgs
# path:../shared/nixpkgs-lib) there are none, and only the outputs that need
# no packages (modules, overlay, lib) remain.
{ self, nixpkgs }:
let
  inherit (nixpkgs) lib;

  systems = lib.optionals (nixpkgs ? legacyPackages) [
    "x86_64-linux"
    "aarch64-linux"
  ];
  forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

  # A module with its package defaulting to Sai built with the host's own
  # nixpkgs. The key lets `default` and a single module be imported together.
  withPackage = name: {
    key = "sai-flake#${name}";
    _file = "${toString ./outputs.nix}#nixosModules.${name}";
    imports = [
      ../nixos-modules/${name}.nix
      (
        { lib, pkgs, ... }:
        {
          services.sai.${lib.removePrefix "sai-" name}.package = lib.mkDefault (pkgs.callPackage ./package.nix { });
        }
      )
    ];
  };

  modules = lib.genAttrs [
    "sai-server"
    "sai-web"
    "sai-builder"
    "sai-jig"
    "sai-device"
  ]
    withPackage;
in
{
  overlays.default = final: _prev: { sai = final.callPackage ./package.nix { }; };

  packages = forAllSystems (
    pkgs:
    let
      sai = pkgs.callPackage ./package.nix { };
    in
    {
      inherit sai;
      default = sai;
    }
  );

  nixosModules = modules // {
    default = {
      imports = lib.attrValues modules;
    };
  };

  lib = {
    # The rack declaration (a "sai-rack" JSON file or its parsed contents)
    # as { <machine> = NixOS module; } for every entry running on NixOS:
    #   nixosConfigurations.nixos-x86 = nixpkgs.lib.nixosSystem {
    #     modules = [ (sai.lib.rackHostModules ./rack.json).nixos-x86 ./hardware.nix ];
    #   };
    rackHostModules = (import ./lib/rack.nix { inherit lib modules; }).hostModules;
    # JSON with one member per line, as the modules write Sai's configs.
    prettyJSON = import ./lib/pretty-json.nix;
  };

  checks = forAllSystems (pkgs: import ./checks.nix { inherit self pkgs nixpkgs; });

  devShells = forAllSystems (pkgs: {
    default = pkgs.mkShell {
      inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.sai ];
      packages = with pkgs; [
        cargo-nextest
        clippy
        rustfmt
        nixpkgs-fmt
        deadnix
        git
        curl
        openssl
      ];
    };
  });

  formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
}
