//! The decision: which daemon nginx sends traffic to, which ones stand by, and why.
//!
//! [`select`] is a pure function — `(rules, previous state, observations, now) → (decision, next
//! state)` — with no clock reads, no I/O and no randomness, so every situation is a row in a table
//! test. Everything about *which node* lives here: the best head, lag, rise/fall hysteresis, the
//! sticky primary and tie-breaking.
//!
//! The rules, in the order they apply:
//! 1. **Identity**: a node must be on the expected network (`[chain] network`, else the
//!    majority of the pool; an even split is refused) with the expected genesis. A node on
//!    another chain is excluded whatever its height.
//! 2. **Rogue heads**: a head whose timestamp is ahead of the wall clock by more than
//!    `max_clock_skew` is excluded. A head far above every other node must be corroborated: by a
//!    second node near it, or by a weight no faster-growing than the pool's own chain.
//! 3. **The best head** is the one with the greatest parent weight (Filecoin's fork choice is by
//!    weight, not height); ties go to the greater height, then to the node listed first in the
//!    config, so that equal nodes never flip.
//! 4. A probe is *good* when the node is at most `max_lag` epochs below the best head, is not on
//!    a lighter fork for more than `max_lag` epochs, and its head is younger than `stale_after`
//!    by the wall clock. Anything else is *bad*, with the reason in words.
//! 5. **Hysteresis** (as in pingora's health checks): a node comes *up* after `rise` consecutive
//!    good probes and goes *down* after `fall` consecutive bad ones. Nodes start down, so a
//!    restart never publishes a node that has not proven itself.
//! 6. **The primary is sticky**: it stays while it is up, even when another node is a block
//!    ahead. Moving traffic costs the miner its websockets; only a primary that went down is
//!    replaced, by the best-ranked up node that has peers (`min_peers`) and is not catching up.
//! 7. **Diversity**: the first backup runs another implementation than the primary when one is
//!    up, so that one implementation's bug cannot take both.
//! 8. With no node up, there is no primary: the caller keeps what it published last (fail
//!    static). Pool-wide trouble — a stale pool, an even network split, implementations that
//!    disagree on the chain — is reported in `warnings`.
//!
//! [`select`] runs these as small named steps over one context, in this order:
//! `expect_chain` → `screen_identity` → `judge_finality` → `expose_misreports` →
//! `corroborate_leader` → `confirm_heads` → `find_best_head` → `remember_history` →
//! `judge_nodes` → `apply_hysteresis` (with flap damping) → `apply_operator_marks` →
//! `choose_primary` → `choose_backups` → `report_pool_warnings` → `report_finality` →
//! `finish`. Verdicts are [`Exclusion`] values; their words come from `Display`; warnings are
//! [`Warning`]s with a kind.
//!
//! **Trust** (`trust.rs`, since F3 and since one lying daemon could take the primary): the
//! pool's finalized tipset is the newest one that at least two nodes' F3 reports; a node whose
//! chain or finality conflicts with it is excluded before weight is looked at. A head that
//! only one node reports is *unconfirmed*: it never makes others "behind" and never outranks
//! a head two nodes share, until a second node reports it or the clock shows every other node
//! late (their heads lower, and the lone head's epoch older than the propagation cutoff). A
//! node reporting a tipset the majority reports with another weight or height is excluded as
//! misreporting. One node can never, alone, take the primary or exclude another node.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::decide::overrides::Overrides;
use crate::probe::f3::TipsetRef;
use crate::probe::rpc::{Head, Identity, RpcError};
use crate::probe::Observation;

mod trust;
mod warning;
pub use warning::{Warning, WarningGate, WarningKind};

/// What chain the pool must be on, and its clock, from `[chain]`. Unset values come from the
/// built-in table of known networks, or from the nodes themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainConfig {
    /// Expected `StateNetworkName`; `None`: the majority of the pool.
    pub network: Option<String>,
    /// Expected genesis block CID; `None`: the known one for `network`, else the majority.
    pub genesis: Option<String>,
    pub genesis_timestamp: Option<u64>,
    pub block_delay: Option<Duration>,
}

/// A synced mainnet node has dozens of peers; none at all means it is cut off.
pub(crate) const DEFAULT_MIN_PEERS: u64 = 1;
/// Lotus accepts blocks up to 1 s ahead of its clock (AllowableClockDriftSecs); a few seconds
/// more cover the skew between chain-co's host and the daemons'.
pub(crate) const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(3);

/// The rules of [`select`], from the `[select]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectRules {
    /// Epochs behind the best head that still count as healthy.
    pub max_lag: u64,
    /// Consecutive good probes before a node is used.
    pub rise: u32,
    /// Consecutive bad probes before a node is dropped.
    pub fall: u32,
    /// A head older than this by the wall clock is stale; `None`: five block delays.
    pub stale_after: Option<Duration>,
    /// Fewer peers than this and a node is not promoted to primary.
    pub min_peers: u64,
    /// How far ahead of chain-co's clock a head's timestamp may be.
    pub max_clock_skew: Duration,
    /// How long a node may stay behind the best head (by weight) before it is dropped at once;
    /// `None`: 0.4 block delays (12 s on mainnet: Lotus's PropagationDelaySecs of 10 s, the
    /// time a healthy node may legitimately take to receive and accept a tipset, plus margin).
    pub lag_grace: Option<Duration>,
    /// Flap damping: how long a node that was dropped must stay up before it may become
    /// primary again, doubled for each further drop within [`FLAP_WINDOW`]; `None`: two block
    /// delays; zero: no hold-down.
    pub hold_down: Option<Duration>,
    /// Epochs the pool's finalized tipset may trail its best head before "finality stalled" is
    /// said (F3 normally trails by a few; it has stalled network-wide several times).
    pub finality_stall_after: u64,
    /// F3 instances a node may trail the pool's newest before a warning on that node.
    pub f3_max_behind: u64,
}

/// F3 normally finalizes a few epochs behind the head.
pub(crate) const DEFAULT_FINALITY_STALL_AFTER: u64 = 20;
pub(crate) const DEFAULT_F3_MAX_BEHIND: u64 = 5;

/// How long a drop counts against a node for flap damping.
pub(crate) const FLAP_WINDOW: Duration = Duration::from_secs(3600);

impl SelectRules {
    /// The foundation rules with the chain-aware defaults; handy in tests.
    pub fn basic(max_lag: u64, rise: u32, fall: u32) -> SelectRules {
        SelectRules {
            max_lag,
            rise,
            fall,
            stale_after: None,
            min_peers: DEFAULT_MIN_PEERS,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            lag_grace: None,
            hold_down: None,
            finality_stall_after: DEFAULT_FINALITY_STALL_AFTER,
            f3_max_behind: DEFAULT_F3_MAX_BEHIND,
        }
    }
}

/// A network whose genesis and clock chain-co knows without asking
/// (forest src/networks/{mainnet,calibnet}/mod.rs; lotus build/buildconstants/params_*.go).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownNetwork {
    pub name: &'static str,
    pub genesis: &'static str,
    pub genesis_timestamp: u64,
    pub block_delay: u64,
}

pub(crate) const KNOWN_NETWORKS: [KnownNetwork; 2] = [
    KnownNetwork {
        name: "mainnet",
        genesis: "bafy2bzacecnamqgqmifpluoeldx7zzglxcljo6oja4vrmtj7432rphldpdmm2",
        genesis_timestamp: 1_598_306_400,
        block_delay: 30,
    },
    KnownNetwork {
        name: "calibrationnet",
        genesis: "bafy2bzacecyaggy24wol5ruvs6qm73gjibs2l2iyhcqmvi7r7a4ph7zx3yqd4",
        genesis_timestamp: 1_667_326_380,
        block_delay: 30,
    },
];

/// Epochs an implementation split must last before it is reported: one or two epochs of
/// disagreement happen on any healthy network while blocks propagate.
const SPLIT_REPORT_EPOCHS: u64 = 3;
/// How many recent heights of the best chain are remembered to tell forks apart.
const HISTORY: usize = 120;

/// Why a probe of a node was bad: a verdict other code acts on, so a value, not a sentence.
/// `Display` gives the words an operator reads (`status`, logs, `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// The node did not give a usable head.
    Probe(RpcError),
    /// The pool splits evenly between networks (or genesis blocks) and none is configured.
    Tie(String),
    IdentityUnknown,
    OtherNetwork {
        network: String,
        pool: String,
    },
    OtherGenesis {
        genesis: String,
        pool: String,
    },
    FutureHead {
        height: u64,
        ahead: u64,
        max_skew: u64,
    },
    Uncorroborated {
        epochs: u64,
    },
    Lagging {
        epochs: u64,
        max: u64,
    },
    LighterFork {
        since: u64,
        epochs: u64,
        weight: u128,
        best: u128,
    },
    Stale {
        age: u64,
        stale_after: u64,
    },
    Behind {
        for_: Duration,
        grace: Duration,
    },
    /// The node's chain, or the finality it reports, conflicts with the tipset the pool
    /// finalized: a dead fork, however heavy.
    ConflictsWithFinality {
        finalized: TipsetRef,
        /// What the node has at that epoch.
        has: TipsetRef,
        /// `true`: the node's own F3 says so; `false`: its chain holds another tipset there.
        reported: bool,
    },
    /// The node reports a tipset that other nodes also report, with another weight or height:
    /// it is lying or broken.
    Misreported {
        height: u64,
        weight: u128,
        pool_height: u64,
        pool_weight: u128,
        others: usize,
    },
}

impl Exclusion {
    /// What a split between implementations produces: lag and forks.
    fn is_chain_disagreement(&self) -> bool {
        matches!(
            self,
            Exclusion::Lagging { .. } | Exclusion::LighterFork { .. }
        )
    }
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exclusion::Probe(e) => write!(f, "{e}"),
            Exclusion::Tie(t) => f.write_str(t),
            Exclusion::IdentityUnknown => f.write_str(
                "identity unknown: Version, StateNetworkName or ChainGetGenesis did not answer",
            ),
            Exclusion::OtherNetwork { network, pool } => {
                write!(f, "on network {network:?}, the pool is on {pool:?}")
            }
            Exclusion::OtherGenesis { genesis, pool } => {
                write!(f, "genesis {genesis} differs from the pool's {pool}")
            }
            Exclusion::FutureHead {
                height,
                ahead,
                max_skew,
            } => write!(
                f,
                "head from the future: height {height} is {} ahead of the clock (max skew {})",
                fmt_secs(*ahead),
                fmt_secs(*max_skew)
            ),
            Exclusion::Uncorroborated { epochs } => write!(
                f,
                "uncorroborated head: {epochs} epochs above every other node, with a weight no chain grows that fast"
            ),
            Exclusion::Lagging { epochs, max } => write!(f, "lagging {epochs} epochs (max {max})"),
            Exclusion::LighterFork {
                since,
                epochs,
                weight,
                best,
            } if weight < best => write!(
                f,
                "on a lighter fork since height {since} ({epochs} epochs; weight {weight} < {best})"
            ),
            Exclusion::LighterFork {
                since,
                epochs,
                weight,
                best,
            } => write!(
                f,
                "on a fork no other node confirms since height {since} ({epochs} epochs; weight {weight}, the pool's chain {best})"
            ),
            Exclusion::Stale { age, stale_after } => write!(
                f,
                "stale: head is {} old (stale after {})",
                fmt_secs(*age),
                fmt_secs(*stale_after)
            ),
            Exclusion::Behind { for_, grace } => write!(
                f,
                "behind the best head for {} (lag_grace {})",
                fmt_ms(*for_),
                fmt_ms(*grace)
            ),
            Exclusion::ConflictsWithFinality {
                finalized,
                has,
                reported,
            } => write!(
                f,
                "on a fork that conflicts with the finalized tipset at epoch {}: {} {} there, the pool finalized {}",
                finalized.epoch,
                if *reported { "it reports" } else { "its chain holds" },
                short_key(&has.key),
                short_key(&finalized.key)
            ),
            Exclusion::Misreported {
                height,
                weight,
                pool_height,
                pool_weight,
                others,
            } => write!(
                f,
                "misreports its head: the tipset it reports at height {height} with weight {weight} is reported by {others} other node{} at height {pool_height} with weight {pool_weight} (lying or broken)",
                if *others == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Hysteresis memory of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub up: bool,
    /// Consecutive good probes (0 after a bad one).
    pub good: u32,
    /// Consecutive bad probes (0 after a good one).
    pub bad: u32,
    /// The best height when this node was first seen off the best chain, while it stays off.
    pub fork_since: Option<u64>,
    /// When the node was dropped (went down), within the last [`FLAP_WINDOW`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<SystemTime>,
    /// Flap damping: until then the node may serve as a backup but is not made primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<SystemTime>,
}

/// A node crossing the rise/fall thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flip {
    Up,
    Down,
}

impl Track {
    /// One probe's outcome through rise/fall hysteresis, as pingora's
    /// `Health::observe_health`: `rise` good probes in a row bring a down node up, `fall` bad
    /// ones take an up node down, and `force_down` (a sustained signal, not one slow probe)
    /// takes it down at its first bad probe. Says whether the node flipped.
    pub(crate) fn observe(
        &mut self,
        good: bool,
        force_down: bool,
        rise: u32,
        fall: u32,
    ) -> Option<Flip> {
        if good {
            self.good = self.good.saturating_add(1);
            self.bad = 0;
            if !self.up && self.good >= rise {
                self.up = true;
                return Some(Flip::Up);
            }
        } else {
            self.bad = self.bad.saturating_add(1);
            self.good = 0;
            if self.up && (self.bad >= fall || force_down) {
                self.up = false;
                return Some(Flip::Down);
            }
        }
        None
    }

    /// Down at once, counting nothing (a pushed head that shows a sustained problem).
    pub(crate) fn force_down(&mut self) -> Option<Flip> {
        std::mem::replace(&mut self.up, false).then_some(Flip::Down)
    }
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Backup,
    Excluded,
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

/// The chain the pool is judged against, resolved from the config, the known networks and
/// the nodes' own answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    network: Option<String>,
    genesis: Option<String>,
    genesis_timestamp: Option<u64>,
    block_delay: u64,
    /// Set when the pool splits evenly between networks and none is configured.
    tie: Option<String>,
}

/// The most common value, or `Err` with the tied values when several share the top count.
fn majority<'a>(values: impl Iterator<Item = &'a str>) -> Option<Result<String, Vec<String>>> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let top = *counts.values().max()?;
    let winners: Vec<String> = counts
        .iter()
        .filter(|(_, c)| **c == top)
        .map(|(v, _)| v.to_string())
        .collect();
    Some(if winners.len() == 1 {
        Ok(winners[0].clone())
    } else {
        Err(winners)
    })
}

fn expected_chain(chain: &ChainConfig, observations: &[Observation]) -> Expected {
    let ids: Vec<&Identity> = observations
        .iter()
        .filter_map(|o| o.identity.as_ref())
        .collect();
    let (network, mut tie) = match &chain.network {
        Some(n) => (Some(n.clone()), None),
        None => match majority(ids.iter().filter_map(|i| i.network.as_deref())) {
            None => (None, None),
            Some(Ok(n)) => (Some(n), None),
            Some(Err(tied)) => (
                None,
                Some(format!(
                    "the pool splits evenly between networks {}; set [chain] network",
                    tied.join(" and ")
                )),
            ),
        },
    };
    let known = network
        .as_deref()
        .and_then(|n| KNOWN_NETWORKS.iter().find(|k| k.name == n));
    // Nodes without a network name (gateways lacking StateNetworkName) are judged by their
    // genesis alone, so they count with every network here.
    let on_network: Vec<&&Identity> = ids
        .iter()
        .filter(|i| i.network.is_none() || i.network.as_deref() == network.as_deref())
        .collect();
    let genesis_majority = majority(on_network.iter().map(|i| i.genesis.as_str()));
    let genesis = chain
        .genesis
        .clone()
        .or_else(|| known.map(|k| k.genesis.to_string()))
        .or_else(|| genesis_majority.clone().and_then(|m| m.ok()));
    if let (None, None, Some(Err(tied))) = (&genesis, &tie, &genesis_majority) {
        // No network name to go by and an even split of genesis blocks: two chains.
        tie = Some(format!(
            "the pool splits evenly between genesis blocks {}; set [chain] genesis",
            tied.join(" and ")
        ));
    }
    // A chain chain-co knows, recognised by its genesis when no node names it.
    let known = known.or_else(|| {
        genesis
            .as_deref()
            .and_then(|g| KNOWN_NETWORKS.iter().find(|k| k.genesis == g))
    });
    let network = network.or_else(|| known.map(|k| k.name.to_string()));
    let genesis_timestamp = chain
        .genesis_timestamp
        .or_else(|| known.map(|k| k.genesis_timestamp))
        .or_else(|| {
            on_network
                .iter()
                .find(|i| Some(&i.genesis) == genesis.as_ref())
                .map(|i| i.genesis_timestamp)
        });
    let block_delay = chain
        .block_delay
        .map(|d| d.as_secs())
        .or_else(|| known.map(|k| k.block_delay))
        .or_else(|| on_network.iter().find_map(|i| i.block_delay))
        .unwrap_or(30)
        .max(1);
    Expected {
        network,
        genesis,
        genesis_timestamp,
        block_delay,
        tie,
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fmt_ms(d: Duration) -> String {
    crate::duration::human(d)
}

/// The first CID of a key, shortened, for reasons and warnings.
pub(crate) fn short_key(key: &[String]) -> String {
    key.first()
        .map(|c| {
            format!(
                "{}…",
                crate::probe::f3::cap(&c.chars().take(16).collect::<String>(), 16)
            )
        })
        .unwrap_or_else(|| "(no key)".into())
}

fn fmt_secs(s: u64) -> String {
    crate::duration::human(Duration::from_secs(s))
}

/// Why a node that answered cannot be a candidate for the best head, if it cannot.
fn ineligible(
    o: &Observation,
    h: &Head,
    exp: &Expected,
    rules: &SelectRules,
    now: u64,
) -> Option<Exclusion> {
    if let Some(tie) = &exp.tie {
        return Some(Exclusion::Tie(tie.clone()));
    }
    let Some(id) = &o.identity else {
        return Some(Exclusion::IdentityUnknown);
    };
    if let (Some(net), Some(own)) = (&exp.network, &id.network) {
        if own != net {
            return Some(Exclusion::OtherNetwork {
                network: own.clone(),
                pool: net.clone(),
            });
        }
    }
    if let Some(g) = &exp.genesis {
        if &id.genesis != g {
            return Some(Exclusion::OtherGenesis {
                genesis: id.genesis.clone(),
                pool: g.clone(),
            });
        }
    }
    let skew = rules.max_clock_skew.as_secs();
    if h.timestamp > now + skew {
        return Some(Exclusion::FutureHead {
            height: h.height,
            ahead: h.timestamp - now,
            max_skew: skew,
        });
    }
    None
}

/// Whether a head far above all others is believable on its weight: it may not have gained
/// weight faster than twice the pool's own average rate per epoch.
fn weight_plausible(lead: &Head, next: &Head) -> bool {
    if lead.weight < next.weight {
        return false;
    }
    let rate = next.weight / u128::from(next.height.max(1));
    let epochs = u128::from(lead.height.saturating_sub(next.height));
    lead.weight - next.weight <= rate.saturating_mul(2).saturating_mul(epochs.max(1))
}

fn rank_key(h: &Head, i: usize) -> (u128, u64, std::cmp::Reverse<usize>) {
    (h.weight, h.height, std::cmp::Reverse(i))
}

/// What triggered an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A probe round: every rule, and rise/fall counters advance.
    Probe,
    /// A pushed head between probe rounds: counters stay (they count probes), and a node can
    /// only go down, by the lag-in-time rule.
    Push,
}

/// The inputs of one evaluation and what the steps have worked out so far. Each step reads
/// what earlier ones left and adds its own part; none does I/O or reads a clock.
struct Context<'a> {
    rules: &'a SelectRules,
    overrides: &'a Overrides,
    prev: &'a SelectState,
    observations: &'a [Observation],
    now: SystemTime,
    now_s: u64,
    trigger: Trigger,
    exp: Expected,
    stale_after: u64,
    expected_height: Option<u64>,
    lag_grace: Duration,
    hold_down: Duration,
    /// How long a new tipset may take to reach a healthy node: a third of the block delay
    /// (mainnet's PropagationDelaySecs is 10 s of 30). Past it, a head that has not moved on
    /// is late by the clock.
    propagation: Duration,
    warnings: Vec<Warning>,
    /// Per node: why this round's probe was bad, if it was.
    bad: Vec<Option<Exclusion>>,
    /// Per node: behind the pool for longer than lag_grace (goes down at once).
    forced_down: Vec<bool>,
    /// Per node on the pool's chain: epochs below the best head.
    lag: Vec<Option<u64>>,
    best: Option<&'a Head>,
    /// The best head is confirmed (by a second node or by the clock): only then are nodes
    /// below it judged behind. Without any confirmed head (a real split), weight still ranks
    /// but excludes nobody.
    best_confirmed: bool,
    /// The weight of the best head the pool vouches for.
    best_weight: u128,
    /// Per node: its head is confirmed (another node reports the same tipset, or the clock
    /// shows every other node late).
    confirmed: Vec<bool>,
    /// Per node: the weight the pool vouches for (the agreed weight of a tipset several
    /// nodes report), used for ranking and lag.
    weight: Vec<u128>,
    /// The pool's finalized tipset this round, and the recent ones.
    finalized: Option<TipsetRef>,
    finalized_map: BTreeMap<u64, Vec<String>>,
    f3_seen: BTreeMap<String, Vec<TipsetRef>>,
    first_seen: BTreeMap<Vec<String>, SystemTime>,
    best_chain: BTreeMap<u64, Vec<String>>,
    best_seen: Vec<(u128, SystemTime)>,
    /// Per node: the hysteresis memory, updated by `judge_nodes` and `apply_hysteresis`.
    tracks: Vec<Track>,
    nodes: Vec<NodeVerdict>,
    promotable: Vec<bool>,
    /// Up nodes in rank order, after the operator's marks.
    ranked: Vec<usize>,
    preferred: Option<(usize, &'a crate::decide::overrides::Preferred)>,
    primary: Option<usize>,
    backups: Vec<usize>,
    split_since: Option<u64>,
    pool_stale: bool,
    implementation_split: bool,
}

impl<'a> Context<'a> {
    fn head(&self, i: usize) -> Option<&'a Head> {
        self.observations[i].result.as_ref().ok()
    }

    fn candidates(&self) -> Vec<usize> {
        (0..self.observations.len())
            .filter(|&i| self.bad[i].is_none())
            .collect()
    }

    /// Since when a head of `weight` has been lighter than the pool's best: the first sighting
    /// of the lightest best head heavier than it.
    fn behind_since(&self, weight: u128) -> Option<SystemTime> {
        self.best_seen
            .iter()
            .find(|(w, _)| *w > weight)
            .map(|(_, t)| *t)
    }

    /// How long a head lighter than the best has been behind, counted up to when it was seen.
    fn behind_for(&self, weight: u128, seen: Option<SystemTime>) -> Option<Duration> {
        let seen = seen.unwrap_or(self.now);
        self.behind_since(weight)
            .and_then(|t| seen.duration_since(t).ok())
    }

    /// When lag_grace ends for each node still up below a confirmed best head.
    fn grace_ends(&self) -> BTreeMap<String, SystemTime> {
        if !self.best_confirmed {
            return BTreeMap::new();
        }
        (0..self.observations.len())
            .filter(|&i| self.tracks[i].up && self.head(i).is_some())
            .filter(|&i| self.weight[i] < self.best_weight)
            .filter_map(|i| {
                let since = self.behind_since(self.weight[i])?;
                Some((self.observations[i].node.clone(), since + self.lag_grace))
            })
            .collect()
    }
}

/// Decides the primary and backups. Observations come in config order, one per node.
///
/// The rules, as named steps in the order they apply (see the module doc for each rule).
pub fn select(
    rules: &SelectRules,
    chain: &ChainConfig,
    overrides: &Overrides,
    prev: &SelectState,
    observations: &[Observation],
    now: SystemTime,
    trigger: Trigger,
) -> (Decision, SelectState) {
    let mut cx = expect_chain(rules, chain, overrides, prev, observations, now, trigger);
    screen_identity(&mut cx);
    trust::judge_finality(&mut cx);
    trust::expose_misreports(&mut cx);
    corroborate_leader(&mut cx);
    trust::confirm_heads(&mut cx);
    find_best_head(&mut cx);
    remember_history(&mut cx);
    judge_nodes(&mut cx);
    apply_hysteresis(&mut cx);
    apply_operator_marks(&mut cx);
    choose_primary(&mut cx);
    choose_backups(&mut cx);
    report_pool_warnings(&mut cx);
    trust::report_finality(&mut cx);
    finish(cx)
}

/// Identity of the pool: the expected network, genesis and clock, and the thresholds that
/// derive from the clock.
fn expect_chain<'a>(
    rules: &'a SelectRules,
    chain: &ChainConfig,
    overrides: &'a Overrides,
    prev: &'a SelectState,
    observations: &'a [Observation],
    now: SystemTime,
    trigger: Trigger,
) -> Context<'a> {
    let now_s = unix(now);
    let exp = expected_chain(chain, observations);
    let stale_after = rules
        .stale_after
        .unwrap_or(Duration::from_secs(5 * exp.block_delay))
        .as_secs();
    let expected_height = exp
        .genesis_timestamp
        .map(|g| now_s.saturating_sub(g) / exp.block_delay);
    let lag_grace = rules
        .lag_grace
        .unwrap_or(Duration::from_millis(exp.block_delay * 400));
    let hold_down = rules
        .hold_down
        .unwrap_or(Duration::from_secs(2 * exp.block_delay));
    let warnings = exp
        .tie
        .iter()
        .map(|t| Warning::new(WarningKind::NetworkTie, t.clone()))
        .collect();
    let propagation = Duration::from_millis(exp.block_delay * 1000 / 3);
    let n = observations.len();
    Context {
        rules,
        overrides,
        prev,
        observations,
        now,
        now_s,
        trigger,
        exp,
        stale_after,
        expected_height,
        lag_grace,
        hold_down,
        propagation,
        warnings,
        bad: vec![None; n],
        forced_down: vec![false; n],
        lag: vec![None; n],
        best: None,
        best_confirmed: false,
        best_weight: 0,
        confirmed: vec![false; n],
        weight: observations
            .iter()
            .map(|o| o.result.as_ref().map_or(0, |h| h.weight))
            .collect(),
        finalized: None,
        finalized_map: prev.finalized.clone(),
        f3_seen: prev.f3_seen.clone(),
        first_seen: prev.first_seen.clone(),
        best_chain: prev.best_chain.clone(),
        best_seen: prev.best_seen.clone(),
        tracks: observations
            .iter()
            .map(|o| prev.tracks.get(&o.node).cloned().unwrap_or_default())
            .collect(),
        nodes: Vec::with_capacity(n),
        promotable: vec![true; n],
        ranked: Vec::new(),
        preferred: None,
        primary: None,
        backups: Vec::new(),
        split_since: None,
        pool_stale: false,
        implementation_split: false,
    }
}

/// Rules 1 and 2: who may be a candidate for the best head (answered, on the pool's chain,
/// not from the future).
fn screen_identity(cx: &mut Context) {
    cx.bad = cx
        .observations
        .iter()
        .map(|o| match &o.result {
            Err(e) => Some(Exclusion::Probe(e.clone())),
            Ok(h) => ineligible(o, h, &cx.exp, cx.rules, cx.now_s),
        })
        .collect();
}

/// Rule 2, corroboration: a lone leader beyond max_lag needs a plausible weight.
fn corroborate_leader(cx: &mut Context) {
    let mut cands = cx.candidates();
    cands.sort_by_key(|&i| std::cmp::Reverse(cx.head(i).map(|h| rank_key(h, i))));
    if let [lead, next, ..] = cands[..] {
        let (l, n) = (
            cx.head(lead).expect("candidate"),
            cx.head(next).expect("candidate"),
        );
        let above_all = cands[1..]
            .iter()
            .filter_map(|&i| cx.head(i))
            .all(|h| l.height > h.height + cx.rules.max_lag);
        if above_all && !weight_plausible(l, n) {
            cx.bad[lead] = Some(Exclusion::Uncorroborated {
                epochs: l.height - n.height,
            });
        }
    }
}

/// Rule 3: the best head, by weight, then height, then config order.
/// Among confirmed heads only, when any is (an unconfirmed head is one node's claim).
fn find_best_head(cx: &mut Context) {
    let cands = cx.candidates();
    let confirmed: Vec<usize> = cands.iter().copied().filter(|&i| cx.confirmed[i]).collect();
    cx.best_confirmed = !confirmed.is_empty();
    let pool = if confirmed.is_empty() {
        cands
    } else {
        confirmed
    };
    let best_idx = pool.into_iter().max_by_key(|&i| {
        cx.head(i)
            .map(|h| (cx.weight[i], h.height, std::cmp::Reverse(i)))
    });
    cx.best = best_idx.and_then(|i| cx.head(i));
    cx.best_weight = best_idx.map_or(0, |i| cx.weight[i]);
}

/// The best chain's recent history (to tell forks from lag), when each heavier head was first
/// seen (for the lag measured in time), and whether the whole pool is stale.
fn remember_history(cx: &mut Context) {
    let Some(b) = cx.best else {
        return;
    };
    // A reorg (the best key at a known height changed) makes the old history wrong: start it
    // again.
    let reorg = cx.best_chain.get(&b.height).is_some_and(|k| k != &b.key)
        || cx
            .best_chain
            .keys()
            .next_back()
            .is_some_and(|&top| top > b.height);
    if reorg {
        cx.best_chain.clear();
    }
    cx.best_chain.insert(b.height, b.key.clone());
    while cx.best_chain.len() > HISTORY {
        cx.best_chain.pop_first();
    }
    let now = cx.now;
    let bw = cx.best_weight;
    // Behind since the head was first seen anywhere, even if confirmed only later: a new
    // head reaches one node first, and the stalled primary is behind from that moment.
    let since = cx.first_seen.get(&b.key).copied().unwrap_or(now).min(now);
    if cx.best_seen.last().is_none_or(|(w, _)| bw > *w) {
        cx.best_seen.push((bw, since));
    }
    // A reorg to a lighter best head, or a clock that went back: start again.
    if cx.best_seen.iter().any(|(w, t)| *w > bw || *t > now) {
        cx.best_seen = vec![(bw, since)];
    }
    while cx.best_seen.len() > HISTORY {
        cx.best_seen.remove(0);
    }
    if let Some(exp_h) = cx.expected_height {
        let age = cx.now_s.saturating_sub(b.timestamp);
        if age > cx.stale_after {
            cx.pool_stale = true;
            cx.warnings.push(Warning::new(
                WarningKind::PoolStale,
                format!(
                    "pool is stale: the best head (height {}) is {} old; by the clock the chain is at {exp_h}",
                    b.height,
                    fmt_secs(age)
                ),
            ));
        }
    }
}

/// Rule 4: each eligible node against the best head: lag, forks, staleness, lag in time.
fn judge_nodes(cx: &mut Context) {
    let Some(b) = cx.best else {
        return;
    };
    for i in 0..cx.observations.len() {
        let (Some(h), None) = (cx.head(i), &cx.bad[i]) else {
            continue;
        };
        let t = &mut cx.tracks[i];
        match cx.best_chain.get(&h.height) {
            Some(k) if k == &h.key => t.fork_since = None,
            Some(_) => {
                t.fork_since.get_or_insert(b.height);
            }
            None => {}
        }
        let fork_since = t.fork_since;
        let age = cx.now_s.saturating_sub(h.timestamp);
        let l = b.height.saturating_sub(h.height);
        cx.lag[i] = Some(l);
        let rules = cx.rules;
        // Below an unconfirmed best (a real split, no head shared by two nodes) nobody is
        // behind: weight still ranks, but excludes no one.
        let judged = cx.best_confirmed;
        let weight = cx.weight[i];
        let past_grace = cx
            .behind_for(weight, cx.observations[i].observed_at)
            .filter(|d| judged && *d > cx.lag_grace);
        cx.bad[i] = if judged && l > rules.max_lag {
            // Epochs behind and behind for longer than lag_grace: as sustained as a signal gets,
            // so it goes down at once too (a pushed head counts no probe).
            cx.forced_down[i] = past_grace.is_some();
            Some(Exclusion::Lagging {
                epochs: l,
                max: rules.max_lag,
            })
        } else if let Some(since) =
            fork_since.filter(|&s| judged && b.height.saturating_sub(s) >= rules.max_lag.max(1))
        {
            Some(Exclusion::LighterFork {
                since,
                epochs: b.height - since,
                weight,
                best: cx.best_weight,
            })
        } else if age > cx.stale_after {
            Some(Exclusion::Stale {
                age,
                stale_after: cx.stale_after,
            })
        } else if let Some(d) = past_grace {
            // Behind the pool for longer than lag_grace is already a sustained signal, not one
            // slow probe: the node goes down at once, without waiting for `fall` bad probes.
            cx.forced_down[i] = true;
            Some(Exclusion::Behind {
                for_: d,
                grace: cx.lag_grace,
            })
        } else {
            None
        };
    }
}

/// Rule 5: rise/fall hysteresis and flap damping, then each node's verdict in words.
fn apply_hysteresis(cx: &mut Context) {
    let rules = cx.rules;
    for (i, o) in cx.observations.iter().enumerate() {
        let mut t = cx.tracks[i].clone();
        let was_up = t.up;
        if cx.trigger == Trigger::Push {
            // A pushed head is not a probe: it counts nothing, but a sustained signal still
            // takes the node down at once.
            if cx.forced_down[i] {
                t.force_down();
            }
        } else {
            t.observe(
                cx.bad[i].is_none(),
                cx.forced_down[i],
                rules.rise,
                rules.fall,
            );
        }
        damp_flaps(&mut t, was_up, cx.hold_down, cx.now);
        let h = cx.head(i);
        // Rule 6's conditions for promotion.
        let mut not_promoted = None;
        let held_for = t
            .held_until
            .and_then(|u| u.duration_since(cx.now).ok())
            .filter(|d| !d.is_zero());
        if let Some(left) = held_for {
            not_promoted = Some(format!(
                "held down for {} more after {} drop{} in the last hour (flap damping)",
                fmt_secs(left.as_secs().max(1)),
                t.drops.len(),
                if t.drops.len() == 1 { "" } else { "s" }
            ));
        }
        if let Some(p) = o.peers.filter(|&p| p < rules.min_peers) {
            not_promoted = Some(format!("{p} peers (min {})", rules.min_peers));
        }
        if let (Some(to), Some(h)) = (o.syncing_to, h) {
            // One epoch ahead is the next tipset being validated, as on any synced node.
            if to > h.height + 1 {
                not_promoted = Some(format!("catching up to height {to}"));
            }
        }
        cx.promotable[i] = not_promoted.is_none();
        let reason = match (&cx.bad[i], t.up) {
            (None, true) => match &not_promoted {
                None => "healthy".to_string(),
                Some(why) => format!("healthy, not promoted to primary: {why}"),
            },
            (None, false) => format!("rising: {} of {} good probes", t.good, rules.rise),
            (Some(r), true) => {
                // Saturating: a hot reload may lower `fall` below the bad probes already
                // counted; the node then goes at its next bad probe.
                let left = rules.fall.saturating_sub(t.bad).max(1);
                format!(
                    "{r}; still in, dropped after {left} more bad probe{}",
                    if left == 1 { "" } else { "s" }
                )
            }
            (Some(r), false) => r.to_string(),
        };
        let lag = cx.lag[i];
        let id = o.identity.as_ref();
        cx.nodes.push(NodeVerdict {
            name: o.node.clone(),
            implementation: id.map(|i| i.implementation.to_string()),
            version: id.map(|i| i.version.clone()),
            network: id.and_then(|i| i.network.clone()),
            role: Role::Excluded,
            healthy: t.up,
            height: h.map(|h| h.height),
            lag,
            head_age: h.map(|h| Duration::from_secs(cx.now_s.saturating_sub(h.timestamp))),
            behind: h.and_then(|_| cx.behind_for(cx.weight[i], o.observed_at)),
            via_push: o.via_push,
            unsupported: o.unsupported.clone(),
            held_for,
            finalized_epoch: o
                .finality
                .as_ref()
                .and_then(|f| f.f3_finalized().or(f.finalized.as_ref()).map(|t| t.epoch)),
            f3: o.finality.as_ref().map(|f| f.describe()).or_else(|| {
                o.unsupported
                    .contains(&crate::probe::OptionalMethod::F3)
                    .then(|| crate::probe::f3::F3View::Lacking.to_string())
            }),
            own_word: o.own_word.clone(),
            client_token: o.client_token,
            track: t.clone(),
            reason,
            exclusion: cx.bad[i].clone(),
        });
        cx.tracks[i] = t;
    }
}

/// The operator's marks: up nodes in rank order (a good probe this round first, by head, then
/// config order), without drained ones unless nothing else is up; the preferred node.
fn apply_operator_marks(cx: &mut Context) {
    let mut ranked: Vec<usize> = (0..cx.nodes.len())
        .filter(|&i| cx.nodes[i].healthy)
        .collect();
    // Confirmed heads first: an unconfirmed head is one node's claim and never outranks a
    // head the pool vouches for. Among equal heads, a node that holds all the provider's
    // pending messages comes before one that lacks some (a switch to it would have to carry
    // them); then a daemon that says it is ready before one that says nothing, and that
    // before one that says it is not.
    ranked.sort_by_key(|&i| {
        let h = cx.head(i).filter(|_| cx.bad[i].is_none());
        let vouched = cx.confirmed[i] || !cx.best_confirmed;
        let has_messages = cx.observations[i].messages_behind.unwrap_or(0) == 0;
        let says_ready = match cx.observations[i].own_word.as_ref().and_then(|w| w.ready()) {
            Some(true) => 2,
            None => 1,
            Some(false) => 0,
        };
        (
            std::cmp::Reverse(h.map(|h| (vouched, cx.weight[i], h.height))),
            std::cmp::Reverse(has_messages),
            std::cmp::Reverse(says_ready),
            i,
        )
    });
    let drained = &cx.overrides.drained;
    let undrained_up = ranked
        .iter()
        .filter(|&&i| !drained.contains_key(&cx.nodes[i].name))
        .count();
    let nodes = &mut cx.nodes;
    ranked.retain(|&i| match drained.get(&nodes[i].name) {
        None => true,
        Some(m) if undrained_up > 0 => {
            nodes[i].reason = format!("drained by {} at {}", m.by, m.at);
            false
        }
        Some(m) => {
            nodes[i].reason = format!(
                "{}; drained by {}, but kept: no other healthy node",
                nodes[i].reason, m.by
            );
            true
        }
    });
    cx.preferred = cx.overrides.preferred.as_ref().and_then(|p| {
        ranked
            .iter()
            .copied()
            .find(|&i| cx.nodes[i].name == p.node)
            .map(|i| (i, p))
    });
    cx.ranked = ranked;
}

/// Rule 6: the sticky primary; a new one must be promotable if any up node is. A preferred
/// node that is up comes first.
fn choose_primary(cx: &mut Context) {
    let kept = cx
        .prev
        .primary
        .as_ref()
        .and_then(|p| cx.ranked.iter().copied().find(|&i| &cx.nodes[i].name == p));
    cx.primary = cx
        .preferred
        .map(|(i, _)| i)
        .or(kept)
        .or_else(|| cx.ranked.iter().copied().find(|&i| cx.promotable[i]))
        .or_else(|| cx.ranked.first().copied());
    if let Some((i, p)) = cx.preferred {
        cx.nodes[i].reason = format!(
            "{}; preferred by {} at {}",
            cx.nodes[i].reason, p.mark.by, p.mark.at
        );
    }
    if let Some(p) = cx.primary {
        cx.nodes[p].role = Role::Primary;
    }
}

/// Rule 7: the other up nodes are backups, the first of another implementation when one is.
fn choose_backups(cx: &mut Context) {
    let primary = cx.primary;
    let mut backups: Vec<usize> = cx
        .ranked
        .iter()
        .copied()
        .filter(|&i| Some(i) != primary)
        .collect();
    if let Some(p) = primary {
        let imp = |i: usize| cx.nodes[i].implementation.clone();
        if backups.first().is_some_and(|&b| imp(b) == imp(p)) {
            if let Some(pos) = backups
                .iter()
                .position(|&b| imp(b).is_some() && imp(b) != imp(p))
            {
                let other = backups.remove(pos);
                backups.insert(0, other);
            }
        }
    }
    for &b in &backups {
        cx.nodes[b].role = Role::Backup;
    }
    cx.backups = backups;
}

/// Pool-wide trouble: implementations that agree among themselves but not with each other.
fn report_pool_warnings(cx: &mut Context) {
    let split = implementation_split(cx.observations, &cx.bad);
    cx.split_since = match (&split, cx.best) {
        (Some(_), Some(b)) => Some(cx.prev.split_since.unwrap_or(b.height)),
        _ => None,
    };
    if let (Some(text), Some(since), Some(b)) = (&split, cx.split_since, cx.best) {
        if b.height.saturating_sub(since) >= SPLIT_REPORT_EPOCHS {
            cx.implementation_split = true;
            cx.warnings.push(Warning::new(
                WarningKind::ImplementationSplit,
                format!(
                    "implementation split for {} epochs: {text}; the heavier chain is used",
                    b.height - since
                ),
            ));
        }
    }
}

/// The decision, the switch with its reason, and what to remember for the next round.
fn finish(cx: Context) -> (Decision, SelectState) {
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
        .zip(cx.tracks)
        .map(|(o, t)| (o.node.clone(), t))
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
        lag_grace: cx.lag_grace,
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
        first_seen: cx.first_seen,
    };
    (decision, next)
}

/// Flap damping (after route-flap damping, RFC 2439): each drop is remembered for an hour;
/// a node that comes back up after drops must stay up for `hold_down`, doubled for each
/// further drop in that hour (at most an hour), before it may be primary again. A node late
/// every epoch thus never pulls sessions back and forth, while one restart costs one short
/// hold as a backup.
fn damp_flaps(t: &mut Track, was_up: bool, hold_down: Duration, now: SystemTime) {
    t.drops
        .retain(|d| now.duration_since(*d).is_ok_and(|age| age < FLAP_WINDOW));
    if was_up && !t.up {
        t.drops.push(now);
        // Enough to reach the cap; older ones add nothing.
        if t.drops.len() > 16 {
            t.drops.remove(0);
        }
    }
    if !was_up && t.up && !t.drops.is_empty() && !hold_down.is_zero() {
        let doublings = (t.drops.len() - 1).min(12) as u32;
        let hold = hold_down.saturating_mul(1 << doublings).min(FLAP_WINDOW);
        t.held_until = Some(now + hold);
    }
    if t.held_until.is_some_and(|u| u <= now) {
        t.held_until = None;
    }
}

/// Describes a split between implementations: at some height, every node of one
/// implementation reports one tipset and every node of another a different one.
fn implementation_split(observations: &[Observation], bad: &[Option<Exclusion>]) -> Option<String> {
    // (height, implementation) → the keys its nodes report there.
    let mut at: BTreeMap<(u64, String), Vec<&Vec<String>>> = BTreeMap::new();
    for (i, o) in observations.iter().enumerate() {
        // Lag and fork verdicts are exactly what a split produces: judge every node that is
        // on the right network and answered.
        if bad[i].as_ref().is_some_and(|r| !r.is_chain_disagreement()) {
            continue;
        }
        if let (Ok(h), Some(id)) = (&o.result, &o.identity) {
            at.entry((h.height, id.implementation.to_string()))
                .or_default()
                .push(&h.key);
        }
    }
    let agreed: Vec<(u64, &String, &Vec<String>)> = at
        .iter()
        .filter(|(_, keys)| keys.windows(2).all(|w| w[0] == w[1]))
        .map(|((h, imp), keys)| (*h, imp, keys[0]))
        .collect();
    for (i, a) in agreed.iter().enumerate() {
        for b in &agreed[i + 1..] {
            if a.0 == b.0 && a.1 != b.1 && a.2 != b.2 {
                let short = |k: &Vec<String>| short_key(k);
                return Some(format!(
                    "at height {}, {} nodes on {} and {} nodes on {}",
                    a.0,
                    a.1,
                    short(a.2),
                    b.1,
                    short(b.2)
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::rpc::Implementation;

    fn rules() -> SelectRules {
        SelectRules::basic(2, 2, 3)
    }

    const GENESIS_TS: u64 = 1_000;

    fn head(height: u64, weight: u128) -> Head {
        // Nodes at one height share a tipset unless the table gives it another weight: two
        // weights at one height are two tipsets.
        let key = if weight == u128::from(height) * 10 {
            format!("bafy{height}")
        } else {
            format!("bafy{height}w{weight}")
        };
        Head {
            height,
            weight,
            key: vec![key],
            timestamp: GENESIS_TS + height * 30,
            blocks: 1,
        }
    }

    fn ident(implementation: Implementation) -> Identity {
        Identity {
            implementation,
            version: "1.28.1+mainnet+git.1".into(),
            network: Some("testnet".into()),
            genesis: "bafyGenesis".into(),
            genesis_timestamp: GENESIS_TS,
            block_delay: Some(30),
        }
    }

    /// "Now" for a round: just after the highest head of the round was made.
    fn now_for(obs: &[Observation]) -> SystemTime {
        let top = obs
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .map(|h| h.height)
            .max()
            .unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + top * 30 + 5)
    }

    /// What a node answers in one round, written compactly in the tables below.
    #[derive(Clone, Copy)]
    enum A {
        /// Height; the weight grows with the height.
        H(u64),
        /// Height and explicit weight.
        HW(u64, u128),
        Timeout,
        Refused,
    }

    fn observe(names: &[&str], answers: &[A]) -> Vec<Observation> {
        names
            .iter()
            .zip(answers)
            .map(|(n, a)| {
                let mut o = Observation::new(
                    n,
                    match *a {
                        A::H(h) => Ok(head(h, u128::from(h) * 10)),
                        A::HW(h, w) => Ok(head(h, w)),
                        A::Timeout => Err(RpcError::Timeout(Duration::from_secs(3))),
                        A::Refused => Err(RpcError::Connect("Connection refused".into())),
                    },
                );
                o.identity = Some(ident(Implementation::Lotus));
                o
            })
            .collect()
    }

    /// Runs rounds; returns every decision.
    fn run(rules: &SelectRules, names: &[&str], rounds: &[Vec<A>]) -> Vec<Decision> {
        let rounds: Vec<Vec<Observation>> = rounds.iter().map(|a| observe(names, a)).collect();
        run_obs(rules, &ChainConfig::default(), &rounds)
    }

    fn run_obs(
        rules: &SelectRules,
        chain: &ChainConfig,
        rounds: &[Vec<Observation>],
    ) -> Vec<Decision> {
        let mut state = SelectState::default();
        rounds
            .iter()
            .map(|obs| {
                let (d, next) = select(
                    rules,
                    chain,
                    &Overrides::default(),
                    &state,
                    obs,
                    now_for(obs),
                    Trigger::Probe,
                );
                state = next;
                d
            })
            .collect()
    }

    fn up(h: u64) -> Vec<A> {
        vec![A::H(h), A::H(h), A::H(h)]
    }

    struct Row {
        what: &'static str,
        rounds: Vec<Vec<A>>,
        primary: Option<&'static str>,
        backups: &'static [&'static str],
        /// (node, words its reason must contain)
        reasons: &'static [(&'static str, &'static str)],
    }

    #[test]
    fn table() {
        use A::*;
        let abc = ["a", "b", "c"];
        let rows = vec![
            Row {
                what: "nobody is used before rise good probes",
                rounds: vec![up(100)],
                primary: None,
                backups: &[],
                reasons: &[("a", "rising: 1 of 2"), ("c", "rising: 1 of 2")],
            },
            Row {
                what: "after rise, the first in config order wins a tie",
                rounds: vec![up(100), up(101)],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[("a", "healthy")],
            },
            Row {
                what: "the heaviest head wins, not config order",
                rounds: vec![vec![H(100), H(101), H(101)]; 2],
                primary: Some("b"),
                backups: &["c", "a"],
                reasons: &[],
            },
            Row {
                what: "a head only one node reports does not outrank a shared one (on time)",
                rounds: vec![vec![H(100), H(101), H(100)]; 2],
                primary: Some("a"),
                backups: &["c", "b"],
                reasons: &[("b", "healthy")],
            },
            Row {
                what: "a heavier claim at the pool's own height evicts nobody and wins nothing",
                rounds: vec![vec![H(100), HW(100, 1001), H(100)]; 3],
                primary: Some("a"),
                backups: &["c", "b"],
                reasons: &[("a", "healthy"), ("c", "healthy")],
            },
            Row {
                what: "weight beats height",
                rounds: vec![vec![HW(100, 5000), HW(101, 900), HW(100, 1000)]; 2],
                primary: Some("a"),
                backups: &["c", "b"],
                reasons: &[],
            },
            Row {
                what: "equal weight: greater height wins",
                rounds: vec![vec![HW(100, 1000), HW(101, 1000), HW(101, 1000)]; 2],
                primary: Some("b"),
                backups: &["c", "a"],
                reasons: &[],
            },
            Row {
                what: "sticky: a primary one block behind stays",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![H(102), H(103), H(103)],
                    vec![H(103), H(104), H(104)],
                ],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[("a", "healthy")],
            },
            Row {
                what: "a lagging node is bad, with the lag in words",
                rounds: vec![vec![H(100), H(107), H(107)]; 2],
                primary: Some("b"),
                backups: &["c"],
                reasons: &[("a", "lagging 7 epochs (max 2)")],
            },
            Row {
                what: "lag of exactly max_lag is healthy; backups ranked by head",
                rounds: vec![vec![H(105), H(107), H(107)]; 2],
                primary: Some("b"),
                backups: &["c", "a"],
                reasons: &[("a", "healthy")],
            },
            Row {
                what: "one bad probe does not drop the primary (fall = 3)",
                rounds: vec![up(100), up(101), vec![Timeout, H(102), H(102)]],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[(
                    "a",
                    "timeout after 3s; still in, dropped after 2 more bad probes",
                )],
            },
            Row {
                what: "fall bad probes drop the primary; the best backup takes over",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Refused, H(102), H(103)],
                    vec![Refused, H(103), H(104)],
                    vec![Refused, H(104), H(105)],
                ],
                primary: Some("c"),
                backups: &["b"],
                reasons: &[("a", "cannot connect: Connection refused")],
            },
            Row {
                what: "a recovered node rises back as backup; the primary does not flip back",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Refused, H(102), H(102)],
                    vec![Refused, H(103), H(103)],
                    vec![Refused, H(104), H(104)],
                    vec![H(105), H(105), H(105)],
                    vec![H(106), H(106), H(106)],
                ],
                primary: Some("b"),
                backups: &["a", "c"],
                reasons: &[],
            },
            Row {
                what: "half-way back: one good probe is not enough",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Refused, H(102), H(102)],
                    vec![Refused, H(103), H(103)],
                    vec![Refused, H(104), H(104)],
                    vec![H(105), H(105), H(105)],
                ],
                primary: Some("b"),
                backups: &["c"],
                reasons: &[("a", "rising: 1 of 2")],
            },
            Row {
                what: "all down: no primary (fail static), every reason given",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Timeout, Refused, Timeout],
                    vec![Timeout, Refused, Timeout],
                    vec![Timeout, Refused, Timeout],
                ],
                primary: None,
                backups: &[],
                reasons: &[("a", "timeout after 3s"), ("b", "Connection refused")],
            },
            Row {
                what: "a flapping node never comes up",
                rounds: vec![
                    vec![H(100), H(100), Timeout],
                    vec![H(101), H(101), H(101)],
                    vec![H(102), H(102), Timeout],
                    vec![H(103), H(103), H(103)],
                    vec![H(104), H(104), Timeout],
                ],
                primary: Some("a"),
                backups: &["b"],
                reasons: &[("c", "timeout")],
            },
            Row {
                what: "a flapping primary is never dropped while fall is not reached",
                rounds: vec![
                    up(100),
                    up(101),
                    vec![Timeout, H(102), H(102)],
                    vec![H(103), H(103), H(103)],
                    vec![Timeout, H(104), H(104)],
                    vec![Timeout, H(105), H(105)],
                ],
                primary: Some("a"),
                backups: &["b", "c"],
                reasons: &[],
            },
        ];
        for row in rows {
            let decisions = run(&rules(), &abc, &row.rounds);
            let d = decisions.last().expect("at least one round");
            assert_eq!(d.primary.as_deref(), row.primary, "{}: {d:#?}", row.what);
            assert_eq!(d.backups, row.backups, "{}", row.what);
            for (node, words) in row.reasons {
                let v = d.verdict(node).expect("node");
                assert!(
                    v.reason.contains(words),
                    "{}: {node}: {:?} lacks {words:?}",
                    row.what,
                    v.reason
                );
            }
            for v in &d.nodes {
                let in_upstream =
                    d.primary.as_deref() == Some(v.name.as_str()) || d.backups.contains(&v.name);
                assert_eq!(
                    v.healthy, in_upstream,
                    "{}: {} healthy but not used",
                    row.what, v.name
                );
            }
        }
    }

    /// Flap damping: a node that was dropped serves as a backup at once but becomes primary
    /// only after its hold-down, which doubles with each drop in the hour.
    #[test]
    fn a_dropped_node_is_held_down_before_it_can_be_primary_again() {
        use A::*;
        let rules = SelectRules::basic(2, 1, 1);
        let names = ["a", "b", "c"];
        let rounds: Vec<(u64, Vec<A>)> = vec![
            (10, vec![H(10), H(10), H(10)]),
            (11, vec![Timeout, H(11), H(11)]),
            (12, vec![H(12), H(12), H(12)]),
            (13, vec![H(13), Timeout, H(13)]),
            (15, vec![H(15), H(15), H(15)]),
            (16, vec![Timeout, H(16), H(16)]),
            (17, vec![H(17), H(17), H(17)]),
            // More than an hour after both drops: they no longer count.
            (138, vec![Timeout, H(138), H(138)]),
            (139, vec![H(139), H(139), H(139)]),
        ];
        let mut state = SelectState::default();
        let d: Vec<Decision> = rounds
            .iter()
            .map(|(clock, answers)| {
                let (d, next) = select(
                    &rules,
                    &ChainConfig::default(),
                    &Overrides::default(),
                    &state,
                    &observe(&names, answers),
                    at_height(*clock),
                    Trigger::Probe,
                );
                state = next;
                d
            })
            .collect();
        let held = |d: &Decision, n: &str| d.verdict(n).and_then(|v| v.held_for);
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        assert_eq!(held(&d[0], "a"), None, "a first rise is not held");
        assert_eq!(d[1].primary.as_deref(), Some("b"));
        // Back up: a backup at once, held for two block delays.
        assert!(d[2].backups.contains(&"a".to_string()));
        assert_eq!(held(&d[2], "a"), Some(Duration::from_secs(60)));
        assert!(
            reason(&d[2], "a").contains("held down for 1m more after 1 drop"),
            "{}",
            reason(&d[2], "a")
        );
        // The primary fails while a is held: c, although a ranks first.
        assert_eq!(d[3].primary.as_deref(), Some("c"));
        assert_eq!(held(&d[3], "a"), Some(Duration::from_secs(30)));
        assert_eq!(held(&d[4], "a"), None, "the hold has passed");
        assert_eq!(d[4].primary.as_deref(), Some("c"), "the primary stays");
        // A second drop within the hour doubles the hold.
        assert_eq!(held(&d[6], "a"), Some(Duration::from_secs(120)));
        assert_eq!(held(&d[8], "a"), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_held_node_is_still_used_when_it_is_the_only_one_up() {
        use A::*;
        let rules = SelectRules::basic(2, 1, 1);
        let d = run(
            &rules,
            &["a", "b"],
            &[
                vec![H(10), H(10)],
                vec![Timeout, H(11)],
                vec![H(12), H(12)],
                vec![H(12), Timeout],
            ],
        );
        assert!(d[3].verdict("a").and_then(|v| v.held_for).is_some());
        assert_eq!(
            d[3].primary.as_deref(),
            Some("a"),
            "better held than nothing"
        );
    }

    #[test]
    fn a_zero_hold_down_turns_damping_off() {
        use A::*;
        let mut rules = SelectRules::basic(2, 1, 1);
        rules.hold_down = Some(Duration::ZERO);
        let d = run(
            &rules,
            &["a", "b"],
            &[vec![H(10), H(10)], vec![Timeout, H(11)], vec![H(12), H(12)]],
        );
        assert_eq!(d[2].verdict("a").and_then(|v| v.held_for), None);
    }

    /// A hot reload can lower `fall` below the bad probes a node that is still up has already
    /// had. Between probe rounds (a pushed head) counters do not advance, so the node is still
    /// up with more bad probes than `fall`: no underflow in the reason, and the next probe
    /// drops it.
    #[test]
    fn a_smaller_fall_after_a_reload_does_not_underflow() {
        use A::*;
        let names = ["a", "b"];
        let mut state = SelectState::default();
        let mut step = |rules: &SelectRules, answers: &[A], trigger: Trigger| {
            let obs = observe(&names, answers);
            let (d, next) = select(
                rules,
                &ChainConfig::default(),
                &Overrides::default(),
                &state,
                &obs,
                now_for(&obs),
                trigger,
            );
            state = next;
            d
        };
        let five = SelectRules::basic(2, 1, 5);
        step(&five, &[H(10), H(10)], Trigger::Probe);
        for _ in 0..3 {
            step(&five, &[Timeout, H(10)], Trigger::Probe);
        }
        // `fall` drops to 2 while a is up with 3 bad probes.
        let two = SelectRules::basic(2, 1, 2);
        let d = step(&two, &[Timeout, H(10)], Trigger::Push);
        assert!(d.verdict("a").is_some_and(|v| v.healthy));
        assert!(
            reason(&d, "a").contains("dropped after 1 more bad probe;")
                || reason(&d, "a").ends_with("dropped after 1 more bad probe"),
            "{}",
            reason(&d, "a")
        );
        let d = step(&two, &[Timeout, H(10)], Trigger::Probe);
        assert!(!d.verdict("a").is_some_and(|v| v.healthy));
    }

    /// Code reads the typed verdict; the words are checked once, here.
    #[test]
    fn verdicts_are_values_and_their_words_are_stable() {
        use A::*;
        let d = run(
            &rules(),
            &["a", "b", "c"],
            &[vec![H(10), H(10), H(10)], vec![H(13), H(10), Refused]],
        );
        let a = d[1].verdict("b").expect("b");
        assert_eq!(a.exclusion, Some(Exclusion::Lagging { epochs: 3, max: 2 }));
        assert_eq!(a.lag, Some(3), "a lagging node still shows its lag");
        assert!(
            a.reason.starts_with("lagging 3 epochs (max 2)"),
            "{}",
            a.reason
        );
        let c = d[1].verdict("c").expect("c");
        assert!(matches!(
            c.exclusion,
            Some(Exclusion::Probe(RpcError::Connect(_)))
        ));
        assert_eq!(d[1].verdict("a").and_then(|v| v.exclusion.clone()), None);
        for (e, words) in [
            (
                Exclusion::Stale {
                    age: 200,
                    stale_after: 150,
                },
                "stale: head is 3m 20s old (stale after 2m 30s)",
            ),
            (
                Exclusion::Behind {
                    for_: Duration::from_millis(1500),
                    grace: Duration::from_secs(1),
                },
                "behind the best head for 1s 500ms (lag_grace 1s)",
            ),
            (
                Exclusion::LighterFork {
                    since: 7,
                    epochs: 3,
                    weight: 5,
                    best: 9,
                },
                "on a lighter fork since height 7 (3 epochs; weight 5 < 9)",
            ),
        ] {
            assert_eq!(e.to_string(), words);
        }
    }

    /// The steps one by one, on a context built as `select` builds it.
    mod steps {
        use super::*;

        fn context<'a>(
            rules: &'a SelectRules,
            overrides: &'a Overrides,
            prev: &'a SelectState,
            obs: &'a [Observation],
        ) -> Context<'a> {
            expect_chain(
                rules,
                &ChainConfig::default(),
                overrides,
                prev,
                obs,
                now_for(obs),
                Trigger::Probe,
            )
        }

        #[test]
        fn the_best_head_is_heaviest_then_highest_then_first_listed() {
            let rules = rules();
            let (o, p) = (Overrides::default(), SelectState::default());
            for (answers, best) in [
                (vec![A::H(10), A::H(10), A::H(10)], 10),
                (vec![A::HW(10, 50), A::HW(9, 90), A::HW(10, 60)], 9),
                (vec![A::HW(10, 90), A::HW(11, 90), A::Timeout], 11),
            ] {
                let obs = observe(&["a", "b", "c"], &answers);
                let mut cx = context(&rules, &o, &p, &obs);
                screen_identity(&mut cx);
                trust::confirm_heads(&mut cx);
                find_best_head(&mut cx);
                assert_eq!(cx.best.map(|b| b.height), Some(best));
            }
        }

        #[test]
        fn judging_marks_lag_and_keeps_eligible_nodes_clean() {
            let rules = rules();
            let (o, p) = (Overrides::default(), SelectState::default());
            let obs = observe(&["a", "b"], &[A::H(20), A::H(16)]);
            let mut cx = context(&rules, &o, &p, &obs);
            screen_identity(&mut cx);
            trust::confirm_heads(&mut cx);
            find_best_head(&mut cx);
            remember_history(&mut cx);
            judge_nodes(&mut cx);
            assert_eq!(cx.bad[0], None);
            assert_eq!(cx.bad[1], Some(Exclusion::Lagging { epochs: 4, max: 2 }));
            assert_eq!(cx.lag, vec![Some(0), Some(4)]);
        }

        #[test]
        fn backups_lead_with_another_implementation() {
            let rules = SelectRules::basic(2, 1, 1);
            let (o, p) = (Overrides::default(), SelectState::default());
            let mut obs = observe(&["a", "b", "c"], &[A::H(10), A::H(10), A::H(10)]);
            obs[2].identity.as_mut().expect("id").implementation = Implementation::Forest;
            let mut cx = context(&rules, &o, &p, &obs);
            screen_identity(&mut cx);
            trust::confirm_heads(&mut cx);
            find_best_head(&mut cx);
            remember_history(&mut cx);
            judge_nodes(&mut cx);
            apply_hysteresis(&mut cx);
            apply_operator_marks(&mut cx);
            choose_primary(&mut cx);
            choose_backups(&mut cx);
            assert_eq!(cx.primary, Some(0));
            assert_eq!(cx.backups, vec![2, 1]);
        }
    }

    #[test]
    fn one_node_pool() {
        let d = run(&rules(), &["solo"], &[vec![A::H(5)], vec![A::H(6)]]);
        assert_eq!(d[1].primary.as_deref(), Some("solo"));
        assert!(d[1].backups.is_empty());
    }

    /// The rise/fall state machine alone: (probes, rise, fall, flips expected).
    #[test]
    fn a_track_flips_only_at_its_thresholds() {
        use Flip::{Down, Up};
        let rows: &[(&str, u32, u32, &[Option<Flip>])] = &[
            ("ggbgg", 2, 3, &[None, Some(Up), None, None, None]),
            ("gbbb", 1, 3, &[Some(Up), None, None, Some(Down)]),
            (
                "ggbgbbb",
                2,
                2,
                &[None, Some(Up), None, None, None, Some(Down), None],
            ),
            ("bbbg", 1, 1, &[None, None, None, Some(Up)]),
            ("gF", 1, 5, &[Some(Up), Some(Down)]),
        ];
        for (probes, rise, fall, want) in rows {
            let mut t = Track::default();
            let got: Vec<Option<Flip>> = probes
                .chars()
                .map(|c| t.observe(c == 'g', c == 'F', *rise, *fall))
                .collect();
            assert_eq!(&got, want, "{probes} rise {rise} fall {fall}");
        }
        let mut t = Track::default();
        assert_eq!(t.force_down(), None, "already down");
        t.observe(true, false, 1, 1);
        assert_eq!(t.force_down(), Some(Flip::Down));
    }

    #[test]
    fn rise_and_fall_of_one_are_immediate() {
        let rules = SelectRules::basic(0, 1, 1);
        let d = run(
            &rules,
            &["a", "b"],
            &[vec![A::H(5), A::H(5)], vec![A::Timeout, A::H(6)]],
        );
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        assert_eq!(d[1].primary.as_deref(), Some("b"));
    }

    #[test]
    fn switches_are_reported_with_the_reason() {
        let d = run(
            &rules(),
            &["a", "b"],
            &[
                vec![A::H(1), A::H(1)],
                vec![A::H(2), A::H(2)],
                vec![A::Refused, A::H(3)],
                vec![A::Refused, A::H(4)],
                vec![A::Refused, A::H(5)],
            ],
        );
        assert_eq!(d[0].switch, None, "no primary before and none now");
        let first = d[1].switch.as_ref().expect("first primary");
        assert_eq!(
            (first.from.as_deref(), first.to.as_deref()),
            (None, Some("a"))
        );
        assert!(d[2].switch.is_none() && d[3].switch.is_none());
        let moved = d[4].switch.as_ref().expect("moved");
        assert_eq!(
            (moved.from.as_deref(), moved.to.as_deref()),
            (Some("a"), Some("b"))
        );
        assert!(
            moved.why.contains("a went down: cannot connect"),
            "{}",
            moved.why
        );
    }

    #[test]
    fn after_everything_failed_the_old_primary_is_remembered() {
        let d = run(
            &SelectRules::basic(2, 1, 1),
            &["a", "b"],
            &[
                vec![A::H(1), A::H(1)],
                vec![A::Timeout, A::Timeout],
                vec![A::H(2), A::H(2)],
            ],
        );
        assert_eq!(d[1].primary, None);
        assert!(d[1]
            .switch
            .as_ref()
            .expect("lost")
            .why
            .contains("no healthy node left"));
        assert_eq!(d[2].primary.as_deref(), Some("a"));
        assert_eq!(d[2].switch, None, "a is what nginx still has: no switch");
    }

    #[test]
    fn head_age_comes_from_now_not_the_clock() {
        let d = run(&rules(), &["a"], &[vec![A::H(10)]]);
        // now = head timestamp + 5 s (see now_for).
        assert_eq!(d[0].nodes[0].head_age, Some(Duration::from_secs(5)));
        assert_eq!(d[0].expected_height, Some(10));
    }

    // ---- chain-aware rules ----

    fn node(name: &str, h: u64) -> Observation {
        let mut o = Observation::new(name, Ok(head(h, u128::from(h) * 10)));
        o.identity = Some(ident(Implementation::Lotus));
        o
    }

    fn on(mut o: Observation, f: impl FnOnce(&mut Observation)) -> Observation {
        f(&mut o);
        o
    }

    fn at_height(h: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + h * 30 + 5)
    }

    /// One pool decided round after round with one memory, each round at its own time and
    /// trigger.
    struct Rounds {
        rules: SelectRules,
        state: SelectState,
    }

    impl Rounds {
        fn new(rules: SelectRules) -> Rounds {
            Rounds {
                rules,
                state: SelectState::default(),
            }
        }

        fn go(&mut self, obs: Vec<Observation>, now: SystemTime, trigger: Trigger) -> Decision {
            let (d, next) = select(
                &self.rules,
                &ChainConfig::default(),
                &Overrides::default(),
                &self.state,
                &obs,
                now,
                trigger,
            );
            self.state = next;
            d
        }
    }

    /// Runs rounds at explicit clock heights.
    fn run_at(
        rules: &SelectRules,
        chain: &ChainConfig,
        rounds: &[(u64, Vec<Observation>)],
    ) -> Vec<Decision> {
        let mut state = SelectState::default();
        rounds
            .iter()
            .map(|(clock, obs)| {
                let (d, next) = select(
                    rules,
                    chain,
                    &Overrides::default(),
                    &state,
                    obs,
                    at_height(*clock),
                    Trigger::Probe,
                );
                state = next;
                d
            })
            .collect()
    }

    fn reason<'a>(d: &'a Decision, n: &str) -> &'a str {
        &d.verdict(n).expect("node").reason
    }

    fn says(ready: bool) -> impl FnOnce(&mut Observation) {
        move |o: &mut Observation| {
            o.own_word = Some(crate::probe::health::OwnWord {
                readiness: Some(if ready {
                    crate::probe::health::Readiness::Ready
                } else {
                    crate::probe::health::Readiness::NotReady {
                        status: 503,
                        failing: vec!["epoch outdated".into()],
                    }
                }),
                node_status: None,
            })
        }
    }

    #[test]
    fn a_daemon_that_says_it_is_ready_wins_a_tie_and_one_that_says_not_is_still_used() {
        let round = |a_ready: bool| {
            vec![
                on(node("a", 100), says(a_ready)),
                on(node("b", 100), says(true)),
                node("c", 100),
            ]
        };
        // Equal heads: "b says ready" ranks before "c says nothing" before "a says not".
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[(100, round(false)), (100, round(false))],
        );
        let last = d.last().expect("decisions");
        assert_eq!(last.primary.as_deref(), Some("b"));
        assert_eq!(last.backups, vec!["c".to_string(), "a".to_string()]);
        assert!(last.nodes.iter().all(|v| v.healthy), "none excluded");
        // A heavier head outranks the daemon's own word: it never holds the chain back.
        let heavier = vec![
            on(node("a", 101), says(false)),
            on(node("b", 100), says(true)),
        ];
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[(101, heavier.clone()), (101, heavier)],
        );
        assert_eq!(d.last().expect("decisions").primary.as_deref(), Some("a"));
    }

    #[test]
    fn a_node_that_lacks_the_providers_messages_loses_a_tie_and_nothing_more() {
        let behind = |n: u64| move |o: &mut Observation| o.messages_behind = Some(n);
        let dead = |n: &str| Observation::new(n, Err(RpcError::Connect("refused".into())));
        struct Row {
            what: &'static str,
            rounds: Vec<Vec<Observation>>,
            primary: &'static str,
            backups: Vec<&'static str>,
        }
        let rows = vec![
            Row {
                what: "equal heads: the node holding every message is promoted",
                rounds: vec![
                    vec![on(node("a", 100), behind(2)), node("b", 100)],
                    vec![on(node("a", 100), behind(2)), node("b", 100)],
                ],
                primary: "b",
                backups: vec!["a"],
            },
            Row {
                what: "not compared yet counts as not behind: config order decides",
                rounds: vec![
                    vec![node("a", 100), on(node("b", 100), behind(0))],
                    vec![node("a", 100), on(node("b", 100), behind(0))],
                ],
                primary: "a",
                backups: vec!["b"],
            },
            Row {
                what: "a heavier head still wins: messages never hold the chain back",
                rounds: vec![
                    vec![on(node("a", 101), behind(5)), node("b", 100)],
                    vec![on(node("a", 101), behind(5)), node("b", 100)],
                ],
                primary: "a",
                backups: vec!["b"],
            },
            Row {
                what: "the primary dies: the backup that holds its messages takes over",
                rounds: vec![
                    vec![node("a", 100), node("b", 100), node("c", 100)],
                    vec![node("a", 100), node("b", 100), node("c", 100)],
                    vec![
                        dead("a"),
                        on(node("b", 101), behind(1)),
                        on(node("c", 101), behind(0)),
                    ],
                    vec![
                        dead("a"),
                        on(node("b", 101), behind(1)),
                        on(node("c", 101), behind(0)),
                    ],
                    vec![
                        dead("a"),
                        on(node("b", 101), behind(1)),
                        on(node("c", 101), behind(0)),
                    ],
                ],
                primary: "c",
                backups: vec!["b"],
            },
            Row {
                what: "the sticky primary stays even when a backup holds more",
                rounds: vec![
                    vec![node("a", 100), node("b", 100)],
                    vec![node("a", 100), node("b", 100)],
                    vec![on(node("a", 101), behind(3)), node("b", 101)],
                ],
                primary: "a",
                backups: vec!["b"],
            },
        ];
        for row in rows {
            let rounds: Vec<(u64, Vec<Observation>)> = row
                .rounds
                .into_iter()
                .map(|obs| {
                    let top = obs
                        .iter()
                        .filter_map(|o| o.result.as_ref().ok().map(|h| h.height))
                        .max()
                        .unwrap_or(0);
                    (top, obs)
                })
                .collect();
            let d = run_at(&rules(), &ChainConfig::default(), &rounds);
            let last = d.last().expect("decisions");
            assert_eq!(
                last.primary.as_deref(),
                Some(row.primary),
                "{}: {:#?}",
                row.what,
                last.nodes
            );
            assert_eq!(last.backups, row.backups, "{}", row.what);
        }
    }

    #[test]
    fn a_node_on_another_network_is_excluded_whatever_its_height() {
        let round = vec![
            node("a", 100),
            node("b", 100),
            on(node("c", 500), |o| {
                o.identity.as_mut().expect("id").network = Some("calibrationnet".into())
            }),
        ];
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[(100, round.clone()), (100, round)],
        );
        assert_eq!(d[1].primary.as_deref(), Some("a"));
        assert_eq!(d[1].network.as_deref(), Some("testnet"));
        assert!(reason(&d[1], "c")
            .contains("on network \"calibrationnet\", the pool is on \"testnet\""));
    }

    #[test]
    fn an_even_network_split_is_refused_unless_configured() {
        let calib = |o: &mut Observation| {
            o.identity.as_mut().expect("id").network = Some("calibrationnet".into())
        };
        let round = vec![node("a", 100), on(node("b", 100), calib)];
        let d = run_obs(
            &rules(),
            &ChainConfig::default(),
            &[round.clone(), round.clone()],
        );
        assert_eq!(d[1].primary, None);
        assert!(d[1].warnings[0]
            .text
            .contains("splits evenly between networks calibrationnet and testnet"));
        let chain = ChainConfig {
            network: Some("calibrationnet".into()),
            genesis: Some("bafyGenesis".into()),
            ..ChainConfig::default()
        };
        let d = run_obs(&rules(), &chain, &[round.clone(), round]);
        assert_eq!(d[1].primary.as_deref(), Some("b"));
    }

    #[test]
    fn a_known_network_brings_its_genesis() {
        // The nodes say "mainnet" but carry another genesis: they are not on mainnet.
        let round = vec![on(node("a", 100), |o| {
            o.identity.as_mut().expect("id").network = Some("mainnet".into())
        })];
        let d = run_obs(&rules(), &ChainConfig::default(), &[round]);
        assert!(reason(&d[0], "a")
            .contains("genesis bafyGenesis differs from the pool's bafy2bzacecnamqgq"));
    }

    #[test]
    fn a_node_without_identity_is_not_used() {
        let round = vec![node("a", 100), on(node("b", 100), |o| o.identity = None)];
        let d = run_obs(&rules(), &ChainConfig::default(), &[round.clone(), round]);
        assert_eq!(d[1].backups, Vec::<String>::new());
        assert!(reason(&d[1], "b").starts_with("identity unknown"));
    }

    #[test]
    fn a_head_from_the_future_is_excluded() {
        let round = vec![node("a", 100), node("b", 100), node("c", 104)];
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[(100, round.clone()), (100, round)],
        );
        assert_eq!(d[1].primary.as_deref(), Some("a"));
        assert!(
            reason(&d[1], "c").contains("head from the future: height 104 is 1m 55s ahead"),
            "{}",
            reason(&d[1], "c")
        );
    }

    #[test]
    fn a_lone_leader_needs_a_plausible_weight() {
        // b and c are stuck at 100; a is at 120 with a normal weight: believed.
        let plausible = vec![node("a", 120), node("b", 100), node("c", 100)];
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[(120, plausible.clone()), (120, plausible)],
        );
        assert_eq!(d[1].primary.as_deref(), Some("a"));
        // a claims 120 with a weight a chain cannot gain in 20 epochs: not believed.
        let absurd = vec![
            on(node("a", 120), |o| o.result = Ok(head(120, 1_000_000))),
            node("b", 100),
            node("c", 100),
        ];
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[(120, absurd.clone()), (120, absurd)],
        );
        assert!(
            reason(&d[1], "a").contains("uncorroborated head: 20 epochs above every other node")
        );
        assert_ne!(d[1].primary.as_deref(), Some("a"));
    }

    #[test]
    fn stale_heads_are_bad_and_a_stale_pool_fails_static_loudly() {
        let rules = SelectRules {
            stale_after: Some(Duration::from_secs(150)),
            ..SelectRules::basic(2, 1, 1)
        };
        let round = vec![node("a", 100), node("b", 100)];
        // Clock at 103: heads 95 s old, fine. Clock at 110: 305 s old, stale.
        let d = run_at(
            &rules,
            &ChainConfig::default(),
            &[(103, round.clone()), (110, round)],
        );
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        assert_eq!(
            d[1].primary, None,
            "every node stale: no primary, the last upstream stays"
        );
        assert!(
            reason(&d[1], "a").contains("stale: head is 5m 5s old (stale after 2m 30s)"),
            "{}",
            reason(&d[1], "a")
        );
        assert!(d[1]
            .warnings
            .iter()
            .any(|w| w.text.contains("pool is stale") && w.text.contains("the chain is at 110")));
        assert_eq!(d[1].expected_height, Some(110));
    }

    #[test]
    fn null_rounds_do_not_look_like_a_stall() {
        // Height jumps 100 → 103 (two null rounds); heads stay within stale_after.
        let d = run_at(
            &rules(),
            &ChainConfig::default(),
            &[
                (100, vec![node("a", 100), node("b", 100)]),
                (102, vec![node("a", 100), node("b", 100)]),
                (103, vec![node("a", 103), node("b", 103)]),
            ],
        );
        assert_eq!(d[2].primary.as_deref(), Some("a"));
        assert!(d[2].warnings.is_empty(), "{:?}", d[2].warnings);
    }

    #[test]
    fn a_node_on_a_lighter_fork_is_dropped_once_the_fork_is_deeper_than_max_lag() {
        let fork = |h: u64| {
            on(node("c", h), move |o| {
                o.result = Ok(Head {
                    key: vec![format!("fork{h}")],
                    ..head(h, u128::from(h) * 10 - 5)
                })
            })
        };
        let rounds: Vec<(u64, Vec<Observation>)> = (100..=106)
            .map(|h| {
                (
                    h,
                    vec![
                        node("a", h),
                        node("b", h),
                        if h < 102 { node("c", h) } else { fork(h) },
                    ],
                )
            })
            .collect();
        let d = run_at(
            &SelectRules::basic(2, 1, 1),
            &ChainConfig::default(),
            &rounds,
        );
        assert_eq!(
            d[3].backups,
            vec!["b", "c"],
            "one epoch on a fork is normal"
        );
        assert!(
            reason(&d[6], "c").contains("on a lighter fork since height 102"),
            "{}",
            reason(&d[6], "c")
        );
        assert_eq!(d[6].backups, vec!["b"]);
    }

    #[test]
    fn a_node_without_peers_or_catching_up_is_not_promoted() {
        let no_peers = |o: &mut Observation| o.peers = Some(0);
        let syncing = |o: &mut Observation| o.syncing_to = Some(500);
        let up = vec![
            node("a", 100),
            on(node("b", 100), no_peers),
            on(node("c", 100), syncing),
            node("d", 100),
        ];
        let a_dies = vec![
            on(node("a", 101), |o| {
                o.result = Err(RpcError::Connect("refused".into()))
            }),
            on(node("b", 101), no_peers),
            on(node("c", 101), syncing),
            node("d", 101),
        ];
        let d = run_at(
            &SelectRules::basic(2, 1, 1),
            &ChainConfig::default(),
            &[(100, up), (101, a_dies)],
        );
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        assert_eq!(
            d[1].primary.as_deref(),
            Some("d"),
            "b and c are up but not promoted"
        );
        assert!(d[1].backups.contains(&"b".to_string()));
        assert!(reason(&d[1], "b").contains("not promoted to primary: 0 peers (min 1)"));
        assert!(reason(&d[1], "c").contains("catching up to height 500"));
    }

    #[test]
    fn the_first_backup_runs_another_implementation() {
        let forest = |o: &mut Observation| {
            o.identity.as_mut().expect("id").implementation = Implementation::Forest
        };
        let round = vec![node("a", 100), node("b", 100), on(node("c", 100), forest)];
        let d = run_obs(&rules(), &ChainConfig::default(), &[round.clone(), round]);
        assert_eq!(d[1].primary.as_deref(), Some("a"));
        assert_eq!(d[1].backups, vec!["c", "b"]);
        assert_eq!(
            d[1].verdict("c").expect("c").implementation.as_deref(),
            Some("forest")
        );
    }

    #[test]
    fn an_implementation_split_is_reported_after_a_few_epochs() {
        let forest_fork = |h: u64| {
            on(node("f", h), move |o| {
                o.identity.as_mut().expect("id").implementation = Implementation::Forest;
                o.result = Ok(Head {
                    key: vec![format!("forestfork{h}")],
                    ..head(h, u128::from(h) * 10 - 5)
                });
            })
        };
        let rounds: Vec<(u64, Vec<Observation>)> = (100..=105)
            .map(|h| (h, vec![node("a", h), node("b", h), forest_fork(h)]))
            .collect();
        let d = run_at(
            &SelectRules::basic(2, 1, 1),
            &ChainConfig::default(),
            &rounds,
        );
        assert!(d[2].warnings.is_empty(), "too early: {:?}", d[2].warnings);
        let w = d[5]
            .warnings
            .iter()
            .find(|w| w.text.contains("implementation split"))
            .expect("reported");
        assert!(
            w.text.contains("lotus nodes on bafy105")
                && w.text.contains("forest nodes on forestfork105"),
            "{w}"
        );
        assert_eq!(d[5].primary.as_deref(), Some("a"), "the heavier chain wins");
    }

    #[test]
    fn drain_and_prefer() {
        use crate::decide::overrides::{Mark, Preferred};
        let round = vec![node("a", 100), node("b", 100), node("c", 100)];
        let mut state = SelectState::default();
        let mut go = |o: &Overrides| {
            let (d, next) = select(
                &SelectRules::basic(2, 1, 1),
                &ChainConfig::default(),
                o,
                &state,
                &round,
                now_for(&round),
                Trigger::Probe,
            );
            state = next;
            d
        };
        let none = Overrides::default();
        assert_eq!(go(&none).primary.as_deref(), Some("a"));
        let mark = Mark {
            by: "alice".into(),
            at: "2026-11-25T10:00:00Z".into(),
            grace: None,
        };
        let mut drain_a = Overrides::default();
        drain_a.drained.insert("a".into(), mark.clone());
        let d = go(&drain_a);
        assert_eq!(d.primary.as_deref(), Some("b"));
        assert_eq!(d.backups, vec!["c"]);
        assert_eq!(reason(&d, "a"), "drained by alice at 2026-11-25T10:00:00Z");
        assert_eq!(
            d.switch.as_ref().expect("moved").why,
            "a was drained by the operator"
        );
        let prefer_c = Overrides {
            preferred: Some(Preferred {
                node: "c".into(),
                mark: mark.clone(),
            }),
            ..drain_a.clone()
        };
        let d = go(&prefer_c);
        assert_eq!(d.primary.as_deref(), Some("c"));
        assert_eq!(
            d.switch.as_ref().expect("moved").why,
            "preferred by the operator"
        );
        // Undrained and unpreferred: a comes back as backup, c stays (sticky).
        let d = go(&none);
        assert_eq!(d.primary.as_deref(), Some("c"));
        assert_eq!(d.backups, vec!["a", "b"]);
        // Draining every node keeps them: never an empty upstream.
        let mut all = Overrides::default();
        for n in ["a", "b", "c"] {
            all.drained.insert(n.into(), mark.clone());
        }
        let d = go(&all);
        assert_eq!(d.primary.as_deref(), Some("c"));
        assert!(reason(&d, "a").contains("but kept: no other healthy node"));
    }

    #[test]
    fn behind_for_longer_than_lag_grace_drops_a_node_at_once() {
        let rules = SelectRules {
            lag_grace: Some(Duration::from_secs(12)),
            ..SelectRules::basic(2, 1, 3)
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + 101 * 30 + 1);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut pool = Rounds::new(rules.clone());
        let mut go = |obs, now, trigger| pool.go(obs, now, trigger);
        // All at 100; then b and c get 101 at t0+1; a stays at 100.
        let d = go(
            vec![node("a", 100), node("b", 100), node("c", 100)],
            t0,
            Trigger::Probe,
        );
        assert_eq!(d.primary.as_deref(), Some("a"));
        let round = vec![node("a", 100), node("b", 101), node("c", 101)];
        let d = go(round.clone(), at(1), Trigger::Push);
        assert_eq!(d.primary.as_deref(), Some("a"), "behind for 0 s");
        let d = go(round.clone(), at(10), Trigger::Push);
        assert_eq!(
            d.primary.as_deref(),
            Some("a"),
            "behind 9 s < 12 s: normal propagation jitter"
        );
        assert_eq!(
            d.verdict("a").expect("a").behind,
            Some(Duration::from_secs(9))
        );
        let d = go(round.clone(), at(14), Trigger::Push);
        assert_eq!(
            d.primary.as_deref(),
            Some("b"),
            "behind 13 s: dropped at once, not after fall = 3"
        );
        assert!(
            reason(&d, "a").contains("behind the best head for 13s (lag_grace 12s)"),
            "{}",
            reason(&d, "a")
        );
        // A head known only from a poll at t0+5 counts as behind only up to then.
        let mut pool2 = Rounds::new(rules);
        let mut go2 = |obs, now| pool2.go(obs, now, Trigger::Probe);
        go2(vec![node("a", 100), node("b", 100)], t0);
        let polled = on(node("a", 100), |o| o.observed_at = Some(at(5)));
        let d = go2(vec![polled, node("b", 101)], at(30));
        // The heavier head was first seen (t0+30) after a's head was last known (t0+5): whether
        // a is behind is not known yet, so it is not counted.
        assert_eq!(d.verdict("a").expect("a").behind, None);
        assert!(d.verdict("a").expect("a").healthy);
    }

    /// The stall CI met: the stalled primary was asked a moment before the heavier head was
    /// recorded, so that answer showed it behind for no time at all. Its lag_grace still ends
    /// on time (the loop decides again then), and once it lags by epochs as well as past the
    /// grace, a pushed head takes it down at once instead of waiting for `fall` probes.
    #[test]
    fn a_node_behind_is_decided_again_when_its_grace_ends_and_a_lagging_one_goes_at_once() {
        let rules = SelectRules {
            lag_grace: Some(Duration::from_secs(12)),
            ..SelectRules::basic(2, 1, 3)
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + 101 * 30 + 1);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut pool = Rounds::new(rules);
        let mut go = |obs, now, trigger| pool.go(obs, now, trigger);
        let all_up = vec![node("a", 97), node("b", 97), node("c", 97)];
        assert_eq!(go(all_up, t0, Trigger::Probe).primary.as_deref(), Some("a"));
        let asked_just_before = on(node("a", 97), |o| {
            o.observed_at = Some(at(1) - Duration::from_millis(1))
        });
        let d = go(
            vec![asked_just_before, node("b", 101), node("c", 101)],
            at(1),
            Trigger::Push,
        );
        assert_eq!(
            d.verdict("a").expect("a").behind,
            None,
            "not shown behind yet"
        );
        assert_eq!(d.grace_ends.get("a"), Some(&at(13)), "{:?}", d.grace_ends);
        assert!(!d.grace_ends.contains_key("b") && !d.grace_ends.contains_key("c"));
        assert_eq!(d.primary.as_deref(), Some("a"));
        // Four epochs behind and 13 s past the first sighting of 98: down at once, on a push.
        let d = go(
            vec![node("a", 97), node("b", 101), node("c", 101)],
            at(14),
            Trigger::Push,
        );
        assert_eq!(d.primary.as_deref(), Some("b"), "{}", reason(&d, "a"));
        assert!(
            reason(&d, "a").starts_with("lagging 4 epochs"),
            "{}",
            reason(&d, "a")
        );
        assert!(d.grace_ends.is_empty(), "a is down: {:?}", d.grace_ends);
    }
}
