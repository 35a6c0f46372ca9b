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
//! `Context::new` → `screen_identity` → `check_headers` → `judge_finality` → `expose_misreports` →
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
//! misreporting. No unproven claim of one node moves traffic or excludes anyone; a proof
//! counts whoever brings it (`integrity.rs`: a header that does not hash to its CID, while
//! another header for that CID does, excludes its node alone).

use std::time::SystemTime;

use crate::decide::overrides::Overrides;
use crate::probe::Observation;

mod choose;
mod context;
mod decision;
mod exclusion;
mod fork;
mod heads;
mod hysteresis;
mod identity;
mod integrity;
mod lag;
mod report;
mod rules;
mod trust;
mod warning;

pub(crate) use context::short_key;
use context::Context;
pub use decision::{Decision, NodeVerdict, ProofState, Role, SelectState, Switch};
pub use exclusion::Exclusion;
pub use hysteresis::Track;
pub use rules::{ChainConfig, SelectRules};
pub(crate) use rules::{
    DEFAULT_F3_MAX_BEHIND, DEFAULT_FINALITY_STALL_AFTER, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_MIN_PEERS,
};
pub use warning::{Warning, WarningGate, WarningKind};

/// What triggered an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A probe round: every rule, and rise/fall counters advance.
    Probe,
    /// A pushed head between probe rounds: counters stay (they count probes), and a node can
    /// only go down, by the lag-in-time rule.
    Push,
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
    let mut cx = Context::new(rules, chain, overrides, prev, observations, now, trigger);
    identity::screen_identity(&mut cx);
    integrity::check_headers(&mut cx);
    trust::judge_finality(&mut cx);
    trust::expose_misreports(&mut cx);
    heads::corroborate_leader(&mut cx);
    trust::confirm_heads(&mut cx);
    heads::find_best_head(&mut cx);
    heads::remember_history(&mut cx);
    lag::judge_nodes(&mut cx);
    hysteresis::apply_hysteresis(&mut cx);
    choose::apply_operator_marks(&mut cx);
    choose::choose_primary(&mut cx);
    choose::choose_backups(&mut cx);
    report::report_pool_warnings(&mut cx);
    trust::report_finality(&mut cx);
    decision::finish(cx)
}

#[cfg(test)]
mod tests;
