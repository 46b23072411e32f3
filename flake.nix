{
  description = "Sai: a lightweight distributed CI (server, web UI, builders, embedded-board helpers)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  # Everything is wired in nix/outputs.nix; see the "Nix" section of README.md.
  outputs = { self, nixpkgs }: import ./nix/outputs.nix { inherit self nixpkgs; };
}
