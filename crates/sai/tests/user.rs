//! `sai user add/remove` maintain sai-web's users file.

use std::process::Command;

fn sai(args: &[&str], stdin: &str) -> std::process::Output {
    sai_testkit::output_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_sai")).args(args),
        stdin.as_bytes(),
    )
}

#[test]
fn users_are_added_with_argon2_hashes_replaced_and_removed_keeping_other_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("users");
    std::fs::write(&file, "# sai-web users\n").unwrap();
    let f = file.to_str().unwrap();
    let out = sai(&["user", "add", "alice", "--file", f], "first password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sai(&["user", "add", "bob", "--file", f], "bobs password\n");
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# sai-web users\n"));
    assert!(!text.contains("first password"));
    let users = sai_web::users::parse_users_file(f, &text).unwrap();
    assert!(users["alice"].starts_with("$argon2id$"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let config = |path: &str| sai_core::config::web::WebConfig {
        schema: None,
        listen: "127.0.0.1:0".into(),
        server_url: "http://127.0.0.1:1".into(),
        server_token_file: None,
        public_url: None,
        users: vec![],
        users_file: Some(path.into()),
        session_lifetime_secs: 60,
        session_key_file: "k".into(),
        trusted_proxy: None,
        tls: None,
    };
    let loaded = sai_web::users::Users::load(&config(f), tmp.path()).unwrap();
    assert!(loaded.check("alice", "first password"));
    assert!(!loaded.check("alice", "bobs password"));

    // A new password replaces the old one; removal keeps the others.
    assert!(
        sai(&["user", "add", "alice", "--file", f], "second password\n")
            .status
            .success()
    );
    assert!(
        sai(&["user", "remove", "bob", "--file", f], "")
            .status
            .success()
    );
    let loaded = sai_web::users::Users::load(&config(f), tmp.path()).unwrap();
    assert!(loaded.check("alice", "second password"));
    assert!(!loaded.exists("bob"));
    assert_eq!(loaded.len(), 1);

    // Clear refusals, file untouched.
    let before = std::fs::read_to_string(&file).unwrap();
    let out = sai(&["user", "remove", "carol", "--file", f], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user \"carol\""));
    let out = sai(
        &["user", "add", "bad name", "--file", f],
        "long enough pw\n",
    );
    assert!(!out.status.success());
    let out = sai(&["user", "add", "dave", "--file", f], "short\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 8"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}
