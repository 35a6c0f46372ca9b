//! Publishing the choice to HAProxy through its runtime API: no reload, no dropped connection.
//!
//! HAProxy cannot turn a server into a `backup` at run time, so the roles map to server
//! states: the primary is `ready` (with `primary_weight`), the other healthy nodes `drain`
//! (kept warm and checked, no new requests), unhealthy nodes `maint`. The new primary is made
//! ready before the old one is drained, so there is never a moment without a ready server. The
//! trade-off against nginx: between a failure and chain-co's next probe, HAProxy has no backup
//! to retry on (`option redispatch` only retries among ready servers).
//!
//! Commands go over the stats socket (`stats socket ... level admin`), one per connection, and
//! the result is read back with `show servers state` and compared.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use serde::Deserialize;
use toml::Spanned;

use super::Applied;
use super::UpstreamPlan;
use crate::problems::{resolve, Checker};
use std::path::Path;

/// `[haproxy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// The admin stats socket.
    pub socket: PathBuf,
    pub backend: String,
    /// Node name → HAProxy server name, where they differ.
    pub servers: BTreeMap<String, String>,
    pub primary_weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaproxyError {
    #[error("HAProxy runtime API at {socket}: {message}")]
    Socket { socket: String, message: String },
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error(
        "HAProxy backend {backend} has no server {server} (node {node}); add it to haproxy.cfg"
    )]
    NoServer {
        backend: String,
        server: String,
        node: String,
    },
    #[error("after the change HAProxy reports {server} as {found}, not {wanted}")]
    NotApplied {
        server: String,
        found: String,
        wanted: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ready,
    Drain,
    Maint,
}

impl Want {
    fn word(&self) -> &'static str {
        match self {
            Want::Ready => "ready",
            Want::Drain => "drain",
            Want::Maint => "maint",
        }
    }
}

/// One row of `show servers state`: admin state bits and user weight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerState {
    admin: u32,
    weight: u32,
}

impl ServerState {
    /// srv_admin_state bits (haproxy include/haproxy/server-t.h): 0x01 forced maintenance,
    /// 0x08 forced drain.
    fn is(&self) -> Want {
        if self.admin & 0x01 != 0 {
            Want::Maint
        } else if self.admin & 0x08 != 0 {
            Want::Drain
        } else {
            Want::Ready
        }
    }
}

#[derive(Debug, Deserialize)]
// Unknown keys are found by config::unknown, all at once with their lines.
pub(crate) struct RawHaproxy {
    socket: PathBuf,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    servers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    primary_weight: Option<u32>,
}

/// `[haproxy]`, checked against the configured node names.
pub(crate) fn check_haproxy(
    ck: &mut Checker,
    raw: Spanned<RawHaproxy>,
    base: &Path,
    nodes: &[&str],
) -> HaproxyConfig {
    let span = raw.span();
    let h = raw.into_inner();
    // A server mapping for a node that is not configured is a typo that would leave that
    // node's HAProxy server unmanaged.
    for node in h.servers.keys() {
        if !nodes.contains(&node.as_str()) {
            ck.at(
                span.clone(),
                format!("haproxy.servers.{node}"),
                format!(
                    "no [[node]] is named {node:?}; map configured node names to HAProxy servers"
                ),
            );
        }
    }
    HaproxyConfig {
        socket: resolve(base, &h.socket),
        backend: h.backend.unwrap_or_else(|| "filecoin".into()),
        servers: h.servers,
        primary_weight: h.primary_weight.unwrap_or(100).clamp(1, 256),
    }
}

pub struct Haproxy {
    cfg: HaproxyConfig,
}

impl Haproxy {
    pub fn new(cfg: HaproxyConfig) -> Haproxy {
        Haproxy { cfg }
    }

    pub fn describe(&self) -> String {
        format!(
            "haproxy {} backend {}",
            self.cfg.socket.display(),
            self.cfg.backend
        )
    }

    fn server<'a>(&'a self, node: &'a str) -> &'a str {
        self.cfg.servers.get(node).map_or(node, String::as_str)
    }

    async fn command(&self, command: &str) -> Result<String, HaproxyError> {
        let socket_err = |message: String| HaproxyError::Socket {
            socket: self.cfg.socket.display().to_string(),
            message,
        };
        let exchange = async {
            let mut s = UnixStream::connect(&self.cfg.socket).await?;
            s.write_all(format!("{command}\n").as_bytes()).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(Duration::from_secs(3), exchange).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(socket_err(e.to_string())),
            Err(_) => Err(socket_err("no answer within 3s".into())),
        }
    }

    /// Server name → state, from `show servers state BACKEND`.
    async fn states(&self) -> Result<BTreeMap<String, ServerState>, HaproxyError> {
        let command = format!("show servers state {}", self.cfg.backend);
        let out = self.command(&command).await?;
        let mut states = BTreeMap::new();
        for line in out
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight …
            if f.len() < 8 {
                continue;
            }
            let (Ok(admin), Ok(weight)) = (f[6].parse(), f[7].parse()) else {
                continue;
            };
            states.insert(f[3].to_string(), ServerState { admin, weight });
        }
        if states.is_empty() {
            return Err(HaproxyError::Refused {
                command,
                answer: out.trim().to_string(),
            });
        }
        Ok(states)
    }

    async fn set(&self, server: &str, what: &str) -> Result<(), HaproxyError> {
        let command = format!("set server {}/{server} {what}", self.cfg.backend);
        let answer = self.command(&command).await?;
        // Success is an empty answer (or a notice); errors say so.
        let a = answer.trim();
        if a.is_empty()
            || !(a.contains("No such")
                || a.contains("rror")
                || a.contains("denied")
                || a.contains("Unknown"))
        {
            Ok(())
        } else {
            Err(HaproxyError::Refused {
                command,
                answer: a.to_string(),
            })
        }
    }

    /// Ends every session on `node`'s server: HAProxy never moves an established session by
    /// itself (state changes only steer new ones), so without this a miner's websocket would
    /// stay on the old primary until `timeout tunnel`.
    pub(crate) async fn shutdown_sessions(&self, node: &str) -> Result<(), HaproxyError> {
        let command = format!(
            "shutdown sessions server {}/{}",
            self.cfg.backend,
            self.server(node)
        );
        let answer = self.command(&command).await?;
        let a = answer.trim();
        if a.is_empty() {
            Ok(())
        } else {
            Err(HaproxyError::Refused {
                command,
                answer: a.to_string(),
            })
        }
    }

    /// The runtime API commands a plan means, for `chain-co check` (nothing is sent).
    pub(crate) fn plan_text(&self, plan: &UpstreamPlan, nodes: &[String]) -> String {
        let mut out = format!("# HAProxy runtime API ({}):\n", self.cfg.socket.display());
        let b = &self.cfg.backend;
        let primary = self.server(&plan.primary.name);
        out.push_str(&format!(
            "set server {b}/{primary} weight {}\n",
            self.cfg.primary_weight
        ));
        out.push_str(&format!("set server {b}/{primary} state ready\n"));
        for node in nodes.iter().filter(|n| **n != plan.primary.name) {
            let state = if plan.backups.iter().any(|x| &x.name == node) {
                "drain"
            } else {
                "maint"
            };
            out.push_str(&format!(
                "set server {b}/{} state {state}\n",
                self.server(node)
            ));
        }
        out
    }

    /// Sets every configured node's server to its role; `Unchanged` when all already are.
    pub async fn apply(
        &mut self,
        plan: &UpstreamPlan,
        nodes: &[String],
    ) -> Result<Applied, HaproxyError> {
        let current = self.states().await?;
        let want = |node: &str| {
            if plan.primary.name == node {
                Want::Ready
            } else if plan.backups.iter().any(|b| b.name == node) {
                Want::Drain
            } else {
                Want::Maint
            }
        };
        for node in nodes {
            let server = self.server(node);
            if !current.contains_key(server) {
                return Err(HaproxyError::NoServer {
                    backend: self.cfg.backend.clone(),
                    server: server.to_string(),
                    node: node.clone(),
                });
            }
        }
        let primary = self.server(&plan.primary.name).to_string();
        let in_place = nodes.iter().all(|n| {
            let s = &current[self.server(n)];
            s.is() == want(n) && (want(n) != Want::Ready || s.weight == self.cfg.primary_weight)
        });
        if in_place {
            return Ok(Applied::Unchanged);
        }
        // The new primary first, so that some server is always ready.
        self.set(&primary, &format!("weight {}", self.cfg.primary_weight))
            .await?;
        self.set(&primary, "state ready").await?;
        for node in nodes.iter().filter(|n| **n != plan.primary.name) {
            self.set(self.server(node), &format!("state {}", want(node).word()))
                .await?;
        }
        let after = self.states().await?;
        for node in nodes {
            let server = self.server(node);
            let found = after.get(server).map(ServerState::is);
            if found != Some(want(node)) {
                return Err(HaproxyError::NotApplied {
                    server: server.to_string(),
                    found: found.map_or("missing", |w| w.word()).to_string(),
                    wanted: want(node).word().to_string(),
                });
            }
        }
        Ok(Applied::Changed { reloaded: false })
    }
}
