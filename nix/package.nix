# Every Sai binary (sai, sai-server, sai-web, sai-builder, sai-device,
# sai-expect, sai-jig), built from the committed Cargo.lock.
{ lib, rustPlatform }:
let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "sai";
  inherit (workspace.workspace.package) version;

  # Only what the build reads: docs, examples and Nix files changing does
  # not rebuild.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../hooks
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The test suite needs git, podman, qemu, Chromium and loopback servers
  # (scripts/test.sh runs it); the VM tests in checks cover the packaged
  # binaries.
  doCheck = false;

  meta = {
    description = "Lightweight distributed CI: server, web UI, builders and embedded-board helpers";
    license = lib.licenses.mit;
    mainProgram = "sai";
    platforms = lib.platforms.linux;
  };
}
