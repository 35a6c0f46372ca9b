//! What one round found and did: the types the loop publishes and everything else reads (the
//! status API, metrics, the demo, `check`). A module of its own so that none of its readers
//! has to import the loop that writes it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::apply::ha::VrrpRole;
use crate::apply::SessionMode;
use crate::decide::select::Decision;
use crate::probe::push::{PushState, PushStatus};
use crate::probe::Round;

pub use crate::apply::ApplyRecord;

/// What one round found and did; sent to watchers (the API, the demo).
#[derive(Debug, Clone)]
pub struct Report {
    pub round: u64,
    pub at: SystemTime,
    pub decision: Decision,
    /// The kind of target applied to: `nginx`, `haproxy` or `slb`.
    pub target: &'static str,
    pub apply: ApplyRecord,
    /// The last apply that reloaded or failed, and when.
    pub last_apply: Option<(SystemTime, ApplyRecord)>,
    /// Per node: probe latency and error text.
    pub probes: BTreeMap<String, (Duration, Option<String>)>,
    pub primary_since: Option<SystemTime>,
    pub reloads: u64,
    pub failed_applies: u64,
    pub switches: u64,
    /// This host's VRRP role, when in a keepalived pair.
    pub role: Option<VrrpRole>,
    /// Per node: the ChainNotify subscription's state and the age of its last pushed head.
    pub push: BTreeMap<String, (PushStatus, Option<Duration>)>,
    /// How sessions leave a node that stops being primary.
    pub session_mode: SessionMode,
    /// Connections ended this round to move sessions off nodes that lost their place.
    pub sessions_moved: u64,
    /// Session moves waiting for a drain's grace period: node and seconds left.
    pub pending_moves: Vec<(String, Duration)>,
}

/// What one node's detail lines show: its F3, what its headers proved, and its own word.
pub(crate) struct NodeDetail<'a> {
    pub name: &'a str,
    pub f3: Option<&'a str>,
    pub headers: Option<&'a str>,
    pub own: Option<&'a crate::probe::health::OwnWord>,
}

impl<'a> NodeDetail<'a> {
    pub(crate) fn of(v: &'a crate::decide::select::NodeVerdict) -> NodeDetail<'a> {
        NodeDetail {
            name: &v.name,
            f3: v.f3.as_deref(),
            headers: v.headers.as_deref(),
            own: v.own_word.as_ref(),
        }
    }
}

/// The lines under the node table in `check` and `status`: each node's F3, its headers when
/// they are not simply verified, and what the daemon says about itself.
pub(crate) fn node_detail_lines<'a>(nodes: impl Iterator<Item = NodeDetail<'a>>) -> String {
    let mut out = String::new();
    for n in nodes {
        if let Some(f3) = n.f3 {
            out.push_str(&format!("  {}: {f3}\n", n.name));
        }
        if let Some(h) = n.headers.filter(|h| *h != "verified") {
            out.push_str(&format!("  {} headers: {h}\n", n.name));
        }
        if let Some(own) = n.own.filter(|w| !w.is_empty()) {
            out.push_str(&format!("  {} says: {}\n", n.name, own.summary()));
        }
    }
    out
}

/// Per node: the probe's latency and its error in words.
pub(crate) fn probe_summary(round: &Round) -> BTreeMap<String, (Duration, Option<String>)> {
    round
        .observations
        .iter()
        .zip(&round.latencies)
        .map(|(o, l)| {
            (
                o.node.clone(),
                (*l, o.result.as_ref().err().map(|e| e.to_string())),
            )
        })
        .collect()
}

/// Per node with a subscription: its state and the age of its last pushed head at `now`.
pub(crate) fn push_summary(
    round: &Round,
    pushed: &BTreeMap<String, PushState>,
    now: SystemTime,
) -> BTreeMap<String, (PushStatus, Option<Duration>)> {
    round
        .observations
        .iter()
        .filter_map(|o| {
            pushed.get(&o.node).map(|p| {
                let age = p
                    .received_at
                    .map(|t| now.duration_since(t).unwrap_or_default());
                (o.node.clone(), (p.status.clone(), age))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::rpc::RpcError;
    use crate::probe::Observation;

    #[test]
    fn summaries_name_every_node_with_its_latency_error_and_push_age() {
        let round = Round {
            at: SystemTime::UNIX_EPOCH,
            observations: vec![
                Observation::new("a", Err(RpcError::Timeout(Duration::from_secs(3)))),
                Observation::new("b", Err(RpcError::Connect("refused".into()))),
            ],
            latencies: vec![Duration::from_millis(3000), Duration::from_millis(1)],
            took: Duration::ZERO,
            tokens_differ: false,
        };
        let probes = probe_summary(&round);
        assert_eq!(probes["a"].0, Duration::from_millis(3000));
        assert_eq!(probes["a"].1.as_deref(), Some("timeout after 3s"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let pushed = BTreeMap::from([(
            "b".to_string(),
            PushState {
                status: PushStatus::Subscribed,
                head: None,
                received_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(90)),
            },
        )]);
        let push = push_summary(&round, &pushed, now);
        assert_eq!(push.len(), 1);
        assert_eq!(
            push["b"],
            (PushStatus::Subscribed, Some(Duration::from_secs(10)))
        );
    }
}
