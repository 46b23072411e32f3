//! Sign-in, sessions, CSRF, privileged actions, private events, badges and
//! raw log ranges, over real HTTP against real sai-server + sai-web.

mod common;

use common::*;
use sai_core::protocol::TaskResult;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_visitors_get_no_controls_and_privileged_posts_are_refused() {
    let st = Stack::start(|_| {});
    let ev = st.push(&Push::new("demo", SMALL)).await;
    let c = raw_client();
    let page = c.get(st.url(&format!("/e/{ev}"))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("rebuild-event") && !html.contains("name=\"csrf\""),
        "no controls"
    );
    let task = st.first_task(&ev).await;
    for path in [
        format!("/t/{task}/rebuild"),
        format!("/t/{task}/cancel"),
        format!("/e/{ev}/rebuild"),
        format!("/e/{ev}/delete"),
    ] {
        let r = c
            .post(st.url(&path))
            .form(&[("csrf", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    assert_eq!(st.event(&ev).await["state"], "waiting", "nothing happened");
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_sessions_csrf_and_actions_recorded_with_the_user() {
    let st = Stack::start(|_| {});
    let ev = st.push(&Push::new("demo", SMALL)).await;
    let task = st.first_task(&ev).await;
    assert_eq!(sign_in(&st.web, USER, "wrong password").await, Err(401));
    let cookie = sign_in(&st.web, USER, PASSWORD).await.unwrap();
    let c = raw_client();

    let html = page_as(&c, st.url(&format!("/t/{task}")), &cookie).await;
    assert!(html.contains("id=\"cancel-task\"") && html.contains("signed in as"));
    assert!(
        html.contains("id=\"expiry\""),
        "the session expiry is shown"
    );
    let csrf = csrf_of(&html).unwrap();

    // Cross-site: without the token, or from another origin, refused.
    let no_token = c
        .post(st.url(&format!("/t/{task}/cancel")))
        .header("cookie", &cookie)
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 403);
    let cross = c
        .post(st.url(&format!("/t/{task}/cancel")))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(st.task(&task).await["state"], "waiting");

    // Forged and foreign cookies are anonymous.
    for forged in [
        cookie.replace("v4.local.", "v4.local.A"),
        "__Host-sai_session=v4.local.garbage".to_string(),
    ] {
        let r = c
            .post(st.url(&format!("/t/{task}/cancel")))
            .header("cookie", &forged)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{forged}");
    }

    // The real thing: sai-server records the user.
    let ok = post_form_as(
        &c,
        st.url(&format!("/t/{task}/cancel")),
        &cookie,
        &format!("http://{}", st.web.addr),
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], format!("/t/{task}").as_str());
    let t = st.task(&task).await;
    assert_eq!(t["state"], "cancelled");
    assert!(t["reason"].as_str().unwrap().contains("alice"), "{t}");

    // Sign out: the controls go away.
    let out = c
        .post(st.url("/signout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let cleared = set_cookie(&out, "__Host-sai_session").unwrap();
    assert_eq!(cleared, "__Host-sai_session=");
    let html = page_as(&c, st.url(&format!("/t/{task}")), &cleared).await;
    assert!(!html.contains("cancel-task"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_session_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = sai_testkit::test_config(&tmp.path().join("data"), KEY);
    c.log_window_bytes = 1 << 20;
    let server =
        sai_testkit::TestServer::start(&sai_testkit::bin_path("sai-server"), &c, &[]).unwrap();
    let dir = tmp.path().join("web");
    let mut wc = sai_testkit::web::test_web_config(&dir, &server.url(""));
    wc.session_lifetime_secs = 60;
    wc.users = vec![sai_core::config::web::WebUser {
        name: USER.into(),
        password_hash: password_hash(PASSWORD),
    }];
    // Sessions sealed with this web's own key: one that expired a second
    // ago, one that expires in an hour. Only the expiry tells them apart.
    std::fs::create_dir_all(&dir).unwrap();
    let sessions = sai_web::session::Sessions::load_or_create(
        &dir.join("session.key"),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let at = |secs: i64| {
        time::OffsetDateTime::now_utc()
            .saturating_add(time::Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (old, s) = sessions.issue_expiring_at(USER, &at(-1)).unwrap();
    assert!(sessions.open(&old).is_none(), "expired {}", s.expires);
    let (fresh, _) = sessions.issue_expiring_at(USER, &at(3600)).unwrap();
    let web = sai_testkit::web::TestWeb::start(&web_bin(), &dir, &wc).unwrap();
    let page = |tok: String| {
        let url = web.url("/");
        async move { page_as(&raw_client(), url, &format!("__Host-sai_session={tok}")).await }
    };
    assert!(page(fresh).await.contains("signed in as"));
    assert!(
        !page(old).await.contains("signed in as"),
        "expired cookie refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_open_redirect_and_failed_sign_ins_are_rate_limited() {
    let st = Stack::start(|_| {});
    let c = raw_client();
    let form = c
        .get(st.url("/signin?next=//evil.example/x"))
        .send()
        .await
        .unwrap();
    let pre = set_cookie(&form, "__Host-sai_pre").unwrap();
    let html = form.text().await.unwrap();
    assert!(
        !html.contains("evil.example"),
        "next is sanitised in the form"
    );
    let csrf = csrf_of(&html).unwrap();
    let post = |password: &'static str, next: &'static str| {
        c.post(st.url("/signin"))
            .header("cookie", &pre)
            .form(&[
                ("csrf", csrf.as_str()),
                ("name", USER),
                ("password", password),
                ("next", next),
            ])
            .send()
    };
    let ok = post(PASSWORD, "https://evil.example/").await.unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/");
    // A sign-in POST without the pre-session token is refused.
    let r = c
        .post(st.url("/signin"))
        .form(&[("name", USER), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(post("nope", "/").await.unwrap().status().as_u16());
    }
    assert_eq!(&codes[..5], &[401; 5]);
    assert!(codes[5..].iter().all(|&c| c == 429), "{codes:?}");
    // Even the right password waits now.
    assert_eq!(post(PASSWORD, "/").await.unwrap().status(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_event_is_absent_for_anonymous_visitors_everywhere() {
    let st = Stack::start(|_| {});
    let public = st.push(&Push::new("demo", SMALL)).await;
    let mut p = Push::new("demo", SMALL);
    p.git_ref = "refs/heads/secret".into();
    let private = st.push_private(&p).await;
    let mut b = st.builder("b1", &[(LINUX, 4)]).await;
    // Run the private event's linux tasks with a log and an artifact.
    let mut private_task = String::new();
    for _ in 0..4 {
        let o = b.offer(T).await.unwrap();
        if o.event_id == private && private_task.is_empty() {
            private_task = o.task_id.clone();
            b.send(&sai_core::protocol::BuilderMessage::Accept {
                task_id: o.task_id.clone(),
            })
            .await
            .unwrap();
            b.log(&o.task_id, 1, b"secret line\n").await.unwrap();
            b.artifact(&o.task_id, "out/secret.bin", b"xyz")
                .await
                .unwrap();
            b.finish(&o.task_id, TaskResult::Success).await.unwrap();
        } else {
            b.run_task(&o, b"ok\n", TaskResult::Success).await.unwrap();
        }
    }
    wait_for("private task finished", T, || async {
        (st.task(&private_task).await["state"] == "success").then_some(())
    })
    .await
    .unwrap();
    let c = raw_client();
    let get = |path: String| {
        let c = c.clone();
        let url = st.url(&path);
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, overview) = get("/".into()).await;
    assert_eq!(s, 200);
    assert!(overview.contains(&public) && !overview.contains(&private));
    for path in [
        format!("/e/{private}"),
        format!("/t/{private_task}"),
        format!("/t/{private_task}/lines?tail=10"),
        format!("/t/{private_task}/log.txt"),
        format!("/t/{private_task}/search?q=secret"),
        format!("/t/{private_task}/artifacts/out/secret.bin"),
    ] {
        let (s, body) = get(path.clone()).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert!(!body.contains("secret line"));
    }
    let (_, badge) = get("/status/demo/secret.svg".into()).await;
    assert!(badge.contains(">unknown<"), "{badge}");
    // Signed in, it is all there.
    let cookie = sign_in(&st.web, USER, PASSWORD).await.unwrap();
    let r = get_as(&c, st.url(&format!("/t/{private_task}/log.txt")), &cookie).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secret line\n");
    // The artifact keeps its path: listed and downloaded under it, named
    // by its file name, with its sha256.
    let page = page_as(&c, st.url(&format!("/t/{private_task}")), &cookie).await;
    assert!(
        page.contains(&format!(
            "href=\"/t/{private_task}/artifacts/out/secret.bin\" download=\"secret.bin\""
        )),
        "{page}"
    );
    let r = get_as(
        &c,
        st.url(&format!("/t/{private_task}/artifacts/out/secret.bin")),
        &cookie,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"secret.bin\""
    );
    assert_eq!(
        r.headers()["x-sai-sha256"],
        "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"xyz");
}

#[tokio::test(flavor = "multi_thread")]
async fn badges_follow_pass_and_fail_per_project_and_branch_and_logs_serve_ranges() {
    let st = Stack::start(|_| {});
    let one_task = br#"{"schema":"sai-1","platforms":{"linux-debian-12/x86_64-amd/gcc":{"build":"true"}},"configurations":{"default":{}}}"#;
    let mut main = Push::new("alpha", one_task);
    main.git_ref = "refs/heads/main".into();
    let mut dev = Push::new("alpha", one_task);
    dev.git_ref = "refs/heads/dev".into();
    let beta = Push::new("beta", one_task);
    let mut b = st.builder("b1", &[(LINUX, 1)]).await;
    let badge = |path: &'static str| {
        let url = st.url(path);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    assert!(badge("/status/alpha.svg").await.contains(">unknown<"));
    st.push(&main).await;
    assert!(badge("/status/alpha/main.svg").await.contains(">running<"));
    let o = b.offer(T).await.unwrap();
    b.run_task(&o, b"fine\n", TaskResult::Success)
        .await
        .unwrap();
    st.push(&dev).await;
    let o = b.offer(T).await.unwrap();
    b.fail_task(&o, b"boom\n", 2).await.unwrap();
    st.push(&beta).await;
    let o2 = b.offer(T).await.unwrap();
    b.run_task(&o2, b"", TaskResult::Success).await.unwrap();
    wait_for("badges settle", T, || async {
        let ok = badge("/status/alpha/main.svg").await.contains(">passing<")
            && badge("/status/alpha/dev.svg").await.contains(">failing<")
            && badge("/status/alpha.svg").await.contains(">failing<")
            && badge("/status/beta.svg").await.contains(">passing<");
        ok.then_some(())
    })
    .await
    .unwrap();

    // Raw log with HTTP Range.
    let c = raw_client();
    let url = st.url(&format!("/t/{}/log.txt", o.task_id));
    let whole = c.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.text().await.unwrap(), "boom\n");
    let range = |r: &'static str| {
        let req = c.get(&url).header("range", r);
        async move { req.send().await.unwrap() }
    };
    let r = range("bytes=1-2").await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1-2/5");
    assert_eq!(r.text().await.unwrap(), "oo");
    let r = range("bytes=-2").await;
    assert_eq!(r.text().await.unwrap(), "m\n");
    let r = range("bytes=9-").await;
    assert_eq!(r.status(), 416);
}
