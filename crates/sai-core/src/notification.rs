//! The git hook notification: what `hooks/sai-notify`, `sai notify` and the
//! test kit send to `POST /update-hook`, its field rules, and its HMAC.
//!
//! The file is the JSON object below plus a newline; `Authorization: sai
//! sha256=<hex>` (also `sha384`, `sha512`) is an HMAC over the exact bytes of
//! that file, keyed with the bytes of the shared secret:
//!
//! ```json
//! {"schema":"com-warmcat-sai-notification","action":"repo-update",
//!  "repository":{"name":"<project>","fetchurl":"<url>"},"nonce":"<hex>",
//!  "timestamp":<unix seconds>,
//!  "ref":"refs/heads/main","hash":"<commit>","saifile_len":<n>,
//!  "saifile":"<base64 of .sai.json>"}
//! ```
//!
//! `timestamp` is an addition to the original format (which the server
//! still accepts without it): with the `nonce`, it lets the server refuse a
//! captured notification replayed later ([`Checked::timestamp`]).

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The notification's `schema`.
pub const SCHEMA: &str = "com-warmcat-sai-notification";
/// The only `action`.
pub const ACTION: &str = "repo-update";

/// `repository` of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// Project name.
    pub name: String,
    /// URL builders fetch from.
    pub fetchurl: String,
}

/// A notification as sent (field order as the hook writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// [`SCHEMA`].
    pub schema: String,
    /// [`ACTION`].
    pub action: String,
    /// The repository.
    pub repository: Repository,
    /// Random hex, makes every notification unique.
    pub nonce: String,
    /// When it was made (unix seconds); the original hook sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Ref pushed.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Commit.
    pub hash: String,
    /// Length of `saifile`.
    pub saifile_len: u64,
    /// Base64 of the `.sai.json`.
    pub saifile: String,
}

impl Notification {
    /// A notification of `hash` on `git_ref` with that commit's `.sai.json`;
    /// `nonce` is random bytes from the caller.
    pub fn new(
        project: &str,
        fetch_url: &str,
        git_ref: &str,
        hash: &str,
        saifile: &[u8],
        nonce: [u8; 16],
    ) -> Notification {
        let b64 = base64::engine::general_purpose::STANDARD.encode(saifile);
        Notification {
            schema: SCHEMA.into(),
            action: ACTION.into(),
            repository: Repository {
                name: project.into(),
                fetchurl: fetch_url.into(),
            },
            nonce: hex::encode(nonce),
            timestamp: None,
            git_ref: git_ref.into(),
            hash: hash.into(),
            saifile_len: b64.len() as u64,
            saifile: b64,
        }
    }

    /// The same, made at `unix_secs` (the sender's clock).
    pub fn at(mut self, unix_secs: i64) -> Notification {
        self.timestamp = Some(unix_secs);
        self
    }

    /// The file the hook posts: the JSON and a newline.
    pub fn file_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a notification serialises");
        out.push(b'\n');
        out
    }
}

/// What a notification reports: one commit of a project and its
/// `.sai.json`. `sai notify` and the test kit each make one and send
/// [`Push::notification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `repository.name`.
    pub project: String,
    /// `repository.fetchurl`.
    pub fetch_url: String,
    /// `ref`.
    pub git_ref: String,
    /// `hash` (the commit).
    pub hash: String,
    /// The `.sai.json` of that commit.
    pub saifile: Vec<u8>,
}

impl Push {
    /// Its notification, made at `unix_secs` (the sender's clock) with
    /// `nonce` (random bytes from the caller).
    pub fn notification(&self, nonce: [u8; 16], unix_secs: i64) -> Notification {
        Notification::new(
            &self.project,
            &self.fetch_url,
            &self.git_ref,
            &self.hash,
            &self.saifile,
            nonce,
        )
        .at(unix_secs)
    }
}

/// A notification as received: every field optional, so that each missing
/// or wrong one gets its own error ([`Received::check`]).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Received {
    /// `schema`.
    pub schema: Option<String>,
    /// `action`.
    pub action: Option<String>,
    /// `repository`.
    pub repository: Option<ReceivedRepository>,
    /// `ref`.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `hash`.
    pub hash: Option<String>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<serde_json::Value>,
    /// `saifile_len`.
    pub saifile_len: Option<u64>,
    /// `saifile`.
    pub saifile: Option<String>,
    /// `sec`: a private event when truthy.
    pub sec: Option<serde_json::Value>,
}

/// `repository` as received.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReceivedRepository {
    /// `name`.
    pub name: Option<String>,
    /// `fetchurl`.
    pub fetchurl: Option<String>,
}

/// A notification whose fields follow the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Project name.
    pub project: String,
    /// URL builders fetch from.
    pub fetch_url: String,
    /// Ref pushed (`refs/...`).
    pub git_ref: String,
    /// Commit (7-64 hex).
    pub hash: String,
    /// Private event.
    pub sec: bool,
    /// The sender's random nonce.
    pub nonce: String,
    /// When the sender made it (unix seconds), if it says.
    pub timestamp: Option<i64>,
    saifile: String,
    saifile_len: Option<u64>,
}

/// A field that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Wrong `schema`.
    #[error("schema must be {SCHEMA:?}")]
    Schema,
    /// Wrong `action`.
    #[error("action must be {ACTION:?}")]
    Action,
    /// No `repository`.
    #[error("repository missing")]
    Repository,
    /// Bad `repository.name`.
    #[error("repository.name must be 1-64 characters of A-Z a-z 0-9 - _ .")]
    Project,
    /// Bad `repository.fetchurl`.
    #[error("repository.fetchurl missing or invalid")]
    FetchUrl,
    /// Bad `ref`.
    #[error("ref must be refs/... (at most 255 printable characters)")]
    Ref,
    /// Bad `hash`.
    #[error("hash must be 7-64 hex characters")]
    Hash,
    /// `ref` breaks one of git's ref-name rules.
    #[error("ref {name:?} {rule}")]
    RefName {
        /// The ref.
        name: String,
        /// The rule.
        rule: crate::refname::RefNameError,
    },
    /// Bad or missing `nonce`.
    #[error("nonce must be 16-128 characters of A-Z a-z 0-9 - _")]
    Nonce,
    /// `timestamp` is not an integer.
    #[error("timestamp must be an integer (unix seconds)")]
    Timestamp,
    /// No `saifile`.
    #[error("saifile missing")]
    SaifileMissing,
    /// `saifile` over the limit.
    #[error("saifile is {len} base64 characters, limit {limit}")]
    SaifileTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// `saifile_len` disagrees.
    #[error("saifile_len {said} does not match the saifile's {len} characters")]
    SaifileLen {
        /// What `saifile_len` said.
        said: u64,
        /// The real length.
        len: u64,
    },
    /// `saifile` is not base64.
    #[error("saifile is not base64")]
    SaifileBase64(String),
}

fn valid_ref(r: &str) -> bool {
    r.starts_with("refs/")
        && r.len() <= 255
        && !r.contains("..")
        && r.bytes().all(|b| b.is_ascii_graphic())
}

fn valid_nonce(n: &str) -> bool {
    (16..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_hash(h: &str) -> bool {
    (7..=64).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Received {
    /// Parse the first JSON object of `bytes`, ignoring what follows (the
    /// hook's trailing newline, or anything else).
    pub fn parse(bytes: &[u8]) -> Result<Received, serde_json::Error> {
        let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<Received>();
        match it.next() {
            Some(r) => r,
            None => Err(serde::de::Error::custom("empty body")),
        }
    }

    /// The project named, if any (chooses the key before anything else).
    pub fn project(&self) -> Option<&str> {
        self.repository.as_ref()?.name.as_deref()
    }

    /// Check the fields, in this order: schema, action, repository, name,
    /// fetch URL, ref, hash, nonce, timestamp.
    pub fn check(self) -> Result<Checked, FieldError> {
        if self.schema.as_deref() != Some(SCHEMA) {
            return Err(FieldError::Schema);
        }
        if self.action.as_deref() != Some(ACTION) {
            return Err(FieldError::Action);
        }
        let repo = self.repository.ok_or(FieldError::Repository)?;
        let project = repo.name.unwrap_or_default();
        if !crate::config::server::valid_project_name(&project) {
            return Err(FieldError::Project);
        }
        let fetch_url = repo.fetchurl.unwrap_or_default();
        if fetch_url.is_empty()
            || fetch_url.len() > 1024
            || fetch_url.chars().any(|c| c.is_control())
        {
            return Err(FieldError::FetchUrl);
        }
        let git_ref = self.git_ref.unwrap_or_default();
        if !valid_ref(&git_ref) {
            return Err(FieldError::Ref);
        }
        if let Err(rule) = crate::refname::check(&git_ref) {
            return Err(FieldError::RefName {
                name: git_ref,
                rule,
            });
        }
        let hash = self.hash.unwrap_or_default();
        if !valid_hash(&hash) {
            return Err(FieldError::Hash);
        }
        let nonce = self.nonce.unwrap_or_default();
        if !valid_nonce(&nonce) {
            return Err(FieldError::Nonce);
        }
        let timestamp = match self.timestamp {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or(FieldError::Timestamp)?),
        };
        let sec = self.sec.is_some_and(|v| {
            !v.is_null() && v != serde_json::json!(false) && v != serde_json::json!(0)
        });
        Ok(Checked {
            project,
            fetch_url,
            git_ref,
            hash,
            sec,
            nonce,
            timestamp,
            saifile: self.saifile.unwrap_or_default(),
            saifile_len: self.saifile_len,
        })
    }
}

/// Why a notification is refused as a possible replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// `timestamp` is further from the server's clock than the window.
    #[error(
        "notification timestamp {timestamp} is {skew} s from the server's clock, outside the \
         {window} s window (a replay, or a clock to fix)"
    )]
    OutsideWindow {
        /// Its timestamp.
        timestamp: i64,
        /// Seconds between it and now.
        skew: i64,
        /// The window.
        window: u64,
    },
    /// No `timestamp` and the server requires one.
    #[error("notification has no timestamp and the server requires one")]
    NoTimestamp,
}

/// How long the server must remember a nonce (unix seconds it may forget
/// it after), or why the notification is refused: a notification with a
/// timestamp is accepted within `window` seconds either side of `now`, and
/// its nonce is remembered until the window has passed it; one without is
/// refused when `require` is set, else its nonce is remembered forever
/// (`Ok(None)`).
pub fn replay_window(
    timestamp: Option<i64>,
    now: i64,
    window: u64,
    require: bool,
) -> Result<Option<i64>, ReplayError> {
    let Some(t) = timestamp else {
        return if require {
            Err(ReplayError::NoTimestamp)
        } else {
            Ok(None)
        };
    };
    let skew = now.saturating_sub(t).saturating_abs();
    if skew as u64 > window {
        return Err(ReplayError::OutsideWindow {
            timestamp: t,
            skew,
            window,
        });
    }
    Ok(Some(t.saturating_add(window as i64)))
}

impl Checked {
    /// Why a push is ignored: branches starting with `_` are never built.
    pub fn ignored(&self) -> Option<String> {
        let branch = self.git_ref.strip_prefix("refs/heads/")?;
        branch
            .starts_with('_')
            .then(|| format!("branch {branch:?} starts with '_'"))
    }

    /// The `.sai.json` bytes, checking presence, the size limit (base64
    /// characters), `saifile_len` and the encoding.
    pub fn saifile(&self, max_base64: u64) -> Result<Vec<u8>, FieldError> {
        let b64 = &self.saifile;
        let len = b64.len() as u64;
        if b64.is_empty() {
            return Err(FieldError::SaifileMissing);
        }
        if len > max_base64 {
            return Err(FieldError::SaifileTooLarge {
                len,
                limit: max_base64,
            });
        }
        if let Some(said) = self.saifile_len
            && said != len
        {
            return Err(FieldError::SaifileLen { said, len });
        }
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim_end())
            .map_err(|e| FieldError::SaifileBase64(e.to_string()))
    }
}

/// Why a hook signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No `Authorization` header.
    #[error("missing Authorization: sai shaNNN=<hex> header")]
    Missing,
    /// Not `sai sha256|sha384|sha512=<hex>` of the right length.
    #[error("malformed Authorization header: expected sai sha256|sha384|sha512=<hex>")]
    Malformed,
    /// MAC does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// HMAC algorithm of a hook signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAlg {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA512.
    Sha512,
}

/// Parse `Authorization: sai shaNNN=<hex>` into the algorithm and the MAC.
pub fn parse_signature(header: Option<&str>) -> Result<(HookAlg, Vec<u8>), SigError> {
    let h = header.ok_or(SigError::Missing)?.trim();
    let rest = h
        .strip_prefix("sai ")
        .or_else(|| h.strip_prefix("Sai "))
        .ok_or(SigError::Malformed)?
        .trim();
    let (alg, hexmac) = rest.split_once('=').ok_or(SigError::Malformed)?;
    let mac = hex::decode(hexmac.trim()).map_err(|_| SigError::Malformed)?;
    let (alg, len) = match alg {
        "sha256" => (HookAlg::Sha256, 32),
        "sha384" => (HookAlg::Sha384, 48),
        "sha512" => (HookAlg::Sha512, 64),
        _ => return Err(SigError::Malformed),
    };
    if mac.len() != len {
        return Err(SigError::Malformed);
    }
    Ok((alg, mac))
}

/// Verify `Authorization: sai shaNNN=<hex>` over `body` with `key`, in
/// constant time.
pub fn verify(header: Option<&str>, key: &[u8], body: &[u8]) -> Result<(), SigError> {
    let (alg, mac) = parse_signature(header)?;
    fn check<M: Mac + hmac::digest::KeyInit>(
        key: &[u8],
        body: &[u8],
        mac: &[u8],
    ) -> Result<(), SigError> {
        let mut m =
            <M as hmac::digest::KeyInit>::new_from_slice(key).map_err(|_| SigError::Mismatch)?;
        m.update(body);
        m.verify_slice(mac).map_err(|_| SigError::Mismatch)
    }
    match alg {
        HookAlg::Sha256 => check::<Hmac<sha2::Sha256>>(key, body, &mac),
        HookAlg::Sha384 => check::<Hmac<sha2::Sha384>>(key, body, &mac),
        HookAlg::Sha512 => check::<Hmac<sha2::Sha512>>(key, body, &mac),
    }
}

/// `sai sha256=<hex>` over `body` with `key`, as `hooks/sai-notify` makes it
/// (`openssl dgst -sha256 -hmac <key>`).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut m = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .expect("hmac accepts any key length");
    m.update(body);
    format!("sai sha256={}", hex::encode(m.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = b"{\"a\":1}\n";
        let h = sign(b"key", body);
        assert_eq!(verify(Some(&h), b"key", body), Ok(()));
        assert_eq!(verify(Some(&h), b"other", body), Err(SigError::Mismatch));
        assert_eq!(verify(None, b"key", body), Err(SigError::Missing));
        assert_eq!(
            verify(Some("sai md5=00"), b"key", body),
            Err(SigError::Malformed)
        );
        assert_eq!(
            verify(Some("sai sha256=00"), b"key", body),
            Err(SigError::Malformed)
        );
        let mut m = <Hmac<sha2::Sha512> as hmac::digest::KeyInit>::new_from_slice(b"key").unwrap();
        m.update(body);
        let h512 = format!("sai sha512={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(verify(Some(&h512), b"key", body), Ok(()));
    }

    #[test]
    fn what_is_sent_is_what_is_accepted() {
        let n = Notification::new(
            "demo",
            "https://x/demo",
            "refs/heads/main",
            "0123abcd",
            b"{}",
            [7; 16],
        );
        let file = n.file_bytes();
        assert!(file.ends_with(b"}\n"));
        let text = String::from_utf8(file.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"schema":"com-warmcat-sai-notification","action":"repo-update","repository":{"name":"demo","fetchurl":"https://x/demo"},"nonce":"07070707"#),
            "{text}"
        );
        let got = Received::parse(&file).unwrap().check().unwrap();
        assert_eq!(got.project, "demo");
        assert_eq!(got.saifile(100).unwrap(), b"{}");
        assert!(got.ignored().is_none());
        assert!(!got.sec);
    }

    #[test]
    fn a_push_becomes_its_notification_at_the_given_time() {
        let push = Push {
            project: "demo".into(),
            fetch_url: "https://x/demo".into(),
            git_ref: "refs/heads/main".into(),
            hash: "0123abcd".into(),
            saifile: b"{}".to_vec(),
        };
        let n = push.notification([7; 16], 1_700_000_000);
        assert_eq!(n.timestamp, Some(1_700_000_000));
        assert_eq!(n.nonce, "07".repeat(16));
        assert_eq!(n.repository.name, "demo");
        assert_eq!(n.repository.fetchurl, "https://x/demo");
        assert_eq!(
            (n.git_ref.as_str(), n.hash.as_str()),
            ("refs/heads/main", "0123abcd")
        );
        assert_eq!((n.saifile.as_str(), n.saifile_len), ("e30=", 4));
    }

    #[test]
    fn replay_window_edges() {
        assert_eq!(replay_window(Some(1000), 1300, 300, false), Ok(Some(1300)));
        assert_eq!(replay_window(Some(1600), 1300, 300, false), Ok(Some(1900)));
        assert_eq!(
            replay_window(Some(999), 1300, 300, false),
            Err(ReplayError::OutsideWindow {
                timestamp: 999,
                skew: 301,
                window: 300
            })
        );
        assert!(replay_window(Some(1601), 1300, 300, true).is_err());
        assert_eq!(replay_window(None, 1300, 300, false), Ok(None));
        assert_eq!(
            replay_window(None, 1300, 300, true),
            Err(ReplayError::NoTimestamp)
        );
        assert!(replay_window(Some(i64::MIN), 1300, 300, false).is_err());
    }

    #[test]
    fn field_rules() {
        let ok = || {
            Received::parse(
                &Notification::new("p", "u", "refs/heads/_wip", "abcdef0", b"x", [0; 16])
                    .file_bytes(),
            )
            .unwrap()
        };
        assert!(ok().check().unwrap().ignored().unwrap().contains("_wip"));
        type Spoil = fn(&mut Received);
        let refused: [(Spoil, FieldError); 6] = [
            (|r| r.schema = None, FieldError::Schema),
            (|r| r.git_ref = Some("refs/../x".into()), FieldError::Ref),
            (|r| r.hash = Some("xyz".into()), FieldError::Hash),
            (|r| r.nonce = None, FieldError::Nonce),
            (|r| r.nonce = Some("short".into()), FieldError::Nonce),
            (
                |r| r.timestamp = Some(serde_json::json!("yesterday")),
                FieldError::Timestamp,
            ),
        ];
        for (case, (spoil, want)) in refused.into_iter().enumerate() {
            let mut r = ok();
            spoil(&mut r);
            assert_eq!(r.check(), Err(want), "case {case}");
        }
        let mut r = ok();
        r.timestamp = Some(serde_json::json!(1_700_000_000));
        assert_eq!(r.check().unwrap().timestamp, Some(1_700_000_000));
        let mut r = ok();
        r.saifile_len = Some(1);
        assert!(matches!(
            r.check().unwrap().saifile(100),
            Err(FieldError::SaifileLen { said: 1, len: 4 })
        ));
        assert!(matches!(
            ok().check().unwrap().saifile(3),
            Err(FieldError::SaifileTooLarge { len: 4, limit: 3 })
        ));
        let mut r = ok();
        r.sec = Some(serde_json::json!(1));
        assert!(r.check().unwrap().sec);
    }
}
