# Every Sai NixOS module. Each is off until enabled (the builder runs one
# unit per entry of services.sai.builder.instances).
{
  imports = [
    ./sai-server.nix
    ./sai-web.nix
    ./sai-builder.nix
    ./sai-jig.nix
    ./sai-device.nix
  ];
}
