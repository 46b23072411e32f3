//! The web UI of `sai up`: sai-web in-process on `--web`, reading the local
//! sai-server with a service token (`<data>/web.token`). Users for signing
//! in are kept in `<data>/web-users` (`sai user add NAME --file
//! <data>/web-users`); the session key is `<data>/web-session.key`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use sai_core::config::schema::ConfigType;
use sai_core::config::web::WebConfig;
use tokio_util::sync::CancellationToken;

/// Start sai-web on `listen` for the server at `server_url`. Returns the
/// URL to print and the serving task.
pub async fn start(
    listen: &str,
    server_url: &str,
    data: &Path,
    shutdown: CancellationToken,
) -> Result<(String, tokio::task::JoinHandle<Result<()>>)> {
    let config = WebConfig {
        schema: Some("sai-web".into()),
        listen: listen.to_string(),
        server_url: server_url.to_string(),
        server_token_file: Some("web.token".into()),
        public_url: None,
        users: Vec::new(),
        users_file: Some("web-users".into()),
        session_lifetime_secs: sai_core::config::web::DEFAULT_SESSION_LIFETIME_SECS,
        session_key_file: "web-session.key".into(),
        trusted_proxy: None,
        tls: None,
    };
    let problems = config.validate();
    if !problems.is_empty() {
        let p: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("--web {listen}: {}", p.join("; "));
    }
    let settings = sai_web::settings::Settings::resolve(config, data)?;
    let listener = sai_web::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(sai_web::App::new(settings, shutdown)?);
    Ok((
        format!("http://{addr}/"),
        tokio::spawn(sai_web::serve(app, listener)),
    ))
}
