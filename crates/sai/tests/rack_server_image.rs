//! The rack's sai-server as a `FROM scratch` podman image holding only the
//! static sai-server: `sai rack build` makes it, `sai rack up` runs it with
//! `--network host`, its rendered config and a named data volume, and the
//! host reaches its API on loopback.

mod rack_support;

use std::time::{Duration, Instant};

use rack_support::{PodmanCleanup, need_prepared, podman, repo_root, sai_ok};
use serde_json::{Value, json};

const CONTAINER: &str = "ci-srv-sai-server";

#[test]
fn server_image_from_scratch_serves_its_api_on_loopback() {
    need_prepared(&["sai-server"]);
    let tmp = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut rack: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("examples/rack.json")).unwrap(),
    )
    .unwrap();
    rack["name"] = json!("ci-srv");
    rack["server"]["config"]["listen"] = json!(format!("127.0.0.1:{port}"));
    let rack_path = tmp.path().join("rack.json");
    std::fs::write(&rack_path, serde_json::to_vec_pretty(&rack).unwrap()).unwrap();
    let out = tmp.path().join("render");
    let (rack_s, out_s) = (rack_path.to_str().unwrap(), out.to_str().unwrap());
    sai_ok(&["rack", "render", rack_s, "--out", out_s]);
    let containerfile = std::fs::read_to_string(out.join("sai-server/Containerfile")).unwrap();
    assert!(containerfile.contains("FROM scratch"), "{containerfile}");
    // The secret the rendered config names, put where the container sees it.
    std::fs::write(out.join("sai-server/notification-key"), "5ea1c0ffee\n").unwrap();

    let _ = podman(&["rm", "--force", CONTAINER]);
    let _cleanup = PodmanCleanup {
        container: CONTAINER,
        volume: format!("{CONTAINER}-data"),
    };
    let start = Instant::now();
    sai_ok(&["rack", "build", rack_s, "sai-server", "--out", out_s]);
    eprintln!(
        "server image built in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    // Nothing in the image but the binary.
    let history = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.RootFS.Layers}}",
        "localhost/ci-srv-sai-server:latest",
    ]);
    assert!(history.status.success());
    assert_eq!(
        String::from_utf8_lossy(&history.stdout)
            .matches("sha256:")
            .count(),
        1
    );

    sai_ok(&["rack", "up", rack_s, "sai-server", "--out", out_s]);
    let url = format!("http://127.0.0.1:{port}/api/openapi.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Ok(r) = reqwest::blocking::get(&url)
            && r.status().is_success()
        {
            break r.text().unwrap();
        }
        if Instant::now() > deadline {
            let logs = podman(&["logs", CONTAINER]);
            panic!(
                "the server in the container did not answer on {url}:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].is_string(), "{body}");
    // Its data went to the named volume declared by the rack.
    let volume = podman(&["volume", "exists", &format!("{CONTAINER}-data")]);
    assert!(volume.status.success());
}
