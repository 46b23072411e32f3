//! The request as read: its body (up to a size limit), its query and its
//! `application/x-www-form-urlencoded` form fields.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt;
use sai_core::percent::decode_form;
use warp::http::{HeaderMap, Method};

pub(super) async fn read_body<S, B>(body: S, limit: usize) -> Option<Bytes>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send,
    B: bytes::Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.ok()?;
        while chunk.has_remaining() {
            let c = chunk.chunk();
            if buf.len() + c.len() > limit {
                return None;
            }
            buf.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Some(Bytes::from(buf))
}

/// One HTTP request, read.
pub struct Request {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: HashMap<String, String>,
    pub(super) headers: HeaderMap,
    pub(super) peer: Option<SocketAddr>,
    /// `None` when over the size limit or unreadable.
    pub(super) body: Option<Bytes>,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Query or form fields by name, decoded.
pub(super) type Query = HashMap<String, String>;

pub(super) fn query_map(q: &str) -> Query {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode_form(k), decode_form(v))
        })
        .collect()
}

pub(super) fn form(req: &Request) -> Query {
    req.body
        .as_ref()
        .map(|b| query_map(&String::from_utf8_lossy(b)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let m = query_map("q=a+b%2Fc%zz%4&&next=%2Fe%2F1&flag");
        assert_eq!(m["q"], "a b/c%zz%4");
        assert_eq!(m["next"], "/e/1");
        assert_eq!(m["flag"], "");
        assert_eq!(m.len(), 3);
    }
}
