//! TLS termination for Sai's HTTP daemons, sai-server and sai-web (rustls
//! with the ring provider).
//!
//! warp 0.4 has no TLS support and keeps its acceptor trait private, so
//! [`crate::accept::serve`] runs its own accept loop: TCP accept, rustls
//! handshake, then hyper-util serves the warp filter on the decrypted stream
//! (websocket upgrades included). The peer address is handed to the filter
//! through a request extension that [`remote_addr`] reads, because warp's
//! own `warp::addr::remote()` only works with warp's accept loop.
//!
//! The certificate comes from [`CertificateStore`]: it is read at start
//! (a missing or mismatched file stops the start with a clear error) and
//! again on SIGHUP. A reload replaces what *new* handshakes get; sessions
//! already established, such as connected builders or browsers' keep-alive
//! connections, are not touched. A reload that fails is logged and the
//! previous certificate stays.
//!
//! This is a crate of its own because both daemons need it and `sai-core`
//! (where their config types live) must not do I/O.

pub mod accept;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sai_core::config::server::ServerTlsConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use warp::Filter;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM section of the needed kind.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file (certificate chain or private key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key is of an unsupported kind, or does not belong to the
    /// certificate.
    #[error("private key {key} with certificate {chain}: {reason}")]
    Mismatch {
        /// Certificate chain file.
        chain: PathBuf,
        /// Key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The two PEM files of a [`ServerTlsConfig`], resolved against the config's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub chain: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Resolve relative paths against `base`.
    pub fn resolve(config: &ServerTlsConfig, base: &Path) -> TlsFiles {
        TlsFiles {
            chain: base.join(&config.certificate_chain_file),
            key: base.join(&config.private_key_file),
        }
    }

    /// Read and check both files.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let file_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |e: rustls_pki_types::pem::Error| TlsError::File {
                what,
                path,
                reason: match e {
                    rustls_pki_types::pem::Error::NoItemsFound => {
                        "no PEM section of this kind".into()
                    }
                    other => other.to_string(),
                },
            }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.chain)
            .map_err(file_err("certificate chain", &self.chain))?
            .collect::<Result<_, _>>()
            .map_err(file_err("certificate chain", &self.chain))?;
        if chain.is_empty() {
            return Err(TlsError::File {
                what: "certificate chain",
                path: self.chain.clone(),
                reason: "no CERTIFICATE in the file".into(),
            });
        }
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(file_err("private key", &self.key))?;
        let mismatch = |e: rustls::Error| TlsError::Mismatch {
            chain: self.chain.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        };
        CertifiedKey::from_der(chain, key, &provider()).map_err(mismatch)
    }
}

/// The crypto provider used by every rustls config of the server.
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate served to new handshakes; replaceable at run time.
#[derive(Debug)]
pub struct CertificateStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateStore {
    /// Load the files now.
    pub fn open(files: TlsFiles) -> Result<Arc<CertificateStore>, TlsError> {
        let key = files.load()?;
        Ok(Arc::new(CertificateStore {
            files,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Read the files again; on success new handshakes get the new
    /// certificate, on failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = self.files.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The files this store reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A rustls acceptor that asks this store for the certificate at every
    /// handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The remote address of the connection: from [`crate::accept::serve`]'s
/// accept loop, or from warp's own.
pub fn remote_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    accept::conn_slot().and(warp::addr::remote()).map(
        |ours: Option<accept::ConnSlot>, warps: Option<SocketAddr>| {
            ours.map(|c| c.peer()).or(warps)
        },
    )
}

/// Every part of a request, for a handler that routes by itself: the
/// method, the whole path, the raw query (empty when there is none), the
/// headers, the peer's address ([`remote_addr`]) and the body, unread.
pub fn request_parts() -> impl Filter<
    Extract = (
        warp::http::Method,
        warp::path::FullPath,
        String,
        warp::http::HeaderMap,
        Option<SocketAddr>,
        impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>>,
    ),
    Error = warp::Rejection,
> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(remote_addr())
        .and(warp::body::stream())
}

/// Reload `store` on every SIGHUP until `shutdown` fires. Without a store
/// (plain HTTP) SIGHUP is only logged, so a reload never kills the server.
pub fn reload_on_sighup(store: Option<Arc<CertificateStore>>, shutdown: CancellationToken) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cause = %e, "cannot watch SIGHUP; certificates will not be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let Some(store) = &store else {
                tracing::info!("SIGHUP: no TLS certificate configured, nothing to reload");
                continue;
            };
            match store.reload() {
                Ok(()) => tracing::info!(
                    chain = %store.files().chain.display(),
                    "TLS certificate reloaded (SIGHUP); new connections get it"
                ),
                Err(e) => tracing::error!(
                    cause = %e,
                    "TLS certificate reload failed (SIGHUP); still serving the previous certificate"
                ),
            }
        }
    });
}
