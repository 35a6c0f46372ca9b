//! The inputs of one evaluation and what the steps have worked out so far, built from the
//! rules, the previous state and the observations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::decision::{NodeVerdict, ProofState, SelectState};
use super::exclusion::Exclusion;
use super::hysteresis::Track;
use super::identity::{expected_chain, Expected};
use super::rules::{ChainConfig, SelectRules};
use super::warning::{Warning, WarningKind};
use super::Trigger;
use crate::decide::overrides::Overrides;
use crate::probe::f3::TipsetRef;
use crate::probe::rpc::Head;
use crate::probe::Observation;

/// The thresholds that derive from the block delay where `[select]` leaves them unset, named
/// in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Thresholds {
    /// A head older than this (seconds) is stale: five block delays.
    pub stale_after: u64,
    /// How long a node may stay behind the best head: 0.4 block delays (12 s on mainnet:
    /// Lotus's PropagationDelaySecs of 10 s plus margin).
    pub lag_grace: Duration,
    /// Flap damping's first hold: two block delays.
    pub hold_down: Duration,
    /// How long a new tipset may take to reach a healthy node: a third of the block delay
    /// (mainnet's PropagationDelaySecs is 10 s of 30). Past it, a head that has not moved on
    /// is late by the clock.
    pub propagation: Duration,
}

impl Thresholds {
    /// The rules' values, or the factors of the block delay (seconds) where they are unset.
    pub(super) fn derive(rules: &SelectRules, block_delay: u64) -> Thresholds {
        Thresholds {
            stale_after: rules
                .stale_after
                .unwrap_or(Duration::from_secs(5 * block_delay))
                .as_secs(),
            lag_grace: rules
                .lag_grace
                .unwrap_or(Duration::from_millis(block_delay * 400)),
            hold_down: rules
                .hold_down
                .unwrap_or(Duration::from_secs(2 * block_delay)),
            propagation: Duration::from_millis(block_delay * 1000 / 3),
        }
    }
}

/// What the steps work out about one node, in config order.
#[derive(Debug, Clone)]
pub(super) struct NodeWork {
    /// Why this round's probe was bad, if it was.
    pub bad: Option<Exclusion>,
    /// Behind the pool for longer than lag_grace: goes down at once.
    pub forced_down: bool,
    /// On the pool's chain: epochs below the best head.
    pub lag: Option<u64>,
    /// Its head is confirmed (another node reports the same tipset, or the clock shows every
    /// other node late).
    pub confirmed: bool,
    /// The weight the pool vouches for (the agreed weight of a tipset several nodes report),
    /// used for ranking and lag.
    pub weight: u128,
    /// The hysteresis memory, updated by `judge_nodes` and `apply_hysteresis`.
    pub track: Track,
    /// May become primary (peers, sync, flap damping).
    pub promotable: bool,
    /// What its head's proof showed this round.
    pub headers: HeaderStatus,
}

/// What a node's head proved this round (see `integrity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum HeaderStatus {
    /// No head to check this round.
    #[default]
    Unknown,
    /// Every block's header hashes to its CID.
    Verified,
    /// Not checked, or a failure nothing proves: judged as without the check.
    Unverified(String),
    /// A proven failure: the node is excluded for it.
    Failed(String),
}

impl HeaderStatus {
    /// The state, for code.
    pub(super) fn state(&self) -> Option<ProofState> {
        match self {
            HeaderStatus::Unknown => None,
            HeaderStatus::Verified => Some(ProofState::Verified),
            HeaderStatus::Unverified(_) => Some(ProofState::Unverified),
            HeaderStatus::Failed(_) => Some(ProofState::Failed),
        }
    }

    /// The words `/status`, `check` and the page show.
    pub(super) fn words(&self) -> Option<String> {
        match self {
            HeaderStatus::Unknown => None,
            HeaderStatus::Verified => Some("verified".into()),
            HeaderStatus::Unverified(why) => Some(format!("unverified: {why}")),
            HeaderStatus::Failed(why) => Some(format!("failed: {why}")),
        }
    }
}

/// The inputs of one evaluation and what the steps have worked out so far. Each step reads
/// what earlier ones left and adds its own part; none does I/O or reads a clock.
pub(super) struct Context<'a> {
    pub rules: &'a SelectRules,
    pub overrides: &'a Overrides,
    pub prev: &'a SelectState,
    pub observations: &'a [Observation],
    pub now: SystemTime,
    pub now_s: u64,
    pub trigger: Trigger,
    pub exp: Expected,
    pub limits: Thresholds,
    pub expected_height: Option<u64>,
    pub warnings: Vec<Warning>,
    /// Per node, in config order.
    pub work: Vec<NodeWork>,
    pub best: Option<&'a Head>,
    /// The best head is confirmed (by a second node or by the clock): only then are nodes
    /// below it judged behind. Without any confirmed head (a real split), weight still ranks
    /// but excludes nobody.
    pub best_confirmed: bool,
    /// The weight of the best head the pool vouches for.
    pub best_weight: u128,
    /// The pool's finalized tipset this round, and the recent ones.
    pub finalized: Option<TipsetRef>,
    pub finalized_map: BTreeMap<u64, Vec<String>>,
    pub f3_seen: BTreeMap<String, Vec<TipsetRef>>,
    /// Implementations whose headers verified this session: only their nodes' failures can be
    /// proven theirs.
    pub verified_impls: BTreeSet<String>,
    pub first_seen: BTreeMap<Vec<String>, SystemTime>,
    pub best_chain: BTreeMap<u64, Vec<String>>,
    pub best_seen: Vec<(u128, SystemTime)>,
    pub nodes: Vec<NodeVerdict>,
    /// Up nodes in rank order, after the operator's marks.
    pub ranked: Vec<usize>,
    pub preferred: Option<(usize, &'a crate::decide::overrides::Preferred)>,
    pub primary: Option<usize>,
    pub backups: Vec<usize>,
    pub split_since: Option<u64>,
    pub pool_stale: bool,
    pub implementation_split: bool,
}

impl<'a> Context<'a> {
    pub(super) fn head(&self, i: usize) -> Option<&'a Head> {
        self.observations[i].result.as_ref().ok()
    }

    pub(super) fn candidates(&self) -> Vec<usize> {
        (0..self.observations.len())
            .filter(|&i| self.work[i].bad.is_none())
            .collect()
    }
}

impl<'a> Context<'a> {
    /// The context of one evaluation: the pool's expected chain and clock, the thresholds
    /// that derive from it, and each node's work carried over from the previous state.
    pub(super) fn new(
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
        let expected_height = exp
            .genesis_timestamp
            .map(|g| now_s.saturating_sub(g) / exp.block_delay);
        let warnings = exp
            .tie
            .iter()
            .map(|t| Warning::new(WarningKind::NetworkTie, t.clone()))
            .collect();
        let work = observations
            .iter()
            .map(|o| NodeWork {
                bad: None,
                forced_down: false,
                lag: None,
                confirmed: false,
                weight: o.result.as_ref().map_or(0, |h| h.weight),
                track: prev.tracks.get(&o.node).cloned().unwrap_or_default(),
                promotable: true,
                headers: HeaderStatus::Unknown,
            })
            .collect();
        Context {
            rules,
            overrides,
            prev,
            observations,
            now,
            now_s,
            trigger,
            limits: Thresholds::derive(rules, exp.block_delay),
            exp,
            expected_height,
            warnings,
            work,
            best: None,
            best_confirmed: false,
            best_weight: 0,
            finalized: None,
            finalized_map: prev.finalized.clone(),
            f3_seen: prev.f3_seen.clone(),
            verified_impls: prev.verified_impls.clone(),
            first_seen: prev.first_seen.clone(),
            best_chain: prev.best_chain.clone(),
            best_seen: prev.best_seen.clone(),
            nodes: Vec::with_capacity(observations.len()),
            ranked: Vec::new(),
            preferred: None,
            primary: None,
            backups: Vec::new(),
            split_since: None,
            pool_stale: false,
            implementation_split: false,
        }
    }
}

pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn fmt_ms(d: Duration) -> String {
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

pub(super) fn fmt_secs(s: u64) -> String {
    crate::duration::human(Duration::from_secs(s))
}
