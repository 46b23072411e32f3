//! sai-web terminating TLS itself (issue 15): HTTPS with a certificate of a
//! private CA made in the test, sign-in over it with `Secure` cookies, and
//! SIGHUP serving a new certificate to new connections while an open
//! keep-alive connection keeps working with the old one.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{PASSWORD, USER, page_as, password_hash, sign_in_with};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sai_core::config::server::ServerTlsConfig;
use sai_core::config::web::WebUser;
use sai_testkit::tls::{TestCa, Validity};
use sai_testkit::web::{TestWeb, test_web_config};
use sai_testkit::{TestServer, wait_for};

/// A reqwest client trusting only `ca_pem`.
fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// sai-server (plain) and sai-web serving `dir/web.pem` + `dir/web.key`.
fn start_stack(dir: &Path) -> (TestServer, TestWeb) {
    let c = sai_testkit::test_config(&dir.join("data"), common::KEY);
    let server = TestServer::start(&sai_testkit::bin_path("sai-server"), &c, &[]).unwrap();
    let web_dir = dir.join("web");
    std::fs::create_dir_all(&web_dir).unwrap();
    let mut wc = test_web_config(&web_dir, &server.url(""));
    wc.users = vec![WebUser {
        name: USER.into(),
        password_hash: password_hash(PASSWORD),
    }];
    // Relative to the config's folder, as in a deployment.
    wc.tls = Some(ServerTlsConfig {
        certificate_chain_file: "../web.pem".into(),
        private_key_file: "../web.key".into(),
    });
    let web = TestWeb::start(&common::web_bin(), &web_dir, &wc).unwrap();
    (server, web)
}

/// One HTTP/1.1 connection over TLS, trusting only `ca_pem`, kept open
/// across requests.
struct KeptConnection {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    server_cert: CertificateDer<'static>,
    host: String,
}

impl KeptConnection {
    async fn open(web: &TestWeb, ca_pem: &str) -> KeptConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(web.addr).await.unwrap();
        let name = ServerName::IpAddress(web.addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeptConnection {
            send,
            server_cert,
            host: web.addr.to_string(),
        }
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let host = self.host.clone();
        let (status, _, body) = self.get_as(&host, path).await;
        (status, body)
    }

    /// GET with this `Host` header; status, `set-cookie` values, body.
    async fn get_as(&mut self, host: &str, path: &str) -> (u16, Vec<String>, String) {
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, cookies, String::from_utf8_lossy(&body).into_owned())
    }
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn web_serves_https_and_signs_in_with_secure_cookies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::new("Rack CA").unwrap();
    ca.server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap()
        .write(dir, "web")
        .unwrap();
    let (_server, web) = start_stack(dir);
    assert!(web.tls, "sai-web says it listens on https://");
    assert!(web.url("/").starts_with("https://"));

    let c = client(&ca.cert_pem);
    let page = c.get(web.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "{}", web.log());
    assert!(page.text().await.unwrap().contains("<html"));

    // Plain HTTP is not served on the TLS port.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/", web.addr))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status() == 400),
        "plain HTTP on the TLS port: {plain:?}"
    );
    // A client that does not trust the CA refuses the certificate.
    let stranger = client(&TestCa::new("Other CA").unwrap().cert_pem)
        .get(web.url("/"))
        .send()
        .await;
    let err = format!("{:?}", stranger.expect_err("an unknown CA is refused"));
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Served over TLS, cookies are `Secure` for any host name, without a
    // `public_url` (plain HTTP to a non-loopback host would not set it).
    let mut conn = KeptConnection::open(&web, &ca.cert_pem).await;
    let (status, cookies, _) = conn.get_as("ci.example.org", "/signin").await;
    assert_eq!(status, 200);
    let pre_header = cookies
        .iter()
        .find(|v| v.starts_with("__Host-sai_pre="))
        .unwrap_or_else(|| panic!("a __Host- pre-session cookie: {cookies:?}"));
    assert!(pre_header.contains("Secure"), "{pre_header}");

    // Sign-in over TLS.
    let origin = format!("https://{}", web.addr);
    let session = sign_in_with(&c, &web, &origin, USER, PASSWORD)
        .await
        .unwrap_or_else(|status| panic!("sign-in answered {status}\n{}", web.log()));
    let home = page_as(&c, web.url("/"), &session).await;
    assert!(home.contains(USER), "signed-in page names the user");
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old_ca = TestCa::new("Old CA").unwrap();
    let new_ca = TestCa::new("New CA").unwrap();
    let old_cert = old_ca
        .server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap();
    old_cert.write(dir, "web").unwrap();
    let (_server, web) = start_stack(dir);

    let mut kept = KeptConnection::open(&web, &old_ca.cert_pem).await;
    assert_eq!(kept.server_cert, der_of(&old_cert.chain_pem));
    let (status, _) = kept.get("/").await;
    assert_eq!(status, 200);

    let new_cert = new_ca
        .server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap();
    new_cert.write(dir, "web").unwrap();
    kill(Pid::from_raw(web.guard.id() as i32), Signal::SIGHUP).unwrap();
    wait_for("certificate reloaded", common::T, || async {
        web.log().contains("TLS certificate reloaded").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", web.log()));
    // The same SIGHUP still reloads the users file, as before TLS. The two
    // reloads are separate signal listeners, so either may log first.
    wait_for("users reloaded", common::T, || async {
        web.log().contains("users reloaded").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", web.log()));

    // New connections get the new certificate...
    let fresh = KeptConnection::open(&web, &new_ca.cert_pem).await;
    assert_eq!(fresh.server_cert, der_of(&new_cert.chain_pem));
    let refused = client(&old_ca.cert_pem).get(web.url("/")).send().await;
    let err = format!("{:?}", refused.expect_err("the old CA no longer matches"));
    assert!(err.contains("UnknownIssuer"), "{err}");

    // ...and the connection opened before the reload still serves requests.
    let (status, body) = kept.get("/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<html"));

    // A broken certificate file: the reload fails, the last good one stays.
    std::fs::write(dir.join("web.pem"), "not a certificate\n").unwrap();
    kill(Pid::from_raw(web.guard.id() as i32), Signal::SIGHUP).unwrap();
    wait_for("reload failure logged", common::T, || async {
        web.log()
            .contains("TLS certificate reload failed")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", web.log()));
    let still = KeptConnection::open(&web, &new_ca.cert_pem).await;
    assert_eq!(still.server_cert, der_of(&new_cert.chain_pem));
}

#[test]
fn a_missing_key_file_stops_the_start_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::new("Rack CA").unwrap();
    let (chain, key) = ca
        .server_cert(&["127.0.0.1"], Validity::Current)
        .unwrap()
        .write(dir, "web")
        .unwrap();
    std::fs::remove_file(&key).unwrap();
    let mut wc = test_web_config(dir, "http://127.0.0.1:9");
    wc.tls = Some(ServerTlsConfig {
        certificate_chain_file: chain.display().to_string(),
        private_key_file: key.display().to_string(),
    });
    let conf = dir.join("web.conf");
    std::fs::write(&conf, serde_json::to_vec_pretty(&wc).unwrap()).unwrap();
    let err = check_config_fails(&conf);
    assert!(
        err.contains(&format!("private key {}", key.display())),
        "{err}"
    );

    // An empty file name is caught by validation, with its field.
    wc.tls.as_mut().unwrap().private_key_file = String::new();
    std::fs::write(&conf, serde_json::to_vec_pretty(&wc).unwrap()).unwrap();
    let err = check_config_fails(&conf);
    assert!(err.contains("tls.private_key_file"), "{err}");
}

/// Runs `sai-web check-config` on `conf`, which must fail; returns stderr.
fn check_config_fails(conf: &std::path::Path) -> String {
    let out = std::process::Command::new(common::web_bin())
        .arg("-c")
        .arg(conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
