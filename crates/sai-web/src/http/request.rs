//! The request as read: its body (up to a size limit), its query and its
//! `application/x-www-form-urlencoded` form fields.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt;
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

pub(super) fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decode `application/x-www-form-urlencoded` text.
///
/// Not [`sai_core::percent::decode`] on purpose: here `+` decodes to a space,
/// as form and query encoding wants, where the shared one (for paths) keeps
/// it. Invalid escapes stay as they are and bytes that are not UTF-8 become
/// U+FFFD in both. One more difference, by accident of `u8::from_str_radix`
/// accepting a sign: `%+5` here decodes to the byte 0x05; the shared one
/// keeps it as text.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn form(req: &Request) -> HashMap<String, String> {
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
        assert_eq!(percent_decode("a+b%2Fc%zz%4"), "a b/c%zz%4");
    }
}
