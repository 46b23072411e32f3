//! Hook requests built the way the original `hooks/sai.sh` builds them:
//! the notification JSON plus a trailing newline written to a temp file,
//! `openssl dgst -sha256 -hmac <key>` over that file for
//! `Authorization: sai sha256=<hex>`, then
//! `curl -F "file=@<tmp>;type=application/json"` (multipart/form-data with
//! curl's boundary style) and user agent `sai-notifier`.

pub use sai_core::notification::Push;

/// What tests do with a [`Push`] beyond sending it (import it beside
/// `Push`): make one, and write the hook's file for it.
pub trait TestPush {
    /// A push of `saifile` to `refs/heads/main` of a made-up repository,
    /// with a random hash.
    fn new(project: &str, saifile: &[u8]) -> Self;
    /// The hook's file content: the notification JSON and a newline.
    fn file_bytes(&self) -> Vec<u8>;
    /// The file content of a push marked private (`"sec": 1`) when `sec`.
    fn file_bytes_with_sec(&self, sec: bool) -> Vec<u8>;
}

impl TestPush for Push {
    fn new(project: &str, saifile: &[u8]) -> Push {
        Push {
            project: project.into(),
            fetch_url: format!("https://git.example.invalid/{project}"),
            git_ref: "refs/heads/main".into(),
            hash: random_hex(20),
            saifile: saifile.to_vec(),
        }
    }

    fn file_bytes(&self) -> Vec<u8> {
        self.file_bytes_with_sec(false)
    }

    fn file_bytes_with_sec(&self, sec: bool) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce[..]);
        let n = self.notification(nonce, unix_now());
        if !sec {
            return n.file_bytes();
        }
        let mut v = serde_json::to_value(&n).expect("a notification serialises");
        v["sec"] = serde_json::json!(1);
        let mut out = serde_json::to_vec(&v).expect("json");
        out.push(b'\n');
        out
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// `sai sha256=<hex>` over `body` with the ASCII bytes of `key`.
pub fn signature(key: &str, body: &[u8]) -> String {
    sai_core::notification::sign(key.as_bytes(), body)
}

/// curl's multipart framing of one file part: returns the content type
/// header value and the body.
pub fn curl_multipart(file_name: &str, file: &[u8]) -> (String, Vec<u8>) {
    const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut r = [0u8; 22];
    rand::fill(&mut r[..]);
    let tail: String = r
        .iter()
        .map(|b| ALNUM[*b as usize % ALNUM.len()] as char)
        .collect();
    let boundary = format!("------------------------{tail}");
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(b"Content-Type: application/json\r\n\r\n");
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A complete hook request.
#[derive(Debug, Clone)]
pub struct HookRequest {
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// `Content-Type` header.
    pub content_type: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HookRequest {
    /// Exactly what `hooks/sai.sh` sends for `push` with `key`.
    pub fn like_sai_sh(push: &Push, key: &str) -> HookRequest {
        HookRequest::framed_like_sai_sh(&push.file_bytes(), key)
    }

    /// A private (`"sec": 1`) push, framed as `hooks/sai.sh` frames it.
    pub fn private_like_sai_sh(push: &Push, key: &str) -> HookRequest {
        HookRequest::framed_like_sai_sh(&push.file_bytes_with_sec(true), key)
    }

    /// The notification `file`, signed with `key` and sent as `hooks/sai.sh`
    /// sends it (curl's multipart upload).
    fn framed_like_sai_sh(file: &[u8], key: &str) -> HookRequest {
        let (ct, body) = curl_multipart("sai-notification.json", file);
        HookRequest {
            authorization: Some(signature(key, file)),
            content_type: ct,
            body,
        }
    }

    /// A plain `application/json` request.
    pub fn json(push: &Push, key: &str) -> HookRequest {
        let file = push.file_bytes();
        HookRequest {
            authorization: Some(signature(key, &file)),
            content_type: "application/json".into(),
            body: file,
        }
    }

    /// POST it to `url` (e.g. `http://addr/sai/update-hook`).
    pub async fn send(&self, url: &str) -> reqwest::Result<reqwest::Response> {
        self.send_with(&reqwest::Client::new(), url).await
    }

    /// POST it with `client` (e.g. one trusting a test CA for `https://`).
    pub async fn send_with(
        &self,
        client: &reqwest::Client,
        url: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let mut rb = client
            .post(url)
            .header("user-agent", "sai-notifier")
            .header("content-type", &self.content_type)
            .body(self.body.clone());
        if let Some(a) = &self.authorization {
            rb = rb.header("authorization", a);
        }
        rb.send().await
    }
}
