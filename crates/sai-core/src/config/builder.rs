//! Config of `sai-builder`, the daemon that runs build steps.
//!
//! Default path `/etc/sai/builder/conf`. The builder dials out to every
//! server named by its platforms (one connection per distinct URL, shared by
//! the platforms that list it) and offers `instances` slots per platform.
//! Example:
//!
//! ```json
//! {
//!   "schema": "sai-builder",
//!   "home": "/home/sai",
//!   "host": "rpi4",
//!   "platforms": [{
//!     "name": "linux-debian-12/aarch64-a72-bcm2711-rpi4/gcc",
//!     "servers": [{"url": "wss://ci.example.org/sai/builder",
//!                  "token_file": "/etc/sai/builder/ci.example.org.token"}],
//!     "instances": 2
//!   }]
//! }
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::device::is_env_name;
use super::problem::{ConfigProblem, ConfigType, FieldPath, check_marker, check_socket_addr};

/// Value of the optional `schema` marker of a builder config.
pub const SCHEMA_MARKER: &str = "sai-builder";

/// Default time one build step may run: 30 minutes, as in the original.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 1800;

/// Default cap on the log bytes one task may produce: 64 MiB.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Default time a finished job directory is kept: 24 hours, as in the original.
pub const DEFAULT_JOB_RETENTION_SECS: u64 = 24 * 3600;

/// Default free space under `home` needed before a task is accepted: 2 GiB.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Longest host name accepted (the original's builder name limit).
pub const MAX_HOST_LEN: usize = 64;

/// Configuration of `sai-builder`: its home, its name and the platforms it
/// offers to which servers.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderConfig {
    /// Optional marker naming this config kind: `"sai-builder"`.
    pub schema: Option<String>,
    /// Absolute path of the builder's home: git mirrors under `git-mirror/`,
    /// job directories under `jobs/`. Must exist.
    pub home: String,
    /// Name of this builder host; instance names are `<host>.<n>`. Letters,
    /// digits, `-` and `_`, at most 64 characters.
    pub host: String,
    /// The platforms this builder offers, each with the servers it takes
    /// work from.
    pub platforms: Vec<BuilderPlatform>,
    /// Longest time one build step may run, in seconds, before it is killed
    /// and the task fails. Default 1800 (30 minutes).
    #[serde(default = "default_step_timeout_secs")]
    pub step_timeout_secs: u64,
    /// Most log bytes one task may produce; past that the step is killed as
    /// spewing. Default 67108864 (64 MiB).
    #[serde(default = "default_log_limit_bytes")]
    pub log_limit_bytes: u64,
    /// Value of `SAI_PARALLEL` given to build steps (the `-j` of make and
    /// ctest). Default: the number of CPUs of the host.
    pub parallel: Option<u32>,
    /// Unprivileged user that build steps run as when sai-builder is started
    /// as root. Default: the owner of `home`.
    pub run_as: Option<String>,
    /// How long the directory of a finished job is kept, in seconds. Default
    /// 86400 (24 hours).
    #[serde(default = "default_job_retention_secs")]
    pub job_retention_secs: u64,
    /// Free bytes needed on the file system of `home` before a task is
    /// accepted. Default 2147483648 (2 GiB); 0 turns the check off.
    #[serde(default = "default_min_free_disk_bytes")]
    pub min_free_disk_bytes: u64,
    /// Per-task resource limits (Linux), applied through a cgroup per task:
    /// cgroup v2 where the builder's own cgroup offers the controllers
    /// (systemd `Delegate=yes`), else cgroup v1 hierarchies with them
    /// (hybrid or v1 hosts: `memory.limit_in_bytes`, `pids.max`,
    /// `cpu.shares`; the builder needs write access there, e.g. root).
    /// Where neither can hold them the builder refuses to start. See
    /// docs/builder.md.
    pub task_limits: Option<TaskLimitsConfig>,
    /// Address and port of a local listener serving the builder's
    /// Prometheus metrics at `/metrics`, e.g. `127.0.0.1:9101`. Default:
    /// none.
    pub metrics_listen: Option<String>,
    /// Whether each build step sees only its own task's job directory (and
    /// its project's git mirror, read-only), not other tasks' job
    /// directories or other projects' mirrors: a private mount namespace
    /// per step (Linux; as root, or with unprivileged user namespaces).
    /// Default: on where the builder can set it up (Linux, checked at
    /// start-up), else off with a warning. `true` makes a task that cannot
    /// be isolated fail with an infrastructure reason; `true` is refused off
    /// Linux. See docs/builder.md.
    pub isolate_tasks: Option<bool>,
}

/// Resource limits of one task (all of its steps and their processes).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskLimitsConfig {
    /// Most memory the task's processes may use, in bytes (`memory.max`;
    /// cgroup v1 `memory.limit_in_bytes`). A task that goes past it has
    /// processes killed, and its failed step says it hit the limit.
    pub memory_max_bytes: Option<u64>,
    /// Most processes and threads the task may have at once (`pids.max`).
    pub pids_max: Option<u64>,
    /// Relative CPU share, 1 to 10000 (default 100) (`cpu.weight`; cgroup
    /// v1 `cpu.shares` = weight * 1024 / 100, clamped to 2..262144, as
    /// systemd maps them).
    #[schemars(range(min = 1, max = 10000))]
    pub cpu_weight: Option<u32>,
}

/// One platform offered by the builder.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderPlatform {
    /// Platform tuple `os[-distro[-ver]]/arch[-vendor[-chip[-board]]][/toolchain]`,
    /// no dots, e.g. `linux-debian-12/x86_64-amd/gcc`.
    #[schemars(regex(pattern = crate::platform::PLATFORM_PATTERN))]
    pub name: String,
    /// Servers this platform takes tasks from; the builder keeps one
    /// connection to each distinct URL.
    pub servers: Vec<BuilderServer>,
    /// How many tasks of this platform may run at once. Default 1.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Extra environment variables for this platform's build steps. They may
    /// replace the defaults `PATH` and `LANG`; `HOME` and `SAI_*` are set by
    /// the builder and refused here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Limits for this platform that override the builder-wide ones.
    pub limits: Option<PlatformLimits>,
}

/// One server a platform takes work from, and the token the builder proves
/// itself with. Give `token_file` (preferred) or `token`, never both.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuilderServer {
    /// Websocket URL of the server's builder endpoint:
    /// `wss://host[:port][/prefix]/builder` (or `ws://` on trusted networks).
    pub url: String,
    /// File holding the token this builder presents to the server
    /// (surrounding white space ignored), read again on every connect.
    pub token_file: Option<String>,
    /// The token inline; prefer `token_file` so the config can be shared.
    pub token: Option<String>,
    /// PEM file of the CA certificate(s) that signed a `wss://` server's
    /// certificate (a private CA for a rack). Only these are trusted for this
    /// server then; without it the system roots are used.
    pub ca_file: Option<String>,
    /// Allow a plain `ws://` URL to a host that is not loopback. The token
    /// and all build logs then cross the network unencrypted: only for a
    /// network you trust entirely. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Per-platform limits; each one left out falls back to the builder-wide value.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformLimits {
    /// Longest time one build step of this platform may run, in seconds.
    pub step_timeout_secs: Option<u64>,
    /// Most log bytes one task of this platform may produce.
    pub log_limit_bytes: Option<u64>,
    /// `SAI_PARALLEL` for this platform's build steps.
    pub parallel: Option<u32>,
}

fn default_step_timeout_secs() -> u64 {
    DEFAULT_STEP_TIMEOUT_SECS
}

fn default_log_limit_bytes() -> u64 {
    DEFAULT_LOG_LIMIT_BYTES
}

fn default_job_retention_secs() -> u64 {
    DEFAULT_JOB_RETENTION_SECS
}

fn default_min_free_disk_bytes() -> u64 {
    DEFAULT_MIN_FREE_DISK_BYTES
}

fn default_instances() -> u32 {
    1
}

/// Environment variables the builder sets itself; `env` must not override
/// them. `PATH` and `LANG` are defaults a platform may change (a cross
/// toolchain's `bin/` first, say).
const RESERVED_ENV: &[&str] = &["HOME"];

impl BuilderConfig {
    /// The distinct server URLs, in first-seen order, with the platforms
    /// that take work from each.
    pub fn servers(&self) -> Vec<(&BuilderServer, Vec<&str>)> {
        let mut out: Vec<(&BuilderServer, Vec<&str>)> = Vec::new();
        for platform in &self.platforms {
            for server in &platform.servers {
                match out.iter_mut().find(|(s, _)| s.url == server.url) {
                    Some((_, names)) => names.push(&platform.name),
                    None => out.push((server, vec![platform.name.as_str()])),
                }
            }
        }
        out
    }
}

impl ConfigType for BuilderConfig {
    const MARKER: &'static str = SCHEMA_MARKER;

    /// Check what the schema cannot express. Returns every problem found,
    /// each with the path of the field it concerns; empty means valid.
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = check_marker(self.schema.as_deref(), SCHEMA_MARKER);
        let root = FieldPath::root();
        let mut push = |path: FieldPath, message: String| {
            problems.push(ConfigProblem::new(path, message));
        };
        if !self.home.starts_with('/') {
            push(
                root.key("home"),
                format!("\"{}\" must be an absolute path", self.home),
            );
        }
        if let Err(why) = check_host(&self.host) {
            push(root.key("host"), why);
        }
        if self.platforms.is_empty() {
            push(
                root.key("platforms"),
                "list at least one platform this builder offers".to_string(),
            );
        }
        if let Some(addr) = &self.metrics_listen
            && let Err(why) = check_socket_addr(addr, "127.0.0.1:9101")
        {
            push(root.key("metrics_listen"), why);
        }
        if let Some(user) = &self.run_as
            && !is_user_name(user)
        {
            push(
                root.key("run_as"),
                format!("\"{user}\" is not a valid user name"),
            );
        }
        check_limits(
            &root,
            Some(self.step_timeout_secs),
            Some(self.log_limit_bytes),
            self.parallel,
            &mut push,
        );
        if self.job_retention_secs == 0 {
            push(
                root.key("job_retention_secs"),
                "must be at least 1 second (finished jobs are deleted after this long)".to_string(),
            );
        }

        let mut platform_names: BTreeMap<&str, usize> = BTreeMap::new();
        // URL -> (platform index, server index, token source) of its first use.
        let mut tokens: BTreeMap<&str, (usize, usize, TokenSource<'_>)> = BTreeMap::new();
        // URL -> (ca_file, insecure) of its first use.
        let mut security: BTreeMap<&str, (Option<&str>, bool)> = BTreeMap::new();
        for (pi, platform) in self.platforms.iter().enumerate() {
            let at = root.key("platforms").index(pi);
            match check_platform_name(&platform.name) {
                Err(why) => push(at.key("name"), why),
                Ok(()) => {
                    if let Some(first) = platform_names.insert(&platform.name, pi) {
                        push(
                            at.key("name"),
                            format!(
                                "platform \"{}\" is already offered by platforms[{first}]; list it once",
                                platform.name
                            ),
                        );
                    }
                }
            }
            if platform.servers.is_empty() {
                push(
                    at.key("servers"),
                    "list at least one server this platform takes work from".to_string(),
                );
            }
            if platform.instances == 0 {
                push(
                    at.key("instances"),
                    "must be at least 1 (how many tasks of this platform run at once)".to_string(),
                );
            }
            let mut urls = std::collections::BTreeSet::new();
            for (si, server) in platform.servers.iter().enumerate() {
                let sat = at.key("servers").index(si);
                if let Err(why) = check_builder_url(&server.url) {
                    push(sat.key("url"), why);
                } else {
                    check_transport_security(server, &sat, &mut push);
                }
                if !urls.insert(server.url.as_str()) {
                    push(
                        sat.key("url"),
                        format!(
                            "server \"{}\" is listed twice for this platform",
                            server.url
                        ),
                    );
                }
                let source = match (&server.token_file, &server.token) {
                    (Some(_), Some(_)) => {
                        push(
                            sat.key("token"),
                            "give token_file or token, not both (token_file is preferred)"
                                .to_string(),
                        );
                        None
                    }
                    (None, None) => {
                        push(
                            sat.clone(),
                            "missing token_file (or inline token) for this server".to_string(),
                        );
                        None
                    }
                    (Some(file), None) => {
                        if file.trim().is_empty() {
                            push(sat.key("token_file"), "must not be empty".to_string());
                        }
                        Some(TokenSource::File(file))
                    }
                    (None, Some(token)) => {
                        if token.trim().is_empty() {
                            push(sat.key("token"), "must not be empty".to_string());
                        }
                        Some(TokenSource::Inline(token))
                    }
                };
                if let Some(first) = security.get(server.url.as_str())
                    && *first != (server.ca_file.as_deref(), server.insecure)
                {
                    push(
                        sat.clone(),
                        format!(
                            "server \"{}\" is listed elsewhere with a different ca_file or insecure; the builder keeps one connection per server, give them once and the same everywhere",
                            server.url
                        ),
                    );
                }
                security
                    .entry(server.url.as_str())
                    .or_insert((server.ca_file.as_deref(), server.insecure));
                if let Some(source) = source {
                    match tokens.get(server.url.as_str()) {
                        Some((fp, fs, first)) if *first != source => push(
                            sat.clone(),
                            format!(
                                "server \"{}\" gets a different token than in platforms[{fp}].servers[{fs}]; the builder keeps one connection, and so one token, per server",
                                server.url
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            tokens.insert(&server.url, (pi, si, source));
                        }
                    }
                }
            }
            for name in platform.env.keys() {
                if !is_env_name(name) {
                    push(
                        at.key("env").key(name),
                        format!(
                            "\"{name}\" is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                        ),
                    );
                } else if name.starts_with("SAI_") || RESERVED_ENV.contains(&name.as_str()) {
                    push(
                        at.key("env").key(name),
                        format!("\"{name}\" is set by sai-builder itself and cannot be overridden"),
                    );
                }
            }
            if let Some(limits) = &platform.limits {
                check_limits(
                    &at.key("limits"),
                    limits.step_timeout_secs,
                    limits.log_limit_bytes,
                    limits.parallel,
                    &mut push,
                );
            }
        }
        problems
    }
}

impl BuilderPlatform {
    /// Step timeout in force for this platform.
    pub fn step_timeout_secs(&self, config: &BuilderConfig) -> u64 {
        self.limits
            .as_ref()
            .and_then(|l| l.step_timeout_secs)
            .unwrap_or(config.step_timeout_secs)
    }

    /// Log cap in force for this platform.
    pub fn log_limit_bytes(&self, config: &BuilderConfig) -> u64 {
        self.limits
            .as_ref()
            .and_then(|l| l.log_limit_bytes)
            .unwrap_or(config.log_limit_bytes)
    }

    /// `SAI_PARALLEL` for this platform, given the host's CPU count.
    pub fn parallel(&self, config: &BuilderConfig, cpus: u32) -> u32 {
        self.limits
            .as_ref()
            .and_then(|l| l.parallel)
            .or(config.parallel)
            .unwrap_or(cpus)
            .max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource<'a> {
    File(&'a str),
    Inline(&'a str),
}

fn check_limits(
    at: &FieldPath,
    step_timeout_secs: Option<u64>,
    log_limit_bytes: Option<u64>,
    parallel: Option<u32>,
    push: &mut impl FnMut(FieldPath, String),
) {
    if step_timeout_secs == Some(0) {
        push(
            at.key("step_timeout_secs"),
            "must be at least 1 second".to_string(),
        );
    }
    if let Some(bytes) = log_limit_bytes
        && bytes < 4096
    {
        push(
            at.key("log_limit_bytes"),
            format!("{bytes} is too small: give at least 4096 bytes"),
        );
    }
    if parallel == Some(0) {
        push(
            at.key("parallel"),
            "must be at least 1 (leave it out to use the CPU count)".to_string(),
        );
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".to_string());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "\"{host}\" is longer than {MAX_HOST_LEN} characters"
        ));
    }
    only_name_chars(host, "instance names are <host>.<n>")
}

/// `name` holds only letters, digits, '-' and '_'; the error says what the
/// name is used for.
pub(crate) fn only_name_chars(name: &str, used_for: &str) -> Result<(), String> {
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "\"{name}\" contains {bad:?}; use letters, digits, '-' and '_' ({used_for})"
        ));
    }
    Ok(())
}

/// Check a platform tuple name.
fn check_platform_name(name: &str) -> Result<(), String> {
    crate::platform::Platform::parse(name)
        .map(|_| ())
        .map_err(|e| format!("\"{name}\": {e}"))
}

/// `ws://` or `wss://` URL whose path ends in `/builder`.
fn check_builder_url(url: &str) -> Result<(), String> {
    super::web::check_base_url(url, &["wss", "ws"], false)?;
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let path = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    if !path.trim_end_matches('/').ends_with("/builder") {
        return Err(format!(
            "\"{url}\" must end with the server's builder path, e.g. wss://ci.example.org/sai/builder"
        ));
    }
    Ok(())
}

/// `ws://` only to loopback unless `insecure` says so; `ca_file` only with
/// `wss://`. Call with a URL that passed [`check_builder_url`].
fn check_transport_security(
    server: &BuilderServer,
    at: &FieldPath,
    push: &mut impl FnMut(FieldPath, String),
) {
    let tls = server.url.starts_with("wss://");
    if let Some(ca) = &server.ca_file {
        if !tls {
            push(
                at.key("ca_file"),
                format!(
                    "a CA file only applies to wss:// URLs, but the url is \"{}\"",
                    server.url
                ),
            );
        } else if ca.trim().is_empty() {
            push(at.key("ca_file"), "must not be empty".to_string());
        }
    }
    if tls {
        if server.insecure {
            push(
                at.key("insecure"),
                "only allows plain ws://; a wss:// server's certificate is always checked (use ca_file for a private CA)".to_string(),
            );
        }
    } else if !server.insecure && !url_host(&server.url).is_some_and(is_loopback_host) {
        push(
            at.key("url"),
            format!(
                "\"{}\" is plain ws:// to a host that is not loopback: the token and logs would cross the network unencrypted; use wss://, or set \"insecure\": true for a network you trust entirely",
                server.url
            ),
        );
    }
}

/// The host of `scheme://[user@]host[:port]/...`, without IPv6 brackets.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(host_port.split(':').next().unwrap_or(host_port))
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// POSIX-ish user name: starts with a letter or `_`, then letters, digits,
/// `_`, `-`, `.`; at most 32 characters.
fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    s.len() <= 32 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
