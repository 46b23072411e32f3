//! Artifact downloads: a task's artifact streamed from sai-server with its
//! length, file name and checksum.

use std::sync::Arc;

use bytes::Bytes;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::respond::plain;
use crate::App;
use crate::upstream::{UpstreamError, Viewer};

pub(super) async fn artifact(app: &Arc<App>, viewer: &Viewer, id: &str, name: &str) -> Response {
    match app.upstream.artifact(id, name, viewer).await {
        Ok(resp) => {
            let len = resp.content_length();
            let sha256 = resp.headers().get("x-sai-sha256").cloned();
            let body = futures_util::stream::unfold(Some(resp), |resp| async move {
                let mut resp = resp?;
                match resp.chunk().await {
                    Ok(Some(c)) => Some((Ok::<Bytes, std::io::Error>(c), Some(resp))),
                    Ok(None) => None,
                    Err(e) => Some((Err(std::io::Error::other(e)), None)),
                }
            });
            let mut r = warp::reply::stream(body).into_response();
            let h = r.headers_mut();
            h.insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Some(l) = len
                && let Ok(v) = HeaderValue::from_str(&l.to_string())
            {
                h.insert("content-length", v);
            }
            let file = sai_core::artifact_name::file_name(name);
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
                h.insert("content-disposition", v);
            }
            if let Some(v) = sha256 {
                h.insert("x-sai-sha256", v);
            }
            r
        }
        Err(UpstreamError::NotFound) => plain(StatusCode::NOT_FOUND, "no such artifact"),
        Err(e) => plain(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}
