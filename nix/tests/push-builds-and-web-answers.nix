# Server, web UI and a builder on two machines: a push to a git repository
# goes through Sai's post-receive hook, the builder runs the task, it
# passes, and the web UI answers.
{ self, pkgs }:
let
  platform = "linux-nixos-2411/x86_64-amd/gcc";
  saiJson = pkgs.writeText "sai.json" (
    builtins.toJSON {
      schema = "sai-1";
      platforms.${platform}.build = [ "echo built-by-sai > out.txt && cat out.txt" ];
      configurations.vm-test = { };
    }
  );
in
pkgs.testers.nixosTest {
  name = "sai-push-builds-and-web-answers";

  nodes = {
    server =
      { pkgs, ... }:
      {
        imports = [ self.nixosModules.default ];
        # A test secret; real ones never come from the store.
        systemd.tmpfiles.rules = [
          "f /run/keys/sai-hook-key 0600 root root - vm-test-hook-secret"
          "d /srv/git 0755 root root -"
        ];
        services.sai.server = {
          enable = true;
          address = "0.0.0.0";
          openFirewall = true;
          notificationKeyFile = "/run/keys/sai-hook-key";
          projects.demo = { };
        };
        services.sai.web = {
          enable = true;
          address = "0.0.0.0";
          openFirewall = true;
        };
        services.gitDaemon = {
          enable = true;
          basePath = "/srv/git";
          exportAll = true;
        };
        networking.firewall.allowedTCPPorts = [ 9418 ];
        # The repository is root's; git-daemon (user git) serves it too.
        programs.git = {
          enable = true;
          config.safe.directory = "*";
        };
        environment.systemPackages = with pkgs; [
          git
          curl
          openssl
          jq
        ];
      };

    builder = {
      imports = [ self.nixosModules.default ];
      services.sai.builder.instances.vm = {
        servers.main = {
          url = "ws://server:4444/builder";
          tokenFile = "/run/keys/sai-builder-token";
          # Plain ws:// between the test VMs, on the test's own network.
          insecure = true;
        };
        platforms.${platform} = { };
      };
    };
  };

  testScript = ''
    start_all()
    server.wait_for_unit("sai-server.service")
    server.wait_for_open_port(4444)

    with subtest("the builder connects with a token minted by the server"):
        token = server.succeed(
            "sai-server -c /etc/sai/server/conf token builder --name vm --platforms '${platform}'"
        ).strip()
        builder.succeed(f"install -D -m 600 /dev/stdin /run/keys/sai-builder-token <<< '{token}'")
        builder.systemctl("restart sai-builder-vm.service")
        builder.wait_for_unit("sai-builder-vm.service")
        server.wait_until_succeeds("curl -sf http://127.0.0.1:4444/api/builders | grep -q vm")

    with subtest("a push goes through the hook"):
        server.succeed(
            "git init -q --bare -b main /srv/git/demo.git",
            "cp ${../../hooks}/post-receive ${../../hooks}/sai-notify /srv/git/demo.git/hooks/",
            "chmod +x /srv/git/demo.git/hooks/*",
            "git -C /srv/git/demo.git config sai.url http://127.0.0.1:4444",
            "git -C /srv/git/demo.git config sai.secretFile /run/keys/sai-hook-key",
            "git -C /srv/git/demo.git config sai.fetchUrl git://server/demo.git",
            "git init -q -b main /tmp/work",
            "cp ${saiJson} /tmp/work/.sai.json",
            "git -C /tmp/work -c user.name=t -c user.email=t@t add .sai.json",
            "git -C /tmp/work -c user.name=t -c user.email=t@t commit -q -m test",
        )
        out = server.succeed("git -C /tmp/work push /srv/git/demo.git main 2>&1")
        assert "sai-notify: notified" in out, out

    with subtest("the task passes on the builder"):
        event = server.wait_until_succeeds(
            "curl -sf http://127.0.0.1:4444/api/projects/demo/events | jq -er '.[0].id'"
        ).strip()
        server.wait_until_succeeds(
            f"curl -sf http://127.0.0.1:4444/api/events/{event} | jq -e '.state == \"success\"'",
            timeout=300,
        )
        task = server.succeed(
            f"curl -sf http://127.0.0.1:4444/api/events/{event} | jq -er '.tasks[0].id'"
        ).strip()
        log = server.succeed(f"curl -sf 'http://127.0.0.1:4444/api/tasks/{task}/log?format=raw'")
        assert "built-by-sai" in log, log

    with subtest("the web UI answers"):
        server.wait_for_unit("sai-web.service")
        builder.wait_until_succeeds("curl -sf http://server:8081/ | grep -qi sai")
  '';
}
