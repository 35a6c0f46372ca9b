//! Applying a decision to the thing that carries traffic.
//!
//! The decision names nodes; a target needs addresses. [`UpstreamPlan`] is that translation,
//! shared by every target, and it cannot be empty: a decision without a primary yields no plan,
//! so no target can ever be handed "zero servers" (fail static is enforced by the type).

pub mod ha;
pub mod master;
pub mod messages;
pub(crate) mod pending_stream;
pub mod publish;
pub mod senders;
pub mod sessions;

pub mod haproxy;
pub mod nginx;
pub mod nginx_watch;
pub mod slb;

use serde::Serialize;

use crate::decide::select::Decision;
use haproxy::{Haproxy, HaproxyError};
use nginx::NginxConfig;
use nginx::{Nginx, NginxError};
use slb::{Slb, SlbError};

/// The one target a configuration names.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// `[nginx]`, or nothing: write an nginx upstream.
    Nginx(NginxConfig),
    /// `[haproxy]`: drive HAProxy's runtime API.
    Haproxy(haproxy::HaproxyConfig),
    /// `[slb]`: set Alibaba Cloud SLB weights.
    Slb(slb::SlbConfig),
}

/// Where the choice is applied: one module per target, behind this small enum.
pub enum Target {
    Nginx(Box<Nginx>),
    /// HAProxy, and the node names whose servers it sets.
    Haproxy(Haproxy, Vec<String>),
    /// Alibaba Cloud SLB, and the node names whose weights it sets.
    Slb(Slb, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Nginx(#[from] NginxError),
    #[error(transparent)]
    Haproxy(#[from] HaproxyError),
    #[error(transparent)]
    Slb(#[from] SlbError),
}

impl Target {
    /// The target a configuration names, for these nodes (HAProxy and SLB set every node's
    /// server).
    pub fn new(config: &TargetConfig, nodes: Vec<String>) -> Result<Target, ApplyError> {
        Ok(match config {
            TargetConfig::Slb(s) => Target::Slb(Slb::new(s.clone()), nodes),
            TargetConfig::Haproxy(h) => Target::Haproxy(Haproxy::new(h.clone()), nodes),
            TargetConfig::Nginx(n) => Target::Nginx(Box::new(Nginx::new(n.clone())?)),
        })
    }

    pub fn preflight(&self) -> Result<(), ApplyError> {
        match self {
            Target::Nginx(n) => Ok(n.preflight()?),
            Target::Haproxy(..) | Target::Slb(..) => Ok(()),
        }
    }

    /// A target other hosts share (a cloud load balancer): only the VRRP master may write it.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Target::Slb(..))
    }

    /// What an apply of `plan` would write or send, for `chain-co check`: nginx's rendered
    /// file, or the HAProxy commands, or the SLB weights. Nothing is written or sent.
    pub(crate) fn preview(&self, plan: &UpstreamPlan) -> Result<String, ApplyError> {
        match self {
            Target::Nginx(n) => Ok(n.render(plan)?),
            Target::Haproxy(h, nodes) => Ok(h.plan_text(plan, nodes)),
            Target::Slb(s, nodes) => Ok(s.plan_text(plan, nodes)),
        }
    }

    pub async fn apply(&mut self, plan: &UpstreamPlan) -> Result<Applied, ApplyError> {
        match self {
            Target::Nginx(n) => Ok(n.apply(plan).await?),
            Target::Haproxy(h, nodes) => Ok(h.apply(plan, nodes).await?),
            Target::Slb(s, nodes) => Ok(s.apply(plan, nodes).await?),
        }
    }

    /// How this target moves sessions off a node that stops being primary.
    pub fn session_mode(&self) -> SessionMode {
        match self {
            Target::Nginx(n) => n.session_mode(),
            Target::Haproxy(..) => SessionMode::HaproxyShutdown,
            Target::Slb(..) => SessionMode::ListenerDrain,
        }
    }

    /// Looks again at what decides the session mode (nginx's cgroup); `Some(why)` when
    /// sessions cannot be moved for a reason the operator can fix.
    pub(crate) fn refresh_session_mode(&mut self) -> Option<String> {
        match self {
            Target::Nginx(n) => n.refresh_session_mode(),
            _ => None,
        }
    }

    /// Ends the sessions the target holds to `server`, so that their clients reconnect to the
    /// primary. Returns how many were ended, where the target says. SLB: nothing to do here;
    /// the listener's connection draining decides (see the README).
    pub async fn move_sessions(
        &mut self,
        server: &UpstreamServer,
    ) -> Result<Option<usize>, ApplyError> {
        match self {
            Target::Nginx(n) => Ok(Some(n.move_sessions(&server.address).await?)),
            Target::Haproxy(h, _) => {
                h.shutdown_sessions(&server.name).await?;
                Ok(None)
            }
            Target::Slb(..) => Ok(None),
        }
    }

    /// The target's kind, for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Nginx(_) => "nginx",
            Target::Haproxy(..) => "haproxy",
            Target::Slb(..) => "slb",
        }
    }

    /// For logs: what is being written.
    pub fn describe(&self) -> String {
        match self {
            Target::Nginx(n) => format!("nginx {}", n.output().display()),
            Target::Haproxy(h, _) => h.describe(),
            Target::Slb(s, _) => s.describe(),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Applied {
    /// The target already carried this plan; nothing was touched.
    Unchanged,
    /// The target carries the plan now. `reloaded`: it took an nginx reload (a new primary).
    /// Without one: nginx's file was rewritten and validated for its next reload (only backups
    /// changed, and a reload would cut every session), or HAProxy's servers or SLB's weights
    /// were set, which never reloads anything.
    Changed { reloaded: bool },
    /// Not applied yet: held back by the reload throttle, applied at the next evaluation.
    Deferred,
}

/// The outcome of an apply, as shown in status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum ApplyRecord {
    /// Nothing was published: no healthy node (fail static).
    Held {
        reason: String,
    },
    /// This host is not the VRRP master: the shared target is left to the master.
    Standby {
        reason: String,
    },
    Unchanged,
    /// Held back by the reload throttle; applied at the next evaluation.
    Deferred,
    /// nginx was reloaded with a new upstream (a new primary).
    Reloaded,
    /// The target carries the new plan without a reload: nginx's file rewritten for its next
    /// reload (backups only: a reload would cut every session), HAProxy's servers or SLB's
    /// weights set.
    Changed,
    Failed {
        error: String,
    },
}

/// How sessions leave a node that stops being primary (shown in status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// nginx: its connections to the node are destroyed (netlink SOCK_DESTROY), clients
    /// reconnect to the new primary at once.
    Destroy,
    /// nginx without CAP_NET_ADMIN (or a kernel without socket destroy): the sessions end when
    /// the old workers reach `worker_shutdown_timeout`.
    WorkerShutdownTimeout,
    /// HAProxy: `shutdown sessions server` on the runtime API.
    HaproxyShutdown,
    /// Alibaba SLB: the listener's connection draining decides.
    ListenerDrain,
    /// `[nginx] move_sessions = false`.
    Off,
    /// nginx has no cgroup of its own (not started as a unit of its own), or the kernel does
    /// not report sockets' cgroups: no session is moved (they end at `worker_shutdown_timeout`),
    /// since chain-co could not tell nginx's connections from a direct client's. `/status`
    /// notices say why.
    NoNginxCgroup,
}

impl std::fmt::Display for SessionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionMode::Destroy => "destroy (SOCK_DESTROY)",
            SessionMode::WorkerShutdownTimeout => "worker_shutdown_timeout (no CAP_NET_ADMIN)",
            SessionMode::HaproxyShutdown => "haproxy shutdown sessions",
            SessionMode::ListenerDrain => "listener connection drain",
            SessionMode::Off => "off",
            SessionMode::NoNginxCgroup => {
                "worker_shutdown_timeout (nginx has no cgroup of its own to tell its connections apart)"
            }
        })
    }
}

/// One server of the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamServer {
    pub name: String,
    pub address: String,
    pub backup: bool,
}

/// The servers to publish: the primary first, then the backups in rank order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamPlan {
    pub primary: UpstreamServer,
    pub backups: Vec<UpstreamServer>,
}

impl UpstreamPlan {
    /// `None` when the decision has no primary: there is nothing safe to publish. `nodes` are
    /// (name, upstream address) in config order.
    pub(crate) fn from_decision(
        decision: &Decision,
        nodes: &[(String, String)],
    ) -> Option<UpstreamPlan> {
        let server = |name: &str, backup: bool| {
            nodes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(n, address)| UpstreamServer {
                    name: n.clone(),
                    address: address.clone(),
                    backup,
                })
        };
        let primary = server(decision.primary.as_deref()?, false)?;
        // Backups in config order, not rank order: nginx balances over its backups anyway, and
        // a rank that changes with every probe (a flapping node) must not change the file.
        let backups = nodes
            .iter()
            .filter(|(n, _)| decision.backups.contains(n))
            .filter_map(|(n, _)| server(n, true))
            .collect();
        Some(UpstreamPlan { primary, backups })
    }

    pub fn servers(&self) -> impl Iterator<Item = &UpstreamServer> {
        std::iter::once(&self.primary).chain(&self.backups)
    }
}
