//! Config of `sai-web`, the browser UI.
//!
//! Default path `/etc/sai/web/conf`. sai-web serves the UI, reads everything
//! it shows from sai-server's operations API and signs in users whose
//! passwords are stored as argon2 PHC hashes. Example:
//!
//! ```json
//! {
//!   "schema": "sai-web",
//!   "listen": "127.0.0.1:8081",
//!   "server_url": "http://127.0.0.1:4444",
//!   "public_url": "https://ci.example.org/sai",
//!   "users": [{"name": "andy", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}],
//!   "session_key_file": "/var/lib/sai-web/session.key",
//!   "server_token_file": "/run/credentials/sai-web.service/server-token"
//! }
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problem::{ConfigProblem, ConfigType, FieldPath, check_marker};
use super::server::ServerTlsConfig;

/// Value of the optional `schema` marker of a web config.
pub const SCHEMA_MARKER: &str = "sai-web";

/// Default lifetime of a session token: 48 hours, as in the original.
pub const DEFAULT_SESSION_LIFETIME_SECS: u64 = 172_800;

/// Longest session token lifetime accepted: 31 days.
pub const MAX_SESSION_LIFETIME_SECS: u64 = 31 * 24 * 3600;

/// Configuration of `sai-web`: where it listens, which sai-server it shows,
/// who may sign in and how sessions are sealed.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Optional marker naming this config kind: `"sai-web"`.
    pub schema: Option<String>,
    /// Where the HTTP server listens: `host:port` (`127.0.0.1:8081`,
    /// `[::1]:8081`) or `unix:/absolute/path` for a unix socket behind a
    /// reverse proxy. Default `127.0.0.1:8081`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Base URL of the sai-server operations API the UI reads from:
    /// `http://host:port[/prefix]`, `https://...` or `unix:/absolute/path`.
    pub server_url: String,
    /// File holding the service token sai-web presents to sai-server when it
    /// reads for, or acts for, a signed-in user (mint it with
    /// `sai-server token service --name sai-web`). Without it signed-in
    /// users see what anonymous visitors see and cannot act.
    pub server_token_file: Option<String>,
    /// URL under which browsers reach this UI (scheme, host and mount path,
    /// e.g. `https://ci.example.org/sai`); used for links, redirects and the
    /// cookie path. Default: derived from each request.
    pub public_url: Option<String>,
    /// Users allowed to sign in, given inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<WebUser>,
    /// File of further users, one `name:<argon2 PHC hash>` per line (`#`
    /// starts a comment). Read at start and on SIGHUP.
    pub users_file: Option<String>,
    /// How long a session token stays valid after sign-in, in seconds.
    /// Default 172800 (48 hours); at most 31 days.
    #[serde(default = "default_session_lifetime_secs")]
    pub session_lifetime_secs: u64,
    /// File holding the secret key that seals session tokens (PASETO
    /// v4.local, 32 bytes). Keep it readable by sai-web only.
    pub session_key_file: String,
    /// Reverse proxies whose forwarding headers are believed. Without it the
    /// peer address of the connection is the client address.
    pub trusted_proxy: Option<TrustedProxy>,
    /// Serve HTTPS on `listen` with this certificate, exactly as sai-server
    /// does (PEM chain and key, relative paths from the config's folder,
    /// re-read on SIGHUP without dropping open connections). Leave it out
    /// to serve plain HTTP, e.g. behind a TLS-terminating reverse proxy.
    pub tls: Option<ServerTlsConfig>,
}

/// One user who may sign in to the UI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebUser {
    /// Login name: letters, digits, `.`, `_`, `-` and `@`, at most 64 characters.
    pub name: String,
    /// The password as an argon2 PHC string, e.g.
    /// `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`; never the plain password.
    pub password_hash: String,
}

/// Reverse proxies sai-web trusts to report the real client address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedProxy {
    /// Addresses or CIDR networks of the proxies (`127.0.0.1`, `10.0.0.0/8`,
    /// `::1`); only requests from these have their forwarding header read.
    pub addresses: Vec<String>,
    /// Header holding the client address; default `X-Forwarded-For`.
    #[serde(default = "default_forwarded_header")]
    pub header: String,
}

fn default_listen() -> String {
    "127.0.0.1:8081".to_string()
}

fn default_session_lifetime_secs() -> u64 {
    DEFAULT_SESSION_LIFETIME_SECS
}

fn default_forwarded_header() -> String {
    "X-Forwarded-For".to_string()
}

impl ConfigType for WebConfig {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Check what the schema cannot express. Returns every problem found,
    /// each with the path of the field it concerns; empty means valid.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = check_marker(self.schema.as_deref(), SCHEMA_MARKER);
        let root = FieldPath::root();
        if let Err(why) = check_listen(&self.listen) {
            problems.push(ConfigProblem::new(root.key("listen"), why));
        }
        if let Err(why) = check_base_url(&self.server_url, &["http", "https"], true) {
            problems.push(ConfigProblem::new(root.key("server_url"), why));
        }
        if let Some(url) = &self.public_url
            && let Err(why) = check_base_url(url, &["http", "https"], false)
        {
            problems.push(ConfigProblem::new(root.key("public_url"), why));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let at = root.key("users").index(i);
            if let Err(why) = check_user_name(&user.name) {
                problems.push(ConfigProblem::new(at.key("name"), why));
            } else if !seen.insert(user.name.as_str()) {
                problems.push(ConfigProblem::new(
                    at.key("name"),
                    format!("user \"{}\" is listed twice", user.name),
                ));
            }
            if let Err(why) = check_argon2_phc(&user.password_hash) {
                problems.push(ConfigProblem::new(at.key("password_hash"), why));
            }
        }
        if let Some(file) = &self.server_token_file
            && file.trim().is_empty()
        {
            problems.push(ConfigProblem::new(
                root.key("server_token_file"),
                "must not be empty; leave it out instead",
            ));
        }
        if let Some(file) = &self.users_file
            && file.trim().is_empty()
        {
            problems.push(ConfigProblem::new(
                root.key("users_file"),
                "must not be empty; leave it out instead",
            ));
        }
        if self.session_lifetime_secs < 60 || self.session_lifetime_secs > MAX_SESSION_LIFETIME_SECS
        {
            problems.push(ConfigProblem::new(
                root.key("session_lifetime_secs"),
                format!(
                    "{} is out of range: give between 60 and {MAX_SESSION_LIFETIME_SECS} seconds",
                    self.session_lifetime_secs
                ),
            ));
        }
        if self.session_key_file.trim().is_empty() {
            problems.push(ConfigProblem::new(
                root.key("session_key_file"),
                "must name the file holding the session key",
            ));
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.validate(&root.key("tls")));
        }
        if let Some(proxy) = &self.trusted_proxy {
            let at = root.key("trusted_proxy");
            if proxy.addresses.is_empty() {
                problems.push(ConfigProblem::new(
                    at.key("addresses"),
                    "list at least one proxy address, or leave trusted_proxy out",
                ));
            }
            for (i, addr) in proxy.addresses.iter().enumerate() {
                if let Err(why) = check_ip_or_cidr(addr) {
                    problems.push(ConfigProblem::new(at.key("addresses").index(i), why));
                }
            }
            if !is_header_name(&proxy.header) {
                problems.push(ConfigProblem::new(
                    at.key("header"),
                    format!("\"{}\" is not an HTTP header name", proxy.header),
                ));
            }
        }
        problems
    }
}

/// `host:port`, `[v6]:port` or `unix:/absolute/path`.
fn check_listen(listen: &str) -> Result<(), String> {
    if let Some(path) = listen.strip_prefix("unix:") {
        return if path.starts_with('/') || path.starts_with('@') {
            Ok(())
        } else {
            Err(format!(
                "\"{listen}\": a unix socket needs an absolute path (unix:/run/sai/web.sock) or an abstract name (unix:@name)"
            ))
        };
    }
    if listen.contains(char::is_whitespace) {
        return Err(format!("\"{listen}\" contains white space"));
    }
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(format!(
            "\"{listen}\" is not host:port or unix:/path (e.g. 127.0.0.1:8081)"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "\"{listen}\" has no host; use 0.0.0.0:{port} to listen everywhere"
        ));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "\"{listen}\": write IPv6 addresses in brackets, e.g. [::1]:8081"
        ));
    }
    match port.parse::<u16>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "\"{listen}\": port \"{port}\" is not a number 0-65535"
        )),
    }
}

/// A base URL with one of `schemes`, or (when `allow_unix`) `unix:/path`.
pub(crate) fn check_base_url(url: &str, schemes: &[&str], allow_unix: bool) -> Result<(), String> {
    if allow_unix && let Some(path) = url.strip_prefix("unix:") {
        return if path.starts_with('/') || path.starts_with('@') {
            Ok(())
        } else {
            Err(format!("\"{url}\": a unix socket needs an absolute path"))
        };
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        let mut want: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        if allow_unix {
            want.push("unix:/path".to_string());
        }
        return Err(format!(
            "\"{url}\" is not a URL; expected one starting with {}",
            want.join(" or ")
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "\"{url}\": scheme \"{scheme}\" is not allowed here; use {}",
            schemes.join(" or ")
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    if url.contains(char::is_whitespace) {
        return Err(format!("\"{url}\" contains white space"));
    }
    Ok(())
}

/// The rule for a user name (1-64 letters, digits, '.', '_', '-' or '@'),
/// shared by the web config, `sai user` and the server's acting-for header.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > 64 {
        return Err(format!("\"{name}\" is longer than 64 characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "\"{name}\" contains {bad:?}; use letters, digits, '.', '_', '-' and '@'"
        ));
    }
    Ok(())
}

/// Shape check of an argon2 PHC string: `$argon2id$v=19$m=..,t=..,p=..$salt$hash`.
pub fn check_argon2_phc(phc: &str) -> Result<(), String> {
    let hint = "expected an argon2 PHC string like $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (e.g. from the `argon2` command-line tool)";
    let parts: Vec<&str> = phc.split('$').collect();
    // "", alg, [v=..], params, salt, hash
    if parts.len() < 5 || !parts[0].is_empty() {
        return Err(format!("not a PHC string: {hint}"));
    }
    if !matches!(parts[1], "argon2id" | "argon2i" | "argon2d") {
        return Err(format!(
            "algorithm \"{}\" is not argon2id/argon2i/argon2d: {hint}",
            parts[1]
        ));
    }
    let rest = if parts[2].starts_with("v=") {
        &parts[3..]
    } else {
        &parts[2..]
    };
    if rest.len() != 3 {
        return Err(format!("wrong number of $-separated fields: {hint}"));
    }
    let params_ok = rest[0].split(',').all(|kv| {
        kv.split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
    }) && ["m=", "t=", "p="].iter().all(|p| rest[0].contains(p));
    if !params_ok {
        return Err(format!(
            "parameters \"{}\" lack m=, t= or p=: {hint}",
            rest[0]
        ));
    }
    let b64 = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/'))
    };
    if !b64(rest[1]) || !b64(rest[2]) {
        return Err(format!("salt or hash is not unpadded base64: {hint}"));
    }
    Ok(())
}

/// An IP address, or an IP network in CIDR form.
fn check_ip_or_cidr(text: &str) -> Result<(), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let Ok(ip) = addr.parse::<core::net::IpAddr>() else {
        return Err(format!(
            "\"{text}\" is not an IP address or CIDR network (e.g. 10.0.0.0/8)"
        ));
    };
    if let Some(prefix) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => {
                return Err(format!(
                    "\"{text}\": prefix length must be a number 0-{max}"
                ));
            }
        }
    }
    Ok(())
}

/// RFC 9110 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}
