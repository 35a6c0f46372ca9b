//! The fork rule, in one file: how long a node has served heads off the pool's best chain.
//!
//! A late block routinely gives an honest node another key at a height (a tipset with one block
//! more or less, on the same parents), so a timer that any off-chain head starts, and any
//! on-chain head resets, would exclude honest nodes and be fooled by a liar at once: a primary
//! that answers the pool's tipset and a heavier fork of its own on alternate rounds reset it
//! every other round, and kept the primary for as long as we watched.
//!
//! So fork time is counted in epochs of the best chain while the node serves *conflicting*
//! heads (off the best chain, on parents off it too); it pauses, and does not reset, while the
//! node's heads are on the best chain or on parents on it; it is forgotten only after the node
//! has stayed on the best chain for `max_lag` epochs. A node that served a conflicting head
//! within the last `max_lag` epochs is not promoted (it is not excluded for that alone).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::probe::rpc::Head;

/// Where a node's head stands against the pool's best chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// Its key is the best chain's at its height.
    OnBest,
    /// Another key at a height the best chain holds, on parents the best chain holds (a late
    /// block, a sibling tipset).
    ParentsOnBest,
    /// Another key at a height the best chain holds, on parents it does not.
    Conflicting,
    /// The best chain holds nothing at its height: nothing to compare.
    Unknown,
}

/// Where `h` stands against `best_chain` (height → key); `best` is the best head, whose
/// siblings share its parents.
pub(super) fn position(best_chain: &BTreeMap<u64, Vec<String>>, best: &Head, h: &Head) -> Position {
    match best_chain.get(&h.height) {
        None => Position::Unknown,
        Some(k) if k == &h.key => Position::OnBest,
        Some(_) if parents_on_best(best_chain, best, h) => Position::ParentsOnBest,
        Some(_) => Position::Conflicting,
    }
}

/// Its parents are the best chain's latest key below it, or the best head's own parents.
fn parents_on_best(best_chain: &BTreeMap<u64, Vec<String>>, best: &Head, h: &Head) -> bool {
    if h.parents.is_empty() {
        return false;
    }
    (best.height == h.height && best.parents == h.parents)
        || best_chain
            .range(..h.height)
            .next_back()
            .is_some_and(|(_, k)| k == &h.parents)
}

/// One node's fork time (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRecord {
    /// The best height when this node was first seen off the best chain, until forgotten.
    pub fork_since: Option<u64>,
    /// Epochs of the best chain counted while it served conflicting heads.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fork_epochs: u64,
    /// The best height when it last served a conflicting head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_at: Option<u64>,
    /// The best height since which its heads have been on the best chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_since: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ForkRecord {
    /// One head's position, with the best chain at `best_height`.
    pub(super) fn observe(&mut self, position: Position, best_height: u64, max_lag: u64) {
        match position {
            Position::Conflicting => {
                self.fork_since.get_or_insert(best_height);
                let last = self.conflict_at.unwrap_or(best_height);
                self.fork_epochs += best_height.saturating_sub(last);
                self.conflict_at = Some(best_height);
                self.back_since = None;
            }
            Position::OnBest | Position::ParentsOnBest => {
                let back = *self.back_since.get_or_insert(best_height);
                if best_height.saturating_sub(back) >= max_lag.max(1) {
                    *self = ForkRecord {
                        back_since: Some(back),
                        ..ForkRecord::default()
                    };
                }
            }
            Position::Unknown => {}
        }
    }

    /// Fork time at or past `max_lag` epochs: the node is excluded for it.
    pub(super) fn too_long(&self, max_lag: u64) -> Option<(u64, u64)> {
        let since = self.fork_since?;
        (self.fork_epochs >= max_lag.max(1)).then_some((since, self.fork_epochs))
    }

    /// The height of a conflicting head served within the last `max_lag` epochs, if any: the
    /// node is not promoted while there is one.
    pub(super) fn recent_conflict(&self, best_height: u64, max_lag: u64) -> Option<u64> {
        self.conflict_at
            .filter(|&c| best_height.saturating_sub(c) < max_lag.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuous_fork_counts_every_epoch() {
        let mut r = ForkRecord::default();
        for h in 100..=103 {
            r.observe(Position::Conflicting, h, 3);
        }
        assert_eq!(r.too_long(3), Some((100, 3)));
    }

    #[test]
    fn a_flipper_is_not_forgiven_by_its_honest_looking_answers() {
        let mut r = ForkRecord::default();
        for h in 100..=106 {
            r.observe(Position::Conflicting, h, 3);
            r.observe(Position::OnBest, h, 3);
        }
        assert_eq!(r.too_long(3), Some((100, 6)));
    }

    #[test]
    fn late_blocks_pause_and_a_stay_on_the_best_chain_forgets() {
        let mut r = ForkRecord::default();
        r.observe(Position::Conflicting, 100, 3);
        r.observe(Position::Conflicting, 101, 3);
        for h in 102..=110 {
            r.observe(Position::ParentsOnBest, h, 3);
        }
        assert_eq!(r.too_long(3), None);
        assert_eq!(r.fork_epochs, 0, "forgotten after max_lag epochs back");
        assert_eq!(r.recent_conflict(110, 3), None);
        let mut r = ForkRecord::default();
        r.observe(Position::Conflicting, 100, 3);
        r.observe(Position::OnBest, 101, 3);
        assert_eq!(r.recent_conflict(101, 3), Some(100), "not promoted yet");
        assert_eq!(r.too_long(3), None, "not excluded for it");
    }
}
