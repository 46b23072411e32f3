//! Builder and server config rules for TLS: `ws://` only to loopback unless
//! `insecure`, `ca_file` only with `wss://`, and the server's `tls` block.

mod common;
use common::builder_problems;

use sai_core::config::builder::{BuilderConfig, is_loopback_host, url_host};
use sai_core::config::schema::ConfigType;
use sai_core::config::server::ServerConfig;
use sai_core::config::{Format, parse};

fn builder_with_server(server: &str) -> String {
    format!(
        r#"{{"home": "/h", "host": "b", "platforms": [
            {{"name": "linux/x86_64", "servers": [{server}]}}]}}"#
    )
}

fn problems(server: &str) -> Vec<String> {
    builder_problems(&builder_with_server(server))
}

#[test]
fn plain_ws_to_a_remote_host_is_refused_with_the_reason_and_the_way_out() {
    let p = problems(r#"{"url": "ws://ci.example.org/sai/builder", "token": "t"}"#);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("platforms[0].servers[0].url:"),
        "names the field: {p:?}"
    );
    assert!(p[0].contains("not loopback"), "{p:?}");
    assert!(p[0].contains("\"insecure\": true"), "{p:?}");
    for remote in ["ws://10.1.2.3:4444/builder", "ws://[fe80::1]:80/builder"] {
        let p = problems(&format!(r#"{{"url": "{remote}", "token": "t"}}"#));
        assert_eq!(p.len(), 1, "{remote}: {p:?}");
    }
}

#[test]
fn plain_ws_to_loopback_or_with_insecure_is_accepted() {
    for ok in [
        r#"{"url": "ws://127.0.0.1:4444/builder", "token": "t"}"#,
        r#"{"url": "ws://localhost/sai/builder", "token": "t"}"#,
        r#"{"url": "ws://[::1]:9/builder", "token": "t"}"#,
        r#"{"url": "ws://ci.lan/builder", "token": "t", "insecure": true}"#,
        r#"{"url": "wss://ci.example.org/builder", "token": "t"}"#,
        r#"{"url": "wss://ci.example.org/builder", "token": "t", "ca_file": "/etc/sai/ca.pem"}"#,
    ] {
        assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
    }
}

#[test]
fn ca_file_with_ws_and_insecure_with_wss_are_mistakes() {
    let p = problems(r#"{"url": "ws://127.0.0.1/builder", "token": "t", "ca_file": "/ca.pem"}"#);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("platforms[0].servers[0].ca_file:"),
        "{p:?}"
    );
    let p = problems(r#"{"url": "wss://ci/builder", "token": "t", "insecure": true}"#);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("platforms[0].servers[0].insecure:"),
        "{p:?}"
    );
    assert!(p[0].contains("always checked"), "{p:?}");
}

#[test]
fn one_server_gets_one_ca_file() {
    let text = r#"{"home": "/h", "host": "b", "platforms": [
        {"name": "linux/x86_64", "servers": [{"url": "wss://ci/builder", "token": "t", "ca_file": "/a.pem"}]},
        {"name": "linux/aarch64", "servers": [{"url": "wss://ci/builder", "token": "t", "ca_file": "/b.pem"}]}]}"#;
    let c: BuilderConfig = parse("b.conf", text.as_bytes(), Format::Json).unwrap();
    let p: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("platforms[1].servers[0]"), "{p:?}");
    assert!(p[0].contains("different ca_file"), "{p:?}");
}

#[test]
fn url_host_handles_ports_users_and_ipv6() {
    assert_eq!(url_host("wss://a.b:44/x"), Some("a.b"));
    assert_eq!(url_host("ws://u:p@h/builder"), Some("h"));
    assert_eq!(url_host("ws://[::1]:4/builder"), Some("::1"));
    assert_eq!(url_host("no scheme"), None);
    assert!(is_loopback_host("127.8.9.1"));
    assert!(is_loopback_host("LOCALHOST"));
    assert!(!is_loopback_host("localhost.example.org"));
    assert!(!is_loopback_host("192.0.2.1"));
}

#[test]
fn server_tls_block_is_parsed_and_checked() {
    let c: ServerConfig = parse(
        "server.conf",
        br#"{"tls": {"certificate_chain_file": "fullchain.pem", "private_key_file": "privkey.pem"}}"#,
        Format::Json,
    )
    .unwrap();
    let tls = c.tls.as_ref().expect("tls block");
    assert_eq!(tls.certificate_chain_file, "fullchain.pem");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let e = parse::<ServerConfig>(
        "server.conf",
        b"{\n \"tls\": {\"certificate_chain_file\": \"c.pem\"}\n}",
        Format::Json,
    )
    .unwrap_err();
    assert!(e.message.contains("private_key_file"), "{e}");
    let c: ServerConfig = parse(
        "server.conf",
        br#"{"tls": {"certificate_chain_file": "", "private_key_file": "k"}}"#,
        Format::Json,
    )
    .unwrap();
    let p: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
    assert_eq!(
        p,
        vec!["tls.certificate_chain_file: must not be empty".to_string()]
    );
}
