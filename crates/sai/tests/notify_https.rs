//! Hooks over `https://`: `sai notify` and the real `hooks/sai-notify`
//! (curl) post to a real `sai-server` terminating TLS with a certificate of
//! a private CA made here; certificates are checked (a CA file option
//! makes them pass, without it they are refused).
//!
//! Needs the `sai-server` binary of this workspace, git, curl and openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use sai_core::config::server::ServerTlsConfig;
use sai_testkit::TestServer;
use sai_testkit::tls::{TestCa, Validity};
use serde_json::json;

const KEY: &str = "5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1c0ffee5ea1";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: TestServer,
    ca_pem: String,
    ca_file: PathBuf,
    secret: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = TestCa::new("Sai hooks CA").unwrap();
    let ca_file = ca.write(&dir, "ca.pem").unwrap();
    let (chain, key) = ca
        .server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap()
        .write(&dir, "server")
        .unwrap();
    let mut config = sai_testkit::test_config(&dir.join("data"), KEY);
    config.tls = Some(ServerTlsConfig {
        certificate_chain_file: chain.display().to_string(),
        private_key_file: key.display().to_string(),
    });
    let bin = sai_testkit::bin_path("sai-server");
    assert!(
        bin.exists(),
        "{} is missing: build sai-server first",
        bin.display()
    );
    let server = TestServer::start(&bin, &config, &[]).unwrap();
    assert!(server.tls);
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{KEY}\n")).unwrap();
    Setup {
        _tmp: tmp,
        dir,
        server,
        ca_pem: ca.cert_pem,
        ca_file,
        secret,
    }
}

/// `dir/work`: one commit with a one-task `.sai.json`.
fn work_repo(dir: &Path) -> PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let saifile = json!({
        "schema": "sai-1",
        "platforms": { "linux-debian-12/x86_64/gcc": { "build": "true" } },
        "configurations": { "default": {} },
    });
    std::fs::write(work.join(".sai.json"), saifile.to_string()).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    work
}

fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = sai_testkit::git::git_command(dir, args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The event id in a reply such as `... as event <id> ...` or `"event_id":"<id>"`.
fn event_id(text: &str) -> Option<String> {
    let after = text
        .split_once("as event ")
        .map(|(_, r)| r)
        .or_else(|| text.split_once("\"event_id\":\"").map(|(_, r)| r))?;
    Some(
        after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect(),
    )
}

async fn event_exists(s: &Setup, id: &str) -> bool {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(s.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    client
        .get(s.server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .status()
        .is_success()
}

fn sai_notify(s: &Setup, work: &Path, ca_file: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sai"));
    cmd.args(["notify", "--url", &s.server.url("")])
        .arg("--secret-file")
        .arg(&s.secret)
        .arg("--repo")
        .arg(work)
        .env_remove("SAI_CA_FILE")
        .env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca_file {
        cmd.arg("--ca-file").arg(ca);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sai_notify_posts_over_https_with_a_ca_file_and_refuses_an_unknown_ca() {
    let s = setup();
    assert!(s.server.url("").starts_with("https://127.0.0.1:"));
    let work = work_repo(&s.dir);

    let refused = sai_notify(&s, &work, None);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "an unknown CA is refused: {err}");
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "says why: {err}"
    );

    let ok = sai_notify(&s, &work, Some(&s.ca_file));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        s.server.log()
    );
    assert!(out.contains("queued"), "{out}");
    let id = event_id(&out).expect("event id in the output");
    assert!(event_exists(&s, &id).await, "event {id} is on the server");
}

#[tokio::test(flavor = "multi_thread")]
async fn hook_script_posts_over_https_with_sai_ca_file_and_refuses_without() {
    let s = setup();
    let origin = s.dir.join("origin.git");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "-q", "--bare"]);
    let hooks_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hooks");
    for h in ["post-receive", "sai-notify"] {
        let to = origin.join("hooks").join(h);
        std::fs::copy(hooks_src.join(h), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let url = s.server.url("");
    let secret = s.secret.display().to_string();
    for (k, v) in [
        ("sai.url", url.as_str()),
        ("sai.secretFile", secret.as_str()),
    ] {
        assert!(git(&origin, &["config", k, v]).0);
    }
    let work = work_repo(&s.dir);
    let origin_s = origin.display().to_string();

    // No CA configured: curl checks the certificate against the system
    // roots and refuses; the push itself still succeeds.
    let (ok, out) = git(&work, &["push", "-q", &origin_s, "main"]);
    assert!(ok, "{out}");
    assert!(out.contains("server did not accept"), "{out}");
    assert!(
        out.to_lowercase().contains("certificate"),
        "curl says why: {out}"
    );

    // With sai.caFile the same push is accepted.
    let ca = s.ca_file.display().to_string();
    assert!(git(&origin, &["config", "sai.caFile", &ca]).0);
    git(&work, &["commit", "-q", "--allow-empty", "-m", "two"]);
    let (ok, out) = git(&work, &["push", "-q", &origin_s, "main"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("sai-notify: notified"),
        "{out}\n{}",
        s.server.log()
    );
    let id = event_id(&out).expect("event id in the reply");
    assert!(event_exists(&s, &id).await, "event {id} is on the server");
}
