//! What `select` gives: the [`Decision`] with a verdict for every node, and the
//! [`SelectState`] it remembers for the next evaluation; `finish` builds both.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::exclusion::Exclusion;
use super::hysteresis::Track;
use super::warning::Warning;
use crate::probe::f3::TipsetRef;

/// What [`select`] remembers between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectState {
    pub primary: Option<String>,
    pub tracks: BTreeMap<String, Track>,
    /// Recent tipset keys of the best chain, by height: a node whose head at a height differs
    /// is on another fork.
    pub best_chain: BTreeMap<u64, Vec<String>>,
    /// The best height when the current implementation split was first seen.
    pub split_since: Option<u64>,
    /// Each heavier best head seen, with when it was first seen: a node whose head is lighter
    /// than an entry has been behind since that entry's time.
    pub best_seen: Vec<(u128, SystemTime)>,
    /// The tipsets the pool finalized, by epoch (recent ones): finality is never reverted, so a
    /// node holding another tipset at one of these epochs is on a dead fork.
    pub finalized: BTreeMap<u64, Vec<String>>,
    /// Per node, the last few tipsets its F3 said it finalized: two nodes asked a moment apart
    /// may be one certificate apart, and still corroborate each other.
    pub f3_seen: BTreeMap<String, Vec<TipsetRef>>,
    /// When each recent head key was first reported by any node: a node is behind a head
    /// since the head was first seen, even if it was confirmed only later.
    pub first_seen: BTreeMap<Vec<String>, SystemTime>,
    /// Implementations whose headers have verified this session.
    pub verified_impls: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Backup,
    Excluded,
}

/// What a node's head proved this round, for code; [`NodeVerdict::headers`] has the words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofState {
    Verified,
    /// Not checked, or a failure nothing proves: judged as without the check.
    Unverified,
    /// A proven failure, which excludes the node.
    Failed,
}

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVerdict {
    pub name: String,
    pub implementation: Option<String>,
    pub version: Option<String>,
    pub network: Option<String>,
    pub role: Role,
    /// Up after hysteresis: in the upstream.
    pub healthy: bool,
    pub height: Option<u64>,
    /// Epochs below the best head.
    pub lag: Option<u64>,
    /// Wall-clock age of the node's head block.
    #[serde(with = "crate::duration::opt")]
    pub head_age: Option<Duration>,
    /// How long the node has been behind the best head (by weight).
    #[serde(with = "crate::duration::opt", default)]
    pub behind: Option<Duration>,
    /// Whether its head came from a ChainNotify push.
    #[serde(default)]
    pub via_push: bool,
    /// Optional methods the node lacks, whose checks are off for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<crate::probe::OptionalMethod>,
    /// Flap damping: how long the node is still kept from becoming primary.
    #[serde(with = "crate::duration::opt", default)]
    pub held_for: Option<Duration>,
    /// The epoch the node says is final (its F3 certificate's, else `ChainGetFinalizedTipSet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_epoch: Option<u64>,
    /// Whether its head's block headers hash to their CIDs: "verified", "unverified: why"
    /// or "failed: why".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// The same, for code (metrics); not serialized: the API carries the words.
    #[serde(skip)]
    pub proof: Option<ProofState>,
    /// The node's F3 in words: finalized epoch and instance, down, or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f3: Option<String>,
    /// What the daemon says about itself (its health endpoint, `NodeStatus`), in its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_word: Option<crate::probe::health::OwnWord>,
    /// Whether it accepts the clients' token (`[chain] client_token_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<crate::probe::health::ClientToken>,
    pub track: Track,
    /// Why, in words an operator can act on.
    pub reason: String,
    /// The typed verdict behind `reason` when this round's probe was bad; code matches on
    /// this, never on the words. Not serialized: the API carries the words.
    #[serde(skip)]
    pub exclusion: Option<Exclusion>,
}

impl NodeVerdict {
    /// On the pool's chain this round, at worst late (lagging, stale, behind): what it holds
    /// belongs to this network. A node on another network, another genesis, a fork, or one
    /// that misreports is not: its messages could be another chain's, replayed here.
    pub fn on_pool_chain(&self) -> bool {
        self.height.is_some()
            && self.exclusion.as_ref().is_none_or(|e| {
                matches!(
                    e,
                    Exclusion::Lagging { .. } | Exclusion::Stale { .. } | Exclusion::Behind { .. }
                )
            })
    }
}

/// A change of primary, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Switch {
    pub from: Option<String>,
    pub to: Option<String>,
    pub why: String,
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub primary: Option<String>,
    pub backups: Vec<String>,
    /// Every node, in config order.
    pub nodes: Vec<NodeVerdict>,
    pub best_height: Option<u64>,
    /// The epoch the chain should be at now, by its genesis and block delay.
    pub expected_height: Option<u64>,
    /// The network the pool is judged against.
    pub network: Option<String>,
    /// Set when the primary changed in this round.
    pub switch: Option<Switch>,
    /// Pool-wide trouble an operator must see: stale pool, network tie, implementation split,
    /// finality stalled. Each has a kind (its identity across rounds) and words.
    pub warnings: Vec<Warning>,
    /// The newest tipset at least two nodes say F3 finalized; `None` in a pool without F3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized: Option<TipsetRef>,
    /// The best head is older than stale_after by the wall clock (one of the warnings, as a
    /// value for alerts).
    #[serde(default)]
    pub pool_stale: bool,
    /// Implementations have disagreed on the chain for a few epochs (likewise).
    #[serde(default)]
    pub implementation_split: bool,
    /// The lag_grace in force (configured, or derived from the block delay).
    #[serde(with = "crate::duration::plain")]
    pub lag_grace: Duration,
    /// Per node still up but behind the best head: the moment its lag_grace ends, counted from
    /// when the best head was first seen. The loop decides again then, asking the node afresh:
    /// an answer from before that moment cannot show that the grace has passed.
    #[serde(skip)]
    pub grace_ends: BTreeMap<String, SystemTime>,
}

#[cfg(test)]
impl Decision {
    pub(crate) fn verdict(&self, name: &str) -> Option<&NodeVerdict> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The decision, the switch with its reason, and what to remember for the next round.
pub(super) fn finish(cx: Context) -> (Decision, SelectState) {
    let prev = cx.prev;
    let primary_name = cx.primary.map(|i| cx.nodes[i].name.clone());
    let switch = (primary_name != prev.primary).then(|| {
        let why = match &prev.primary {
            None => "no primary before".to_string(),
            Some(_) if cx.preferred.is_some_and(|(i, _)| Some(i) == cx.primary) => {
                "preferred by the operator".to_string()
            }
            Some(old) if cx.overrides.drained.contains_key(old) => {
                format!("{old} was drained by the operator")
            }
            Some(old) => match cx.nodes.iter().find(|n| &n.name == old) {
                Some(v) => format!("{old} went down: {}", v.reason),
                None => format!("{old} is no longer configured"),
            },
        };
        Switch {
            from: prev.primary.clone(),
            to: primary_name.clone(),
            why: if primary_name.is_none() {
                format!("{why}; no healthy node left, keeping the last published upstream")
            } else {
                why
            },
        }
    });
    let grace_ends = cx.grace_ends();
    let backups = cx
        .backups
        .iter()
        .map(|&b| cx.nodes[b].name.clone())
        .collect();
    let tracks = cx
        .observations
        .iter()
        .zip(cx.work)
        .map(|(o, w)| (o.node.clone(), w.track))
        .collect();
    let decision = Decision {
        // Rule 8: with no node up there is no primary, and the caller fails static.
        primary: primary_name.clone(),
        backups,
        nodes: cx.nodes,
        best_height: cx.best.map(|b| b.height),
        expected_height: cx.expected_height,
        network: cx.exp.network.clone(),
        switch,
        warnings: cx.warnings,
        finalized: cx.finalized.clone(),
        pool_stale: cx.pool_stale,
        implementation_split: cx.implementation_split,
        lag_grace: cx.limits.lag_grace,
        grace_ends,
    };
    // Without a new primary, remember the old one: when it comes back up first, it is still
    // the one nginx has, and keeping it avoids a needless reload.
    let next = SelectState {
        primary: primary_name.or_else(|| prev.primary.clone()),
        tracks,
        best_chain: cx.best_chain,
        split_since: cx.split_since,
        best_seen: cx.best_seen,
        finalized: cx.finalized_map,
        f3_seen: cx.f3_seen,
        verified_impls: cx.verified_impls,
        first_seen: cx.first_seen,
    };
    (decision, next)
}
