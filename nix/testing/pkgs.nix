# A stand-in for the part of nixpkgs Sai's modules use. The builders are
# real derivations run by the host's /bin/sh (the test's Nix store must make
# /bin, /usr and /lib visible to builds through `sandbox-paths`), so the
# config check really runs `sai validate`: `sai` is a directory whose
# bin/sai is the binary cargo built.
{ saiPackageDir
, system ? builtins.currentSystem
,
}:
let
  shellDerivation =
    name: env: script:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-ec"
          script
        ];
        PATH = "/usr/bin:/bin";
      }
      // env
    );

  # Tools the modules put on PATHs: the host's, found under /usr.
  hostPackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/usr";
  };
in
{
  sai = {
    type = "derivation";
    name = "sai";
    outPath = saiPackageDir;
  };

  writeText =
    name: text:
    shellDerivation name
      {
        inherit text;
        passAsFile = [ "text" ];
      } ''cp "$textPath" "$out"'';

  runCommand = shellDerivation;

  stdenv.hostPlatform.system = system;
}
  // builtins.listToAttrs (
  map
    (name: {
      inherit name;
      value = hostPackage name;
    })
    [
      "bash"
      "coreutils"
      "findutils"
      "gnugrep"
      "gnused"
      "gnutar"
      "gzip"
      "git"
      "nix"
    ]
)
