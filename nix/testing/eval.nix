# Evaluate Sai's NixOS modules with nixpkgs' real module system (lib from
# `nixpkgsLib`, a checkout of nixpkgs' lib such as ../shared/nixpkgs-lib),
# the stand-in NixOS options and the stand-in pkgs. Returns the evaluated
# config once every assertion holds, and throws NixOS's "Failed
# assertions" message otherwise.
{ nixpkgsLib
, saiPackageDir
, modules ? [ ]
,
}:
let
  lib = import "${nixpkgsLib}/lib";
  pkgs = import ./pkgs.nix { inherit saiPackageDir; };
  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      ../../nixos-modules
      { _module.args.pkgs = pkgs; }
    ]
    ++ modules;
  };
  failed = map (a: a.message) (lib.filter (a: !a.assertion) evaluated.config.assertions);
in
if failed != [ ] then
  throw "\nFailed assertions:\n${lib.concatMapStringsSep "\n" (message: "- ${message}") failed}"
else
  evaluated.config
