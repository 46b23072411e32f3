//! A real HTTPS git server for fetch tests: `git http-backend` (smart HTTP)
//! run as a CGI program behind a small rustls + hyper front on
//! `127.0.0.1:0`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::tls::ServerCert;

/// A running HTTPS git server; stops when dropped.
pub struct HttpsGitServer {
    /// Bound address.
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for HttpsGitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsGitServer {
    /// Serve the repositories under `root` (e.g. `root/proj.git`) with `cert`.
    pub async fn start(root: &Path, cert: &ServerCert) -> Result<HttpsGitServer> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let root = root.to_path_buf();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let root = root.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        cgi(root.clone(), req)
                    });
                    crate::serve_http1(tls, svc).await;
                });
            }
        });
        Ok(HttpsGitServer {
            addr,
            requests,
            task,
        })
    }

    /// `https://127.0.0.1:<port>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("https://{}/{repo}", self.addr)
    }

    /// HTTP requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn cgi(root: PathBuf, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match run_backend(&root, req).await {
        Ok(r) => r,
        Err(e) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from(format!("{e:#}"))))
            .unwrap_or_default(),
    })
}

async fn run_backend(root: &Path, req: Request<Incoming>) -> Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning git http-backend")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let feed = async move {
        let _ = stdin.write_all(&body).await;
    };
    let (_, out) = tokio::join!(feed, child.wait_with_output());
    let out = out?;
    // CGI output: headers, a blank line, the body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .context("git http-backend printed no header block")?;
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
    let mut resp = Response::builder();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v.split_whitespace().next().unwrap_or("500").parse()?;
            resp = resp.status(code);
        } else {
            resp = resp.header(k.trim(), v);
        }
    }
    let body = Bytes::copy_from_slice(&out.stdout[split.0 + split.1..]);
    Ok(resp.body(Full::new(body))?)
}
