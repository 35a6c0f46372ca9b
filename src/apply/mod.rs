//! Applying a decision to the thing that carries traffic.
//!
//! The decision names nodes; a target needs addresses. [`UpstreamPlan`] is that translation,
//! shared by every target, and it cannot be empty: a decision without a primary yields no plan,
//! so no target can ever be handed "zero servers" (fail static is enforced by the type).

pub mod nginx;

use serde::Serialize;

use crate::config::NodeConfig;
use crate::select::Decision;

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
    /// `None` when the decision has no primary: there is nothing safe to publish.
    pub fn from_decision(decision: &Decision, nodes: &[NodeConfig]) -> Option<UpstreamPlan> {
        let server = |name: &str, backup: bool| {
            nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| UpstreamServer {
                    name: n.name.clone(),
                    address: n.upstream.clone(),
                    backup,
                })
        };
        let primary = server(decision.primary.as_deref()?, false)?;
        let backups = decision
            .backups
            .iter()
            .filter_map(|b| server(b, true))
            .collect();
        Some(UpstreamPlan { primary, backups })
    }

    pub fn servers(&self) -> impl Iterator<Item = &UpstreamServer> {
        std::iter::once(&self.primary).chain(&self.backups)
    }
}
