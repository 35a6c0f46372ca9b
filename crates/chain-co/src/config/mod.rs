//! The TOML configuration: parsed once, at the edge, into typed values.
//!
//! Two layers, as in linkerd's `env.rs`: `Raw*` structs mirror the file (every key that can be
//! wrong keeps its span, so an error can name its line), and [`Config`] is what the rest of the
//! program sees — checked, defaulted, tokens loaded. Every problem in a file is collected and
//! reported at once (one run of `chain-co validate` shows every mistake), each as
//! `FILE:LINE:COL: key: what is wrong; what would be valid`.
//!
//! Relative paths in the file are resolved against the directory of the file itself, so that a
//! service manager starting chain-co from `/` finds the same files as an operator in `/etc/chain-co`.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::apply::haproxy::{check_haproxy, RawHaproxy};
use crate::apply::nginx::check_nginx;
pub use crate::apply::nginx::{NginxConfig, RawNginx, Reload, DEFAULT_TEMPLATE};
use crate::apply::slb::{check_slb, RawSlb};
pub use crate::apply::TargetConfig;
pub use crate::decide::select::ChainConfig;
pub use crate::problems::Problem;
use crate::problems::{resolve, warn_if_readable_by_others, Checker};
use serde::Deserialize;
use toml::Spanned;

mod unknown;

use crate::decide::select::SelectRules;
use crate::probe::rpc::Transport;
use crate::secret::Secret;

/// Typed, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: Vec<NodeConfig>,
    pub chain: ChainConfig,
    pub probe: ProbeConfig,
    pub select: SelectRules,
    /// Where the decision is applied: exactly one of `[nginx]` (the default), `[haproxy]` and
    /// `[slb]`.
    pub target: TargetConfig,
    pub api: ApiConfig,
    /// `[ha]`: where the VRRP role comes from; `None` when chain-co runs alone.
    pub ha: Option<crate::apply::ha::RoleSource>,
    /// `[messages] addresses`: the provider's sending addresses, whose pending messages follow
    /// a switch to the new primary. Empty (and no `message_miner`): nothing is carried.
    pub message_addresses: Vec<String>,
    /// `[messages] miner`: the miner actor (`f0…`) whose owner, worker and control addresses
    /// are read from `StateMinerInfo` and followed as well.
    pub message_miner: Option<String>,
    /// `[ha] track_file`: the keepalived track file chain-co writes from the nginx watch (`1`
    /// while nginx is dead, `0` while it runs with a valid configuration).
    pub track_file: Option<PathBuf>,
    /// `[chain] client_token_file`: the token clients send through nginx to whichever node is
    /// primary; chain-co checks that every node accepts it.
    pub client_token: Option<Secret>,
}

impl Config {
    /// Whether `[messages]` asks for pending messages to follow a switch.
    pub fn carries_messages(&self) -> bool {
        !self.message_addresses.is_empty() || self.message_miner.is_some()
    }

    /// The target this configuration names, built for its nodes.
    pub fn build_target(&self) -> Result<crate::apply::Target, crate::apply::ApplyError> {
        crate::apply::Target::new(
            &self.target,
            self.nodes.iter().map(|n| n.name.clone()).collect(),
        )
    }

    /// The prober for these nodes, as `run` and `check` both probe them.
    pub fn prober(&self) -> Result<crate::probe::Prober, crate::probe::rpc::RpcError> {
        let client =
            crate::probe::rpc::RpcClient::new(self.probe.timeout, self.probe.max_reply_bytes)?;
        Ok(crate::probe::Prober::new(
            client,
            self.nodes.iter().map(crate::probe::Target::from).collect(),
            self.probe.sync_checks,
        )
        .with_client_token(self.client_token.clone()))
    }

    /// Each node's name and the address the load balancer sends it traffic at, in order.
    pub(crate) fn upstreams(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.upstream.clone()))
            .collect()
    }

    /// The nginx target's settings, when nginx is the target.
    pub fn nginx(&self) -> Option<&NginxConfig> {
        match &self.target {
            TargetConfig::Nginx(n) => Some(n),
            _ => None,
        }
    }
}

/// The status API, from `[api]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Where the API listens; localhost unless configured otherwise.
    pub listen: std::net::SocketAddr,
    /// Bearer token required by every endpoint but `/healthz`.
    pub token: Option<Secret>,
    /// Where drains and preferences are kept across restarts.
    pub state_file: PathBuf,
    /// The operator accepts an API reachable from the network without a token.
    pub allow_unauthenticated: bool,
    /// Host names (besides IP addresses and `localhost`) that requests may name in `Host`:
    /// a browser tab on another site cannot reach the API by DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

impl ApiConfig {
    /// Open to the network without a token: anyone who reaches the host can drain or prefer
    /// nodes, which moves the miners' traffic.
    pub(crate) fn is_open(&self) -> bool {
        self.token.is_none() && !self.listen.ip().is_loopback()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: defaults::API_LISTEN.parse().expect("valid default"),
            token: None,
            state_file: PathBuf::from(defaults::STATE_FILE),
            allow_unauthenticated: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// One Filecoin daemon of the pool.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub url: Url,
    pub token: Option<Secret>,
    /// The address nginx proxies to (`host:port`).
    pub upstream: String,
    /// `None`: detect (HTTP first; a daemon that answers a POST with 400, as Fuhon does, is
    /// probed over WebSocket from then on).
    pub transport: Option<Transport>,
    /// The daemon's own health endpoint; `None`: the implementation's default, if it has one.
    pub health_url: Option<Url>,
    /// `write_token_file`: a token with `write`, used for `MpoolPush` only (carrying pending
    /// messages to this node when it becomes primary).
    pub write_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Replies larger than this are cut off and count as a bad probe.
    pub max_reply_bytes: usize,
    /// Also ask for peers and sync state each round (the `min_peers` and catching-up rules).
    pub sync_checks: bool,
    /// Subscribe to ChainNotify on every node that offers it.
    pub push: bool,
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            match p.position {
                Some((line, col)) => write!(f, "  {}:{}:{}: ", self.file.display(), line, col)?,
                None => write!(f, "  {}: ", self.file.display())?,
            }
            if p.key.is_empty() {
                writeln!(f, "{}", p.message)?;
            } else {
                writeln!(f, "{}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    chain: RawChain,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default)]
    select: RawSelect,
    nginx: Option<Spanned<RawNginx>>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    ha: RawHa,
    haproxy: Option<Spanned<RawHaproxy>>,
    slb: Option<Spanned<RawSlb>>,
    messages: Option<Spanned<RawMessages>>,
}

#[derive(Debug, Deserialize)]
struct RawMessages {
    addresses: Option<Spanned<Vec<String>>>,
    miner: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawHa {
    role_file: Option<Spanned<PathBuf>>,
    vip: Option<Spanned<String>>,
    track_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawApi {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    state_file: Option<Spanned<PathBuf>>,
    allow_unauthenticated: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawNode {
    name: Spanned<String>,
    url: Option<Spanned<String>>,
    api_info: Option<Spanned<String>>,
    api_info_env: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    token_env: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    health_url: Option<Spanned<String>>,
    write_token_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawChain {
    network: Option<Spanned<String>>,
    genesis: Option<Spanned<String>>,
    genesis_timestamp: Option<Spanned<u64>>,
    block_delay: Option<Spanned<HumanDuration>>,
    client_token_file: Option<Spanned<PathBuf>>,
}

type HumanDuration = humantime_serde::Serde<Duration>;

#[derive(Debug, Default, Deserialize)]
struct RawProbe {
    interval: Option<Spanned<HumanDuration>>,
    timeout: Option<Spanned<HumanDuration>>,
    max_reply_bytes: Option<Spanned<u64>>,
    sync_checks: Option<bool>,
    push: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSelect {
    max_lag: Option<Spanned<u64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    stale_after: Option<Spanned<HumanDuration>>,
    min_peers: Option<u64>,
    max_clock_skew: Option<Spanned<HumanDuration>>,
    lag_grace: Option<Spanned<HumanDuration>>,
    hold_down: Option<Spanned<HumanDuration>>,
    finality_stall_after: Option<u64>,
    f3_max_behind: Option<u64>,
}

/// Defaults, in one place.
pub mod defaults {
    use std::time::Duration;
    pub const INTERVAL: Duration = Duration::from_secs(5);
    pub const TIMEOUT: Duration = Duration::from_secs(3);
    /// A mainnet `ChainHead` with a full tipset is tens of KiB; 1 MiB leaves ample room while
    /// keeping a hostile node from filling memory.
    pub(crate) const MAX_REPLY_BYTES: u64 = 1024 * 1024;
    pub const MAX_LAG: u64 = 2;
    pub const RISE: u32 = 2;
    pub const FALL: u32 = 3;
    pub(crate) const MIN_PEERS: u64 = crate::decide::select::DEFAULT_MIN_PEERS;
    pub(crate) const MAX_CLOCK_SKEW: Duration = crate::decide::select::DEFAULT_MAX_CLOCK_SKEW;
    /// Longer probe intervals or timeouts than this are mistakes (and `"1e18s"` would
    /// overflow the timers).
    pub(crate) const MAX_PROBE_DURATION: Duration = Duration::from_secs(3600);
    /// The same for the `[select]` durations: a day is far beyond any useful rule.
    pub(crate) const MAX_SELECT_DURATION: Duration = Duration::from_secs(86_400);
    pub use crate::apply::nginx::defaults::{test_cmd, OUTPUT, PID_FILE, UPSTREAM_NAME};
    pub(crate) const API_LISTEN: &str = "127.0.0.1:9797";
    pub(crate) const STATE_FILE: &str = "/var/lib/chain-co/state.json";
}

impl Config {
    /// Reads and validates a configuration file; nothing outside the file is touched except the
    /// token files and the template it names, which are read here so that a missing one stops
    /// chain-co at start, not at the first probe.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                position: None,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&source, base).map_err(|problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        })
    }

    /// Parses configuration text; relative paths are resolved against `base`.
    pub fn parse(source: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let mut ck = Checker {
            source,
            problems: Vec::new(),
        };
        let mut raw: RawConfig = match unknown::from_str(source) {
            Ok((raw, unknown)) => {
                report_unknown(&mut ck, unknown);
                raw
            }
            Err((e, unknown)) => {
                report_unknown(&mut ck, unknown);
                let key = e
                    .span()
                    .map(|s| key_at(source, s.start))
                    .unwrap_or_default();
                ck.problems.push(Problem {
                    position: e.span().map(|s| ck.position(s)),
                    key,
                    message: e.message().trim().to_string(),
                });
                return Err(ck.problems);
            }
        };
        let nodes = check_nodes(&mut ck, raw.node, base);
        let client_token = raw
            .chain
            .client_token_file
            .as_ref()
            .and_then(|f| secret_file(&mut ck, f, "chain.client_token_file", base));
        let chain = check_chain(&mut ck, raw.chain);
        let probe = check_probe(&mut ck, raw.probe);
        let select = check_select(&mut ck, raw.select);
        // One target: two would fight over where the traffic goes.
        let sections: Vec<(&str, Range<usize>)> = [
            ("nginx", raw.nginx.as_ref().map(|s| s.span())),
            ("haproxy", raw.haproxy.as_ref().map(|s| s.span())),
            ("slb", raw.slb.as_ref().map(|s| s.span())),
        ]
        .into_iter()
        .filter_map(|(name, span)| span.map(|s| (name, s)))
        .collect();
        if sections.len() > 1 {
            let listed = sections
                .iter()
                .map(|(name, span)| format!("[{name}] (line {})", ck.position(span.clone()).0))
                .collect::<Vec<_>>()
                .join(" and ");
            for (name, span) in &sections {
                ck.at(
                    span.clone(),
                    *name,
                    format!("{listed} both say where the decision goes; keep one target"),
                );
            }
        }
        let target = if let Some(r) = raw.slb {
            check_slb(&mut ck, r, base).map(TargetConfig::Slb)
        } else if let Some(h) = raw.haproxy {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            Some(TargetConfig::Haproxy(check_haproxy(
                &mut ck, h, base, &names,
            )))
        } else {
            let nginx = raw.nginx.map(Spanned::into_inner).unwrap_or_default();
            check_nginx(&mut ck, nginx, base).map(TargetConfig::Nginx)
        };
        let api = check_api(&mut ck, raw.api, base);
        let track_file = raw
            .ha
            .track_file
            .take()
            .and_then(|f| check_track_file(&mut ck, f, base, target.as_ref()));
        let ha = check_ha(&mut ck, raw.ha, base);
        let (message_addresses, message_miner) = raw
            .messages
            .map(|m| check_messages(&mut ck, m))
            .unwrap_or_default();
        if ck.problems.is_empty() {
            Ok(Config {
                nodes,
                chain,
                probe,
                select,
                target: target.expect("a target that failed its checks is always reported"),
                api,
                ha,
                track_file,
                message_addresses,
                message_miner,
                client_token,
            })
        } else {
            Err(ck.problems)
        }
    }
}

/// One problem per key the config does not know, each at the line that holds it.
fn report_unknown(ck: &mut Checker, unknown: Vec<unknown::UnknownKey>) {
    for u in unknown {
        ck.problems.push(Problem {
            position: u.span.clone().map(|s| ck.position(s)),
            key: u.name(),
            message: u.message(),
        });
    }
}

/// The dotted key written on the line holding `offset`, with its table: what a syntax error
/// from the TOML parser is about (its own message does not name the key).
fn key_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
    let table = source[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .unwrap_or("");
    match (table, key) {
        (_, "") => String::new(),
        ("", k) => k.to_string(),
        (t, k) => format!("{t}.{k}"),
    }
}

/// Node names end up in logs, metrics labels and nginx comments: keep them to a safe alphabet.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What may be written after `server` in an nginx upstream: `host:port`, `[v6]:port` or
/// `unix:/path`. Anything else (spaces, `;`, braces) could inject directives into nginx.
fn valid_upstream(addr: &str) -> bool {
    if let Some(path) = addr.strip_prefix("unix:") {
        return path.starts_with('/')
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-'));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn check_nodes(ck: &mut Checker, raw: Vec<RawNode>, base: &Path) -> Vec<NodeConfig> {
    if raw.is_empty() {
        ck.nowhere(
            "node",
            "no [[node]] is defined; add one [[node]] table with `name` and `url` per daemon",
        );
    }
    let mut seen = HashSet::new();
    let mut nodes = Vec::new();
    for (i, n) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("node[{i}].{k}");
        let name = node_name(ck, &n, &key, &mut seen);
        let (url, info_token) = node_address(ck, &n, &key);
        let transport = node_transport(ck, &n, url.as_ref(), &key);
        let token = node_token(ck, &n, info_token, base, &key);
        let upstream = node_upstream(ck, &n, url.as_ref(), &key);
        let health_url = node_health_url(ck, &n, &key);
        let write_token = n
            .write_token_file
            .as_ref()
            .and_then(|f| secret_file(ck, f, &key("write_token_file"), base));
        if let Some(url) = url {
            nodes.push(NodeConfig {
                name,
                url,
                token,
                upstream,
                transport,
                health_url,
                write_token,
            });
        }
    }
    nodes
}

type Key<'a> = &'a dyn Fn(&str) -> String;

/// `name`: valid and unique.
fn node_name(ck: &mut Checker, n: &RawNode, key: Key, seen: &mut HashSet<String>) -> String {
    let name = n.name.get_ref().clone();
    if !valid_name(&name) {
        ck.at(
            n.name.span(),
            key("name"),
            format!("{name:?} is not a valid name; use letters, digits, `_`, `.` and `-`"),
        );
    } else if !seen.insert(name.clone()) {
        ck.at(
            n.name.span(),
            key("name"),
            format!("{name:?} is used by another node already; names must be unique"),
        );
    }
    name
}

/// The address: `url`, `api_info` or `api_info_env`; and the token an api_info carries.
fn node_address(ck: &mut Checker, n: &RawNode, key: Key) -> (Option<Url>, Option<String>) {
    // The address: `url`, or Lotus's FULLNODE_API_INFO form (which may carry the token).
    let mut info_token = None;
    let url_text = match (&n.url, &n.api_info, &n.api_info_env) {
        (Some(u), None, None) => Some((u.get_ref().clone(), u.span(), "url")),
        (None, Some(a), None) => Some((a.get_ref().clone(), a.span(), "api_info")),
        (None, None, Some(e)) => match std::env::var(e.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some((v.trim().to_string(), e.span(), "api_info_env")),
            _ => {
                ck.at(
                    e.span(),
                    key("api_info_env"),
                    format!("environment variable {} is not set or empty", e.get_ref()),
                );
                None
            }
        },
        (None, None, None) => {
            ck.at(
                n.name.span(),
                key("url"),
                "missing; give `url = \"http://host:1234/rpc/v1\"` or `api_info = \"TOKEN:/ip4/host/tcp/1234/http\"`",
            );
            None
        }
        _ => {
            ck.at(
                n.name.span(),
                key("url"),
                "give only one of url, api_info and api_info_env",
            );
            None
        }
    };
    let url = url_text.and_then(|(text, span, field)| {
        let parsed = if field == "url" {
            Url::parse(&text).map_err(|e| {
                format!(
                    "{:?} is not a URL ({e}); write e.g. \"http://10.0.0.11:1234/rpc/v1\"",
                    crate::secret::redact_url(&text)
                )
            })
        } else {
            parse_api_info(&text).map(|(u, t)| {
                info_token = t;
                u
            })
        };
        match parsed {
            Ok(u) if !matches!(u.scheme(), "http" | "https" | "ws" | "wss") => {
                ck.at(
                    span,
                    key(field),
                    format!(
                        "scheme {:?} is not supported; use http(s):// or ws(s)://",
                        u.scheme()
                    ),
                );
                None
            }
            Ok(u) if u.host_str().is_none() => {
                ck.at(span, key(field), "the URL has no host");
                None
            }
            Ok(u) => Some(u),
            // Never echo an api_info value: it usually holds a token.
            Err(e) if field == "url" => {
                ck.at(span, key(field), e);
                None
            }
            Err(e) => {
                ck.at(
                    span,
                    key(field),
                    format!("not a FULLNODE_API_INFO value: {e}"),
                );
                None
            }
        }
    });
    (url, info_token)
}

/// `transport`: auto, http or ws (a ws:// URL means ws).
fn node_transport(ck: &mut Checker, n: &RawNode, url: Option<&Url>, key: Key) -> Option<Transport> {
    match &n.transport {
        None => url.and_then(|u| match u.scheme() {
            "ws" | "wss" => Some(Transport::Ws),
            _ => None,
        }),
        Some(t) => match t.get_ref().as_str() {
            "auto" => None,
            "http" => Some(Transport::Http),
            "ws" => Some(Transport::Ws),
            other => {
                ck.at(
                    t.span(),
                    key("transport"),
                    format!("{other:?} is not a transport; use \"auto\", \"http\" or \"ws\""),
                );
                None
            }
        },
    }
}

/// The token: `token_file`, `token_env`, or the one in api_info.
fn node_token(
    ck: &mut Checker,
    n: &RawNode,
    info_token: Option<String>,
    base: &Path,
    key: Key,
) -> Option<Secret> {
    match (&n.token_file, &n.token_env) {
        (Some(f), Some(_)) => {
            ck.at(
                f.span(),
                key("token_file"),
                "set either token_file or token_env, not both",
            );
            None
        }
        (Some(f), None) => secret_file(ck, f, &key("token_file"), base),
        (None, Some(v)) => match std::env::var(v.get_ref()) {
            Ok(t) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
            _ => {
                ck.at(
                    v.span(),
                    key("token_env"),
                    format!("environment variable {} is not set or empty", v.get_ref()),
                );
                None
            }
        },
        (None, None) => info_token.map(Secret::new),
    }
}

/// The address nginx proxies to: `upstream`, or the URL's host:port, validated either way.
fn node_upstream(ck: &mut Checker, n: &RawNode, url: Option<&Url>, key: Key) -> String {
    match (&n.upstream, url) {
        (Some(u), _) => {
            if !valid_upstream(u.get_ref()) {
                ck.at(
                    u.span(),
                    key("upstream"),
                    format!(
                        "{:?} is not an nginx server address; write host:port, [ipv6]:port or unix:/path",
                        u.get_ref()
                    ),
                );
            }
            u.get_ref().clone()
        }
        (None, Some(url)) => {
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(80);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let derived = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            // The same check as a written `upstream`: the address lands in nginx's file.
            if !valid_upstream(&derived) {
                let span = n
                    .url
                    .as_ref()
                    .or(n.api_info.as_ref())
                    .map_or(n.name.span(), |u| u.span());
                ck.at(
                    span,
                    key("url"),
                    format!(
                        "its host:port {:?} is not an nginx server address; use a host name or an IP address, or set `upstream`",
                        crate::text::inert(&derived, 80)
                    ),
                );
            }
            derived
        }
        (None, None) => String::new(),
    }
}

/// `health_url`: an http(s) URL.
fn node_health_url(ck: &mut Checker, n: &RawNode, key: Key) -> Option<Url> {
    n.health_url.as_ref().and_then(|h| match Url::parse(h.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        _ => {
            ck.at(
                h.span(),
                key("health_url"),
                format!(
                    "{:?} is not an http(s) URL; write e.g. \"http://10.0.0.11:2346/readyz?verbose\"",
                    crate::secret::redact_url(h.get_ref())
                ),
            );
            None
        }
    })
}

/// Lotus's `FULLNODE_API_INFO`: `TOKEN:/ip4/10.0.0.11/tcp/1234/http`, a bare multiaddr, or a
/// URL (lotus cli/util/apiinfo.go). Returns the JSON-RPC URL (`/rpc/v1`) and the token.
pub fn parse_api_info(info: &str) -> Result<(Url, Option<String>), String> {
    let (token, addr) = if info.starts_with('/') {
        (None, info)
    } else {
        match info.split_once(':') {
            Some((_, rest)) if rest.starts_with("//") => (None, info),
            Some((t, rest)) => (Some(t.to_string()), rest),
            None => return Err("expected TOKEN:MULTIADDR".into()),
        }
    };
    let url = if addr.starts_with('/') {
        multiaddr_url(addr)?
    } else {
        let base = Url::parse(addr).map_err(|e| format!("bad URL: {e}"))?;
        base.join("/rpc/v1").map_err(|e| format!("bad URL: {e}"))?
    };
    Ok((url, token.filter(|t| !t.is_empty())))
}

fn multiaddr_url(addr: &str) -> Result<Url, String> {
    let parts: Vec<&str> = addr.trim_start_matches('/').split('/').collect();
    let (host, rest) = match parts.as_slice() {
        ["ip4", h, rest @ ..] => (h.to_string(), rest),
        ["ip6", h, rest @ ..] => (format!("[{h}]"), rest),
        ["dns" | "dns4" | "dns6", h, rest @ ..] => (h.to_string(), rest),
        _ => return Err("the multiaddr must start with /ip4, /ip6 or /dns".into()),
    };
    let (port, rest) = match rest {
        ["tcp", p, rest @ ..] => (
            p.parse::<u16>()
                .map_err(|_| format!("bad tcp port {p:?}"))?,
            rest,
        ),
        _ => return Err("the multiaddr needs /tcp/PORT after the host".into()),
    };
    let scheme = match rest {
        [] | ["http"] => "http",
        ["https"] | ["tls", "http"] => "https",
        ["ws"] => "ws",
        ["wss"] | ["tls", "ws"] => "wss",
        other => return Err(format!("unsupported protocol /{}", other.join("/"))),
    };
    Url::parse(&format!("{scheme}://{host}:{port}/rpc/v1")).map_err(|e| e.to_string())
}

/// Reads a secret from a file named in the config: trimmed, never empty, and said when others
/// can read it. The one place every `*token_file` key is read.
fn secret_file(ck: &mut Checker, f: &Spanned<PathBuf>, key: &str, base: &Path) -> Option<Secret> {
    let path = resolve(base, f.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().is_empty() => {
            ck.at(f.span(), key, format!("{} is empty", path.display()));
            None
        }
        Ok(t) => {
            warn_if_readable_by_others(&path);
            Some(Secret::new(t.trim()))
        }
        Err(e) => {
            ck.at(
                f.span(),
                key,
                format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

fn check_chain(ck: &mut Checker, raw: RawChain) -> ChainConfig {
    let block_delay = match raw.block_delay {
        Some(d) if d.get_ref().as_secs() == 0 || d.get_ref().subsec_nanos() != 0 => {
            ck.at(
                d.span(),
                "chain.block_delay",
                "must be a whole number of seconds, at least 1s (Filecoin timestamps are seconds)",
            );
            None
        }
        Some(d) if **d.get_ref() > defaults::MAX_PROBE_DURATION => {
            ck.at(
                d.span(),
                "chain.block_delay",
                "is too long; at most 1h (mainnet's is 30s)",
            );
            None
        }
        Some(d) => Some(**d.get_ref()),
        None => None,
    };
    if let Some(n) = &raw.network {
        if n.get_ref().trim().is_empty() {
            ck.at(
                n.span(),
                "chain.network",
                "must not be empty; e.g. \"mainnet\" or \"calibrationnet\"",
            );
        }
    }
    ChainConfig {
        network: raw.network.map(|n| n.into_inner()),
        genesis: raw.genesis.map(|g| g.into_inner()),
        genesis_timestamp: raw.genesis_timestamp.map(|g| g.into_inner()),
        block_delay,
    }
}

fn check_probe(ck: &mut Checker, raw: RawProbe) -> ProbeConfig {
    // `None`: the value was wrong (and reported); the default stands in, and no rule that
    // compares it with another key is checked against a value nobody wrote.
    let mut duration = |v: Option<Spanned<HumanDuration>>, k: &str, default: Duration| match v {
        Some(v) if v.get_ref().is_zero() => {
            ck.at(
                v.span(),
                format!("probe.{k}"),
                "must be greater than zero, e.g. \"5s\"",
            );
            (default, false)
        }
        Some(v) if **v.get_ref() > defaults::MAX_PROBE_DURATION => {
            ck.at(
                v.span(),
                format!("probe.{k}"),
                format!(
                    "{} is too long; at most {}",
                    humantime::format_duration(**v.get_ref()),
                    humantime::format_duration(defaults::MAX_PROBE_DURATION)
                ),
            );
            (default, false)
        }
        Some(v) => (**v.get_ref(), true),
        None => (default, true),
    };
    let (interval, interval_ok) = duration(raw.interval, "interval", defaults::INTERVAL);
    let timeout_span = raw.timeout.as_ref().map(|t| t.span());
    let (timeout, timeout_ok) = duration(raw.timeout, "timeout", defaults::TIMEOUT);
    if interval_ok && timeout_ok && timeout > interval {
        let msg = format!(
            "{} is longer than probe.interval ({}); a probe must end before the next round starts",
            humantime::format_duration(timeout),
            humantime::format_duration(interval)
        );
        match timeout_span {
            Some(s) => ck.at(s, "probe.timeout", msg),
            None => ck.nowhere("probe.timeout", msg),
        }
    }
    let max_reply_bytes = match raw.max_reply_bytes {
        Some(v) if *v.get_ref() < 4096 => {
            ck.at(
                v.span(),
                "probe.max_reply_bytes",
                "must be at least 4096; a ChainHead reply is several KiB",
            );
            defaults::MAX_REPLY_BYTES
        }
        Some(v) => *v.get_ref(),
        None => defaults::MAX_REPLY_BYTES,
    };
    ProbeConfig {
        interval,
        timeout,
        max_reply_bytes: usize::try_from(max_reply_bytes).unwrap_or(usize::MAX),
        sync_checks: raw.sync_checks.unwrap_or(true),
        push: raw.push.unwrap_or(true),
    }
}

fn check_select(ck: &mut Checker, raw: RawSelect) -> SelectRules {
    let mut at_least_one = |v: Option<Spanned<u32>>, k: &str, default: u32| match v {
        Some(v) if *v.get_ref() == 0 => {
            ck.at(
                v.span(),
                format!("select.{k}"),
                "must be at least 1 (consecutive probes)",
            );
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let rise = at_least_one(raw.rise, "rise", defaults::RISE);
    let fall = at_least_one(raw.fall, "fall", defaults::FALL);
    let mut positive = |v: Option<Spanned<HumanDuration>>, k: &str, zero_ok: bool| match v {
        Some(v) if v.get_ref().is_zero() && !zero_ok => {
            ck.at(v.span(), format!("select.{k}"), "must be greater than zero");
            None
        }
        Some(v) if **v.get_ref() > defaults::MAX_SELECT_DURATION => {
            ck.at(
                v.span(),
                format!("select.{k}"),
                format!(
                    "{} is too long; at most {}",
                    humantime::format_duration(**v.get_ref()),
                    humantime::format_duration(defaults::MAX_SELECT_DURATION)
                ),
            );
            None
        }
        Some(v) => Some(**v.get_ref()),
        None => None,
    };
    let stale_after = positive(raw.stale_after, "stale_after", false);
    let max_clock_skew = positive(raw.max_clock_skew, "max_clock_skew", false);
    let lag_grace = positive(raw.lag_grace, "lag_grace", false);
    // Zero is meaningful here: no hold-down.
    let hold_down = positive(raw.hold_down, "hold_down", true);
    SelectRules {
        max_lag: raw.max_lag.map_or(defaults::MAX_LAG, |v| *v.get_ref()),
        rise,
        fall,
        stale_after,
        min_peers: raw.min_peers.unwrap_or(defaults::MIN_PEERS),
        max_clock_skew: max_clock_skew.unwrap_or(defaults::MAX_CLOCK_SKEW),
        lag_grace,
        hold_down,
        finality_stall_after: raw
            .finality_stall_after
            .unwrap_or(crate::decide::select::DEFAULT_FINALITY_STALL_AFTER),
        f3_max_behind: raw
            .f3_max_behind
            .unwrap_or(crate::decide::select::DEFAULT_F3_MAX_BEHIND),
    }
}

/// `[messages]`: `addresses`, Filecoin addresses (f0…, f1…, f3…, or t… on test networks),
/// each once, and/or `miner`, an ID address (f0…); anything else is a typo that would carry
/// nothing.
fn check_messages(ck: &mut Checker, raw: Spanned<RawMessages>) -> (Vec<String>, Option<String>) {
    let section = raw.span();
    let raw = raw.into_inner();
    let mut addresses = Vec::new();
    if let Some(list) = raw.addresses {
        let span = list.span();
        let mut seen = HashSet::new();
        for a in list.into_inner() {
            if !crate::apply::senders::is_address(&a) {
                ck.at(
                    span.clone(),
                    "messages.addresses",
                    format!(
                        "{:?} is not a Filecoin address (f0…, f1…, f3…)",
                        crate::text::inert(&a, 40)
                    ),
                );
            } else if !seen.insert(a.clone()) {
                ck.at(
                    span.clone(),
                    "messages.addresses",
                    format!("{a} is listed twice"),
                );
            } else {
                addresses.push(a);
            }
        }
        if seen.is_empty() {
            ck.at(
                span,
                "messages.addresses",
                "lists no address; name the worker, control and owner addresses, or drop [messages]",
            );
        }
    }
    let miner = raw.miner.and_then(|m| {
        let span = m.span();
        let m = m.into_inner();
        let id = crate::apply::senders::is_id(&m);
        if !id {
            ck.at(
                span,
                "messages.miner",
                format!(
                    "{:?} is not a miner ID address (f0…)",
                    crate::text::inert(&m, 40)
                ),
            );
        }
        id.then_some(m)
    });
    if addresses.is_empty()
        && miner.is_none()
        && !ck.problems.iter().any(|p| p.key.starts_with("messages."))
    {
        ck.at(
            section,
            "messages",
            "names neither addresses nor a miner; add one of them, or drop [messages]",
        );
    }
    (addresses, miner)
}

/// `[ha] track_file`: written by the nginx watch, so only with nginx as the target, and in a
/// directory chain-co can write (known offline when the directory exists here).
fn check_track_file(
    ck: &mut Checker,
    file: Spanned<PathBuf>,
    base: &Path,
    target: Option<&TargetConfig>,
) -> Option<PathBuf> {
    let path = resolve(base, file.get_ref());
    if !matches!(target, None | Some(TargetConfig::Nginx(_))) {
        ck.at(
            file.span(),
            "ha.track_file",
            "is written when nginx dies: it needs nginx as the target",
        );
        return None;
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let problem = if path.is_dir() {
        Some("is a directory; name the file keepalived's vrrp_track_file reads".to_string())
    } else if !dir.is_dir() {
        Some(format!("its directory {} does not exist", dir.display()))
    } else if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
        Some(format!(
            "its directory {} is not writable by this user (uid {}): chain-co replaces the file there",
            dir.display(),
            nix::unistd::Uid::effective()
        ))
    } else {
        None
    };
    match problem {
        Some(why) => {
            ck.at(file.span(), "ha.track_file", why);
            None
        }
        None => Some(path),
    }
}

fn check_ha(ck: &mut Checker, raw: RawHa, base: &Path) -> Option<crate::apply::ha::RoleSource> {
    use crate::apply::ha::RoleSource;
    match (raw.role_file, raw.vip) {
        (Some(f), None) => Some(RoleSource::File(resolve(base, f.get_ref()))),
        (None, Some(v)) => match v.get_ref().parse() {
            Ok(ip) => Some(RoleSource::Vip(ip)),
            Err(_) => {
                ck.at(
                    v.span(),
                    "ha.vip",
                    format!("{:?} is not an IP address", v.get_ref()),
                );
                None
            }
        },
        (Some(f), Some(_)) => {
            ck.at(
                f.span(),
                "ha.role_file",
                "set either role_file or vip, not both",
            );
            None
        }
        (None, None) => None,
    }
}

fn check_api(ck: &mut Checker, raw: RawApi, base: &Path) -> ApiConfig {
    let mut api = ApiConfig::default();
    if let Some(l) = &raw.listen {
        match l.get_ref().parse() {
            Ok(addr) => api.listen = addr,
            Err(_) => ck.at(
                l.span(),
                "api.listen",
                format!(
                    "{:?} is not an address; write e.g. \"127.0.0.1:9797\"",
                    l.get_ref()
                ),
            ),
        }
    }
    if let Some(f) = &raw.token_file {
        api.token = secret_file(ck, f, "api.token_file", base);
    }
    if let Some(f) = raw.state_file {
        api.state_file = resolve(base, f.get_ref());
    }
    api.allow_unauthenticated = raw.allow_unauthenticated.unwrap_or(false);
    api.allowed_hosts = raw
        .allowed_hosts
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if api.is_open() && !api.allow_unauthenticated {
        let msg = format!(
            "{} is reachable from the network and [api] has no token_file: anyone who reaches it could drain or prefer nodes and move the miners' traffic; set token_file, listen on 127.0.0.1, or set allow_unauthenticated = true to accept that",
            api.listen
        );
        match &raw.listen {
            Some(l) => ck.at(l.span(), "api.listen", msg),
            None => ck.nowhere("api.listen", msg),
        }
    }
    api
}

/// How the prober reaches a configured node.
impl From<&NodeConfig> for crate::probe::Target {
    fn from(n: &NodeConfig) -> Self {
        crate::probe::Target {
            name: n.name.clone(),
            endpoint: crate::probe::rpc::Endpoint {
                url: n.url.clone(),
                token: n.token.clone(),
                transport: n.transport.unwrap_or(Transport::Http),
            },
            transport_fixed: n.transport.is_some(),
            health_url: n.health_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        Config::parse(text, Path::new("/nonexistent"))
    }

    const MINIMAL: &str = r#"
[[node]]
name = "lotus-a"
url = "http://10.0.0.11:1234/rpc/v1"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].upstream, "10.0.0.11:1234");
        assert_eq!(c.probe.interval, Duration::from_secs(5));
        assert_eq!(c.probe.timeout, Duration::from_secs(3));
        assert_eq!(c.select.max_lag, 2);
        assert_eq!(c.select.rise, 2);
        assert_eq!(c.select.fall, 3);
        assert_eq!(
            c.nginx().expect("nginx").output,
            PathBuf::from("/etc/nginx/conf.d/filecoin-upstream.conf")
        );
        let n = c.nginx().expect("nginx is the default target");
        assert_eq!(n.reload, Reload::PidFile("/run/nginx.pid".into()));
        assert_eq!(n.template, DEFAULT_TEMPLATE);
    }

    #[test]
    fn messages_take_addresses_a_miner_or_both_and_refuse_anything_else_at_once() {
        let with = |section: &str| parse(&format!("{MINIMAL}[messages]\n{section}"));
        let c = with("miner = \"f01000\"\n").expect("a miner alone");
        assert_eq!(c.message_miner.as_deref(), Some("f01000"));
        assert!(c.message_addresses.is_empty() && c.carries_messages());
        let c = with("addresses = [\"f3abc\", \"t0101\"]\nminer = \"t01000\"\n").expect("both");
        assert_eq!(c.message_addresses, ["f3abc", "t0101"]);
        assert!(!parse(MINIMAL).expect("none").carries_messages());
        let problems =
            with("addresses = [\"f3abc\", \"f3abc\", \"0xdead\"]\nminer = \"f3notanid\"\n")
                .expect_err("refused");
        let words: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(words.len(), 3, "{words:#?}");
        assert!(
            words.iter().any(|w| w.contains("f3abc is listed twice")),
            "{words:#?}"
        );
        assert!(
            words
                .iter()
                .any(|w| w.contains("\"0xdead\" is not a Filecoin address")),
            "{words:#?}"
        );
        assert!(
            words
                .iter()
                .any(|w| w.contains("messages.miner") && w.contains("not a miner ID")),
            "{words:#?}"
        );
        let empty = with("").expect_err("an empty section");
        assert!(
            empty[0]
                .message
                .contains("names neither addresses nor a miner"),
            "{empty:?}"
        );
        assert!(
            with("miner = \"f01000\"\nworker = \"f0101\"\n").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn upstream_defaults_to_host_and_known_port() {
        let c = parse(
            r#"
[[node]]
name = "a"
url = "https://lotus.example/rpc/v1"
[[node]]
name = "b"
url = "http://[::1]:2345/rpc/v1"
"#,
        )
        .expect("valid");
        assert_eq!(c.nodes[0].upstream, "lotus.example:443");
        assert_eq!(c.nodes[1].upstream, "[::1]:2345");
    }

    #[test]
    fn one_target_only_and_haproxy_servers_name_nodes() {
        let base = "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n";
        let problems = parse(&format!(
            "{base}[haproxy]\nsocket = \"/run/h.sock\"\n[slb]\nregion = \"cn-hangzhou\"\nload_balancer_id = \"lb-1\"\n"
        ))
        .expect_err("two targets");
        for (key, line) in [("haproxy", 4), ("slb", 6)] {
            let p = problems
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{key}: {problems:?}"));
            assert_eq!(p.position.map(|p| p.0), Some(line), "{p:?}");
            assert!(
                p.message.contains("[haproxy] (line 4) and [slb] (line 6)"),
                "{p:?}"
            );
        }
        let problems = parse(&format!(
            "{base}[haproxy]\nsocket = \"/run/h.sock\"\nservers = {{ b = \"srv-b\" }}\n"
        ))
        .expect_err("unknown node");
        assert!(
            problems.iter().any(|p| p.key == "haproxy.servers.b"),
            "{problems:?}"
        );
        let c = parse(&format!(
            "{base}[haproxy]\nsocket = \"/run/h.sock\"\nservers = {{ a = \"srv-a\" }}\n"
        ))
        .expect("valid");
        assert!(matches!(c.target, TargetConfig::Haproxy(_)));
        assert!(c.nginx().is_none());
    }

    #[test]
    fn one_pid_file_serves_the_reload_the_sessions_and_the_watch() {
        let base = "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n";
        let c = parse(&format!(
            "{base}[nginx]\nreload = {{ pid_file = \"/run/n.pid\" }}\n"
        ))
        .expect("valid");
        assert_eq!(c.nginx().expect("nginx").pid_file, Path::new("/run/n.pid"));
        let c = parse(&format!(
            "{base}[nginx]\nreload = {{ cmd = [\"systemctl\", \"reload\", \"nginx\"] }}\npid_file = \"/run/x.pid\"\n[ha]\ntrack_file = \"/tmp/chain-co-nginx-down\"\n"
        ))
        .expect("valid");
        assert_eq!(c.nginx().expect("nginx").pid_file, Path::new("/run/x.pid"));
        assert_eq!(
            c.track_file.as_deref(),
            Some(Path::new("/tmp/chain-co-nginx-down"))
        );
        assert_eq!(
            parse(base).expect("valid").nginx().expect("nginx").pid_file,
            Path::new(defaults::PID_FILE)
        );
    }

    #[test]
    fn every_unknown_key_is_reported_at_once() {
        let text = "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\ncolour = 1\n\n[probe]\ninterval = \"1s\"\nintervall = \"2s\"\n\n[bogus]\nx = 1\ny = 2\n\n[select]\nrise = 0\n";
        let problems = parse(text).expect_err("bad");
        let lines: Vec<(usize, String)> = problems
            .iter()
            .map(|p| (p.position.map_or(0, |p| p.0), p.message.clone()))
            .collect();
        for (line, words) in [
            (4, "unknown field `colour`"),
            (8, "unknown field `intervall`"),
            (10, "unknown field `bogus`"),
            (15, "must be at least 1"),
        ] {
            assert!(
                lines.iter().any(|(l, m)| *l == line && m.contains(words)),
                "{words} on line {line}: {lines:?}"
            );
        }
    }

    #[test]
    fn durations_have_bounds_and_a_zero_timeout_says_only_that() {
        let base = "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n";
        let p = parse(&format!("{base}[probe]\ninterval = \"1e18s\"\n"))
            .or_else(|_| parse(&format!("{base}[probe]\ninterval = \"100000000h\"\n")));
        let problems = p.expect_err("too long");
        assert!(
            problems.iter().any(|p| p.key == "probe.interval"),
            "{problems:?}"
        );
        let problems =
            parse(&format!("{base}[select]\nlag_grace = \"400d\"\n")).expect_err("too long");
        assert!(
            problems.iter().any(|p| p.message.contains("too long")),
            "{problems:?}"
        );
        let problems = parse(&format!(
            "{base}[probe]\ninterval = \"1s\"\ntimeout = \"0s\"\n"
        ))
        .expect_err("zero");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("greater than zero"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_api_open_to_the_network_needs_a_token_or_an_explicit_yes() {
        let base = "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n";
        let problems =
            parse(&format!("{base}[api]\nlisten = \"0.0.0.0:9797\"\n")).expect_err("open");
        assert!(
            problems
                .iter()
                .any(|p| p.key == "api.listen" && p.message.contains("allow_unauthenticated")),
            "{problems:?}"
        );
        let c = parse(&format!(
            "{base}[api]\nlisten = \"0.0.0.0:9797\"\nallow_unauthenticated = true\n"
        ))
        .expect("allowed");
        assert!(c.api.is_open());
        assert!(parse(&format!("{base}[api]\nlisten = \"[::1]:9797\"\n")).is_ok());
    }

    /// One row per mistake: the text, the line the error must name, and words it must contain.
    #[test]
    fn every_mistake_names_line_and_key() {
        let rows: &[(&str, usize, &str)] = &[
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\ncolour = 1\n", 4, "unknown field `colour`"),
            ("[[node]]\nname = \"a b\"\nurl = \"http://x:1/\"\n", 2, "node[0].name"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[[node]]\nname = \"a\"\nurl = \"http://y:1/\"\n", 5, "unique"),
            ("[[node]]\nname = \"a\"\nurl = \"not a url\"\n", 3, "node[0].url"),
            ("[[node]]\nname = \"a\"\nurl = \"ftp://x/\"\n", 3, "scheme"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\ntoken_file = \"/nonexistent/tok\"\n", 4, "cannot read"),
            ("[[node]]\nname = \"a\"\nurl = \"http://a;b:1234/rpc/v1\"\n", 3, "not an nginx server address"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\ntoken_env = \"CHAIN_CO_TEST_UNSET_VAR\"\n", 4, "not set"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\nupstream = \"x:1; evil\"\n", 4, "node[0].upstream"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[probe]\ninterval = \"0s\"\n", 5, "probe.interval"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[probe]\ninterval = \"1s\"\ntimeout = \"2s\"\n", 6, "probe.timeout"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[probe]\ninterval = \"five\"\n", 5, "interval"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[select]\nrise = 0\n", 5, "select.rise"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[select]\nfall = 0\n", 5, "select.fall"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[nginx]\ntest_cmd = []\n", 5, "nginx.test_cmd"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[nginx]\nreload = { pid_file = \"/a\", cmd = [\"b\"] }\n", 5, "nginx.reload"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[nginx]\ntemplate = \"/nonexistent.tera\"\n", 5, "nginx.template"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[nginx]\nupstream_name = \"a b\"\n", 5, "nginx.upstream_name"),
            ("[select]\nmax_lag = -1\n[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n", 2, "max_lag"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[ha]\ntrack_file = \"/nonexistent-dir/nginx-down\"\n", 5, "does not exist"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[ha]\ntrack_file = \"/tmp\"\n", 5, "is a directory"),
            ("[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[nginx]\nreload = { pid_file = \"/a.pid\" }\npid_file = \"/b.pid\"\n", 6, "nginx.pid_file"),
        ];
        for (text, line, words) in rows {
            let problems = parse(text).expect_err(text);
            let p = problems
                .iter()
                .find(|p| p.key.contains(words) || p.message.contains(words))
                .unwrap_or_else(|| panic!("no problem mentions {words:?} in {problems:?}"));
            assert_eq!(p.position.map(|p| p.0), Some(*line), "{text}: {p:?}");
        }
    }

    #[test]
    fn api_info_in_the_lotus_form() {
        let rows = [
            (
                "TOK:/ip4/10.0.0.11/tcp/1234/http",
                "http://10.0.0.11:1234/rpc/v1",
                Some("TOK"),
            ),
            (
                "/ip4/10.0.0.11/tcp/1234/http",
                "http://10.0.0.11:1234/rpc/v1",
                None,
            ),
            (
                "TOK:/ip6/fd00::1/tcp/2345/http",
                "http://[fd00::1]:2345/rpc/v1",
                Some("TOK"),
            ),
            (
                "TOK:/dns/lotus.example/tcp/443/https",
                "https://lotus.example/rpc/v1",
                Some("TOK"),
            ),
            (
                "TOK:/dns4/fuhon.example/tcp/1234/ws",
                "ws://fuhon.example:1234/rpc/v1",
                Some("TOK"),
            ),
            (
                "TOK:/ip4/10.0.0.11/tcp/1234",
                "http://10.0.0.11:1234/rpc/v1",
                Some("TOK"),
            ),
            (
                "http://10.0.0.11:1234",
                "http://10.0.0.11:1234/rpc/v1",
                None,
            ),
            (
                "TOK:http://10.0.0.11:1234",
                "http://10.0.0.11:1234/rpc/v1",
                Some("TOK"),
            ),
        ];
        for (info, url, token) in rows {
            let (u, t) = parse_api_info(info).expect(info);
            assert_eq!(u.as_str(), url, "{info}");
            assert_eq!(t.as_deref(), token, "{info}");
        }
        for bad in [
            "TOK:/ip4/1.2.3.4/udp/1/quic",
            "TOK:/unix/x",
            "TOK:/ip4/1.2.3.4/tcp/x/http",
        ] {
            assert!(parse_api_info(bad).is_err(), "{bad}");
        }
        let c = parse("[[node]]\nname = \"a\"\napi_info = \"SECRET:/ip4/10.0.0.11/tcp/1234/ws\"\n")
            .expect("valid");
        assert_eq!(
            c.nodes[0].token.as_ref().map(Secret::expose),
            Some("SECRET")
        );
        assert_eq!(c.nodes[0].transport, Some(Transport::Ws));
        assert_eq!(c.nodes[0].upstream, "10.0.0.11:1234");
        // A broken api_info is reported without echoing it (it may hold a token).
        let problems =
            parse("[[node]]\nname = \"a\"\napi_info = \"SECRET:/ip4/x\"\n").expect_err("bad");
        assert!(!format!("{problems:?}").contains("SECRET"), "{problems:?}");
    }

    #[test]
    fn no_node_is_an_error() {
        let problems = parse("[probe]\ninterval = \"5s\"\n").expect_err("no node");
        assert!(problems[0].message.contains("no [[node]]"));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let problems = parse("[[node]]\nname = \"\"\nurl = \"x\"\n[select]\nrise = 0\nfall = 0\n")
            .expect_err("invalid");
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn tokens_are_read_from_file_and_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.token"), "secret-a\n").expect("write");
        std::env::set_var("CHAIN_CO_TEST_TOKEN_B", "secret-b");
        let c = Config::parse(
            "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\ntoken_file = \"a.token\"\n\
             [[node]]\nname = \"b\"\nurl = \"http://y:1/\"\ntoken_env = \"CHAIN_CO_TEST_TOKEN_B\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(
            c.nodes[0].token.as_ref().map(Secret::expose),
            Some("secret-a")
        );
        assert_eq!(
            c.nodes[1].token.as_ref().map(Secret::expose),
            Some("secret-b")
        );
        assert!(!format!("{c:?}").contains("secret-"));
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.tera"), "{% for x in %}").expect("write");
        let problems = Config::parse(
            "[[node]]\nname = \"a\"\nurl = \"http://x:1/\"\n[nginx]\ntemplate = \"bad.tera\"\n",
            dir.path(),
        )
        .expect_err("bad template");
        assert!(
            problems[0].message.contains("does not parse"),
            "{problems:?}"
        );
    }

    #[test]
    fn shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = Config::load(&path) {
                    panic!("{e}");
                }
            }
        }
    }
}
