//! A real stack on loopback for sai-web tests: sai-server (real binary,
//! temp data dir), sai-web (real binary) with a service token and one user,
//! fake builders speaking the real protocol, and HTTP clients.
// Each test binary uses a part of this module.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::time::Duration;

use sai_core::config::web::WebUser;
use sai_testkit::hook::{HookRequest, Push};
use sai_testkit::web::{TestWeb, test_web_config};
use sai_testkit::{FakeBuilder, TestServer};
use serde_json::Value;

pub use sai_testkit::fixtures::{ESP32, KEY, LINUX, SMALL, lws_saifile};
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";
pub const T: Duration = Duration::from_secs(30);

pub struct Stack {
    pub tmp: tempfile::TempDir,
    pub server: TestServer,
    pub web: TestWeb,
}

pub fn password_hash(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

fn server_bin() -> PathBuf {
    // sai-server is built by this workspace; the tests of sai-web find it
    // next to their own binary. The bench may be pointed at other builds
    // (e.g. the code before a change) with SAI_BENCH_SERVER_BIN.
    std::env::var_os("SAI_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| sai_testkit::bin_path("sai-server"))
}

pub fn web_bin() -> PathBuf {
    std::env::var_os("SAI_BENCH_WEB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sai-web")))
}

impl Stack {
    /// sai-server with `edit` applied to its config, and sai-web in front.
    pub fn start(edit: impl FnOnce(&mut sai_core::config::server::ServerConfig)) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = sai_testkit::test_config(&tmp.path().join("data"), KEY);
        // Fake builders answer pings only while a test reads from them.
        c.builder_ping_interval_ms = 10_000;
        c.builder_dead_timeout_ms = 120_000;
        c.log_window_bytes = 8 << 20;
        edit(&mut c);
        let server = TestServer::start(&server_bin(), &c, &[]).unwrap();
        let web = start_web(&tmp, &server);
        Stack { tmp, server, web }
    }

    pub fn url(&self, path: &str) -> String {
        self.web.url(path)
    }

    pub async fn push(&self, p: &Push) -> String {
        push_to(&self.server, HookRequest::like_sai_sh(p, KEY)).await
    }

    pub async fn push_private(&self, p: &Push) -> String {
        push_to(&self.server, HookRequest::private_like_sai_sh(p, KEY)).await
    }

    pub async fn builder(&self, name: &str, platforms: &[(&str, u32)]) -> FakeBuilder {
        let names: Vec<&str> = platforms.iter().map(|(p, _)| *p).collect();
        let token = self.server.builder_token(name, &names).unwrap();
        FakeBuilder::start(&self.server.builder_url(), &token, name, platforms)
            .await
            .unwrap()
    }

    /// The id of the first task of event `ev`.
    pub async fn first_task(&self, ev: &str) -> String {
        self.event(ev).await["tasks"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The server's view of a task (as an operator sees it).
    pub async fn task(&self, id: &str) -> Value {
        self.server_api(&format!("/api/tasks/{id}")).await
    }

    /// The server's view of an event (as an operator sees it).
    pub async fn event(&self, id: &str) -> Value {
        self.server_api(&format!("/api/events/{id}")).await
    }

    async fn server_api(&self, path: &str) -> Value {
        server_api(&self.server, path).await
    }
}

pub fn start_web(tmp: &tempfile::TempDir, server: &TestServer) -> TestWeb {
    let dir = tmp.path().join("web");
    std::fs::create_dir_all(&dir).unwrap();
    let token = server.service_token("sai-web").unwrap();
    std::fs::write(dir.join("server.token"), format!("{token}\n")).unwrap();
    let mut wc = test_web_config(&dir, &server.url(""));
    wc.server_token_file = Some("server.token".into());
    wc.users = vec![WebUser {
        name: USER.into(),
        password_hash: password_hash(PASSWORD),
    }];
    TestWeb::start(&web_bin(), &dir, &wc).unwrap()
}

pub async fn push_to(server: &TestServer, req: HookRequest) -> String {
    let r = req.send(&server.url("/sai/update-hook")).await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(st, 200, "{v}");
    v["event_id"].as_str().unwrap().to_string()
}

/// A client without redirects or cookies: every header is under test control.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Cookie header value (`name=value`) from a response's Set-Cookie headers.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_string())
}

/// The value of `name="csrf" value="..."` in a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let i = html.find("name=\"csrf\" value=\"")?;
    let rest = &html[i + 19..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Sign in over HTTP like a browser on the same origin; returns the session
/// cookie (`name=value`).
pub async fn sign_in(web: &TestWeb, user: &str, password: &str) -> Result<String, u16> {
    let origin = format!("http://{}", web.addr);
    sign_in_with(&raw_client(), web, &origin, user, password).await
}

/// Sign in with client `c` like a browser on `origin`; returns the session
/// cookie (`name=value`), or the status when it is not a redirect (0: no
/// session cookie).
pub async fn sign_in_with(
    c: &reqwest::Client,
    web: &TestWeb,
    origin: &str,
    user: &str,
    password: &str,
) -> Result<String, u16> {
    let form_page = c.get(web.url("/signin")).send().await.unwrap();
    let pre = set_cookie(&form_page, "__Host-sai_pre").expect("pre-session cookie");
    let html = form_page.text().await.unwrap();
    let csrf = csrf_of(&html).expect("csrf field");
    let r = post_form_as(
        c,
        web.url("/signin"),
        &pre,
        origin,
        &[
            ("csrf", csrf.as_str()),
            ("name", user),
            ("password", password),
            ("next", "/"),
        ],
    )
    .await;
    if r.status() != 303 {
        return Err(r.status().as_u16());
    }
    set_cookie(&r, "__Host-sai_session").ok_or(0)
}

/// The JSON of the server's operations API at `path`, as user `ops`.
pub async fn server_api(server: &TestServer, path: &str) -> Value {
    let tok = server.user_token("ops").unwrap();
    reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// GET `url` with the session `cookie`.
pub async fn get_as(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    cookie: &str,
) -> reqwest::Response {
    c.get(url).header("cookie", cookie).send().await.unwrap()
}

/// The text of the page at `url` fetched with the session `cookie`.
pub async fn page_as(c: &reqwest::Client, url: impl reqwest::IntoUrl, cookie: &str) -> String {
    get_as(c, url, cookie).await.text().await.unwrap()
}

/// POST `form` to `url` with `cookie`, as a page of `origin` does.
pub async fn post_form_as(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    cookie: &str,
    origin: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    c.post(url)
        .header("cookie", cookie)
        .header("origin", origin)
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Wait until `script` returns something truthy on the page.
pub async fn page_shows(b: &sai_testkit::browser::Browser, what: &str, script: &str) -> Value {
    b.wait_for(what, T, script).await.unwrap()
}
